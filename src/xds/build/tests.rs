//! The builder on translated synthetic configurations: splicing, rewrites, shards.
use super::*;

#[test]
fn prefix_rewrite_patterns_follow_segment_semantics() {
    let re = |m: &str, r: &str, input: &str| {
        let rw = prefix_rewrite(m, r);
        let pat = rw.pattern.expect("pattern").regex;
        // Envoy uses RE2 substitution syntax (\1); translate for the regex crate.
        let sub = rw.substitution.replace("\\1", "${1}");
        regex::Regex::new(&pat)
            .expect("valid")
            .replace(input, sub.as_str())
            .to_string()
    };
    assert_eq!(re("/api", "/", "/api/x"), "/x");
    assert_eq!(re("/api", "/", "/api"), "/");
    assert_eq!(re("/api", "/v2", "/api/x"), "/v2/x");
    assert_eq!(re("/api", "/v2", "/api"), "/v2");
    assert_eq!(re("/", "/v2", "/x"), "/v2/x");
    assert_eq!(re("/", "/", "/x"), "/x");
}

#[test]
fn spliced_route_configuration_decodes_to_the_built_message() {
    let out = crate::translate::translate(&crate::synthetic::inputs(30, 3, 1));
    let gw = out.model.gateways.values().next().expect("a gateway");
    let Some(ir::App::Http(route_config)) = gw.listeners[0].chains.first().map(|c| &c.app) else {
        panic!("an HTTP listener");
    };
    assert_eq!(route_config.virtual_hosts.len(), 30);
    let r = route_config_resource(route_config);
    let decoded: route::RouteConfiguration =
        prost::Message::decode(r.any.value.as_slice()).expect("valid protobuf");
    assert_eq!(decoded, build_route_config(route_config));
    // Same IR, same version; one virtual host changed, another version.
    assert_eq!(route_config_resource(route_config).version, r.version);
    let mut other = route_config.clone();
    let mut vh = (*other.virtual_hosts[3]).clone();
    vh.domains = vec!["changed.example.com".into()];
    other.virtual_hosts[3] = Arc::new(vh);
    assert_ne!(route_config_resource(&other).version, r.version);
}

#[test]
fn a_table_above_the_threshold_is_served_in_shards_and_keeps_them_above_half() {
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;
    let model =
        |routes: usize| crate::translate::translate(&crate::synthetic::inputs(routes, 3, 1)).model;
    let build = |routes: usize, threshold: usize| {
        Builder::with_options(Options {
            access_log: false,
            route_shards_above: threshold,
        })
        .build(&model(routes))
    };
    let routes_of = |snap: &Snapshot, t: &str| -> Vec<String> {
        snap.gateways
            .values()
            .flat_map(|s| s.get(t).into_iter().flat_map(|m| m.keys().cloned()))
            .collect()
    };
    let hcm_of = |snap: &Snapshot| -> hcm::HttpConnectionManager {
        let set = snap.gateways.values().next().expect("a gateway");
        let l = set.get(type_url::LISTENER).expect("listeners");
        let l: envoy_types::pb::envoy::config::listener::v3::Listener =
            prost::Message::decode(l.values().next().expect("one").any.value.as_slice())
                .expect("listener");
        let f = l.filter_chains[0].filters[0].config_type.clone();
        let Some(envoy_types::pb::envoy::config::listener::v3::filter::ConfigType::TypedConfig(a)) =
            f
        else {
            panic!("typed config");
        };
        prost::Message::decode(a.value.as_slice()).expect("hcm")
    };
    // 40 routes → one virtual host each: at or below 60, one table.
    let below = build(40, 100);
    assert_eq!(routes_of(&below, type_url::ROUTE).len(), 1);
    assert!(routes_of(&below, type_url::SCOPED_ROUTE).is_empty());
    // Above half the threshold: the one table, plus the shards kept warm.
    let band = build(40, 60);
    let names = routes_of(&band, type_url::ROUTE);
    assert_eq!(names.len(), 1 + shard::SHARDS as usize);
    assert_eq!(
        routes_of(&band, type_url::SCOPED_ROUTE).len(),
        shard::SHARDS as usize
    );
    assert!(matches!(
        hcm_of(&band).route_specifier,
        Some(hcm::http_connection_manager::RouteSpecifier::Rds(_))
    ));
    // Above the threshold: only the shards, and the listener uses scopes
    // with the key filter first.
    let above = build(40, 30);
    let names = routes_of(&above, type_url::ROUTE);
    assert_eq!(names.len(), shard::SHARDS as usize);
    assert!(
        names.iter().all(|n| shard::parse_shard_name(n).is_some()),
        "{names:?}"
    );
    let m = hcm_of(&above);
    assert!(matches!(
        m.route_specifier,
        Some(hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(
            _
        ))
    ));
    assert_eq!(m.http_filters[0].name, "switchyard.route_shard");
    // Every virtual host is in some shard, and the shards drop the key header.
    let set = above.gateways.values().next().expect("a gateway");
    let mut hosts = 0;
    for r in set.get(type_url::ROUTE).expect("routes").values() {
        let rc: route::RouteConfiguration =
            prost::Message::decode(r.any.value.as_slice()).expect("route configuration");
        assert_eq!(
            rc.request_headers_to_remove,
            vec![shard::SHARD_HEADER.to_string()]
        );
        hosts += rc.virtual_hosts.len();
    }
    assert_eq!(hosts, band_hosts(&band));
}

fn band_hosts(snap: &Snapshot) -> usize {
    let set = snap.gateways.values().next().expect("a gateway");
    set.get(type_url::ROUTE)
        .expect("routes")
        .values()
        .filter(|r| shard::parse_shard_name(&r.name).is_none())
        .map(|r| {
            let rc: route::RouteConfiguration =
                prost::Message::decode(r.any.value.as_slice()).expect("route configuration");
            rc.virtual_hosts.len()
        })
        .sum()
}
