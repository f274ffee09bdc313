use super::*;
use crate::status::{ListenerStatus, RouteParentStatus};
use std::borrow::Cow;

fn cond(t: &'static str, ok: bool, reason: &'static str) -> Condition {
    Condition::new(t, ok, reason, "", 1)
}

fn parent(ns: Option<&str>, gw: &str, section: Option<&str>, port: Option<i32>) -> ParentRef {
    ParentRef {
        group: Cow::Borrowed("gateway.networking.k8s.io"),
        kind: Cow::Borrowed("Gateway"),
        namespace: ns.map(str::to_string),
        name: gw.to_string(),
        section_name: section.map(str::to_string),
        port,
    }
}

fn route(parents: Vec<(ParentRef, Vec<Condition>)>) -> ObjectStatus {
    ObjectStatus::Route {
        parents: parents
            .into_iter()
            .map(|(parent_ref, conditions)| RouteParentStatus {
                parent_ref,
                controller_name: "x".into(),
                conditions,
            })
            .collect(),
    }
}

fn gateway(programmed: bool, listeners: Vec<(&str, Vec<Condition>)>) -> ObjectStatus {
    ObjectStatus::Gateway {
        addresses: vec![],
        conditions: vec![
            cond("Accepted", true, "Accepted"),
            cond(
                "Programmed",
                programmed,
                if programmed { "Programmed" } else { "Pending" },
            ),
        ],
        listeners: listeners
            .into_iter()
            .map(|(name, conditions)| ListenerStatus {
                name: name.into(),
                supported_kinds: vec![],
                attached_routes: 0,
                conditions,
            })
            .collect(),
        attached_listener_sets: 0,
    }
}

fn series(
    kind: &str,
    ns: &str,
    name: &str,
    parent: &str,
    t: &str,
    s: &str,
    r: &str,
) -> Option<f64> {
    cat::STATUS_CONDITION.get([kind, ns, name, parent, t, s, r])
}

/// Every series of the gauge that names namespace `ns` (tests use their own).
fn series_in(ns: &str) -> usize {
    crate::metrics::render()
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_status_condition{")
                && l.contains(&format!("namespace=\"{ns}\""))
        })
        .count()
}

#[test]
fn route_condition_flips_without_stale_series() {
    let ns = "sm-flip";
    let key = ObjKey::new(ns, "r1");
    let p = parent(None, "gw", Some("http"), Some(80));
    let ok = route(vec![(
        p.clone(),
        vec![
            cond("Accepted", true, "Accepted"),
            cond("ResolvedRefs", true, "ResolvedRefs"),
        ],
    )]);
    let mut m = StatusMetrics::new();
    let mut set = StatusSet::default();
    set.objects.insert((Kind::HTTPRoute, key.clone()), ok);
    assert_eq!(m.update(&set), 1);
    let parent_l = "sm-flip/gw/http:80";
    assert_eq!(
        series(
            "HTTPRoute",
            ns,
            "r1",
            parent_l,
            "ResolvedRefs",
            "True",
            "ResolvedRefs"
        ),
        Some(1.0)
    );
    assert_eq!(
        m.routes[&Kind::HTTPRoute],
        RouteCounts {
            total: 1,
            accepted: 1,
            unresolved: 0
        }
    );
    // Unchanged status: nothing to do.
    assert_eq!(m.update(&set), 0);

    let bad = route(vec![(
        p,
        vec![
            cond("Accepted", true, "Accepted"),
            cond("ResolvedRefs", false, "BackendNotFound"),
        ],
    )]);
    set.objects.insert((Kind::HTTPRoute, key.clone()), bad);
    assert_eq!(m.update(&set), 1);
    assert_eq!(
        series(
            "HTTPRoute",
            ns,
            "r1",
            parent_l,
            "ResolvedRefs",
            "True",
            "ResolvedRefs"
        ),
        None,
        "stale series left"
    );
    assert_eq!(
        series(
            "HTTPRoute",
            ns,
            "r1",
            parent_l,
            "ResolvedRefs",
            "False",
            "BackendNotFound"
        ),
        Some(1.0)
    );
    assert_eq!(series_in(ns), 2);
    assert_eq!(
        m.routes[&Kind::HTTPRoute],
        RouteCounts {
            total: 1,
            accepted: 1,
            unresolved: 1
        }
    );

    // Deleted: every series goes, totals back to zero.
    set.objects.remove(&(Kind::HTTPRoute, key));
    assert_eq!(m.update(&set), 1);
    assert_eq!(series_in(ns), 0);
    assert_eq!(m.routes[&Kind::HTTPRoute], RouteCounts::default());
}

#[test]
fn gateway_listener_and_totals() {
    let ns = "sm-gw";
    let mut set = StatusSet::default();
    let good = vec![
        cond("Accepted", true, "Accepted"),
        cond("ResolvedRefs", true, "ResolvedRefs"),
        cond("Conflicted", false, "NoConflicts"),
    ];
    let conflicted = vec![
        cond("Accepted", true, "Accepted"),
        cond("Conflicted", true, "HostnameConflict"),
    ];
    let badref = vec![
        cond("Accepted", true, "Accepted"),
        cond("ResolvedRefs", false, "InvalidCertificateRef"),
    ];
    set.objects.insert(
        (Kind::Gateway, ObjKey::new(ns, "a")),
        gateway(true, vec![("http", good.clone()), ("https", badref)]),
    );
    set.objects.insert(
        (Kind::Gateway, ObjKey::new(ns, "b")),
        gateway(false, vec![("x", conflicted)]),
    );
    set.objects.insert(
        (Kind::GRPCRoute, ObjKey::new(ns, "g")),
        route(vec![
            (
                parent(None, "a", None, None),
                vec![cond("Accepted", true, "Accepted")],
            ),
            (
                parent(Some("other"), "b", None, None),
                vec![cond("Accepted", false, "NotAllowedByListeners")],
            ),
        ]),
    );
    let mut m = StatusMetrics::new();
    m.update(&set);
    assert_eq!((m.gateways, m.programmed, m.listeners_invalid), (2, 1, 2));
    assert_eq!(
        m.routes[&Kind::GRPCRoute],
        RouteCounts {
            total: 1,
            accepted: 0,
            unresolved: 0
        }
    );
    assert_eq!(
        series(
            "Listener",
            ns,
            "a/https",
            "",
            "ResolvedRefs",
            "False",
            "InvalidCertificateRef"
        ),
        Some(1.0)
    );
    assert_eq!(
        series("Gateway", ns, "b", "", "Programmed", "False", "Pending"),
        Some(1.0)
    );
    assert_eq!(
        series(
            "GRPCRoute",
            ns,
            "g",
            "other/b",
            "Accepted",
            "False",
            "NotAllowedByListeners"
        ),
        Some(1.0)
    );
    assert_eq!(
        series(
            "GRPCRoute",
            ns,
            "g",
            "sm-gw/a",
            "Accepted",
            "True",
            "Accepted"
        ),
        Some(1.0)
    );

    // b becomes programmed and its listener valid: totals follow.
    set.objects.insert(
        (Kind::Gateway, ObjKey::new(ns, "b")),
        gateway(true, vec![("x", good)]),
    );
    m.update(&set);
    assert_eq!((m.gateways, m.programmed, m.listeners_invalid), (2, 2, 1));
    assert_eq!(
        series("Gateway", ns, "b", "", "Programmed", "False", "Pending"),
        None
    );
    assert_eq!(
        series(
            "Listener",
            ns,
            "b/x",
            "",
            "Conflicted",
            "True",
            "HostnameConflict"
        ),
        None
    );

    m.clear();
    assert_eq!((m.gateways, m.programmed, m.listeners_invalid), (0, 0, 0));
    assert_eq!(series_in(ns), 0);
}

#[test]
fn escapes_label_values() {
    let ns = "sm-esc";
    let mut set = StatusSet::default();
    let mut c = cond("Accepted", false, "Invalid");
    c.reason = Cow::Owned("we\"ird\\reason\nx".into());
    set.objects.insert(
        (Kind::GatewayClass, ObjKey::new(ns, "gc")),
        ObjectStatus::Conditions {
            conditions: vec![c],
        },
    );
    let mut m = StatusMetrics::new();
    m.update(&set);
    let text = crate::metrics::render();
    assert!(
        text.contains(r#"switchyard_status_condition{kind="GatewayClass",namespace="sm-esc",name="gc",parent="",type="Accepted",status="False",reason="we\"ird\\reason\nx"} 1"#),
        "{text}"
    );
    m.clear();
}

/// 5,000 synthetic routes: the first export, then one route edited. The edit
/// rebuilds that route's series only (`update` returns 1). Timings are
/// printed for the record (`cargo test --release --lib scale -- --nocapture`).
#[test]
fn scale_5000_routes_one_edit_touches_one_object() {
    use crate::synthetic;
    let (n, nss, gws) = (5_000, 50, 2);
    let mut inputs = synthetic::inputs(n, nss, gws);
    let mut t = crate::translate::Translator::default();
    t.update(&inputs, &crate::inputs::Changes::everything());
    let mut m = StatusMetrics::new();
    let t0 = std::time::Instant::now();
    let first = m.update(t.status());
    let first_t = t0.elapsed();
    assert_eq!(first, t.status().objects.len());
    assert_eq!(m.routes[&Kind::HTTPRoute].total, n as u64);
    assert_eq!(m.routes[&Kind::HTTPRoute].accepted, n as u64);

    // Route 7 now points at a Service that does not exist: ResolvedRefs=False.
    let mut edited = synthetic::route(7, nss, gws, 1);
    edited["spec"]["rules"][0]["backendRefs"][0]["name"] = "missing".into();
    let key = inputs
        .insert_value(edited)
        .expect("synthetic route decodes");
    let mut changes = crate::inputs::Changes::default();
    changes.record(key.0, &key.1);
    let t1 = std::time::Instant::now();
    t.update(&inputs, &changes);
    let translate_t = t1.elapsed();
    let t2 = std::time::Instant::now();
    let changed = m.update(t.status());
    let edit_t = t2.elapsed();
    assert_eq!(changed, 1);
    assert_eq!(m.routes[&Kind::HTTPRoute].unresolved, 1);
    let t3 = std::time::Instant::now();
    assert_eq!(m.update(t.status()), 0);
    let idle_t = t3.elapsed();
    println!(
        "status metrics at {n} routes: first export {first_t:?}; after an incremental translation \
         ({translate_t:?}) of one route: {edit_t:?}; unchanged: {idle_t:?}"
    );
    m.clear();
}
