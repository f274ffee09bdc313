//! The drift comparison on real renderings: our side is what
//! `GetNodeConfig` returns (camelCase canonical JSON), Envoy's side is a
//! `/config_dump` shaped as Envoy 1.40 prints it (snake_case, wrappers).

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;

fn cluster_ours(name: &str, timeout: &str) -> Value {
    json!({"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
           "name": name, "type": "EDS", "connectTimeout": timeout,
           "edsClusterConfig": {"edsConfig": {"ads": {}, "resourceApiVersion": "V3"}}})
}

fn cluster_envoy(name: &str, timeout: &str) -> Value {
    json!({"version_info": "7", "last_updated": "2026-11-29T22:00:00Z",
           "cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                       "name": name, "type": "EDS", "connect_timeout": timeout,
                       "eds_cluster_config": {"eds_config": {"ads": {}, "resource_api_version": "V3"}}}})
}

fn listener_ours(name: &str, port: u32) -> Value {
    json!({"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": name,
           "address": {"socketAddress": {"address": "127.0.0.1", "portValue": port}}})
}

fn dump(clusters: Vec<Value>, listeners: Vec<Value>, endpoints: Vec<Value>) -> Value {
    json!({"configs": [
        {"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": {}},
        {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
         "static_clusters": [{"cluster": {"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster", "name": "xds_cluster"}}],
         "dynamic_active_clusters": clusters},
        {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": listeners},
        {"@type": "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
         "static_endpoint_configs": [{"endpoint_config": {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "cluster_name": "xds_cluster"}}],
         "dynamic_endpoint_configs": endpoints},
    ]})
}

fn envoy_listener(name: &str, port: u32, state: &str) -> Value {
    json!({"name": name, state: {"version_info": "3", "listener": {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener", "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}})
}

fn pushed(entries: &[(&str, Value)]) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut m: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for t in [type_url::CLUSTER, type_url::LISTENER, type_url::ENDPOINT] {
        m.entry(t.to_string()).or_default();
    }
    for (t, v) in entries {
        let name = v
            .get("name")
            .or_else(|| v.get("clusterName"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        m.entry(t.to_string()).or_default().insert(name, v.clone());
    }
    m
}

fn cla_ours(name: &str, ports: &[u32]) -> Value {
    let eps: Vec<Value> = ports
        .iter()
        .map(|p| json!({"endpoint": {"address": {"socketAddress": {"address": "127.0.0.1", "portValue": p}}}}))
        .collect();
    json!({"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
           "clusterName": name, "endpoints": [{"lbEndpoints": eps}]})
}

/// As Envoy rebuilds it: health, weights and policy added, order its own.
fn cla_envoy(name: &str, ports: &[u32]) -> Value {
    let eps: Vec<Value> = ports
        .iter()
        .rev()
        .map(|p| json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}},
                                     "health_check_config": {}},
                        "health_status": "HEALTHY", "load_balancing_weight": 1}))
        .collect();
    json!({"endpoint_config": {"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
           "cluster_name": name, "endpoints": [{"locality": {}, "lb_endpoints": eps}],
           "policy": {"overprovisioning_factor": 140}}})
}

fn base() -> (BTreeMap<String, BTreeMap<String, Value>>, Value) {
    let ours = pushed(&[
        (type_url::CLUSTER, cluster_ours("c1", "5s")),
        (type_url::LISTENER, listener_ours("l1", 8080)),
        (type_url::ENDPOINT, cla_ours("c1", &[9001, 9002])),
    ]);
    let theirs = dump(
        vec![cluster_envoy("c1", "5s")],
        vec![envoy_listener("l1", 8080, "active_state")],
        vec![cla_envoy("c1", &[9001, 9002])],
    );
    (ours, theirs)
}

#[test]
fn identical_config_has_no_drift() {
    let (ours, theirs) = base();
    let r = compare(&ours, &theirs);
    assert!(!r.has_drift(), "{r:#?}");
    // The bootstrap's own cluster and its endpoints are listed, not drift.
    assert_eq!(r.static_resources.len(), 2);
    assert!(r.static_resources.iter().all(|s| s.name == "xds_cluster"));
}

#[test]
fn a_changed_field_is_named() {
    let (ours, _) = base();
    let theirs = dump(
        vec![cluster_envoy("c1", "1s")],
        vec![envoy_listener("l1", 8080, "active_state")],
        vec![cla_envoy("c1", &[9001, 9002])],
    );
    let r = compare(&ours, &theirs);
    assert!(r.has_drift());
    let [d] = r.different.as_slice() else {
        panic!("one difference expected: {r:#?}")
    };
    assert_eq!((d.id.type_.as_str(), d.id.name.as_str()), ("cds", "c1"));
    assert_eq!(d.paths, vec![".connectTimeout".to_string()]);
    assert!(r.missing_in_envoy.is_empty() && r.extra_in_envoy.is_empty());
}

#[test]
fn missing_and_extra_resources() {
    let (ours, _) = base();
    let theirs = dump(
        vec![cluster_envoy("c1", "5s"), cluster_envoy("old", "5s")],
        vec![],
        vec![cla_envoy("c1", &[9001, 9002])],
    );
    let r = compare(&ours, &theirs);
    assert_eq!(
        r.missing_in_envoy,
        vec![ResourceId {
            type_: "lds".into(),
            name: "l1".into()
        }]
    );
    assert_eq!(
        r.extra_in_envoy,
        vec![ResourceId {
            type_: "cds".into(),
            name: "old".into()
        }]
    );
    assert!(r.different.is_empty());
}

#[test]
fn endpoints_compare_as_address_sets_and_warming_is_drift() {
    let (ours, _) = base();
    let theirs = dump(
        vec![cluster_envoy("c1", "5s")],
        vec![envoy_listener("l1", 8080, "warming_state")],
        vec![cla_envoy("c1", &[9001])],
    );
    let r = compare(&ours, &theirs);
    let ids: Vec<(&str, &str, Option<&str>)> = r
        .different
        .iter()
        .map(|d| {
            (
                d.id.type_.as_str(),
                d.id.name.as_str(),
                d.envoy_state.as_deref(),
            )
        })
        .collect();
    assert_eq!(ids, [("eds", "c1", None), ("lds", "l1", Some("warming"))]);
}

#[test]
fn private_keys_are_never_compared() {
    let secret = |key: Value| {
        json!({"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "s",
               "tlsCertificate": {"certificateChain": {"inlineString": "CERT"}, "privateKey": key}})
    };
    let mut ours = pushed(&[]);
    ours.entry(type_url::SECRET.to_string())
        .or_default()
        .insert("s".into(), secret(json!({"inlineString": "[redacted]"})));
    let theirs = json!({"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
        "dynamic_active_secrets": [{"name": "s", "version_info": "1", "secret": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", "name": "s",
            "tls_certificate": {"certificate_chain": {"inline_string": "CERT"},
                                "private_key": {"inline_bytes": "W3JlZGFjdGVkXQ=="}}}}]}]});
    let r = compare(&ours, &theirs);
    assert!(!r.has_drift(), "{r:#?}");
}

#[test]
fn diff_paths_lists_leaves() {
    let mut out = Vec::new();
    diff_paths(
        &json!({"a": {"b": 1, "c": [1, 2]}, "d": 1}),
        &json!({"a": {"b": 2, "c": [1, 3]}, "e": 1}),
        "",
        &mut out,
        10,
    );
    assert_eq!(out, [".a.b", ".a.c[1]", ".d", ".e"]);
}

#[test]
fn chunked_bodies_are_decoded() {
    let body = b"4\r\nWiki\r\n6;x=y\r\npedia \r\n0\r\n\r\n";
    assert_eq!(
        super::super::dechunk(body).as_deref(),
        Some(&b"Wikipedia "[..])
    );
    assert_eq!(super::super::dechunk(b"zz\r\n"), None);
    assert_eq!(super::super::dechunk(b"5\r\nab"), None);
}

/// A table served in shards: scopes and shard tables are expected in Envoy
/// only while it runs that table's scopes; the one table only while it does
/// not. Scopes are compared like any resource.
#[test]
fn shards_are_expected_only_where_envoy_runs_the_tables_scopes() {
    const RC: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    const SC: &str = "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
    let scope_ours = |name: &str| {
        json!({"@type": SC, "name": name, "routeConfigurationName": name,
               "key": {"fragments": [{"stringKey": name}]}})
    };
    let scope_envoy = |name: &str, table: &str| {
        json!({"@type": SC, "name": name, "route_configuration_name": table,
               "key": {"fragments": [{"string_key": name}]}})
    };
    let rc_ours = |name: &str| json!({"@type": RC, "name": name});
    let rc_envoy =
        |name: &str| json!({"version_info": "1", "route_config": {"@type": RC, "name": name}});
    let with = |routes: Vec<Value>, scopes: Vec<Value>| {
        let mut d = dump(vec![], vec![], vec![]);
        let configs = d["configs"].as_array_mut().expect("configs");
        configs.push(
            json!({"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
                            "dynamic_route_configs": routes}),
        );
        configs.push(json!({"@type": "type.googleapis.com/envoy.admin.v3.ScopedRoutesConfigDump",
                            "dynamic_scoped_route_configs": [{"name": "gw/80~256shards", "scoped_route_configs": scopes}]}));
        d
    };
    let ours = pushed(&[
        (type_url::ROUTE, rc_ours("gw/80")),
        (type_url::ROUTE, rc_ours("gw/80~shard0of256")),
        (type_url::ROUTE, rc_ours("gw/80~shard1of256")),
        (type_url::SCOPED_ROUTE, scope_ours("gw/80~shard0of256")),
        (type_url::SCOPED_ROUTE, scope_ours("gw/80~shard1of256")),
    ]);
    // Below the threshold: Envoy runs the one table; the shards kept warm are not drift.
    let r = compare(&ours, &with(vec![rc_envoy("gw/80")], vec![]));
    assert!(!r.has_drift(), "{r:?}");
    // Above it: Envoy runs the scopes and shards, not the one table. One
    // shard missing and one scope pointing elsewhere are drift.
    let r = compare(
        &ours,
        &with(
            vec![rc_envoy("gw/80~shard0of256")],
            vec![
                scope_envoy("gw/80~shard0of256", "gw/80~shard0of256"),
                scope_envoy("gw/80~shard1of256", "gw/80~shard0of256"),
            ],
        ),
    );
    assert_eq!(
        r.missing_in_envoy,
        vec![ResourceId {
            type_: "rds".into(),
            name: "gw/80~shard1of256".into()
        }]
    );
    assert_eq!(r.different.len(), 1, "{:?}", r.different);
    assert_eq!(r.different[0].id.name, "gw/80~shard1of256");
    assert_eq!(r.different[0].id.type_, "srds");
    assert!(r.extra_in_envoy.is_empty(), "{:?}", r.extra_in_envoy);
}
