//! `rules[].sessionPersistence` (Gateway API v1.6.1, HTTPRoute and
//! GRPCRoute) as Envoy's stateful session: the first response carries the
//! address of the endpoint that answered (a cookie or a header), and later
//! requests carrying it go to that endpoint. Every field is honoured exactly
//! or refused with `UnsupportedValue` naming it (docs/session-persistence.md).

use gateway_api::experimental::httproutes::{
    HttpRouteRules, HttpRouteRulesSessionPersistenceCookieConfigLifetimeType as Lifetime,
    HttpRouteRulesSessionPersistenceType as SpType,
};

use super::conditions::reasons;
use super::index::RuleError;
use crate::inputs::{Kind, ObjKey};
use crate::ir;

fn unsupported(msg: String) -> RuleError {
    (reasons::UNSUPPORTED_VALUE, msg)
}

/// The cookie or header name made for a rule without `sessionName`: unique
/// per route kind, route and rule (the spec: rules must not share sessions),
/// stable across restarts and reorderings of other rules when the rule is
/// named.
pub fn default_name(kind: Kind, key: &ObjKey, index: usize, rule_name: Option<&str>) -> String {
    let rule = rule_name.map_or_else(|| format!("#{index}"), str::to_string);
    let id = format!("{}/{}/{}/{rule}", kind.as_str(), key.namespace, key.name);
    // FNV-1a, 64 bits: deterministic across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("sy-session-{h:016x}")
}

/// An RFC 9110 token (cookie names and header names are tokens).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Headers a session token cannot live in: the proxy or HTTP itself owns them.
const RESERVED_HEADERS: [&str; 12] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "cookie",
    "set-cookie",
    "content-type",
];

/// `rules[].sessionPersistence` of a forwarding rule (its backends are
/// merged by [`merge_split`] when there are several).
pub(super) fn session_persistence(
    kind: Kind,
    key: &ObjKey,
    index: usize,
    rule: &HttpRouteRules,
) -> Result<Option<Box<ir::SessionPersistence>>, RuleError> {
    let Some(sp) = &rule.session_persistence else {
        return Ok(None);
    };
    const F: &str = "sessionPersistence";
    if sp.idle_timeout.is_some() {
        return Err(unsupported(format!(
            "{F}.idleTimeout: not a Gateway API v1.6.1 field (it was removed), and Envoy's \
             stateful session has no idle timeout"
        )));
    }
    let absolute = match sp.absolute_timeout.as_deref() {
        None => None,
        Some(s) => Some(super::http_policy::duration(
            &format!("{F}.absoluteTimeout"),
            s,
        )?),
    };
    let name = match sp.session_name.as_deref().filter(|n| !n.is_empty()) {
        None => default_name(kind, key, index, rule.name.as_deref()),
        Some(n) if !is_token(n) => {
            return Err(unsupported(format!(
                "{F}.sessionName: {n:?} is not a valid cookie or header name (an HTTP token: \
                 letters, digits and !#$%&'*+-.^_`|~)"
            )))
        }
        Some(n) => n.to_string(),
    };
    let is_header = matches!(sp.r#type, Some(SpType::Header));
    if is_header {
        if sp.cookie_config.is_some() {
            return Err(unsupported(format!(
                "{F}.cookieConfig: can only be set with type Cookie"
            )));
        }
        if absolute.is_some() {
            return Err(unsupported(format!(
                "{F}.absoluteTimeout: Envoy's header-based session state carries only the \
                 endpoint's address, never an expiry, so a header session cannot time out"
            )));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(unsupported(format!(
                "{F}.sessionName: {name:?} is a header HTTP or the proxy owns"
            )));
        }
        return Ok(Some(Box::new(ir::SessionPersistence {
            name,
            kind: ir::SessionKind::Header,
            cluster: None,
        })));
    }
    let permanent = matches!(
        sp.cookie_config
            .as_ref()
            .and_then(|c| c.lifetime_type.as_ref()),
        Some(Lifetime::Permanent)
    );
    let max_age = match (permanent, absolute) {
        (false, None) => None,
        (false, Some(_)) => {
            return Err(unsupported(format!(
                "{F}.absoluteTimeout: with cookieConfig.lifetimeType Session the cookie must \
                 carry no Max-Age, but Envoy expires a cookie session only through its Max-Age \
                 (use lifetimeType Permanent)"
            )))
        }
        (true, None) => {
            return Err(unsupported(format!(
                "{F}.absoluteTimeout: required when cookieConfig.lifetimeType is Permanent"
            )))
        }
        (true, Some(d)) if d.is_zero() || d.subsec_nanos() != 0 => {
            return Err(unsupported(format!(
                "{F}.absoluteTimeout: a Permanent cookie's Max-Age is a whole number of seconds \
                 above zero; {:?} is not",
                sp.absolute_timeout.as_deref().unwrap_or_default()
            )))
        }
        (true, Some(d)) => Some(d),
    };
    Ok(Some(Box::new(ir::SessionPersistence {
        name,
        kind: ir::SessionKind::Cookie { max_age },
        cluster: None,
    })))
}

fn distinct_clusters(backends: &[ir::WeightedBackend]) -> usize {
    let mut clusters: Vec<Option<&str>> = backends.iter().map(|b| b.cluster.as_deref()).collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters.len()
}

/// A rule with session persistence whose backendRefs name several backends
/// (Service ports): Envoy pins a session to an endpoint of the cluster the
/// route picked, so with `weighted_clusters` a weighted pick of another
/// cluster loses the session (half the requests of a 50/50 split). The spec
/// requires the session to hold across the split. So the backends become
/// one cluster made for the rule, one locality per backend weighted like its
/// backendRef: a new client is spread by the weights, a pinned one stays on
/// its endpoint whichever backend it is in. Refused when the backends cannot
/// share one cluster: an unresolved backend (its share must answer 500),
/// backendRef filters, or different protocols or backend TLS. Returns the
/// cluster's name (`None`: one backend, nothing to merge).
pub(super) fn merge_split(
    kind: Kind,
    key: &ObjKey,
    index: usize,
    backends: &[ir::WeightedBackend],
    clusters: &mut std::collections::BTreeMap<String, ir::Cluster>,
) -> Result<Option<String>, RuleError> {
    const F: &str = "sessionPersistence";
    if distinct_clusters(backends) < 2 {
        return Ok(None);
    }
    let mut members = Vec::new();
    let mut shape: Option<(&ir::UpstreamProtocol, &Option<ir::UpstreamTls>)> = None;
    for b in backends {
        let at = b
            .origin
            .as_ref()
            .map_or_else(String::new, |o| format!(" ({}/{})", o.namespace, o.name));
        let Some(c) = b.cluster.as_deref().and_then(|c| clusters.get(c)) else {
            return Err(unsupported(format!(
                "{F}: a backend of the split{at} did not resolve; its share must answer 500, \
                 which one cluster holding the other backends for the session cannot do"
            )));
        };
        if !b.request_headers.is_empty() || !b.response_headers.is_empty() {
            return Err(unsupported(format!(
                "{F}: backendRef filters{at} cannot apply inside the one cluster that keeps \
                 sessions across the split"
            )));
        }
        match shape {
            None => shape = Some((&c.protocol, &c.tls)),
            Some((p, t)) if *p != c.protocol || *t != c.tls => {
                return Err(unsupported(format!(
                    "{F}: the backends of the split{at} differ in protocol or backend TLS and \
                     cannot share the one cluster that keeps sessions across the split"
                )))
            }
            Some(_) => {}
        }
        members.push(ir::SplitMember {
            service: c.service.clone(),
            port_name: c.port_name.clone(),
            weight: b.weight,
            endpoints: c.endpoints.clone(),
        });
    }
    let (protocol, tls) = shape
        .map(|(p, t)| (p.clone(), t.clone()))
        .unwrap_or((ir::UpstreamProtocol::Http1, None));
    let name = ir::names::session_split_cluster(kind.as_str(), key, index);
    clusters.insert(
        name.clone(),
        ir::Cluster {
            name: name.clone(),
            service: key.clone(),
            port: 0,
            port_name: String::new(),
            protocol,
            endpoints: Vec::new(),
            split: members,
            tls,
        },
    );
    Ok(Some(name))
}

/// The cookie `Path` for one match of a rule (GEP-1619): `/` for a rule
/// that matches every path, the path of an Exact or PathPrefix match, and
/// for a regular expression its longest literal prefix up to a `/`.
/// Envoy uses a session cookie only on requests under its path, so a rule's
/// session is not shared with rules for other paths.
pub fn cookie_path(m: &ir::PathMatch) -> String {
    let p = match m {
        ir::PathMatch::Exact(p) | ir::PathMatch::Prefix(p) => p.clone(),
        ir::PathMatch::Regex(r) => {
            let mut lit = String::new();
            let mut chars = r.chars().peekable();
            while let Some(c) = chars.next() {
                if ".^$*+?()[]{}|\\".contains(c) {
                    break;
                }
                // A quantifier after this character makes it optional.
                if chars.peek().is_some_and(|n| "*?{".contains(*n)) {
                    break;
                }
                lit.push(c);
            }
            match lit.rfind('/') {
                Some(i) => lit[..i].to_string(),
                None => String::new(),
            }
        }
    };
    let p = p.trim_end_matches('/');
    if p.is_empty() || !p.starts_with('/') {
        "/".to_string()
    } else {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: &str) -> HttpRouteRules {
        serde_yaml::from_str(yaml).expect("valid rule")
    }

    fn backend(cluster: &str) -> ir::WeightedBackend {
        ir::WeightedBackend {
            cluster: Some(cluster.into()),
            weight: 1,
            request_headers: Default::default(),
            response_headers: Default::default(),
            origin: None,
        }
    }

    fn key() -> ObjKey {
        ObjKey {
            namespace: "ns".into(),
            name: "r".into(),
        }
    }

    fn sp(yaml: &str) -> Result<Option<Box<ir::SessionPersistence>>, RuleError> {
        session_persistence(Kind::HTTPRoute, &key(), 2, &rule(yaml))
    }

    #[test]
    fn cookie_defaults_to_a_session_cookie_named_for_the_rule() {
        let s = sp("sessionPersistence: {}").expect("ok").expect("some");
        assert_eq!(s.kind, ir::SessionKind::Cookie { max_age: None });
        assert_eq!(s.name, default_name(Kind::HTTPRoute, &key(), 2, None));
        assert!(s.name.starts_with("sy-session-") && is_token(&s.name));
        // Unique per rule, per route, per kind; a named rule keeps its name.
        let other = [
            default_name(Kind::HTTPRoute, &key(), 3, None),
            default_name(Kind::GRPCRoute, &key(), 2, None),
            default_name(
                Kind::HTTPRoute,
                &ObjKey {
                    namespace: "ns".into(),
                    name: "r2".into(),
                },
                2,
                None,
            ),
        ];
        assert!(other.iter().all(|o| *o != s.name));
        assert_eq!(
            default_name(Kind::HTTPRoute, &key(), 0, Some("a")),
            default_name(Kind::HTTPRoute, &key(), 5, Some("a"))
        );
    }

    #[test]
    fn permanent_cookie_takes_absolute_timeout_as_max_age() {
        let s = sp("sessionPersistence: {sessionName: JSESSIONID, absoluteTimeout: 1h5m, cookieConfig: {lifetimeType: Permanent}}")
            .expect("ok")
            .expect("some");
        assert_eq!(s.name, "JSESSIONID");
        assert_eq!(
            s.kind,
            ir::SessionKind::Cookie {
                max_age: Some(std::time::Duration::from_secs(3900))
            }
        );
    }

    #[test]
    fn what_envoy_cannot_do_is_refused_naming_the_field() {
        for (yaml, field) in [
            ("sessionPersistence: {absoluteTimeout: 10s}", "sessionPersistence.absoluteTimeout"),
            ("sessionPersistence: {absoluteTimeout: 10s, cookieConfig: {lifetimeType: Session}}", "sessionPersistence.absoluteTimeout"),
            ("sessionPersistence: {absoluteTimeout: 1500ms, cookieConfig: {lifetimeType: Permanent}}", "sessionPersistence.absoluteTimeout"),
            ("sessionPersistence: {absoluteTimeout: 0s, cookieConfig: {lifetimeType: Permanent}}", "sessionPersistence.absoluteTimeout"),
            ("sessionPersistence: {cookieConfig: {lifetimeType: Permanent}}", "sessionPersistence.absoluteTimeout"),
            ("sessionPersistence: {type: Header, absoluteTimeout: 10s}", "sessionPersistence.absoluteTimeout"),
            ("sessionPersistence: {type: Header, sessionName: Host}", "sessionPersistence.sessionName"),
            ("sessionPersistence: {sessionName: 'a b'}", "sessionPersistence.sessionName"),
            ("sessionPersistence: {sessionName: 'a;b'}", "sessionPersistence.sessionName"),
            ("sessionPersistence: {idleTimeout: 10s}", "sessionPersistence.idleTimeout"),
            ("sessionPersistence: {absoluteTimeout: 10x, cookieConfig: {lifetimeType: Permanent}}", "sessionPersistence.absoluteTimeout"),
        ] {
            let (reason, msg) = sp(yaml).expect_err(yaml);
            assert_eq!(reason, reasons::UNSUPPORTED_VALUE, "{yaml}");
            assert!(msg.starts_with(field), "{yaml}: {msg}");
        }
    }

    #[test]
    fn header_sessions() {
        let s = sp("sessionPersistence: {type: Header, sessionName: x-session}")
            .expect("ok")
            .expect("some");
        assert_eq!(s.kind, ir::SessionKind::Header);
        assert_eq!(s.name, "x-session");
        assert!(sp("{}").expect("ok").is_none());
    }

    fn cluster(name: &str, protocol: ir::UpstreamProtocol) -> ir::Cluster {
        ir::Cluster {
            name: name.into(),
            service: ObjKey {
                namespace: "ns".into(),
                name: name.into(),
            },
            port: 80,
            port_name: "http".into(),
            protocol,
            endpoints: vec![ir::Endpoint {
                address: "10.0.0.1".into(),
                port: 9000,
            }],
            split: Vec::new(),
            tls: None,
        }
    }

    #[test]
    fn a_split_becomes_one_cluster_with_a_locality_per_backend() {
        let mut clusters = std::collections::BTreeMap::new();
        for n in ["a", "b", "h2"] {
            let p = if n == "h2" {
                ir::UpstreamProtocol::H2c
            } else {
                ir::UpstreamProtocol::Http1
            };
            clusters.insert(n.to_string(), cluster(n, p));
        }
        let w = |c: &str, weight| ir::WeightedBackend {
            weight,
            ..backend(c)
        };
        // One backend, or one Service port twice: nothing to merge.
        assert_eq!(
            merge_split(
                Kind::HTTPRoute,
                &key(),
                0,
                &[w("a", 1), w("a", 3)],
                &mut clusters
            )
            .expect("ok"),
            None
        );
        // Two backends: one cluster made for the rule, weights kept.
        let name = merge_split(
            Kind::HTTPRoute,
            &key(),
            4,
            &[w("a", 70), w("b", 30)],
            &mut clusters,
        )
        .expect("ok")
        .expect("merged");
        assert_eq!(name, "httproute/ns/r/4/session");
        let c = &clusters[&name];
        let weights: Vec<(String, u32)> = c
            .split
            .iter()
            .map(|m| (m.service.name.clone(), m.weight))
            .collect();
        assert_eq!(weights, vec![("a".to_string(), 70), ("b".to_string(), 30)]);
        assert_eq!(c.split[0].endpoints, clusters["a"].endpoints);
        // What cannot share one cluster is refused.
        let unresolved = ir::WeightedBackend {
            cluster: None,
            ..backend("x")
        };
        let mut filtered = w("b", 1);
        filtered.request_headers.set.push(("x".into(), "y".into()));
        for bad in [
            vec![w("a", 1), unresolved],
            vec![w("a", 1), filtered],
            vec![w("a", 1), w("h2", 1)],
        ] {
            let (reason, msg) =
                merge_split(Kind::HTTPRoute, &key(), 0, &bad, &mut clusters).expect_err("refused");
            assert_eq!(reason, reasons::UNSUPPORTED_VALUE);
            assert!(msg.starts_with("sessionPersistence: "), "{msg}");
        }
    }

    #[test]
    fn cookie_paths_follow_the_match() {
        use ir::PathMatch::*;
        for (m, want) in [
            (Prefix("/".into()), "/"),
            (Prefix("/app".into()), "/app"),
            (Prefix("/app/".into()), "/app"),
            (Exact("/app/login".into()), "/app/login"),
            (Regex("/p1/p2/.*/p3".into()), "/p1/p2"),
            (Regex("/p1/p2/x.*".into()), "/p1/p2"),
            (Regex("/a/?b".into()), "/"),
            (Regex(".*".into()), "/"),
            (Regex("/(?:svc)/(?:M)".into()), "/"),
            (Regex("/svc/[^/]+".into()), "/svc"),
        ] {
            assert_eq!(cookie_path(&m), want, "{m:?}");
        }
    }
}
