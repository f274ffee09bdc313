use super::*;
use crate::translate::Translator;

const WORLD: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: rg-app}
spec:
  gatewayClassName: sy
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: v1
kind: Service
metadata: {name: shared, namespace: rg-backend}
spec: {ports: [{port: 8080}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross, namespace: rg-app}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: shared, namespace: rg-backend, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: local, namespace: rg-app}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: shared, namespace: rg-backend, port: 8080}]}]
"#;

const GRANT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: let-app-in, namespace: rg-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: rg-app}]
  to: [{group: "", kind: Service}]
"#;

#[test]
fn grant_removal_and_restore_are_counted_with_the_routes_they_affect() {
    let mut inputs = crate::testing::inputs(&format!("{WORLD}---{GRANT}"));
    let mut t = Translator::default();
    let mut tracker = GrantTracker::default();
    let up = t.update(&inputs, &Changes::everything());
    let first = tracker.observe(&inputs, &Changes::everything());
    assert_eq!(first, GrantChanges::default(), "start-up is not a change");
    assert!(trust_changes(&up, t.status()).iter().all(|c| c.permitted));

    let removed_before = cat::REFERENCE_GRANT_CHANGES.get(["removed"]);
    let grant = ObjKey::new("rg-backend", "let-app-in");
    inputs.remove(Kind::ReferenceGrant, &grant);
    let mut changes = Changes::default();
    changes.record(Kind::ReferenceGrant, &grant);
    let up = t.update(&inputs, &changes);
    let g = tracker.observe(&inputs, &changes);
    assert_eq!(g.removed, vec![grant.clone()]);
    assert!(g.added.is_empty() && g.any);
    // Counters are process-wide and tests run in parallel: only this test touches grants.
    assert!(cat::REFERENCE_GRANT_CHANGES.get(["removed"]) >= removed_before + 1.0);
    let cut = trust_changes(&up, t.status());
    let mut routes: Vec<&str> = cut.iter().map(|c| c.route.name.as_str()).collect();
    routes.sort();
    assert_eq!(routes, ["cross", "local"]);
    assert!(
        cut.iter()
            .all(|c| !c.permitted && c.message.contains("rg-backend")),
        "{cut:?}"
    );
    let affected_before = cat::REFERENCE_GRANT_ROUTES_AFFECTED.get(["removed"]);
    record_effects(&g, &cut);
    assert!(cat::REFERENCE_GRANT_ROUTES_AFFECTED.get(["removed"]) >= affected_before + 2.0);

    // Restored: the same two routes are let in again.
    for d in crate::provider::file::parse_documents(GRANT).expect("grant parses") {
        inputs.insert_value(d).expect("grant decodes");
    }
    let up = t.update(&inputs, &changes);
    let g = tracker.observe(&inputs, &changes);
    assert_eq!(g.added, vec![grant]);
    let back = trust_changes(&up, t.status());
    assert_eq!(back.len(), 2);
    assert!(back.iter().all(|c| c.permitted));
    assert_eq!(names(&g.added), "rg-backend/let-app-in");
}

#[test]
fn no_grant_change_counts_nothing() {
    let inputs = crate::testing::inputs(WORLD);
    let mut tracker = GrantTracker::default();
    tracker.observe(&inputs, &Changes::everything());
    let mut changes = Changes::default();
    changes.record(Kind::HTTPRoute, &ObjKey::new("rg-app", "cross"));
    let g = tracker.observe(&inputs, &changes);
    assert_eq!(g, GrantChanges::default());
}
