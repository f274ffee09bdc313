//! The route index: every route of every kind, what it compiled to, where
//! it attached, and the per-Gateway IR built from that (listeners → filter
//! chains → route tables or L4 proxies).
//!
//! [`RouteIndex`] keeps, per route, its compiled form and attachments; per
//! HTTP route table the entries of every domain (tables.rs); per L4
//! listener its attached routes (l4.rs). A full translation adds every
//! route to an empty index; an incremental one removes the changed routes
//! and adds their new versions, then rebuilds only the virtual hosts whose
//! entries changed. Both run the same code, so they produce the same IR.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_api::experimental::httproutes::HttpRoute;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::attach::{self, parent_ref, NotAttached, Verdict};
use super::backend::{self, RefError};
use super::conditions::reasons;
use super::gateway::GatewayState;
use super::l4::{self, l4_spec, L4Rule, L4Spec};
use super::tables::{table_id, Tables};
use super::{generation, http, GatewayMap};
use crate::inputs::{Inputs, Kind, ObjKey, GATEWAY_GROUP};
use crate::ir::{self, names};
use crate::status::{ParentRef, RouteParentStatus};

/// A route: its kind and name.
pub type RouteKey = (Kind, ObjKey);

/// Route kinds, in the order a full translation adds them.
pub const ROUTE_KINDS: [Kind; 5] = [
    Kind::HTTPRoute,
    Kind::GRPCRoute,
    Kind::TLSRoute,
    Kind::TCPRoute,
    Kind::UDPRoute,
];

/// A route as the index takes it, whatever its kind.
pub struct RouteInput<'a> {
    pub kind: Kind,
    pub key: &'a ObjKey,
    pub meta: &'a ObjectMeta,
    pub parent_refs: Vec<ParentRef>,
    pub hostnames: Vec<String>,
    body: InputBody<'a>,
}

enum InputBody<'a> {
    /// An HTTPRoute, or a GRPCRoute rewritten as its HTTPRoute (or, when it
    /// cannot be, its parentRefs and the reason).
    Http {
        route: Box<Cow<'a, HttpRoute>>,
        error: Option<String>,
    },
    L4(L4Spec),
}

impl<'a> RouteInput<'a> {
    /// The route `key` of `kind` in `inputs`, if it exists.
    pub fn of(inputs: &'a Inputs, kind: Kind, key: &'a ObjKey) -> Option<Self> {
        macro_rules! l4 {
            ($map:expr, $hostnames:expr) => {{
                let r = $map.get(key)?;
                RouteInput {
                    kind,
                    key,
                    meta: &r.metadata,
                    parent_refs: r
                        .spec
                        .parent_refs
                        .iter()
                        .flatten()
                        .map(|p| parent_ref!(p))
                        .collect(),
                    hostnames: $hostnames(r),
                    body: InputBody::L4(l4_spec!(r)),
                }
            }};
        }
        Some(match kind {
            Kind::HTTPRoute => {
                let r = inputs.http_routes.get(key)?;
                Self::http(kind, key, &r.metadata, Cow::Borrowed(r), None)
            }
            Kind::GRPCRoute => {
                let r = inputs.grpc_routes.get(key)?;
                let (route, error) = match super::grpc::as_http_route(r) {
                    Ok(h) => (h, None),
                    Err(e) => (super::grpc::parents_only(r), Some(e)),
                };
                Self::http(kind, key, &r.metadata, Cow::Owned(route), error)
            }
            Kind::TLSRoute => l4!(
                inputs.tls_routes,
                |r: &gateway_api::experimental::tlsroutes::TlsRoute| r.spec.hostnames.clone()
            ),
            Kind::TCPRoute => l4!(inputs.tcp_routes, |_| Vec::new()),
            Kind::UDPRoute => l4!(inputs.udp_routes, |_| Vec::new()),
            _ => return None,
        })
    }

    fn http(
        kind: Kind,
        key: &'a ObjKey,
        meta: &'a ObjectMeta,
        route: Cow<'a, HttpRoute>,
        error: Option<String>,
    ) -> Self {
        RouteInput {
            kind,
            key,
            meta,
            parent_refs: route
                .spec
                .parent_refs
                .iter()
                .flatten()
                .map(|p| parent_ref!(p))
                .collect(),
            hostnames: route.spec.hostnames.clone().unwrap_or_default(),
            body: InputBody::Http {
                route: Box::new(route),
                error,
            },
        }
    }

    /// Every route in `inputs`, kind by kind.
    pub fn all(inputs: &'a Inputs) -> Vec<Self> {
        let mut out = Vec::new();
        for kind in ROUTE_KINDS {
            let keys: Vec<&ObjKey> = match kind {
                Kind::HTTPRoute => inputs.http_routes.keys().collect(),
                Kind::GRPCRoute => inputs.grpc_routes.keys().collect(),
                Kind::TLSRoute => inputs.tls_routes.keys().collect(),
                Kind::TCPRoute => inputs.tcp_routes.keys().collect(),
                _ => inputs.udp_routes.keys().collect(),
            };
            out.extend(
                keys.into_iter()
                    .filter_map(|k| RouteInput::of(inputs, kind, k)),
            );
        }
        out
    }

    fn compile(&self, inputs: &Inputs, backends: &mut backend::Backends) -> RouteCompile {
        // What the API server would have refused never gets further.
        let violations = super::validate::stored(inputs, self.kind, self.key);
        if !violations.is_empty() {
            return RouteCompile::rejected((
                reasons::UNSUPPORTED_VALUE,
                super::validate::summary(&violations),
            ));
        }
        match &self.body {
            InputBody::Http { route, error } => http::compile_route(
                inputs,
                self.kind,
                self.key,
                route,
                error.as_deref(),
                backends,
            ),
            InputBody::L4(spec) => {
                l4::compile(inputs, self.kind, self.key, self.meta, spec, backends)
            }
        }
    }
}

/// (creationTimestamp, namespace/name, kind): the spec's tie-breaker between
/// routes, oldest first.
pub use crate::ir::Age;

pub(super) fn age(meta: &ObjectMeta, kind: Kind, key: &ObjKey) -> Arc<Age> {
    Arc::new((
        meta.creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        key.clone(),
        kind,
    ))
}

/// Why a rule was dropped: (reason, message).
pub(super) type RuleError = (&'static str, String);

/// Route-level problems every kind shares: fields this build does not know
/// (outside the rules), and `useDefaultGateways`.
pub(super) fn route_level_error(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    use_default_gateways: bool,
) -> Option<NotAttached> {
    let unknown = inputs.unknown(kind, key);
    let route_level: Vec<&str> = unknown
        .iter()
        .filter(|p| !p.starts_with("spec.rules["))
        .map(|s| s.as_str())
        .collect();
    if !route_level.is_empty() {
        return Some((
            reasons::UNSUPPORTED_VALUE,
            format!(
                "fields not supported by this Switchyard: {}",
                route_level.join(", ")
            ),
        ));
    }
    use_default_gateways.then(|| {
        (
            reasons::UNSUPPORTED_VALUE,
            "spec.useDefaultGateways is not supported".into(),
        )
    })
}

/// Compiles rules `0..n` with `f`; a rule with fields this build does not
/// know is dropped. Returns the usable rules and the dropped ones (reason,
/// "rule i: why").
pub(super) fn compile_rules<R>(
    unknown: &[String],
    n: usize,
    mut f: impl FnMut(usize) -> Result<R, RuleError>,
) -> (Vec<R>, Vec<RuleError>) {
    // Sized up front: a route keeps these for as long as it lives.
    let mut rules = Vec::with_capacity(n);
    let mut dropped = Vec::new();
    for i in 0..n {
        let prefix = format!("spec.rules[{i}]");
        let unknown_here: Vec<&str> = unknown
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .map(|s| s.as_str())
            .collect();
        let res = if unknown_here.is_empty() {
            f(i)
        } else {
            Err((
                reasons::UNSUPPORTED_VALUE,
                format!("fields not supported: {}", unknown_here.join(", ")),
            ))
        };
        match res {
            Ok(r) => rules.push(r),
            Err((reason, msg)) => dropped.push((reason, format!("rule {i}: {msg}"))),
        }
    }
    (rules, dropped)
}

/// Result of compiling a route, before attachment.
pub(super) struct RouteCompile {
    /// `Err`: no usable rule.
    pub accepted: Result<(), NotAttached>,
    pub partially_invalid: Option<String>,
    pub ref_error: Option<RefError>,
    pub compiled: Option<Compiled>,
}

/// A route's rules, compiled once and shared by all its parents.
pub(super) struct Compiled {
    pub age: Arc<Age>,
    /// Clusters the rules send to.
    pub clusters: BTreeSet<String>,
    pub body: Body,
}

pub(super) enum Body {
    Http(Vec<http::CompiledRule>),
    L4(L4Rule),
}

impl RouteCompile {
    pub fn rejected(e: NotAttached) -> Self {
        RouteCompile {
            accepted: Err(e),
            partially_invalid: None,
            ref_error: None,
            compiled: None,
        }
    }

    /// The verdict on a route from its usable rules (`body`) and dropped ones.
    pub fn assemble(
        age: Arc<Age>,
        body: Option<Body>,
        clusters: BTreeSet<String>,
        dropped: Vec<RuleError>,
        ref_error: Option<RefError>,
    ) -> Self {
        let msgs: Vec<&str> = dropped.iter().map(|d| d.1.as_str()).collect();
        match body {
            None => RouteCompile {
                accepted: Err((
                    dropped.first().map_or(reasons::UNSUPPORTED_VALUE, |d| d.0),
                    format!("no usable rule: {}", msgs.join("; ")),
                )),
                partially_invalid: None,
                ref_error,
                compiled: None,
            },
            Some(body) => RouteCompile {
                accepted: Ok(()),
                partially_invalid: (!dropped.is_empty())
                    .then(|| format!("Dropped Rule(s): {}", msgs.join("; "))),
                ref_error,
                compiled: Some(Compiled {
                    age,
                    clusters,
                    body,
                }),
            },
        }
    }
}

/// What one route contributes (its status goes to the caller).
struct RouteState {
    attachments: Vec<Attachment>,
    compiled: Option<Compiled>,
}

struct Attachment {
    gateway: ObjKey,
    listener: usize,
    /// Effective hostnames on this listener; empty = any host.
    hostnames: Vec<String>,
}

/// Routes attached to one set of Gateways (see the module comment).
#[derive(Default)]
pub struct RouteIndex {
    routes: BTreeMap<RouteKey, RouteState>,
    backends: backend::Backends,
    tables: Tables,
    /// L4 routes per Gateway and listener.
    l4: BTreeMap<ObjKey, BTreeMap<usize, Vec<l4::Entry>>>,
    /// Per Gateway: how many route attachments use each cluster.
    cluster_refs: BTreeMap<ObjKey, BTreeMap<String, u32>>,
    /// Namespace labels, read once per namespace.
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
}

/// Whether Envoy serves this listener of this Gateway.
fn served(gw: &GatewayState, listener: usize) -> bool {
    gw.bind_address().is_some() && gw.listeners[listener].programmable()
}

impl RouteIndex {
    /// An empty index for these Gateways: one route table (with a virtual
    /// host per listener hostname) for each HTTP table they serve.
    pub fn new(gateways: &GatewayMap) -> Self {
        let mut idx = RouteIndex::default();
        for gw in gateways.values() {
            idx.tables.add_gateway(gw, |i| served(gw, i));
        }
        idx
    }

    /// Re-reads the endpoints of every resolved cluster (EndpointSlices changed).
    pub fn refresh_endpoints(&mut self, inputs: &Inputs) -> &BTreeMap<String, ir::Cluster> {
        for c in self.backends.clusters.values_mut() {
            if c.split.is_empty() {
                c.endpoints = backend::endpoints(inputs, &c.service, &c.port_name);
            } else {
                l4::refresh_split(inputs, c);
            }
        }
        &self.backends.clusters
    }

    /// Compiles a route, attaches it to the listeners of our Gateways, adds
    /// its entries to their tables and computes its status. Returns the
    /// route's status entries for the parentRefs that are ours (empty: none).
    pub fn add(
        &mut self,
        inputs: &Inputs,
        route: &RouteInput<'_>,
        gateways: &mut GatewayMap,
    ) -> Vec<RouteParentStatus> {
        let compiled = route.compile(inputs, &mut self.backends);
        self.attach(inputs, route, compiled, gateways)
    }

    /// [`RouteIndex::add`] for many routes: they compile independently, on
    /// up to four threads (a full translation of thousands of routes), and
    /// attach in order. Returns each route's status entries.
    pub fn add_all(
        &mut self,
        inputs: &Inputs,
        items: &[RouteInput<'_>],
        gateways: &mut GatewayMap,
    ) -> Vec<Vec<RouteParentStatus>> {
        const MIN_PER_THREAD: usize = 500;
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4)
            .min(items.len() / MIN_PER_THREAD)
            .max(1);
        let chunk = items.len().div_ceil(threads).max(1);
        let mut compiled: Vec<RouteCompile> = Vec::with_capacity(items.len());
        let mut others = Vec::new();
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .skip(1)
                .map(|part| {
                    s.spawn(move || {
                        let mut b = backend::Backends::default();
                        let out: Vec<RouteCompile> =
                            part.iter().map(|it| it.compile(inputs, &mut b)).collect();
                        (out, b)
                    })
                })
                .collect();
            for it in items.iter().take(chunk) {
                compiled.push(it.compile(inputs, &mut self.backends));
            }
            for h in handles {
                match h.join() {
                    Ok((out, b)) => {
                        compiled.extend(out);
                        others.push(b);
                    }
                    Err(p) => std::panic::resume_unwind(p),
                }
            }
        });
        for b in others {
            self.backends.merge(b);
        }
        items
            .iter()
            .zip(compiled)
            .map(|(it, c)| self.attach(inputs, it, c, gateways))
            .collect()
    }

    fn attach(
        &mut self,
        inputs: &Inputs,
        route: &RouteInput<'_>,
        compiled: RouteCompile,
        gateways: &mut GatewayMap,
    ) -> Vec<RouteParentStatus> {
        let (kind, key) = (route.kind, route.key);
        let gen = generation(route.meta);
        if !self.ns_labels.contains_key(&key.namespace) {
            self.ns_labels.insert(
                key.namespace.clone(),
                inputs.namespace_labels(&key.namespace),
            );
        }
        let labels = &self.ns_labels[&key.namespace];
        let verdict = Verdict {
            accepted: compiled.accepted.as_ref().map(|_| ()),
            partially_invalid: compiled.partially_invalid.as_deref(),
            ref_error: compiled.ref_error.as_ref(),
        };
        let mut parents = Vec::with_capacity(route.parent_refs.len());
        let mut attachments = Vec::new();
        for pr in &route.parent_refs {
            let Some((gw_key, candidates)) = resolve_parent(pr, &key.namespace, gateways) else {
                // Not a parent of ours (or not there): leave its status to others.
                continue;
            };
            let Some(gw) = gateways.get_mut(&gw_key) else {
                continue;
            };
            let attached = match candidates {
                Ok(c) => {
                    attach::attach_to(labels, (kind, &key.namespace), &route.hostnames, gw, &c)
                }
                Err(e) => Err(e),
            };
            let attached = attached.map(|listeners| {
                if compiled.compiled.is_some() {
                    for (i, hostnames) in listeners {
                        gw.listeners[i].attached_routes += 1;
                        attachments.push(Attachment {
                            gateway: gw.key.clone(),
                            listener: i,
                            hostnames,
                        });
                    }
                }
            });
            parents.push(attach::parent_status(
                &inputs.controller_name,
                pr.clone(),
                attached,
                &verdict,
                gen,
            ));
        }
        if let Some(c) = &compiled.compiled {
            for a in &attachments {
                self.add_entries((kind, key), c, a, gateways);
            }
        }
        // Kept for as long as the route lives: no spare capacity.
        attachments.shrink_to_fit();
        self.routes.insert(
            (kind, key.clone()),
            RouteState {
                attachments,
                compiled: compiled.compiled,
            },
        );
        parents
    }

    /// Adds one attachment's entries (and cluster uses).
    fn add_entries(
        &mut self,
        (kind, key): (Kind, &ObjKey),
        c: &Compiled,
        a: &Attachment,
        gateways: &GatewayMap,
    ) {
        let Some(gw) = gateways.get(&a.gateway) else {
            return;
        };
        if !served(gw, a.listener) {
            return;
        }
        let refs = self.cluster_refs.entry(a.gateway.clone()).or_default();
        for name in &c.clusters {
            match refs.get_mut(name) {
                Some(n) => *n += 1,
                None => {
                    refs.insert(name.clone(), 1);
                }
            }
        }
        match &c.body {
            Body::Http(rules) => {
                self.tables
                    .add(gw, a.listener, &a.hostnames, (kind, key), &c.age, rules)
            }
            Body::L4(rule) => self
                .l4
                .entry(a.gateway.clone())
                .or_default()
                .entry(a.listener)
                .or_default()
                .push(l4::Entry::new(kind, key, c.age.clone(), &a.hostnames, rule)),
        }
    }

    /// Takes a route out: its status, attachments, entries and cluster uses.
    pub fn remove(&mut self, key: &RouteKey, gateways: &mut GatewayMap) {
        let Some(st) = self.routes.remove(key) else {
            return;
        };
        for a in &st.attachments {
            let Some(gw) = gateways.get_mut(&a.gateway) else {
                continue;
            };
            if let Some(l) = gw.listeners.get_mut(a.listener) {
                l.attached_routes -= 1;
            }
            let Some(c) = &st.compiled else { continue };
            if !served(gw, a.listener) {
                continue;
            }
            if let Some(refs) = self.cluster_refs.get_mut(&a.gateway) {
                for name in &c.clusters {
                    if let Some(n) = refs.get_mut(name) {
                        *n -= 1;
                        if *n == 0 {
                            refs.remove(name);
                        }
                    }
                }
            }
            match &c.body {
                Body::Http(_) => self
                    .tables
                    .remove(gw, a.listener, &a.hostnames, (key.0, &key.1)),
                Body::L4(_) => {
                    if let Some(entries) = self
                        .l4
                        .get_mut(&a.gateway)
                        .and_then(|m| m.get_mut(&a.listener))
                    {
                        entries.retain(|e| !(e.age.1 == key.1 && e.age.2 == key.0));
                    }
                }
            }
        }
    }

    /// See [`Tables::adopt_equal`]: the virtual hosts of `prev` (the index
    /// of the previous full translation) that are equal to the new ones.
    pub fn adopt_equal_vhosts(&mut self, prev: &RouteIndex) -> usize {
        self.tables.adopt_equal(&prev.tables)
    }

    /// Rebuilds what the changes since the last refresh touched.
    pub fn refresh(&mut self) {
        self.tables.refresh();
    }

    /// One Gateway's IR from the current tables.
    pub fn gateway_ir(&self, gw: &GatewayState) -> ir::Gateway {
        let mut out = ir::Gateway {
            key: gw.key.clone(),
            ..Default::default()
        };
        let Some(address) = gw.bind_address() else {
            return out;
        };
        for name in self
            .cluster_refs
            .get(&gw.key)
            .into_iter()
            .flat_map(|r| r.keys())
        {
            if let Some(cl) = self.backends.clusters.get(name) {
                out.clusters.insert(name.clone(), cl.clone());
            }
        }
        let l4 = self.l4.get(&gw.key);
        // One Envoy listener per (port, transport).
        let mut ports: BTreeMap<(u16, bool), Vec<usize>> = BTreeMap::new();
        for (i, l) in gw.listeners.iter().enumerate() {
            if served(gw, i) {
                let udp = l.transport() == ir::Transport::Udp;
                ports.entry((l.port, udp)).or_default().push(i);
            }
        }
        for ((port, udp), mut idxs) in ports {
            idxs.sort_by_cached_key(|&i| l4::listener_order(gw, i));
            let entries = |i: usize| l4.and_then(|m| m.get(&i));
            let first = &gw.listeners[idxs[0]];
            let chains: Vec<ir::FilterChain> = match first.protocol.as_str() {
                "HTTP" => vec![ir::FilterChain {
                    name: "http".into(),
                    server_names: Vec::new(),
                    tls: ir::ChainTls::None,
                    app: ir::App::Http(self.tables.route_config(&gw.key, &(port, None))),
                }],
                "HTTPS" | "TLS" => {
                    let mut chains = Vec::new();
                    for &i in &idxs {
                        let l = &gw.listeners[i];
                        if l.protocol == "TLS" {
                            chains.extend(l4::tls_chains(gw, i, entries(i), &idxs));
                            continue;
                        }
                        for s in &l.secrets {
                            if let Some(sec) = gw.secrets.get(s) {
                                out.secrets.insert(s.clone(), sec.clone());
                            }
                        }
                        let client_validation =
                            l.client_validation.as_ref().and_then(|v| v.ir.clone());
                        if let Some(ca) = client_validation
                            .as_ref()
                            .and_then(|v| gw.client_cas.get(&v.ca))
                        {
                            out.client_cas.insert(ca.name.clone(), ca.clone());
                        }
                        chains.push(ir::FilterChain {
                            name: l.name.clone(),
                            server_names: l.hostname.iter().cloned().collect(),
                            tls: ir::ChainTls::Terminate {
                                secrets: l.secrets.clone(),
                                alpn: vec!["h2".into(), "http/1.1".into()],
                                client_validation,
                            },
                            app: ir::App::Http(self.tables.route_config(&gw.key, &table_id(gw, i))),
                        });
                    }
                    for &i in &idxs {
                        let l = &gw.listeners[i];
                        if l.protocol == "TLS" {
                            for s in &l.secrets {
                                if let Some(sec) = gw.secrets.get(s) {
                                    out.secrets.insert(s.clone(), sec.clone());
                                }
                            }
                        }
                    }
                    l4::dedupe(chains)
                }
                _ => l4::single_chain(gw, idxs[0], entries(idxs[0]))
                    .into_iter()
                    .collect(),
            };
            if chains.is_empty() {
                continue;
            }
            out.listeners.push(ir::Listener {
                name: if udp {
                    names::udp_listener(&gw.key, port)
                } else {
                    names::listener(&gw.key, port)
                },
                address: address.to_string(),
                port: gw.envoy_port(port, udp),
                freebind: gw.bind.as_ref().is_some_and(|b| b.freebind),
                transport: if udp {
                    ir::Transport::Udp
                } else {
                    ir::Transport::Tcp
                },
                chains,
            });
        }
        out
    }
}

/// The Gateway a parentRef names and its candidate listeners (`Err`: the
/// parent has none matching `sectionName`/`port`). `None`: not a parent of
/// ours.
fn resolve_parent(
    pr: &ParentRef,
    route_ns: &str,
    gateways: &GatewayMap,
) -> Option<(ObjKey, Result<Vec<usize>, NotAttached>)> {
    if pr.group != GATEWAY_GROUP {
        return None;
    }
    let key = ObjKey::new(
        pr.namespace.as_deref().unwrap_or(route_ns),
        pr.name.as_str(),
    );
    let (gw, owner): (&GatewayState, Option<&ObjKey>) = match pr.kind.as_ref() {
        "Gateway" => (gateways.get(&key)?, None),
        "ListenerSet" => {
            let gw = gateways
                .values()
                .find(|g| g.listener_sets.contains_key(&key))?;
            (gw, Some(&key))
        }
        _ => return None,
    };
    let found = attach::candidates(gw, owner, pr);
    Some((gw.key.clone(), found))
}
