use super::*;
use crate::xds::ResourceSet;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::google::protobuf::{value::Kind, ListValue, Struct, Value};

fn cluster(name: &str, ms: u64) -> Resource {
    let c = Cluster {
        name: name.into(),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 0,
            nanos: (ms * 1_000_000) as i32,
        }),
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn cla(name: &str, policy_weight: u32) -> Resource {
    let c = ClusterLoadAssignment {
        cluster_name: name.into(),
        policy: Some(
            envoy_types::pb::envoy::config::endpoint::v3::cluster_load_assignment::Policy {
                overprovisioning_factor: Some(envoy_types::pb::google::protobuf::UInt32Value {
                    value: policy_weight,
                }),
                ..Default::default()
            },
        ),
        ..Default::default()
    };
    Resource::new(name, &c)
}

fn snap(gws: &[(&str, Vec<(&'static str, Resource)>)]) -> Snapshot {
    let mut s = Snapshot::default();
    for (gw, rs) in gws {
        let mut set = ResourceSet::default();
        for (t, r) in rs {
            set.insert(t, r.clone());
        }
        s.gateways.insert(gw.to_string(), set);
    }
    s
}

#[test]
fn identical_snapshot_keeps_version() {
    let cache = Cache::new();
    let s = snap(&[("ns/a", vec![(type_url::CLUSTER, cluster("c1", 100))])]);
    let mut rx = cache.watch_full();
    rx.borrow_and_update();
    let v1 = cache.set_snapshot(s.clone());
    assert_eq!(v1, 1);
    assert!(rx.has_changed().unwrap_or(false));
    rx.borrow_and_update();
    assert_eq!(cache.set_snapshot(s), v1);
    assert!(
        !rx.has_changed().unwrap_or(true),
        "identical snapshot must not wake streams"
    );
    let v2 = cache.set_snapshot(snap(&[(
        "ns/a",
        vec![(type_url::CLUSTER, cluster("c1", 200))],
    )]));
    assert_eq!(v2, 2);
}

#[test]
fn endpoints_override_by_name_and_wake_only_eds() {
    let cache = Cache::new();
    cache.set_snapshot(snap(&[
        (
            "ns/a",
            vec![
                (type_url::CLUSTER, cluster("c1", 100)),
                (type_url::ENDPOINT, cla("c1", 100)),
            ],
        ),
        ("ns/b", vec![(type_url::ENDPOINT, cla("c1", 100))]),
    ]));
    let mut full = cache.watch_full();
    full.borrow_and_update();
    let mut eds = cache.watch_endpoints();
    eds.borrow_and_update();
    let mut m = BTreeMap::new();
    m.insert("c1".to_string(), cla("c1", 150));
    m.insert("unknown".to_string(), cla("unknown", 150));
    cache.set_endpoints(m.clone());
    let st = cache.current();
    assert_eq!(st.version, 2);
    assert_eq!(
        st.all.get(type_url::ENDPOINT)["c1"].version,
        cla("c1", 150).version
    );
    assert!(!st.all.get(type_url::ENDPOINT).contains_key("unknown"));
    assert_eq!(
        st.view(&sel(&["ns/b"])).get(type_url::ENDPOINT)["c1"].version,
        cla("c1", 150).version
    );
    assert!(eds.has_changed().unwrap_or(false));
    assert!(!full.has_changed().unwrap_or(true));
    // Same endpoints again: no new version.
    eds.borrow_and_update();
    cache.set_endpoints(m);
    assert_eq!(cache.current().version, 2);
    assert!(!eds.has_changed().unwrap_or(true));
}

#[test]
fn union_keeps_first_on_conflict() {
    let cache = Cache::new();
    cache.set_snapshot(snap(&[
        ("ns/a", vec![(type_url::CLUSTER, cluster("c1", 100))]),
        (
            "ns/b",
            vec![
                (type_url::CLUSTER, cluster("c1", 200)),
                (type_url::CLUSTER, cluster("c2", 100)),
            ],
        ),
    ]));
    let st = cache.current();
    let all = st.view(&Selection::default());
    assert_eq!(
        all.get(type_url::CLUSTER)["c1"].version,
        cluster("c1", 100).version
    );
    assert_eq!(all.get(type_url::CLUSTER).len(), 2);
    let b = st.view(&sel(&["ns/b"]));
    assert_eq!(
        b.get(type_url::CLUSTER)["c1"].version,
        cluster("c1", 200).version
    );
    assert!(st
        .view(&sel(&["ns/missing"]))
        .get(type_url::CLUSTER)
        .is_empty());
}

fn sel(gws: &[&str]) -> Selection {
    Selection {
        requested: gws.iter().map(|g| g.to_string()).collect(),
        entitled: None,
    }
}

#[test]
fn entitlement_bounds_what_metadata_asks_for() {
    let mut st = State::default();
    for gw in ["ns/a", "ns/b", "other/c"] {
        st.gateways.insert(gw.to_string(), View::default());
    }
    let mut e = Entitlement::default();
    e.gateways.insert("ns/a".into());
    e.namespaces.insert("other".into());
    let only = |requested: &[&str]| Selection {
        requested: requested.iter().map(|g| g.to_string()).collect(),
        entitled: Some(Arc::new(e.clone())),
    };
    let served = |s: &Selection| -> Vec<&str> {
        st.gateways
            .keys()
            .map(|k| k.as_str())
            .filter(|g| s.serves(g))
            .collect()
    };
    assert_eq!(served(&only(&[])), ["ns/a", "other/c"]);
    assert_eq!(
        served(&only(&["ns/b", "ns/a"])),
        ["ns/a"],
        "asking cannot widen"
    );
    assert!(served(&only(&["ns/b"])).is_empty());
    assert!(!only(&[]).everything());
    assert_eq!(
        served(&sel(&[])),
        ["ns/a", "ns/b", "other/c"],
        "plaintext: metadata decides"
    );
}

#[test]
fn selection_parses_string_and_list() {
    let s = |v: Kind| Struct {
        fields: [("gateways".to_string(), Value { kind: Some(v) })]
            .into_iter()
            .collect(),
    };
    assert_eq!(
        requested_from_metadata(Some(&s(Kind::StringValue(" ns/a, ns/b ,,".into())))),
        vec!["ns/a".to_string(), "ns/b".to_string()]
    );
    let list = ListValue {
        values: vec![
            Value {
                kind: Some(Kind::StringValue("ns/b".into())),
            },
            Value {
                kind: Some(Kind::NumberValue(1.0)),
            },
        ],
    };
    assert_eq!(
        requested_from_metadata(Some(&s(Kind::ListValue(list)))),
        vec!["ns/b".to_string()]
    );
    assert!(requested_from_metadata(None).is_empty());
    assert!(requested_from_metadata(Some(&s(Kind::StringValue(String::new())))).is_empty());
}

#[test]
fn acked_everywhere_tracks_registered_nodes() {
    let cache = Cache::new();
    assert!(cache.acked_everywhere(5));
    let h = cache.register("n1", "c", Protocol::Sotw, &Selection::default());
    assert!(
        !cache.acked_everywhere(1),
        "a node with no subscription is not done"
    );
    h.subscribed(type_url::CLUSTER);
    h.acked(type_url::CLUSTER, 3, "1");
    assert!(cache.acked_everywhere(3));
    assert!(!cache.acked_everywhere(4));
    h.nacked(
        type_url::CLUSTER,
        Nack {
            version: 4,
            nonce: "2".into(),
            error: "bad".into(),
            resource_names: vec![],
            at_unix_ms: 0,
        },
    );
    let st = cache.node_states();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].types[type_url::CLUSTER].acked_version, 3);
    assert_eq!(
        st[0].types[type_url::CLUSTER]
            .last_nack
            .as_ref()
            .map(|n| n.version),
        Some(4)
    );
    drop(h);
    assert!(cache.node_states().is_empty());
}
