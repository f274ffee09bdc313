use std::sync::Arc;

use super::*;
use crate::provider::addresses::AddressPool;

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: switchyard}
spec: {controllerName: switchyard.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: q}
spec:
  gatewayClassName: switchyard
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: svc, namespace: q}
spec: {ports: [{port: 80}]}
"#;

fn route(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: q, generation: 1}}\n\
         spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [{name}.test]\n  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: svc, port: 80}}]\n"
    )
}

fn inputs(routes: &[(&str, &str)]) -> Inputs {
    let mut text = BASE.to_string();
    for (n, p) in routes {
        text.push_str("---\n");
        text.push_str(&route(n, p));
    }
    let mut i = crate::testing::inputs(&text);
    if let Ok(mut p) = AddressPool::parse("127.0.0.1/32") {
        p.assign(&mut i);
    }
    i
}

fn src(name: &str) -> Src {
    (Kind::HTTPRoute, ObjKey::new("q", name))
}

fn changed(names: &[&str]) -> Changes {
    let mut c = Changes::default();
    for n in names {
        c.record(Kind::HTTPRoute, &ObjKey::new("q", *n));
    }
    c
}

/// Translates (through the quarantine, as the engine does) and records
/// the model as `version`.
fn step(q: &mut Quarantine, i: &Inputs, c: &Changes, version: u64) -> crate::translate::Output {
    q.observe(i, c, version);
    let mut c = c.clone();
    let view = q.apply(i, &mut c);
    let out = crate::translate::translate(&view);
    q.record(version, Arc::new(out.model.clone()));
    out
}

fn rds_names(m: &Model) -> Vec<String> {
    let mut out = Vec::new();
    for gw in m.gateways.values() {
        for l in &gw.listeners {
            for c in &l.chains {
                if let App::Http(rc) = &c.app {
                    out.push(rc.name.clone());
                }
            }
        }
    }
    out
}

fn path_of(i: &Inputs, name: &str) -> Option<String> {
    let r = i.http_routes.get(&ObjKey::new("q", name))?;
    let rules = r.spec.rules.as_ref()?;
    let m = rules.first()?.matches.as_ref()?.first()?;
    m.path.as_ref()?.value.clone()
}

fn accepted(st: &StatusSet, name: &str) -> Vec<(String, String, String)> {
    match st.get(Kind::HTTPRoute, &ObjKey::new("q", name)) {
        Some(ObjectStatus::Route { parents }) => parents
            .iter()
            .flat_map(|p| p.conditions.iter())
            .filter(|c| c.type_ == types::ACCEPTED)
            .map(|c| {
                (
                    c.status.to_string(),
                    c.reason.to_string(),
                    c.message.to_string(),
                )
            })
            .collect(),
        _ => vec![],
    }
}

#[test]
fn provenance_of_a_route_configuration_is_every_route_on_it() {
    let i = inputs(&[("a", "/a"), ("b", "/b")]);
    let m = crate::translate::translate(&i).model;
    let names = rds_names(&m);
    assert_eq!(names.len(), 1, "{names:?}");
    let c = contributors(&m, &names);
    assert_eq!(c, [src("a"), src("b")].into_iter().collect());
    assert!(contributors(&m, &["nothing".into()]).is_empty());
}

#[test]
fn an_edited_route_is_served_at_its_last_accepted_content_and_others_keep_updating() {
    let mut q = Quarantine::default();
    let v1 = inputs(&[("ea", "/a"), ("eb", "/b")]);
    step(&mut q, &v1, &Changes::everything(), 1);
    q.on_ack(1);
    // Route ea is edited; Envoy rejects the route table of version 2.
    let v2 = inputs(&[("ea", "/a-new"), ("eb", "/b")]);
    let out = step(&mut q, &v2, &changed(&["ea"]), 2);
    let rds = rds_names(&out.model);
    let verdict = q.on_nack("envoy-1", 2, 1, "bad header", &rds, &out.status);
    assert_eq!(verdict.quarantined, vec![src("ea")]);
    let labels = ["HTTPRoute", "q", "ea"];
    let rejected = &crate::metrics::catalogue::XDS_REJECTED_OBJECTS;
    assert_eq!(rejected.get(labels), Some(1.0));
    // The rebuild serves ea at its content of version 1.
    let mut c = Changes::default();
    let view = q.apply(&v2, &mut c);
    assert_eq!(path_of(&view, "ea").as_deref(), Some("/a"));
    assert!(c.objects.contains(&src("ea")));
    let status = q.overlay_status(&crate::translate::translate(&view).status);
    let acc = accepted(&status, "ea");
    assert!(!acc.is_empty());
    for (s, reason, msg) in acc {
        assert_eq!((s.as_str(), reason.as_str()), ("False", "UnsupportedValue"));
        assert!(
            msg.contains("bad header") && msg.contains("served at its last accepted version"),
            "{msg}"
        );
    }
    // Another route's edit flows while ea is quarantined.
    let v3 = inputs(&[("ea", "/a-new"), ("eb", "/b-new")]);
    step(&mut q, &v3, &changed(&["eb"]), 3);
    let view = q.apply(&v3, &mut Changes::default());
    assert_eq!(path_of(&view, "eb").as_deref(), Some("/b-new"));
    assert_eq!(path_of(&view, "ea").as_deref(), Some("/a"));
    // A repeated NACK of the same version quarantines nothing more (no loop).
    assert!(q
        .on_nack("envoy-1", 2, 1, "bad header", &rds, &out.status)
        .quarantined
        .is_empty());
    // Editing ea lifts the quarantine; its new content is tried.
    let v4 = inputs(&[("ea", "/a-fixed"), ("eb", "/b-new")]);
    step(&mut q, &v4, &changed(&["ea"]), 4);
    assert!(q.is_empty());
    assert_eq!(rejected.get(labels), None);
    let view = q.apply(&v4, &mut Changes::default());
    assert!(matches!(view, std::borrow::Cow::Borrowed(_)));
}

#[test]
fn a_new_route_is_left_out_and_a_nack_no_change_explains_quarantines_nothing() {
    let mut q = Quarantine::default();
    let v1 = inputs(&[("nb", "/b")]);
    step(&mut q, &v1, &Changes::everything(), 1);
    q.on_ack(1);
    let v2 = inputs(&[("na", "/a"), ("nb", "/b")]);
    let out = step(&mut q, &v2, &changed(&["na"]), 2);
    let rds = rds_names(&out.model);
    let verdict = q.on_nack("envoy-1", 2, 1, "boom", &rds, &out.status);
    assert_eq!(verdict.quarantined, vec![src("na")]);
    let e = &q.entries()[&src("na")];
    assert!(!e.served() && e.message().ends_with("not served"));
    let view = q.apply(&v2, &mut Changes::default());
    assert!(!view.http_routes.contains_key(&ObjKey::new("q", "na")));
    // Its status still says why (it is not in the translated status any more).
    let status = q.overlay_status(&crate::translate::translate(&view).status);
    assert!(accepted(&status, "na")
        .iter()
        .all(|(s, _, m)| s == "False" && m.contains("boom")));
    // A rebuild NACKed again, with nothing else changed since the node's
    // last ACK, quarantines nothing more: it stops, loudly.
    q.on_ack(2);
    let out3 = step(&mut q, &v2, &Changes::default(), 3);
    assert!(q
        .on_nack(
            "envoy-1",
            3,
            2,
            "boom",
            &rds_names(&out3.model),
            &out3.status
        )
        .quarantined
        .is_empty());
}

#[test]
fn the_gateway_alone_is_never_quarantined() {
    let mut q = Quarantine::default();
    let v1 = inputs(&[]);
    let out = step(&mut q, &v1, &Changes::everything(), 1);
    let names: Vec<String> = out
        .model
        .gateways
        .values()
        .flat_map(|g| g.listeners.iter().map(|l| l.name.clone()))
        .collect();
    assert!(!names.is_empty());
    assert!(q
        .on_nack("envoy-1", 1, 0, "port in use", &names, &out.status)
        .quarantined
        .is_empty());
}
