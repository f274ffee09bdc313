//! Route tables split into shards, so that a route change makes Envoy
//! re-read a hundred or so virtual hosts instead of every one of the port.
//!
//! Envoy rebuilds a whole RouteConfiguration on every update of it (each
//! virtual host decoded, validated and compiled again): at 10,000 virtual
//! hosts one change costs ~0.2 s of Envoy CPU, at 50,000 ~1 s
//! (`bench/notes/propagation-at-scale.md`). A port whose table holds more
//! than [`Options::route_shards_above`](super::Options) virtual hosts is
//! served through scoped routes (SRDS) instead, in K shards:
//!
//! - A Lua filter, first in the connection manager's chain, hashes the
//!   request's host (lower-cased, port removed: what Envoy's virtual host
//!   selection looks at) modulo K, writes the shard's name into
//!   [`SHARD_HEADER`] and clears the route cache, so the connection manager
//!   selects the scope again with that key.
//! - One `ScopedRouteConfiguration` per shard, keyed and named like the
//!   shard's RouteConfiguration: `<table>~shard<i>of<K>`.
//! - Shard `i` holds the virtual hosts of the exact hostnames that hash to
//!   `i`, plus every wildcard and catch-all virtual host, so Envoy's own
//!   selection inside the shard (exact, then longest wildcard suffix, then
//!   `*`) answers what the single table would.
//!
//! An edit of an exact hostname's routes changes one shard; an edit of a
//! wildcard or catch-all host changes every shard (they all hold it).
//!
//! K is fixed ([`SHARDS`]): changing it would re-point scopes at other
//! tables, and Envoy applies a scope update before the table it names has
//! arrived (it answers 404 meanwhile). So the only listener change sharding
//! makes is crossing the threshold. Crossing up, Envoy warms the new
//! connection manager with all its scopes and shards before it takes
//! connections. Crossing down, the draining connection manager keeps its
//! scopes and shards: they are served for every table above half the
//! threshold ([`serves_shards`]), sharded or not, so a table that swings back
//! above the threshold finds them current (a draining listener's scope
//! subscription is reused, and would not wait for re-created tables).
//! `e2e/tests/test_route_shards.py` checks that no request is lost in
//! either direction.

use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::lua::v3 as lua;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3 as hcm;

use std::sync::Arc;

use crate::ir;

/// The request header the Lua filter writes the scope key into. The shards'
/// route tables remove it, so backends never see it.
pub const SHARD_HEADER: &str = "x-switchyard-route-shard";

/// The shards of a sharded table: at 10,000 virtual hosts ~40 each, at
/// 50,000 ~200 (about what Envoy re-reads per change at 200 routes).
pub const SHARDS: u32 = 256;

/// Default of [`super::Options::route_shards_above`].
pub const DEFAULT_THRESHOLD: usize = 2000;

/// The most wildcard and catch-all virtual hosts a sharded table may have:
/// every shard holds each of them, so Envoy would hold 256 copies of each.
/// A table with more stays one table (its edits cost what they cost without
/// shards).
pub const MAX_SHARED_VHOSTS: usize = 32;

/// What decides a table's shape: (virtual hosts that count toward the
/// threshold, whether the table may be sharded). Only exact hosts count,
/// since only they are split; a table with more than
/// [`MAX_SHARED_VHOSTS`] wildcard and catch-all hosts is never sharded.
pub fn size(rc: &ir::RouteConfig) -> (usize, bool) {
    let shared = rc
        .virtual_hosts
        .iter()
        .filter(|v| in_every_shard(v))
        .count();
    (rc.virtual_hosts.len() - shared, shared <= MAX_SHARED_VHOSTS)
}

/// The shard count of `rc` with `threshold` ([`shard_count`] of its
/// [`size`]).
pub fn shards_of(rc: &ir::RouteConfig, threshold: usize) -> u32 {
    match size(rc) {
        (exact, true) => shard_count(exact, threshold),
        (_, false) => 1,
    }
}

/// Whether `rc`'s scopes and shards are served ([`serves_shards`] of its
/// [`size`]).
pub fn serves_shards_of(rc: &ir::RouteConfig, threshold: usize) -> bool {
    match size(rc) {
        (exact, true) => serves_shards(exact, threshold),
        (_, false) => false,
    }
}

/// The shard count of a table of `vhosts` virtual hosts: 1 (served as one
/// table) at or below `threshold` (0: never sharded), else [`SHARDS`].
pub fn shard_count(vhosts: usize, threshold: usize) -> u32 {
    if threshold == 0 || vhosts <= threshold {
        1
    } else {
        SHARDS
    }
}

/// Whether the scopes and shards of the table are served: above half the
/// threshold, so that a connection manager still draining after the table
/// fell below the threshold keeps them, and a table crossing it again finds
/// them current.
pub fn serves_shards(vhosts: usize, threshold: usize) -> bool {
    threshold != 0 && vhosts > threshold / 2
}

/// The hash the Lua filter computes: `h = (h * 31 + byte) mod 2^32` over the
/// ASCII-lower-cased host. The script runs on LuaJIT's doubles, where every
/// intermediate value (< 2^37) is exact, so both sides agree bit for bit.
pub fn host_hash(host: &str) -> u32 {
    host.bytes().fold(0u32, |h, b| {
        h.wrapping_mul(31)
            .wrapping_add(u32::from(b.to_ascii_lowercase()))
    })
}

/// The shard (of `k`) of an exact hostname (no port).
pub fn shard_of(host: &str, k: u32) -> u32 {
    host_hash(host) % k.max(1)
}

/// Whether Envoy may select the virtual host for hosts other than its own
/// exact names (a `*.suffix` or `*` domain): such a host is in every shard.
fn in_every_shard(vh: &ir::VirtualHost) -> bool {
    vh.domains.iter().any(|d| d.contains('*'))
}

/// What names a shard's table and its scope: `<table>~shard<i>of<k>`. Our
/// table names (`<ns>/<gateway>/<port>[/<chain>]`) never contain `~`.
pub const SHARD_SUFFIX: &str = "~shard";

/// Name of shard `i` of `k` of the table `table`.
pub fn shard_name(table: &str, i: u32, k: u32) -> String {
    format!("{table}{SHARD_SUFFIX}{i}of{k}")
}

/// `(table, i, k)` of a shard's name.
pub fn parse_shard_name(name: &str) -> Option<(&str, u32, u32)> {
    let (table, rest) = name.rsplit_once(SHARD_SUFFIX)?;
    let (i, k) = rest.split_once("of")?;
    Some((table, i.parse().ok()?, k.parse().ok()?))
}

/// Whether shard `i` of `k` holds the virtual host.
pub fn in_shard(vh: &ir::VirtualHost, i: u32, k: u32) -> bool {
    in_every_shard(vh) || vh.domains.iter().any(|d| shard_of(d, k) == i)
}

/// The shards of `rc` (K of them), each a route table of its own, virtual
/// hosts in `rc`'s order.
pub fn split(rc: &ir::RouteConfig, k: u32) -> Vec<ir::RouteConfig> {
    let k = k.max(1);
    let mut shards: Vec<Vec<Arc<ir::VirtualHost>>> = vec![Vec::new(); k as usize];
    for vh in &rc.virtual_hosts {
        if in_every_shard(vh) {
            for s in &mut shards {
                s.push(Arc::clone(vh));
            }
            continue;
        }
        // A virtual host of several exact names goes to each of their
        // shards (once per shard).
        let mut last = None;
        let mut mine: Vec<u32> = vh.domains.iter().map(|d| shard_of(d, k)).collect();
        mine.sort_unstable();
        for i in mine {
            if last != Some(i) {
                shards[i as usize].push(Arc::clone(vh));
                last = Some(i);
            }
        }
    }
    shards
        .into_iter()
        .enumerate()
        .map(|(i, virtual_hosts)| ir::RouteConfig {
            name: shard_name(&rc.name, i as u32, k),
            virtual_hosts,
        })
        .collect()
}

/// The scopes of a table in `k` shards: scope `i`, keyed by its name, names
/// shard `i`.
pub fn scopes(table: &str, k: u32) -> Vec<route::ScopedRouteConfiguration> {
    use route::scoped_route_configuration::{key::fragment::Type, key::Fragment, Key};
    (0..k.max(1))
        .map(|i| {
            let name = shard_name(table, i, k);
            route::ScopedRouteConfiguration {
                route_configuration_name: name.clone(),
                key: Some(Key {
                    fragments: vec![Fragment {
                        r#type: Some(Type::StringKey(name.clone())),
                    }],
                }),
                name,
                ..Default::default()
            }
        })
        .collect()
}

/// The connection manager's route specifier of a table in `k` shards:
/// scopes from SRDS keyed on [`SHARD_HEADER`], their route tables from RDS.
pub fn scoped_routes(table: &str, k: u32) -> hcm::http_connection_manager::RouteSpecifier {
    use hcm::scoped_routes::scope_key_builder::{
        fragment_builder::{header_value_extractor::ExtractType, HeaderValueExtractor, Type},
        FragmentBuilder,
    };
    hcm::http_connection_manager::RouteSpecifier::ScopedRoutes(hcm::ScopedRoutes {
        name: format!("{table}~{k}shards"),
        scope_key_builder: Some(hcm::scoped_routes::ScopeKeyBuilder {
            fragments: vec![FragmentBuilder {
                r#type: Some(Type::HeaderValueExtractor(HeaderValueExtractor {
                    name: SHARD_HEADER.into(),
                    element_separator: String::new(),
                    extract_type: Some(ExtractType::Index(0)),
                })),
            }],
        }),
        rds_config_source: Some(super::ads()),
        config_specifier: Some(hcm::scoped_routes::ConfigSpecifier::ScopedRds(
            hcm::ScopedRds {
                scoped_rds_config_source: Some(super::ads()),
                ..Default::default()
            },
        )),
    })
}

/// The Lua filter that computes the scope key of a request of `table` in
/// `k` shards.
pub fn key_filter(table: &str, k: u32) -> hcm::HttpFilter {
    let code = lua_source(table, k);
    let cfg = lua::Lua {
        default_source_code: Some(envoy_types::pb::envoy::config::core::v3::DataSource {
            specifier: Some(
                envoy_types::pb::envoy::config::core::v3::data_source::Specifier::InlineString(
                    code,
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    hcm::HttpFilter {
        name: "switchyard.route_shard".into(),
        config_type: Some(hcm::http_filter::ConfigType::TypedConfig(super::any(&cfg))),
        ..Default::default()
    }
}

/// The script: the host as Envoy's virtual host selection sees it (the
/// port removed: everything from the last `:` that no `]` follows;
/// lower-cased), hashed as
/// [`host_hash`] does, into the scope key.
fn lua_source(table: &str, k: u32) -> String {
    // The table name goes in as a Lua long string; ours never hold `]]`.
    let prefix = format!("{table}{SHARD_SUFFIX}").replace("]]", "] ]");
    format!(
        r#"local prefix = [[{prefix}]]
function envoy_on_request(handle)
  local headers = handle:headers()
  local host = string.lower(headers:get(":authority") or "")
  local stop = #host
  local colon = string.find(host, ":[^:%]]*$")
  if colon ~= nil then
    stop = colon - 1
  end
  local h = 0
  for i = 1, stop do
    h = (h * 31 + string.byte(host, i)) % 4294967296
  end
  headers:replace("{header}", prefix .. tostring(h % {k}) .. "of{k}")
  handle:clearRouteCache()
end
"#,
        header = SHARD_HEADER,
    )
}

/// The host part of an `:authority` as the script computes it (for tests
/// and for `explain`).
pub fn authority_host(authority: &str) -> String {
    // As Envoy strips a port: at the last `:`, unless a `]` follows it (an
    // IPv6 literal without a port).
    let host = authority.to_ascii_lowercase();
    match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => host[..colon].to_string(),
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vh(name: &str, domains: &[&str]) -> Arc<ir::VirtualHost> {
        Arc::new(ir::VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            routes: Vec::new(),
            route_domains: Vec::new(),
            listener: None,
            misdirected: false,
            encoded: Default::default(),
        })
    }

    #[test]
    fn tables_above_the_threshold_are_sharded_and_above_half_of_it_keep_shards() {
        assert_eq!(shard_count(0, 2000), 1);
        assert_eq!(shard_count(2000, 2000), 1);
        assert_eq!(shard_count(2001, 2000), SHARDS);
        assert_eq!(shard_count(50_000, 2000), SHARDS);
        assert!(!serves_shards(1000, 2000));
        assert!(serves_shards(1001, 2000));
        assert!(serves_shards(50_000, 2000));
        // 0 turns sharding off.
        assert_eq!(shard_count(1_000_000, 0), 1);
        assert!(!serves_shards(1_000_000, 0));
    }

    #[test]
    fn only_exact_hosts_count_and_many_wildcards_keep_one_table() {
        let table = |exact: usize, wild: usize| ir::RouteConfig {
            name: "t".into(),
            virtual_hosts: (0..exact)
                .map(|i| vh(&format!("e{i}"), &[&format!("e{i}.test")]))
                .chain((0..wild).map(|i| vh(&format!("w{i}"), &[&format!("*.w{i}.test")])))
                .collect(),
        };
        assert_eq!(size(&table(10, 3)), (10, true));
        assert_eq!(shards_of(&table(10, 3), 9), SHARDS);
        assert_eq!(shards_of(&table(10, 3), 10), 1, "wildcards do not count");
        assert!(serves_shards_of(&table(10, 3), 12));
        let many = table(10, MAX_SHARED_VHOSTS + 1);
        assert!(!size(&many).1);
        assert_eq!(shards_of(&many, 1), 1);
        assert!(!serves_shards_of(&many, 1));
    }

    #[test]
    fn host_hash_is_the_scripts_arithmetic() {
        // (h * 31 + byte) mod 2^32 computed in u64, as LuaJIT's doubles do
        // it exactly.
        let reference = |s: &str| {
            s.bytes().fold(0u64, |h, b| {
                (h * 31 + u64::from(b.to_ascii_lowercase())) % (1 << 32)
            })
        };
        for host in [
            "",
            "a",
            "example.com",
            "Very-Long.Subdomain.Of.Some.Example.Com",
            &"x".repeat(300),
        ] {
            assert_eq!(u64::from(host_hash(host)), reference(host), "{host}");
        }
        assert_eq!(host_hash("a"), 97);
        assert_eq!(host_hash("ab"), 97 * 31 + 98);
        assert_eq!(host_hash("AB"), host_hash("ab"));
    }

    #[test]
    fn authority_host_drops_the_port_like_the_script() {
        assert_eq!(authority_host("Foo.Example.com:8080"), "foo.example.com");
        assert_eq!(authority_host("foo.example.com"), "foo.example.com");
        assert_eq!(authority_host("[::1]:80"), "[::1]");
        assert_eq!(authority_host("[::1]"), "[::1]");
        assert_eq!(authority_host("foo:bar"), "foo");
        assert_eq!(authority_host("[::1]:"), "[::1]");
    }

    #[test]
    fn exact_hosts_go_to_their_bucket_and_wildcards_everywhere() {
        let hosts: Vec<String> = (0..200).map(|i| format!("h{i}.example.com")).collect();
        let mut vhosts: Vec<Arc<ir::VirtualHost>> =
            hosts.iter().map(|h| vh(h, &[h.as_str()])).collect();
        vhosts.push(vh("wild", &["*.example.com"]));
        vhosts.push(vh("any", &["*"]));
        let rc = ir::RouteConfig {
            name: "ns/gw/80".into(),
            virtual_hosts: vhosts,
        };
        let shards = split(&rc, 8);
        assert_eq!(shards.len(), 8);
        for (i, s) in shards.iter().enumerate() {
            assert_eq!(s.name, format!("ns/gw/80~shard{i}of8"));
            assert_eq!(parse_shard_name(&s.name), Some(("ns/gw/80", i as u32, 8)));
            assert!(s.virtual_hosts.iter().all(|v| in_shard(v, i as u32, 8)));
            let names: Vec<&str> = s.virtual_hosts.iter().map(|v| v.name.as_str()).collect();
            // Wildcards last, in the table's order, in every shard.
            assert_eq!(&names[names.len() - 2..], ["wild", "any"]);
            for n in &names[..names.len() - 2] {
                assert_eq!(shard_of(n, 8), i as u32, "{n} in shard {i}");
            }
        }
        let exact: usize = shards.iter().map(|s| s.virtual_hosts.len() - 2).sum();
        assert_eq!(exact, 200, "each exact host in exactly one shard");
        // Spread: no shard holds more than twice its share.
        assert!(shards.iter().all(|s| s.virtual_hosts.len() - 2 <= 50));
    }

    #[test]
    fn a_host_with_two_names_is_in_both_shards_once() {
        let a = "n0.test".to_string();
        let b = (1..100)
            .map(|i| format!("n{i}.test"))
            .find(|h| shard_of(h, 4) != shard_of(&a, 4))
            .expect("a host in another shard");
        let rc = ir::RouteConfig {
            name: "t".into(),
            virtual_hosts: vec![vh("two", &[&a, &b, &a])],
        };
        let shards = split(&rc, 4);
        let holding: Vec<usize> = shards
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.virtual_hosts.is_empty())
            .map(|(i, s)| {
                assert_eq!(s.virtual_hosts.len(), 1);
                i
            })
            .collect();
        let mut want = vec![shard_of(&a, 4) as usize, shard_of(&b, 4) as usize];
        want.sort_unstable();
        assert_eq!(holding, want);
    }

    #[test]
    fn every_shard_has_a_scope_keyed_and_named_like_it() {
        let s = scopes("ns/gw/80", 16);
        assert_eq!(s.len(), 16);
        for (i, scope) in s.iter().enumerate() {
            let name = format!("ns/gw/80~shard{i}of16");
            assert_eq!(scope.name, name);
            assert_eq!(scope.route_configuration_name, name);
            let key = scope.key.as_ref().expect("key");
            assert_eq!(key.fragments.len(), 1);
            assert_eq!(
                key.fragments[0].r#type,
                Some(route::scoped_route_configuration::key::fragment::Type::StringKey(name))
            );
        }
    }

    #[test]
    fn the_script_writes_the_shard_name_of_k_into_the_header() {
        let src = lua_source("ns/gw/80", 64);
        assert!(src.contains("local prefix = [[ns/gw/80~shard]]"));
        assert!(src.contains(&format!(
            "headers:replace(\"{SHARD_HEADER}\", prefix .. tostring(h % 64) .. \"of64\")"
        )));
        assert!(src.contains("clearRouteCache"));
    }
}
