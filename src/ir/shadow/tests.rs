use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::ir::{HeaderMatch, Route, RouteSource};
use crate::provider::addresses::AddressPool;

const BASE: &str = "\
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
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: s, namespace: default}
spec: {ports: [{port: 80}]}
";

/// An HTTPRoute on `gw`; `rules` is YAML of the `rules:` list (4 spaces in).
fn route(name: &str, created: &str, hostnames: &str, rules: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n\
         metadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: {hostnames}\n  rules:\n{rules}"
    )
}

fn model(docs: &[String]) -> Model {
    crate::testing::model(&format!("{BASE}{}", docs.concat()), "127.0.0.0/24")
}

/// (route name, rule) of every shadowed rule.
fn found(m: &Model) -> Vec<(String, usize)> {
    shadowed(m)
        .into_iter()
        .map(|s| (s.rule.route.name.clone(), s.rule.rule))
        .collect()
}

const OLD: &str = "2026-01-01T00:00:00Z";
const NEW: &str = "2026-02-01T00:00:00Z";

#[test]
fn identical_matches_in_two_routes() {
    let a = route(
        "a",
        OLD,
        "[x.test]",
        "  - matches: [{path: {type: PathPrefix, value: /x}, headers: [{name: x-a, value: \"1\"}, {name: x-b, value: \"2\"}]}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    // Same conditions in another order and case, the prefix with a trailing
    // slash (the translator trims it): the same requests.
    let b = route(
        "b",
        NEW,
        "[x.test]",
        "  - matches: [{path: {type: PathPrefix, value: /x/}, headers: [{name: X-B, value: \"2\"}, {name: x-a, value: \"1\"}]}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /y}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let m = model(&[a, b]);
    let all = shadowed(&m);
    assert_eq!(found(&m), vec![("b".to_string(), 0)]);
    let s = &all[0];
    assert_eq!(s.rule.kind, "HTTPRoute");
    assert_eq!(s.covers.len(), 1);
    let c = &s.covers[0];
    assert_eq!(
        (
            c.match_index,
            c.by.route.name.as_str(),
            c.by.rule,
            c.by.match_index
        ),
        (0, "a", 0, 0)
    );
    assert_eq!(c.hostname, "x.test");
    assert_eq!(
        s.note(),
        "rule 0 (match 0) can never match: HTTPRoute default/a rule 0 match 0 (hostname x.test) always wins"
    );
}

#[test]
fn a_rule_with_one_reachable_match_is_not_reported() {
    let a = route(
        "a",
        OLD,
        "[x.test]",
        "  - matches: [{path: {type: Exact, value: /x}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let b = route(
        "b",
        NEW,
        "[x.test]",
        "  - matches: [{path: {type: Exact, value: /x}}, {path: {type: Exact, value: /z}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    assert_eq!(found(&model(&[a.clone(), b])), vec![]);
    // Both of its matches covered: reported, one cover per match.
    let a = route(
        "a",
        OLD,
        "[x.test]",
        "  - matches: [{path: {type: Exact, value: /x}}, {path: {type: Exact, value: /y}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let b = route(
        "b",
        NEW,
        "[x.test]",
        "  - matches: [{path: {type: Exact, value: /y}}, {path: {type: Exact, value: /x}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let m = model(&[a, b]);
    let all = shadowed(&m);
    assert_eq!(found(&m), vec![("b".to_string(), 0)]);
    let matches: Vec<(usize, usize)> = all[0]
        .covers
        .iter()
        .map(|c| (c.match_index, c.by.match_index))
        .collect();
    assert_eq!(matches, vec![(0, 1), (1, 0)]);
    assert!(
        all[0]
            .note()
            .starts_with("rule 0 can never match: for match 0, HTTPRoute default/a rule 0 match 1"),
        "{}",
        all[0].note()
    );
}

#[test]
fn a_rule_reachable_under_one_of_its_hostnames_is_not_reported() {
    let a = route(
        "a",
        OLD,
        "[a.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let b = route(
        "b",
        NEW,
        "[a.test, b.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    assert_eq!(found(&model(&[a, b.clone()])), vec![]);
    // Covered under both hostnames: reported, with a cover for each.
    let a = route(
        "a",
        OLD,
        "[b.test, a.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let m = model(&[a, b]);
    let all = shadowed(&m);
    assert_eq!(found(&m), vec![("b".to_string(), 0)]);
    let hosts: Vec<&str> = all[0].covers.iter().map(|c| c.hostname.as_str()).collect();
    assert_eq!(hosts, vec!["a.test", "b.test"]);
}

#[test]
fn more_specific_matches_and_other_methods_are_reachable() {
    let a = route(
        "a",
        OLD,
        "[x.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}, method: GET}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    // Exact and regex sort before any prefix; more conditions before fewer;
    // POST is not GET: none of these can be shadowed by `a`.
    let b = route(
        "b",
        NEW,
        "[x.test]",
        "  - matches: [{path: {type: Exact, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: RegularExpression, value: \"/p.*\"}}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /p}, method: POST}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /p}, method: GET, headers: [{name: h, value: v}]}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /p}, method: GET}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let m = model(&[a, b]);
    // Only the two identical ones.
    assert_eq!(found(&m), vec![("b".to_string(), 4), ("b".to_string(), 5)]);
}

#[test]
fn rules_of_one_route_can_shadow_each_other_but_matches_of_one_rule_do_not() {
    let a = route(
        "a",
        OLD,
        "[x.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}}, {path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n  - matches: [{path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let m = model(&[a]);
    assert_eq!(found(&m), vec![("a".to_string(), 1)]);
}

/// A virtual host whose entries have these matchers, in this order: entry
/// `i` is rule `i` of one route (built by the translator, matchers replaced).
fn vhost(matchers: Vec<RouteMatch>) -> VirtualHost {
    let n = matchers.len();
    assert!(n <= 10);
    let rules: String = (0..n)
        .map(|i| {
            format!(
                "  - matches: [{{path: {{type: Exact, value: /r{i}}}}}]\n    backendRefs: [{{name: s, port: 80}}]\n"
            )
        })
        .collect();
    let m = model(&[route("r", OLD, "[x.test]", &rules)]);
    let mut vh = virtual_hosts(&m)
        .find(|v| v.domains == ["x.test"])
        .map(|v| (**v).clone())
        .expect("virtual host");
    assert_eq!(vh.routes.len(), n);
    for (r, m) in vh.routes.iter_mut().zip(matchers) {
        *r = Arc::new(Route {
            matcher: m,
            ..(**r).clone()
        });
    }
    vh
}

fn path(p: PathMatch) -> RouteMatch {
    RouteMatch {
        path: p,
        headers: vec![],
        query_params: vec![],
        method: None,
    }
}
fn exact(s: &str) -> RouteMatch {
    path(PathMatch::Exact(s.into()))
}
fn prefix(s: &str) -> RouteMatch {
    path(PathMatch::Prefix(s.into()))
}
fn regex(s: &str) -> RouteMatch {
    path(PathMatch::Regex(s.into()))
}
fn hdr(name: &str, v: StringMatch) -> HeaderMatch {
    HeaderMatch {
        name: name.into(),
        value: v,
    }
}
fn ex(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

#[test]
fn covering_paths_on_segment_boundaries() {
    let cases: Vec<(RouteMatch, RouteMatch, bool)> = vec![
        (prefix("/"), exact("/anything"), true),
        (prefix("/"), prefix("/a"), true),
        (prefix("/"), regex("/a[0-9]+"), true),
        (prefix("/a"), exact("/a"), true),
        (prefix("/a"), exact("/a/"), true),
        (prefix("/a"), exact("/a/b"), true),
        (prefix("/a"), prefix("/a"), true),
        (prefix("/a"), prefix("/a/b"), true),
        (prefix("/a"), exact("/ab"), false),
        (prefix("/a"), prefix("/ab"), false),
        (prefix("/a/b"), prefix("/a"), false),
        (prefix("/a"), regex("/a/.*"), false),
        (exact("/a"), exact("/a"), true),
        (exact("/a"), exact("/a/"), false),
        (exact("/a"), prefix("/a"), false),
        (regex("/a.*"), regex("/a.*"), true),
        (regex("/a.*"), exact("/abc"), false),
        (regex(".*"), prefix("/"), false),
        (regex("/a.*"), regex("/a.+"), false),
    ];
    for (e, l, want) in cases {
        assert_eq!(covers(&e, &l), want, "{:?} covers {:?}", e.path, l.path);
        // Both scans agree with the definition.
        let vh = vhost(vec![e.clone(), l.clone()]);
        for scan in [scan_pairs, scan_indexed] {
            assert_eq!(
                scan(&vh),
                vec![None, want.then_some(0)],
                "{:?} then {:?}",
                e.path,
                l.path
            );
        }
    }
}

#[test]
fn covering_conditions_are_subsets() {
    let with =
        |p: RouteMatch, h: Vec<HeaderMatch>, q: Vec<HeaderMatch>, m: Option<&str>| RouteMatch {
            headers: h,
            query_params: q,
            method: m.map(str::to_string),
            ..p
        };
    let x1 = || hdr("x", ex("1"));
    let cases: Vec<(RouteMatch, RouteMatch, bool)> = vec![
        // Header superset.
        (
            with(prefix("/"), vec![x1()], vec![], None),
            with(
                exact("/a"),
                vec![hdr("y", ex("2")), hdr("X", ex("1"))],
                vec![],
                None,
            ),
            true,
        ),
        (
            with(prefix("/"), vec![x1()], vec![], None),
            with(exact("/a"), vec![hdr("y", ex("2"))], vec![], None),
            false,
        ),
        (
            with(prefix("/"), vec![x1()], vec![], None),
            with(exact("/a"), vec![hdr("x", ex("2"))], vec![], None),
            false,
        ),
        (
            with(
                prefix("/"),
                vec![hdr("x", StringMatch::Regex("1".into()))],
                vec![],
                None,
            ),
            with(exact("/a"), vec![x1()], vec![], None),
            false,
        ),
        // Query parameters: names are case-sensitive.
        (
            with(prefix("/"), vec![], vec![hdr("q", ex("1"))], None),
            with(
                exact("/a"),
                vec![],
                vec![hdr("q", ex("1")), hdr("r", ex("1"))],
                None,
            ),
            true,
        ),
        (
            with(prefix("/"), vec![], vec![hdr("q", ex("1"))], None),
            with(exact("/a"), vec![], vec![hdr("Q", ex("1"))], None),
            false,
        ),
        (
            with(prefix("/"), vec![], vec![hdr("q", ex("1"))], None),
            with(exact("/a"), vec![hdr("q", ex("1"))], vec![], None),
            false,
        ),
        // Method.
        (
            prefix("/"),
            with(exact("/a"), vec![], vec![], Some("GET")),
            true,
        ),
        (
            with(prefix("/"), vec![], vec![], Some("GET")),
            with(exact("/a"), vec![], vec![], Some("GET")),
            true,
        ),
        (
            with(prefix("/"), vec![], vec![], Some("GET")),
            with(exact("/a"), vec![], vec![], Some("POST")),
            false,
        ),
        (
            with(prefix("/"), vec![], vec![], Some("GET")),
            exact("/a"),
            false,
        ),
    ];
    for (e, l, want) in cases {
        assert_eq!(covers(&e, &l), want, "{e:?} covers {l:?}");
        let vh = vhost(vec![e.clone(), l.clone()]);
        for scan in [scan_pairs, scan_indexed] {
            assert_eq!(scan(&vh), vec![None, want.then_some(0)], "{e:?} then {l:?}");
        }
    }
}

#[test]
fn the_earliest_cover_is_reported_and_never_a_match_of_the_same_rule() {
    let vh = vhost(vec![
        exact("/b"),
        prefix("/a/b"),
        prefix("/a"),
        exact("/a/b/c"),
    ]);
    for scan in [scan_pairs, scan_indexed] {
        assert_eq!(scan(&vh), vec![None, None, None, Some(1)]);
    }
    // Entry 1 made a second match of rule 0: rule 0's own matches never
    // cover each other, so entry 1 is reachable; entry 2 is covered by 0.
    let mut vh = vhost(vec![prefix("/a"), prefix("/a"), prefix("/a")]);
    let first = vh.routes[0].source.clone();
    vh.routes[1] = Arc::new(Route {
        source: RouteSource {
            match_index: 1,
            ..first
        },
        ..(*vh.routes[1]).clone()
    });
    for scan in [scan_pairs, scan_indexed] {
        assert_eq!(scan(&vh), vec![None, None, Some(0)]);
    }
}

/// Detection over 5,000 entries of one virtual host (run with --nocapture
/// for the time; not a timed assertion).
#[test]
fn five_thousand_entries_in_one_virtual_host() {
    let template = vhost(vec![exact("/x")]);
    let mut vh = template.clone();
    let base = template.routes[0].clone();
    let mut routes = Vec::new();
    for i in 0..5000usize {
        let m = match i % 5 {
            0 => exact(&format!("/api/v{}/items/{}", i % 7, i)),
            1 => regex(&format!("/re/{}/[0-9]+", i % 50)),
            2 => prefix(&format!("/svc/{}/{}", i % 100, i % 3)),
            3 => RouteMatch {
                headers: vec![
                    hdr("x-tenant", ex(&(i % 40).to_string())),
                    hdr("x-env", ex("prod")),
                ],
                method: Some("GET".into()),
                ..prefix(&format!("/t/{}", i % 10))
            },
            _ => prefix(&format!("/p/{i}")),
        };
        let mut r = (*base).clone();
        r.source.rule = i;
        r.matcher = m;
        routes.push(Arc::new(r));
    }
    // Precedence order as the translator would sort it is not needed here:
    // the scan takes any order.
    vh.routes = routes;
    vh.route_domains = vec![("x.test".into(), 5000)];
    let t0 = Instant::now();
    let got = scan(&vh);
    let elapsed = t0.elapsed();
    let n = verdict(&vh).iter().filter(|(_, c)| c.is_some()).count();
    // Duplicates: regexes repeat every 50 entries (same i % 50 → i ≡ 1 mod 5,
    // 1000 of them over 50 texts), prefixes /svc repeat, headers repeat.
    let expected = got.iter().filter(|c| c.is_some()).count();
    assert_eq!(n, expected);
    assert!(n > 0);
    // Cross-check a sample against the definition.
    for i in (0..5000).step_by(97) {
        let brute = (0..i).find(|&c| covers(&vh.routes[c].matcher, &vh.routes[i].matcher));
        assert_eq!(got[i], brute, "entry {i}");
    }
    println!("shadow detection: 5000 entries in one virtual host, {n} shadowed, {elapsed:?}");
}

/// Random virtual hosts from small pools of paths and conditions (so that
/// covers are frequent): the indexed scan finds exactly the earliest cover
/// the definition gives, rule by rule.
#[test]
fn the_index_agrees_with_the_definition_on_random_virtual_hosts() {
    let template = vhost(vec![exact("/x")]);
    let base = template.routes[0].clone();
    let mut seed: u64 = 0x5eed_5eed;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) % n) as usize
    };
    let paths = ["/", "/a", "/a/b", "/ab", "/a/b/c", "/b"];
    for round in 0..40 {
        let mut vh = template.clone();
        let mut routes = Vec::new();
        for i in 0..150usize {
            let p = paths[next(paths.len() as u64)];
            let mut m = match next(4) {
                0 => exact(p),
                1 => regex(p),
                _ => prefix(p),
            };
            for _ in 0..next(3) {
                let h = hdr(["x", "y", "Z"][next(3)], ex(["1", "2"][next(2)]));
                if !m.headers.iter().any(|x| x.name == h.name) {
                    m.headers.push(h);
                }
            }
            if next(3) == 0 {
                m.query_params.push(hdr(["q", "Q"][next(2)], ex("1")));
            }
            m.method = [None, Some("GET".to_string()), Some("PUT".to_string())][next(3)].clone();
            let mut r = (*base).clone();
            // A few rules have several matches.
            r.source.rule = if i > 0 && next(4) == 0 { i - 1 } else { i };
            r.source.match_index = i;
            r.matcher = m;
            routes.push(Arc::new(r));
        }
        vh.routes = routes;
        let got = scan(&vh);
        assert_eq!(got, scan_pairs(&vh));
        for (i, g) in got.iter().enumerate() {
            let brute = (0..i).find(|&c| {
                !same_rule(&vh, c, i) && covers(&vh.routes[c].matcher, &vh.routes[i].matcher)
            });
            assert_eq!(*g, brute, "round {round}, entry {i}");
        }
    }
}

/// Detection over the synthetic 5,000-route configuration of the
/// benchmarks (every route its own hostname): `cargo test --release --lib
/// synthetic_scale -- --ignored --nocapture` prints the time.
#[test]
#[ignore = "timing, run on demand"]
fn synthetic_scale() {
    let inputs = crate::synthetic::inputs(5000, 50, 2);
    let model = crate::translate::translate(&inputs).model;
    let best = |f: &mut dyn FnMut()| {
        (0..5)
            .map(|_| {
                let t0 = Instant::now();
                f();
                t0.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let mut n = 0;
    let full = best(&mut || n = shadowed(&model).len());
    let mut det = Detector::default();
    det.update(&model);
    let unchanged = best(&mut || {
        det.update(&model);
    });
    println!(
        "shadow detection: synthetic 5000 routes ({} virtual hosts), {n} shadowed: \
         from scratch {full:?}, nothing new {unchanged:?} (best of 5)",
        virtual_hosts(&model).count()
    );
}

/// The detector across incremental translations (virtual hosts a change did
/// not touch are shared values it does not examine again) gives what a
/// detection from scratch gives.
#[test]
fn the_detector_follows_incremental_translations() {
    use crate::inputs::{Changes, Kind, ObjKey};
    let a = route(
        "a",
        OLD,
        "[x.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let b = |path: &str| {
        route(
            "b",
            NEW,
            "[x.test, y.test]",
            &format!("  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: s, port: 80}}]\n"),
        )
    };
    let other = route(
        "c",
        OLD,
        "[y.test, z.test]",
        "  - matches: [{path: {type: PathPrefix, value: /p}}]\n    backendRefs: [{name: s, port: 80}]\n",
    );
    let text = format!("{BASE}{a}{}{other}", b("/p"));
    let mut inputs = crate::testing::inputs(&text);
    AddressPool::parse("127.0.0.0/24")
        .expect("pool")
        .assign(&mut inputs);
    let mut t = crate::translate::Translator::default();
    let mut det = Detector::default();
    let up = t.update(&inputs, &Changes::everything());
    let got = det.update(&up.model);
    assert_eq!(got, shadowed(&up.model));
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].rule.route.name, "b");
    for (path, want) in [("/q", 0), ("/p/", 1), ("/q", 0)] {
        let doc = crate::provider::file::parse_documents(&b(path)).expect("yaml");
        for v in doc {
            inputs.insert_value(v).expect("decode");
        }
        let mut changes = Changes::default();
        changes.record(Kind::HTTPRoute, &ObjKey::new("default", "b"));
        let up = t.update(&inputs, &changes);
        assert!(!up.full, "an incremental translation");
        let got = det.update(&up.model);
        assert_eq!(got, shadowed(&up.model), "after {path}");
        assert_eq!(got.len(), want, "after {path}: {got:?}");
        assert_eq!(det.vhosts.len(), virtual_hosts(&up.model).count());
    }
}
