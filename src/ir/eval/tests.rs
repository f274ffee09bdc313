use super::*;

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: switchyard}
spec: {controllerName: switchyard.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: switchyard
  listeners:
  - {name: any, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
  - {name: shop, port: 80, protocol: HTTP, hostname: shop.example.com}
  - {name: wild, port: 80, protocol: HTTP, hostname: "*.example.com"}
  - {name: db, port: 5432, protocol: TCP}
---
apiVersion: v1
kind: Service
metadata: {name: a, namespace: default}
spec: {ports: [{port: 80}, {name: pg, port: 5432}]}
---
apiVersion: v1
kind: Service
metadata: {name: b, namespace: default}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: team}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: Namespace
metadata: {name: apps}
"#;

fn model(extra: &str) -> ir::Model {
    crate::testing::model(&format!("{BASE}\n---\n{extra}"), "127.0.0.1/32")
}

fn ask(m: &ir::Model, line: &str, headers: &[&str]) -> Decision {
    let mut r = Request::parse(line).expect("request parses");
    for h in headers {
        r.header(h).expect("header parses");
    }
    evaluate(m, &r).expect("evaluates")
}

fn route_name(d: &Decision) -> Option<&str> {
    d.route.as_ref().map(|r| r.name.as_str())
}

const PRECEDENCE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: newer, namespace: default, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: b, port: 80}]
  - name: catch-all
    backendRefs: [{name: b, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: older, namespace: default, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /tie}}]
    backendRefs: [{name: a, port: 80}]
  - matches:
    - path: {type: Exact, value: /api/exact}
    - path: {type: PathPrefix, value: /api/v1}
    - {path: {type: PathPrefix, value: /api}, method: POST}
    - path: {type: PathPrefix, value: /api}
      headers: [{name: X-Version, value: "2"}, {name: x-env, type: RegularExpression, value: "prod|stage"}]
    - path: {type: PathPrefix, value: /api}
      queryParams: [{name: debug, value: "1"}]
    backendRefs: [{name: a, port: 80}]
"#;

#[test]
fn the_first_match_wins_and_every_other_rule_says_why_it_lost() {
    let m = model(PRECEDENCE);
    let d = ask(&m, "GET http://any.test/tie/x", &[]);
    assert_eq!(route_name(&d), Some("older"));
    assert_eq!(d.status, None);
    assert_eq!(d.backends.len(), 1);
    assert_eq!(
        (d.backends[0].name.as_str(), d.backends[0].resolved),
        ("a", true)
    );
    let reasons: Vec<(&str, usize, &str)> = d
        .lost
        .iter()
        .map(|l| (l.route.name.as_str(), l.rule, l.reason.as_str()))
        .collect();
    assert!(
        reasons[0].0 == "newer" && reasons[0].1 == 0 && reasons[0].2.starts_with("age:"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == "newer"
            && reasons[1].1 == 1
            && reasons[1].2.starts_with("path: the longer path"),
        "{reasons:?}"
    );
    assert_eq!(d.lost[1].rule_name.as_deref(), Some("catch-all"));

    let d = ask(&m, "GET http://any.test/api/exact", &[]);
    assert_eq!(d.rule.as_ref().map(|r| r.match_index), Some(0));
    let d = ask(&m, "POST http://any.test/api/v2", &[]);
    assert_eq!(d.rule.as_ref().map(|r| r.match_index), Some(2));
    assert!(
        d.matched.contains(&"method POST".to_string()),
        "{:?}",
        d.matched
    );
    // Header names are case-insensitive, the regex is a full match.
    let d = ask(
        &m,
        "GET http://any.test/api",
        &["x-version: 2", "X-Env: prod"],
    );
    assert_eq!(d.rule.as_ref().map(|r| r.match_index), Some(3));
    let d = ask(
        &m,
        "GET http://any.test/api",
        &["x-version: 2", "X-Env: production"],
    );
    assert_eq!(route_name(&d), Some("newer"));
    let d = ask(&m, "GET http://any.test/api?debug=1&debug=2", &[]);
    assert_eq!(d.rule.as_ref().map(|r| r.match_index), Some(4));
    let d = ask(&m, "GET http://any.test/api?debug=2&debug=1", &[]);
    assert_eq!(route_name(&d), Some("newer"), "the first value counts");
    // Segment-aware prefix; a method match outranks a header match.
    let d = ask(
        &m,
        "POST http://any.test/api",
        &["x-version: 2", "x-env: stage"],
    );
    assert_eq!(d.rule.as_ref().map(|r| r.match_index), Some(2));
    assert!(d.lost.is_empty() || d.lost.iter().all(|l| l.route.name != "older"));
    let d = ask(&m, "GET http://any.test/apis", &[]);
    assert_eq!(route_name(&d), Some("newer"));
    let lost_older: Vec<&Lost> = d.lost.iter().filter(|l| l.route.name == "older").collect();
    assert!(
        lost_older.is_empty(),
        "/apis matches no /api prefix: {lost_older:?}"
    );
    // Dot segments and repeated slashes are normalized first.
    let d = ask(&m, "GET http://any.test//api/./x/../exact", &[]);
    assert_eq!(d.rule.as_ref().map(|r| r.match_index), Some(0));
    assert!(
        d.notes.iter().any(|n| n.contains("normalizes")),
        "{:?}",
        d.notes
    );
}

#[test]
fn the_most_specific_listener_owns_the_host() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: wide, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: wild}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: shop}]
  rules: [{matches: [{path: {type: PathPrefix, value: /cart}}], backendRefs: [{name: b, port: 80}]}]
"#,
    );
    let d = ask(&m, "GET http://SHOP.example.com:80/cart/1", &[]);
    assert_eq!(route_name(&d), Some("shop"));
    let l = d.listener.as_ref().expect("a listener");
    assert_eq!(
        (l.name.as_deref(), l.hostname.as_deref()),
        (Some("shop"), Some("shop.example.com"))
    );
    // The wildcard listener's route also matches the path, but the host
    // belongs to the more specific listener.
    assert_eq!(d.lost.len(), 1, "{:?}", d.lost);
    assert!(
        d.lost[0].reason.starts_with("hostname:"),
        "{}",
        d.lost[0].reason
    );
    // Nothing of listener `shop` matches /other: 404, not the wildcard route.
    let d = ask(&m, "GET http://shop.example.com/other", &[]);
    assert_eq!((d.status, route_name(&d)), (Some(404), None));
    assert_eq!(d.lost.len(), 1);
    let d = ask(&m, "GET http://a.b.example.com/other", &[]);
    assert_eq!(route_name(&d), Some("wide"));
    assert_eq!(
        d.listener.as_ref().and_then(|l| l.name.as_deref()),
        Some("wild")
    );
    let d = ask(&m, "GET http://example.org/", &[]);
    assert_eq!((d.status, route_name(&d)), (Some(404), None));
}

#[test]
fn unresolved_backends_answer_500_and_say_why() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: apps}
spec:
  parentRefs: [{name: gw, namespace: default, sectionName: any}]
  hostnames: [split.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /half}}]
    backendRefs: [{name: other, namespace: team, port: 80, weight: 1}, {name: a, namespace: default, port: 80, weight: 3}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    backendRefs: [{name: a, namespace: default, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: apps-to-team, namespace: team}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: apps}]
  to: [{group: "", kind: Service}]
"#,
    );
    let d = ask(&m, "GET http://split.test/half", &[]);
    assert_eq!(d.status, None);
    let states: Vec<(&str, u32, bool, Option<&str>)> = d
        .backends
        .iter()
        .map(|b| {
            (
                b.name.as_str(),
                b.weight,
                b.resolved,
                b.reference_grant.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("other", 1, true, Some("team/apps-to-team")),
            ("a", 3, false, None)
        ]
    );
    assert!(d.backends[1]
        .problem
        .as_deref()
        .is_some_and(|p| p.starts_with("RefNotPermitted")));
    assert!(
        d.notes.iter().any(|n| n.contains("3 of 4 weight units")),
        "{:?}",
        d.notes
    );
    let d = ask(&m, "GET http://split.test/none", &[]);
    assert_eq!(d.status, Some(500));
    assert!(!d.backends[0].resolved);
}

#[test]
fn redirects_and_rewrites_show_their_result() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: moves, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  hostnames: [moves.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: gw}]}
    backendRefs: [{name: a, port: 80}]
"#,
    );
    let d = ask(&m, "GET http://moves.test/old/page?q=1", &[]);
    assert_eq!(d.status, Some(301));
    assert_eq!(
        d.location.as_deref(),
        Some("https://moves.test/new/page?q=1")
    );
    let d = ask(&m, "GET http://moves.test/api/v1/x", &[]);
    assert_eq!(d.status, None);
    let details: Vec<&str> = d.filters.iter().map(|f| f.detail.as_str()).collect();
    assert!(details.contains(&"hostname → internal.test"), "{details:?}");
    assert!(details.contains(&"path /api/v1/x → /v1/x"), "{details:?}");
    assert!(details.contains(&"set x-via: gw"), "{details:?}");
}

#[test]
fn session_persistence_is_a_filter_step() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: sticky, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: any}]
  hostnames: [sticky.test]
  rules:
  - matches: [{path: {type: PathPrefix, value: /c}}]
    sessionPersistence: {sessionName: sid}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /p}}]
    sessionPersistence: {sessionName: keep, absoluteTimeout: 1h, cookieConfig: {lifetimeType: Permanent}}
    backendRefs: [{name: a, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /h}}]
    sessionPersistence: {type: Header, sessionName: x-session}
    backendRefs: [{name: a, port: 80}]
  - backendRefs: [{name: a, port: 80}]
"#,
    );
    let step = |path: &str| {
        let d = ask(&m, &format!("GET http://sticky.test{path}"), &[]);
        d.filters
            .iter()
            .find(|f| f.kind == "SessionPersistence")
            .map(|f| f.detail.clone())
    };
    let c = step("/c").expect("cookie step");
    assert!(
        c.starts_with("cookie sid (session cookie, no expiry)"),
        "{c}"
    );
    let p = step("/p").expect("permanent step");
    assert!(
        p.starts_with("cookie keep (permanent, Max-Age 3600s)"),
        "{p}"
    );
    let h = step("/h").expect("header step");
    assert!(h.starts_with("header x-session"), "{h}");
    assert_eq!(step("/other"), None);
}

#[test]
fn l4_ports_and_unknown_ports() {
    let m = model(
        r#"
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: pg, namespace: default}
spec:
  parentRefs: [{name: gw, sectionName: db}]
  rules: [{backendRefs: [{name: a, port: 5432}]}]
"#,
    );
    let d = ask(&m, "tcp://127.0.0.1:5432", &[]);
    assert_eq!(
        d.route.as_ref().map(|r| (r.kind.as_str(), r.name.as_str())),
        Some(("TCPRoute", "pg"))
    );
    assert_eq!(d.backends.len(), 1);
    assert!(d.backends[0].resolved && d.refused.is_none());
    let d = ask(&m, "GET http://x.test:8080/", &[]);
    assert!(d.refused.is_some() && d.gateway.is_none());
    let d = ask(&m, "GET http://x.test:5432/", &[]);
    assert_eq!(
        route_name(&d),
        Some("pg"),
        "a TCP listener forwards whatever bytes arrive"
    );
    let d = ask(&m, "GET https://x.test:80/", &[]);
    assert!(
        d.refused.as_deref().is_some_and(|r| r.contains("TLS")),
        "{d:?}"
    );
    let mut r = Request::parse("http://x/").expect("parses");
    r.gateway = Some(ObjKey::new("default", "nope"));
    assert!(matches!(
        evaluate(&m, &r),
        Err(EvalError::UnknownGateway(_))
    ));
}

#[test]
fn json_has_the_documented_fields() {
    let m = model(PRECEDENCE);
    let v = serde_json::to_value(ask(&m, "GET http://any.test/tie", &[])).expect("serializes");
    for field in [
        "schema", "gateway", "listener", "route", "rule", "status", "backends", "filters", "lost",
    ] {
        assert!(v.get(field).is_some(), "missing {field}: {v}");
    }
    assert_eq!(v["route"]["kind"], "HTTPRoute");
    assert_eq!(v["rule"]["index"], 0);
    assert_eq!(v["backends"][0]["port"], 80);
    assert_eq!(v["lost"][0]["route"]["name"], "newer");
}

/// The golden case `https-misdirected`: the conformance test
/// HTTPRouteHTTPSListenerDetectMisdirectedRequests's Gateway and routes, plus
/// a TLS passthrough listener on the same port and a lone HTTPS listener.
fn misdirect_model() -> ir::Model {
    crate::testing::model(
        include_str!("../../../tests/golden/https-misdirected/input.yaml"),
        "127.0.0.1/32",
    )
}

/// `https://HOST:443/detect-misdirected-requests` on a connection with `sni`.
fn ask_sni(m: &ir::Model, sni: &str, host: &str) -> Decision {
    let mut r = Request::parse(&format!(
        "GET https://{host}:443/detect-misdirected-requests"
    ))
    .expect("request parses");
    r.sni = Some(sni.to_string());
    evaluate(m, &r).expect("evaluates")
}

#[test]
fn https_hosts_of_another_listener_are_misdirected() {
    let m = misdirect_model();
    // Every case of the conformance test: (SNI, Host, the Gateway's status
    // or the route that forwards).
    let cases: &[(&str, &str, &str)] = &[
        ("example.org", "example.org", "test-1"),
        ("example.org", "second-example.org", "421"),
        ("example.org", "unknown-example.org", "404"),
        ("second-example.org", "second-example.org", "test-2"),
        ("second-example.org", "example.org", "421"),
        ("second-example.org", "unknown-example.org", "421"),
        (
            "third-example.wildcard.org",
            "third-example.wildcard.org",
            "test-3",
        ),
        (
            "third-example.wildcard.org",
            "fith-example.wildcard.org",
            "test-3",
        ),
        (
            "third-example.wildcard.org",
            "fourth-example.wildcard.org",
            "421",
        ),
        ("third-example.wildcard.org", "second-example.org", "421"),
        ("third-example.wildcard.org", "unknown-example.org", "421"),
        (
            "fourth-example.wildcard.org",
            "fourth-example.wildcard.org",
            "test-4",
        ),
        (
            "fourth-example.wildcard.org",
            "fith-example.wildcard.org",
            "421",
        ),
        ("unknown-example.org", "example.org", "test-1"),
        ("unknown-example.org", "unknown-example.org", "404"),
    ];
    for &(sni, host, want) in cases {
        let d = ask_sni(&m, sni, host);
        let got = match (d.status, route_name(&d)) {
            (Some(s), None) => s.to_string(),
            (None, Some(r)) => r.to_string(),
            other => format!("{other:?}"),
        };
        assert_eq!(got, want, "SNI {sni}, Host {host}: {:?}", d.notes);
        assert!(
            d.refused.is_none(),
            "SNI {sni}, Host {host}: {:?}",
            d.refused
        );
    }
}

#[test]
fn a_misdirected_request_names_both_listeners() {
    let m = misdirect_model();
    let d = ask_sni(
        &m,
        "third-example.wildcard.org",
        "Fourth-Example.wildcard.org",
    );
    assert_eq!(d.status, Some(421));
    // The listener stays the one SNI chose; the note names the owner.
    let l = d.listener.as_ref().expect("a listener");
    assert_eq!(
        (l.name.as_deref(), l.hostname.as_deref()),
        (Some("https-with-wildcard-hostname"), Some("*.wildcard.org"))
    );
    assert_eq!(
        d.virtual_host.as_deref(),
        Some("fourth-example.wildcard.org")
    );
    let note = d.notes.join("\n");
    assert!(
        note.contains(
            "listener https-with-hostname-matching-wildcard (hostname fourth-example.wildcard.org)"
        ) && note.contains("chose listener https-with-wildcard-hostname"),
        "{note}"
    );
    assert!(d.route.is_none() && d.backends.is_empty() && d.lost.is_empty());
    // Owned by the listener without a hostname.
    let d = ask_sni(&m, "second-example.org", "nowhere.test");
    assert_eq!(d.status, Some(421));
    assert!(
        d.notes.join("\n").contains("listener https (no hostname)"),
        "{:?}",
        d.notes
    );
}

#[test]
fn misdirection_follows_the_host_not_the_route_hostnames() {
    let m = misdirect_model();
    // A route of the catch-all listener names x.wildcard.org, which the
    // wildcard listener owns: 421 on the catch-all's connections...
    let d = ask_sni(&m, "example.org", "x.wildcard.org");
    assert_eq!((d.status, route_name(&d)), (Some(421), None));
    // ... while its other hostname is served there.
    let d = ask_sni(&m, "example.org", "example.net");
    assert_eq!((d.status, route_name(&d)), (None, Some("overreach")));
    // With SNI x.wildcard.org the wildcard listener serves it with its own route.
    let d = ask_sni(&m, "x.wildcard.org", "x.wildcard.org");
    assert_eq!(route_name(&d), Some("test-3"));
    // The TLS listener's hostname is not an HTTPS listener's: the catch-all
    // HTTPS listener owns the Host (404: no route), no 421.
    let d = ask_sni(&m, "example.org", "pass.example.org");
    assert_eq!((d.status, route_name(&d)), (Some(404), None));
    // Without SNI the listener without a hostname takes the connection.
    let mut r = Request::parse("GET https://second-example.org/detect-misdirected-requests")
        .expect("request parses");
    r.sni = None;
    assert_eq!(evaluate(&m, &r).expect("evaluates").status, Some(421));
}

#[test]
fn a_lone_https_listener_and_plain_http_listeners_never_answer_421() {
    let m = misdirect_model();
    // Port 9443 has one HTTPS listener (alone.example.org): another Host
    // finds no virtual host, 404 as before.
    let mut r = Request::parse("GET https://other.example.org:9443/").expect("request parses");
    r.sni = Some("alone.example.org".into());
    let d = evaluate(&m, &r).expect("evaluates");
    assert_eq!((d.status, route_name(&d)), (Some(404), None));
    r.host = "alone.example.org:9443".into();
    assert_eq!(
        route_name(&evaluate(&m, &r).expect("evaluates")),
        Some("alone")
    );
    // HTTP listeners sharing a port are isolated, never misdirected.
    let m = model("");
    let d = ask(&m, "GET http://shop.example.com/", &[]);
    assert_eq!(d.status, Some(404));
    fn no_misdirected(m: &ir::Model) -> bool {
        m.gateways
            .values()
            .flat_map(|g| g.listeners.iter().flat_map(|l| l.chains.iter()))
            .filter_map(|c| match &c.app {
                ir::App::Http(rc) => Some(rc),
                _ => None,
            })
            .all(|rc| rc.virtual_hosts.iter().all(|v| !v.misdirected))
    }
    assert!(no_misdirected(&m));
}
