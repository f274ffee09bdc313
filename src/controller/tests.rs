use super::*;
use serde_json::json;

#[test]
fn event_notes_fit_the_api_limit_on_a_char_boundary() {
    let long = "é".repeat(700); // 1,400 bytes
    let note = event_note(&long);
    assert!(note.len() <= 1024, "{}", note.len());
    assert!(note.ends_with('…'));
    assert_eq!(event_note("short"), "short");
}

#[test]
fn reference_names_the_object_of_a_watch_event() {
    let v = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}});
    let r = reference_of(Kind::HTTPRoute, &v);
    assert_eq!(
        r.api_version.as_deref(),
        Some("gateway.networking.k8s.io/v1")
    );
    assert_eq!(r.kind.as_deref(), Some("HTTPRoute"));
    assert_eq!(
        (r.namespace.as_deref(), r.name.as_deref()),
        (Some("ns"), Some("r"))
    );
    assert_eq!(r.uid.as_deref(), Some("u-1"));
}

fn httproute(name: &str, generation: i64, hostnames: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": "ns", "generation": generation,
                     "resourceVersion": format!("{generation}")},
        "spec": {"parentRefs": [{"name": "gw"}], "hostnames": hostnames}})
}

fn hostnames(w: &World, name: &str) -> Vec<String> {
    let r = &w.inputs.http_routes[&ObjKey::new("ns", name)];
    serde_json::to_value(&r.spec.hostnames)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

#[test]
fn an_undecodable_version_keeps_the_last_good_one() {
    let mut w = World::new("me");
    let key = (Kind::HTTPRoute, ObjKey::new("ns", "r"));
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("r", 1, json!(["a.example"])),
    ));
    assert_eq!(hostnames(&w, "r"), ["a.example"]);
    // Generation 2 does not decode (a number where strings belong).
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("r", 2, json!([5])),
    ));
    assert_eq!(
        hostnames(&w, "r"),
        ["a.example"],
        "the last good version stays"
    );
    let bad = &w.undecodable[&key];
    assert_eq!(bad.generation, 2);
    assert!(
        bad.error.contains("ns/r") && bad.error.contains("hostnames"),
        "{}",
        bad.error
    );
    assert_eq!(w.invalid.len(), 1, "one Warning Event");
    assert_eq!(
        w.raw[&key]["metadata"]["generation"], 2,
        "status goes onto the newest copy"
    );
    // A good generation 3 replaces both.
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("r", 3, json!(["c.example"])),
    ));
    assert_eq!(hostnames(&w, "r"), ["c.example"]);
    assert!(w.undecodable.is_empty());
}

#[test]
fn a_relist_forgets_what_the_api_server_no_longer_has() {
    let mut w = World::new("me");
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("good", 1, json!(["g.example"])),
    ));
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("gone", 1, json!(["x.example"])),
    ));
    // Never decoded, then deleted while the watch was down.
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("bad", 1, json!([7])),
    ));
    let bad = (Kind::HTTPRoute, ObjKey::new("ns", "bad"));
    assert!(w.raw.contains_key(&bad) && w.undecodable.contains_key(&bad));
    assert!(!w.inputs.http_routes.contains_key(&bad.1));
    w.changes = Changes::default();
    w.apply(Change::Relisted(
        Kind::HTTPRoute,
        vec![httproute("good", 1, json!(["g.example"]))],
    ));
    assert!(
        !w.raw.contains_key(&bad),
        "no status patch for a deleted object"
    );
    assert!(w.undecodable.is_empty());
    assert_eq!(
        w.inputs.keys_of(Kind::HTTPRoute),
        [ObjKey::new("ns", "good")]
    );
    assert_eq!(
        w.raw.keys().cloned().collect::<Vec<_>>(),
        [(Kind::HTTPRoute, ObjKey::new("ns", "good"))]
    );
    assert!(w.synced.contains(&Kind::HTTPRoute));
    // A deletion event forgets an undecodable object too.
    w.apply(Change::Applied(
        Kind::HTTPRoute,
        httproute("bad", 1, json!([7])),
    ));
    w.apply(Change::Deleted(
        Kind::HTTPRoute,
        httproute("bad", 1, json!([7])),
    ));
    assert!(!w.raw.contains_key(&bad) && w.undecodable.is_empty());
}

#[test]
fn an_unchanged_relist_changes_nothing() {
    let mut w = World::new("me");
    let objs = || {
        vec![
            httproute("a", 1, json!(["a.example"])),
            httproute("b", 4, json!(["b.example"])),
        ]
    };
    w.apply(Change::Relisted(Kind::HTTPRoute, objs()));
    w.changes = Changes::default();
    // The API server came back: the same objects are listed again.
    w.apply(Change::Relisted(Kind::HTTPRoute, objs()));
    assert!(w.changes.is_empty(), "nothing to translate or write");
}

#[test]
fn undecodable_objects_are_marked_in_their_status() {
    use crate::status::{Condition, ObjectStatus, ParentRef, RouteParentStatus};
    let key = ObjKey::new("ns", "r");
    let mut set = StatusSet::default();
    let parent = RouteParentStatus {
        parent_ref: ParentRef {
            group: crate::inputs::GATEWAY_GROUP.into(),
            kind: "Gateway".into(),
            namespace: None,
            name: "gw".into(),
            section_name: None,
            port: None,
        },
        controller_name: "me".into(),
        conditions: vec![
            Condition::new("Accepted", true, "Accepted", "ok", 1),
            Condition::new("ResolvedRefs", true, "ResolvedRefs", "ok", 1),
        ],
    };
    set.objects.insert(
        (Kind::HTTPRoute, key.clone()),
        ObjectStatus::Route {
            parents: vec![parent],
        },
    );
    let mut bad = BTreeMap::new();
    bad.insert(
        (Kind::HTTPRoute, key.clone()),
        Undecodable {
            generation: 2,
            error: "HTTPRoute ns/r: field `spec.hostnames[0]`: invalid type".into(),
        },
    );
    // An undecodable object without a good version has no status: untouched.
    bad.insert(
        (Kind::HTTPRoute, ObjKey::new("ns", "never-good")),
        Undecodable {
            generation: 1,
            error: "x".into(),
        },
    );
    mark_undecodable(&mut set, &bad);
    let ObjectStatus::Route { parents } = &set.objects[&(Kind::HTTPRoute, key)] else {
        panic!("route status");
    };
    let acc = &parents[0].conditions[0];
    assert_eq!(
        (acc.type_.as_ref(), acc.status.as_ref(), acc.reason.as_ref()),
        ("Accepted", "False", "UnsupportedValue")
    );
    assert_eq!(acc.observed_generation, 2);
    assert!(
        acc.message.contains("spec.hostnames[0]") && acc.message.contains("generation 1"),
        "{}",
        acc.message
    );
    assert_eq!(
        parents[0].conditions[1].observed_generation, 1,
        "other conditions untouched"
    );
    assert_eq!(set.objects.len(), 1);
}

#[test]
fn programmed_now_reads_the_api_servers_copy() {
    let key = ObjKey::new("ns", "gw");
    let mut raw = RawObjects::new();
    assert!(!programmed_now(&raw, &key));
    raw.insert(
        (Kind::Gateway, key.clone()),
        json!({"status": {"conditions": [
            {"type": "Accepted", "status": "True"},
            {"type": "Programmed", "status": "False"}]}}),
    );
    assert!(!programmed_now(&raw, &key));
    raw.insert(
        (Kind::Gateway, key.clone()),
        json!({"status": {"conditions": [{"type": "Programmed", "status": "True"}]}}),
    );
    assert!(programmed_now(&raw, &key));
}
