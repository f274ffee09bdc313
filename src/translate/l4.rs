//! TLSRoute, TCPRoute and UDPRoute: backends only (they have no matches),
//! and the filter chains they become: SNI-routed chains on TLS listeners
//! (passthrough or terminate), one TCP proxy per TCP listener, one UDP proxy
//! per UDP listener.
//!
//! Several routes on one TCP or UDP listener: the oldest (creation time,
//! then namespace/name) takes the connections; the others are Accepted (the
//! spec ties attachment to allowedRoutes only) and serve nothing until it
//! goes. On a TLS listener routes are told apart by SNI; when two routes
//! claim the same hostname, the oldest keeps it.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::attach::note_ref_error;
use super::backend::{self, BackendRef};
use super::conditions::reasons;
use super::gateway::GatewayState;
use super::hostname;
use super::index::{age, compile_rules, route_level_error, Age, Body, RouteCompile};
use super::listener::TlsMode;
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir::{self, names};

/// The parts of an L4 route the translator reads.
pub struct L4Spec {
    /// Backend references of each rule.
    pub rules: Vec<Vec<L4BackendRef>>,
    pub use_default_gateways: bool,
}

pub struct L4BackendRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: String,
    pub namespace: Option<String>,
    pub port: Option<i32>,
    pub weight: Option<i32>,
}

/// [`L4Spec`] of a TLSRoute, TCPRoute or UDPRoute (same shape, other names).
macro_rules! l4_spec {
    ($route:expr) => {
        $crate::translate::l4::L4Spec {
            rules: $route
                .spec
                .rules
                .iter()
                .map(|r| {
                    r.backend_refs
                        .iter()
                        .map(|b| $crate::translate::l4::L4BackendRef {
                            group: b.group.clone(),
                            kind: b.kind.clone(),
                            name: b.name.clone(),
                            namespace: b.namespace.clone(),
                            port: b.port,
                            weight: b.weight,
                        })
                        .collect()
                })
                .collect(),
            use_default_gateways: $route.spec.use_default_gateways.is_some(),
        }
    };
}
pub(crate) use l4_spec;

/// A compiled L4 route: where its connections go.
pub(super) struct L4Rule {
    pub backends: Vec<ir::WeightedBackend>,
}

/// Compiles an L4 route. Only its first rule can take connections (a rule
/// has no matches); later rules are dropped and reported.
pub(super) fn compile(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    meta: &ObjectMeta,
    spec: &L4Spec,
    backends: &mut backend::Backends,
) -> RouteCompile {
    if let Some(e) = route_level_error(inputs, kind, key, spec.use_default_gateways) {
        return RouteCompile::rejected(e);
    }
    if spec.rules.is_empty() {
        return RouteCompile::rejected((reasons::UNSUPPORTED_VALUE, "spec.rules is empty".into()));
    }
    let unknown = inputs.unknown(kind, key);
    let mut ref_error = None;
    let (mut rules, dropped) = compile_rules(unknown, spec.rules.len(), |i| {
        if i > 0 {
            return Err((
                reasons::UNSUPPORTED_VALUE,
                format!(
                    "a {} rule has no matches, so only the first rule takes connections",
                    kind.as_str()
                ),
            ));
        }
        Ok(compile_rule(
            inputs,
            kind,
            key,
            &spec.rules[i],
            backends,
            &mut ref_error,
        ))
    });
    let clusters: BTreeSet<String> = rules
        .iter()
        .flat_map(|r| r.backends.iter())
        .filter_map(|b| b.cluster.clone())
        .collect();
    let body = (!rules.is_empty()).then(|| Body::L4(rules.swap_remove(0)));
    RouteCompile::assemble(age(meta, kind, key), body, clusters, dropped, ref_error)
}

fn compile_rule(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    refs: &[L4BackendRef],
    cache: &mut backend::Backends,
    ref_error: &mut Option<super::backend::RefError>,
) -> L4Rule {
    let mut out = Vec::new();
    for b in refs {
        let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
        let r = BackendRef {
            group: b.group.as_deref(),
            kind: b.kind.as_deref(),
            name: &b.name,
            namespace: b.namespace.as_deref(),
            port: b.port,
        };
        let (resolved, origin) =
            cache.resolve_with_origin(inputs, kind.as_str(), &key.namespace, &r);
        let cluster = match resolved {
            Ok(name) => Some(name),
            Err(e) => {
                note_ref_error(ref_error, e);
                None
            }
        };
        if weight > 0 {
            out.push(ir::WeightedBackend {
                cluster,
                weight,
                request_headers: ir::HeaderMods::default(),
                response_headers: ir::HeaderMods::default(),
                origin: Some(origin),
            });
        }
    }
    if kind == Kind::UDPRoute && out.len() > 1 {
        // Envoy's UDP proxy sends a session to one cluster: weights become
        // locality weights of a cluster made for this rule. An unresolved
        // backend has no endpoints, so its locality takes no sessions.
        let name = names::split_cluster(key, 0);
        let split = out
            .iter()
            .filter_map(|b| {
                let c = cache.clusters.get(b.cluster.as_deref()?)?;
                Some(ir::SplitMember {
                    service: c.service.clone(),
                    port_name: c.port_name.clone(),
                    weight: b.weight,
                    endpoints: c.endpoints.clone(),
                })
            })
            .collect();
        cache.clusters.insert(
            name.clone(),
            ir::Cluster {
                name: name.clone(),
                service: key.clone(),
                port: 0,
                port_name: String::new(),
                protocol: ir::UpstreamProtocol::Http1,
                endpoints: Vec::new(),
                split,
                tls: None,
            },
        );
        out = vec![ir::WeightedBackend {
            cluster: Some(name),
            weight: 1,
            request_headers: ir::HeaderMods::default(),
            response_headers: ir::HeaderMods::default(),
            origin: None,
        }];
    }
    L4Rule { backends: out }
}

/// One L4 route attached to one listener.
pub(super) struct Entry {
    pub age: Arc<Age>,
    /// Effective SNI names (TLS); empty: any.
    pub hostnames: Vec<String>,
    pub proxy: ir::L4Proxy,
}

impl Entry {
    pub fn new(
        kind: Kind,
        key: &ObjKey,
        age: Arc<Age>,
        hostnames: &[String],
        rule: &L4Rule,
    ) -> Self {
        Entry {
            age,
            hostnames: hostnames.to_vec(),
            proxy: ir::L4Proxy {
                route: format!("{}/{}", kind.as_str().to_ascii_lowercase(), key),
                backends: rule.backends.clone(),
            },
        }
    }
}

/// A chain that refuses every connection it gets.
fn refusing(name: &str) -> ir::FilterChain {
    ir::FilterChain {
        name: name.to_string(),
        server_names: Vec::new(),
        tls: ir::ChainTls::None,
        app: ir::App::Tcp(ir::L4Proxy {
            route: String::new(),
            backends: Vec::new(),
        }),
    }
}

/// The chain of a TCP or UDP listener: its oldest route's, or one that
/// refuses connections (drops datagrams) when no route is attached.
pub(super) fn single_chain(
    gw: &GatewayState,
    listener: usize,
    entries: Option<&Vec<Entry>>,
) -> Option<ir::FilterChain> {
    let l = &gw.listeners[listener];
    let oldest = entries.and_then(|e| e.iter().min_by(|a, b| a.age.cmp(&b.age)));
    let nowhere = ir::L4Proxy {
        route: String::new(),
        backends: Vec::new(),
    };
    match (l.transport(), oldest) {
        // The port is bound either way; without a route datagrams are dropped.
        (ir::Transport::Udp, e) => Some(ir::FilterChain {
            name: l.name.clone(),
            server_names: Vec::new(),
            tls: ir::ChainTls::None,
            app: ir::App::Udp(e.map_or(nowhere, |e| e.proxy.clone())),
        }),
        (ir::Transport::Tcp, None) => Some(refusing(&l.name)),
        (ir::Transport::Tcp, Some(e)) => Some(ir::FilterChain {
            name: l.name.clone(),
            server_names: Vec::new(),
            tls: ir::ChainTls::None,
            app: ir::App::Tcp(e.proxy.clone()),
        }),
    }
}

/// The SNI-routed chains of a TLS listener: one per attached route, named
/// by its hostnames (the listener's hostname when the route has none).
pub(super) fn tls_chains(
    gw: &GatewayState,
    listener: usize,
    entries: Option<&Vec<Entry>>,
    port_listeners: &[usize],
) -> Vec<ir::FilterChain> {
    let l = &gw.listeners[listener];
    // A connection belongs to the most specific listener matching its SNI
    // (as HTTP listeners are isolated): a name that a more specific
    // listener on this port also matches is left to that listener.
    let mine = listener_order(gw, listener);
    let owned_elsewhere = |name: &str| {
        port_listeners.iter().any(|&k| {
            k != listener
                && listener_order(gw, k) < mine
                && gw.listeners[k]
                    .hostname
                    .as_deref()
                    .is_some_and(|h| h == name || hostname::falls_back_to(name, h))
        })
    };
    let tls = match l.tls_mode {
        TlsMode::Passthrough => ir::ChainTls::Passthrough,
        _ => ir::ChainTls::Terminate {
            secrets: l.secrets.clone(),
            alpn: Vec::new(),
            client_validation: None,
        },
    };
    let mut sorted: Vec<&Entry> = entries.into_iter().flatten().collect();
    sorted.sort_by(|a, b| a.age.cmp(&b.age));
    sorted
        .into_iter()
        .filter_map(|e| {
            let names: Vec<String> = if e.hostnames.is_empty() {
                l.hostname.iter().cloned().collect()
            } else {
                e.hostnames
                    .iter()
                    .filter(|n| !owned_elsewhere(n))
                    .cloned()
                    .collect()
            };
            // Every name of the route belongs to a more specific listener.
            if names.is_empty() && !e.hostnames.is_empty() {
                return None;
            }
            Some(ir::FilterChain {
                name: format!("{}/{}", l.name, e.proxy.route),
                server_names: names,
                tls: tls.clone(),
                app: ir::App::Tcp(e.proxy.clone()),
            })
        })
        .collect()
}

/// Makes the chains of one port unambiguous for Envoy, which rejects two
/// chains with the same match: `chains` come most specific listener first,
/// oldest route first; a server name already taken is dropped from later
/// chains (a chain left without names is dropped), and only the first
/// chain without server names (the catch-all) stays. Then most specific
/// first, the catch-all last.
pub(super) fn dedupe(chains: Vec<ir::FilterChain>) -> Vec<ir::FilterChain> {
    let mut taken: BTreeSet<String> = BTreeSet::new();
    let mut catch_all = false;
    let mut out = Vec::new();
    for mut c in chains {
        if c.server_names.is_empty() {
            if !catch_all {
                catch_all = true;
                out.push(c);
            }
            continue;
        }
        c.server_names.retain(|n| !taken.contains(n));
        if c.server_names.is_empty() {
            continue;
        }
        taken.extend(c.server_names.iter().cloned());
        out.push(c);
    }
    out.sort_by_cached_key(|c| {
        c.server_names
            .iter()
            .map(|s| hostname::specificity_key(s))
            .min()
            .unwrap_or_else(|| hostname::specificity_key("*"))
    });
    if out.is_empty() {
        out.push(refusing("no-route"));
    }
    out
}

/// Endpoints of a split cluster's members, re-read (EndpointSlices changed).
pub(super) fn refresh_split(inputs: &Inputs, c: &mut ir::Cluster) {
    for m in &mut c.split {
        m.endpoints = backend::endpoints(inputs, &m.service, &m.port_name);
    }
}

/// The listeners of one Gateway port group, keyed for [`dedupe`]'s order.
pub(super) fn listener_order(
    gw: &GatewayState,
    i: usize,
) -> (u8, std::cmp::Reverse<usize>, String) {
    hostname::specificity_key(gw.listeners[i].hostname.as_deref().unwrap_or("*"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inputs::DEFAULT_CONTROLLER_NAME;
    use serde_json::json;

    fn chain(name: &str, server_names: &[&str]) -> ir::FilterChain {
        ir::FilterChain {
            name: name.to_string(),
            server_names: server_names.iter().map(|s| s.to_string()).collect(),
            tls: ir::ChainTls::Passthrough,
            app: ir::App::Tcp(ir::L4Proxy {
                route: format!("tlsroute/apps/{name}"),
                backends: Vec::new(),
            }),
        }
    }

    /// (name, server names) of each chain, in order.
    fn shape(chains: &[ir::FilterChain]) -> Vec<(&str, Vec<&str>)> {
        chains
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.server_names.iter().map(|s| s.as_str()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn dedupe_keeps_each_server_name_on_its_first_chain() {
        // Input order is precedence: most specific listener first, oldest route first.
        let out = dedupe(vec![
            chain("older", &["a.example.com", "b.example.com"]),
            chain("newer", &["b.example.com", "c.example.com"]),
            chain("newest", &["a.example.com", "b.example.com"]),
        ]);
        assert_eq!(
            shape(&out),
            vec![
                ("older", vec!["a.example.com", "b.example.com"]),
                ("newer", vec!["c.example.com"]),
            ],
            "a name already taken is dropped; a chain left without names is dropped"
        );
        // Everything else about a surviving chain is untouched.
        assert_eq!(out[1].tls, ir::ChainTls::Passthrough);
        assert_eq!(
            out[1].app,
            ir::App::Tcp(ir::L4Proxy {
                route: "tlsroute/apps/newer".into(),
                backends: Vec::new(),
            })
        );
    }

    #[test]
    fn dedupe_keeps_only_the_first_catch_all() {
        let out = dedupe(vec![
            chain("first-any", &[]),
            chain("exact", &["a.example.com"]),
            chain("second-any", &[]),
        ]);
        assert_eq!(
            shape(&out),
            vec![("exact", vec!["a.example.com"]), ("first-any", vec![])]
        );
    }

    #[test]
    fn dedupe_orders_most_specific_first_catch_all_last() {
        let out = dedupe(vec![
            chain("any", &[]),
            chain("wide", &["*.example.com"]),
            chain("narrow", &["*.a.example.com"]),
            chain("short", &["b.com"]),
            chain("long", &["long.example.com"]),
            // A chain with several names sorts by its most specific one.
            chain("mixed", &["*.other.org", "mixed.org"]),
        ]);
        assert_eq!(
            shape(&out),
            vec![
                ("long", vec!["long.example.com"]),
                ("mixed", vec!["*.other.org", "mixed.org"]),
                ("short", vec!["b.com"]),
                ("narrow", vec!["*.a.example.com"]),
                ("wide", vec!["*.example.com"]),
                ("any", vec![]),
            ]
        );
        // The same chains in another input order end in the same order.
        let again = dedupe(vec![
            chain("long", &["long.example.com"]),
            chain("wide", &["*.example.com"]),
            chain("mixed", &["*.other.org", "mixed.org"]),
            chain("any", &[]),
            chain("short", &["b.com"]),
            chain("narrow", &["*.a.example.com"]),
        ]);
        assert_eq!(shape(&again), shape(&out));
    }

    #[test]
    fn dedupe_of_nothing_is_one_refusing_chain() {
        let out = dedupe(Vec::new());
        assert_eq!(out.len(), 1);
        let c = &out[0];
        assert!(c.server_names.is_empty());
        assert_eq!(c.tls, ir::ChainTls::None);
        assert_eq!(
            c.app,
            ir::App::Tcp(ir::L4Proxy {
                route: String::new(),
                backends: Vec::new(),
            }),
            "no backends: every connection is refused"
        );
        // Chains whose names were all taken leave the one that took them, not a refusing chain.
        let out = dedupe(vec![
            chain("a", &["a.example.com"]),
            chain("b", &["a.example.com"]),
        ]);
        assert_eq!(shape(&out), vec![("a", vec!["a.example.com"])]);
    }

    fn inputs() -> Inputs {
        let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
        for (svc, proto, addrs) in [
            ("blue", "UDP", vec!["10.0.0.1", "10.0.0.2"]),
            ("green", "UDP", vec!["10.0.1.1"]),
            ("tcp-only", "TCP", vec!["10.0.2.1"]),
        ] {
            inputs
                .insert_value(json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": svc, "namespace": "apps"},
                    "spec": {"ports": [{"name": "p", "port": 9000, "protocol": proto}]},
                }))
                .expect("service");
            inputs
                .insert_value(json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": format!("{svc}-1"), "namespace": "apps",
                                 "labels": {"kubernetes.io/service-name": svc}},
                    "addressType": "IPv4",
                    "ports": [{"name": "p", "port": 9000, "protocol": proto}],
                    "endpoints": addrs.iter().map(|a| json!({"addresses": [a]})).collect::<Vec<_>>(),
                }))
                .expect("slice");
        }
        inputs
    }

    fn backend_ref(name: &str, weight: Option<i32>) -> L4BackendRef {
        L4BackendRef {
            group: None,
            kind: None,
            name: name.to_string(),
            namespace: None,
            port: Some(9000),
            weight,
        }
    }

    fn compiled(
        inputs: &Inputs,
        kind: Kind,
        refs: Vec<L4BackendRef>,
        cache: &mut backend::Backends,
    ) -> (Vec<ir::WeightedBackend>, Option<&'static str>) {
        let key = ObjKey::new("apps", "r");
        let spec = L4Spec {
            rules: vec![refs],
            use_default_gateways: false,
        };
        let c = compile(inputs, kind, &key, &ObjectMeta::default(), &spec, cache);
        assert!(c.accepted.is_ok());
        let reason = c.ref_error.as_ref().map(|e| e.reason);
        match c.compiled.map(|c| c.body) {
            Some(Body::L4(rule)) => (rule.backends, reason),
            _ => panic!("an L4 route compiles to an L4 body"),
        }
    }

    fn endpoints(addrs: &[&str]) -> Vec<ir::Endpoint> {
        addrs
            .iter()
            .map(|a| ir::Endpoint {
                address: a.to_string(),
                port: 9000,
            })
            .collect()
    }

    #[test]
    fn udp_weights_become_one_split_cluster_with_a_locality_per_backend() {
        let inputs = inputs();
        let mut cache = backend::Backends::default();
        let (backends, err) = compiled(
            &inputs,
            Kind::UDPRoute,
            vec![
                backend_ref("blue", Some(3)),
                backend_ref("green", None),
                backend_ref("blue", Some(0)),
            ],
            &mut cache,
        );
        assert_eq!(err, None);
        let name = "udproute/apps/r/0";
        assert_eq!(backends.len(), 1, "a UDP session goes to one cluster");
        assert_eq!(backends[0].cluster.as_deref(), Some(name));
        let c = &cache.clusters[name];
        assert_eq!(c.name, name);
        assert!(c.endpoints.is_empty(), "endpoints live in the localities");
        let split: Vec<(&str, u32, &[ir::Endpoint])> = c
            .split
            .iter()
            .map(|m| (m.service.name.as_str(), m.weight, m.endpoints.as_slice()))
            .collect();
        assert_eq!(
            split,
            vec![
                ("blue", 3, endpoints(&["10.0.0.1", "10.0.0.2"]).as_slice()),
                // No weight means 1; weight 0 takes nothing and is left out.
                ("green", 1, endpoints(&["10.0.1.1"]).as_slice()),
            ]
        );
    }

    #[test]
    fn split_cluster_endpoints_are_refreshed() {
        let mut inputs = inputs();
        let mut cache = backend::Backends::default();
        compiled(
            &inputs,
            Kind::UDPRoute,
            vec![backend_ref("blue", Some(1)), backend_ref("green", Some(1))],
            &mut cache,
        );
        inputs
            .insert_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "green-1", "namespace": "apps",
                             "labels": {"kubernetes.io/service-name": "green"}},
                "addressType": "IPv4",
                "ports": [{"name": "p", "port": 9000, "protocol": "UDP"}],
                "endpoints": [{"addresses": ["10.0.1.7"]}, {"addresses": ["10.0.1.8"]}],
            }))
            .expect("slice");
        let c = cache.clusters.get_mut("udproute/apps/r/0").expect("split");
        refresh_split(&inputs, c);
        assert_eq!(c.split[0].endpoints, endpoints(&["10.0.0.1", "10.0.0.2"]));
        assert_eq!(c.split[1].endpoints, endpoints(&["10.0.1.7", "10.0.1.8"]));
    }

    #[test]
    fn one_udp_backend_and_tcp_weights_need_no_split_cluster() {
        let inputs = inputs();
        let mut cache = backend::Backends::default();
        let (backends, _) = compiled(
            &inputs,
            Kind::UDPRoute,
            vec![backend_ref("blue", Some(5))],
            &mut cache,
        );
        assert_eq!(backends.len(), 1);
        assert_eq!(backends[0].cluster.as_deref(), Some("apps/blue/9000/udp"));
        assert!(cache.clusters.values().all(|c| c.split.is_empty()));

        // TCP: tcp_proxy splits by weight itself; an unresolved backend keeps
        // its weight (its share of connections is refused), weight 0 is left out.
        let (backends, err) = compiled(
            &inputs,
            Kind::TCPRoute,
            vec![
                backend_ref("tcp-only", Some(70)),
                backend_ref("missing", Some(30)),
                backend_ref("tcp-only", Some(0)),
            ],
            &mut cache,
        );
        assert_eq!(err, Some(reasons::BACKEND_NOT_FOUND));
        let got: Vec<(Option<&str>, u32)> = backends
            .iter()
            .map(|b| (b.cluster.as_deref(), b.weight))
            .collect();
        assert_eq!(got, vec![(Some("apps/tcp-only/9000"), 70), (None, 30)]);
        assert!(cache.clusters.values().all(|c| c.split.is_empty()));
    }
}
