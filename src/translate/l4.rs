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
        let cluster = match cache.resolve(inputs, kind.as_str(), &key.namespace, &r) {
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
            },
        );
        out = vec![ir::WeightedBackend {
            cluster: Some(name),
            weight: 1,
            request_headers: ir::HeaderMods::default(),
            response_headers: ir::HeaderMods::default(),
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
) -> Vec<ir::FilterChain> {
    let l = &gw.listeners[listener];
    let tls = match l.tls_mode {
        TlsMode::Passthrough => ir::ChainTls::Passthrough,
        _ => ir::ChainTls::Terminate {
            secrets: l.secrets.clone(),
            alpn: Vec::new(),
        },
    };
    let mut sorted: Vec<&Entry> = entries.into_iter().flatten().collect();
    sorted.sort_by(|a, b| a.age.cmp(&b.age));
    sorted
        .into_iter()
        .map(|e| ir::FilterChain {
            name: format!("{}/{}", l.name, e.proxy.route),
            server_names: if e.hostnames.is_empty() {
                l.hostname.iter().cloned().collect()
            } else {
                e.hostnames.clone()
            },
            tls: tls.clone(),
            app: ir::App::Tcp(e.proxy.clone()),
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
