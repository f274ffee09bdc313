//! HTTPRoute and GRPCRoute (rewritten as the HTTPRoute it is on the wire, see
//! grpc.rs): attachment to listeners, rule compilation, precedence, and the
//! per-Gateway IR (listeners → route tables → virtual hosts → routes).
//!
//! [`RouteIndex`] keeps, per route, what it compiled to and where it
//! attached, and per route table the entries of every domain and the
//! virtual hosts built from them. A full translation adds every route to an
//! empty index; an incremental one removes the changed routes and adds their
//! new versions, then rebuilds only the virtual hosts whose entries changed.
//! Both run the same code, so they produce the same IR.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use gateway_api::experimental::gateways::GatewayListenersAllowedRoutesNamespacesFrom as NsFrom;
use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteParentRefs, HttpRouteRules, HttpRouteRulesBackendRefsFilters,
    HttpRouteRulesBackendRefsFiltersType as BfType, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersType as FType, HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HType,
    HttpRouteRulesMatchesPathType as PType, HttpRouteRulesMatchesQueryParamsType as QType,
};

use super::backend::{self, BackendRef, RefError};
use super::conditions::{reasons, types};
use super::gateway::{GatewayState, ListenerState};
use super::{generation, hostname, GatewayMap};
use crate::inputs::{Inputs, Kind, ObjKey, GATEWAY_GROUP};
use crate::ir::{self, names};
use crate::status::{Condition, ParentRef, RouteParentStatus};

/// A route: its kind (HTTPRoute or GRPCRoute) and name.
pub type RouteKey = (Kind, ObjKey);

/// A route as the index takes it: a GRPCRoute already rewritten as its
/// HTTPRoute (or, when it cannot be, its parentRefs and the reason).
pub struct RouteInput<'a> {
    pub kind: Kind,
    pub key: &'a ObjKey,
    pub route: std::borrow::Cow<'a, HttpRoute>,
    pub error: Option<String>,
}

impl<'a> RouteInput<'a> {
    pub fn http(key: &'a ObjKey, route: &'a HttpRoute) -> Self {
        RouteInput {
            kind: Kind::HTTPRoute,
            key,
            route: std::borrow::Cow::Borrowed(route),
            error: None,
        }
    }
    pub fn grpc(key: &'a ObjKey, route: &gateway_api::experimental::grpcroutes::GrpcRoute) -> Self {
        let (route, error) = match super::grpc::as_http_route(route) {
            Ok(h) => (h, None),
            Err(e) => (super::grpc::parents_only(route), Some(e)),
        };
        RouteInput {
            kind: Kind::GRPCRoute,
            key,
            route: std::borrow::Cow::Owned(route),
            error,
        }
    }
}

/// Routes attached to one set of Gateways (see the module comment).
#[derive(Default)]
pub struct RouteIndex {
    routes: BTreeMap<RouteKey, RouteState>,
    backends: backend::Backends,
    /// Route tables per Gateway.
    tables: BTreeMap<ObjKey, BTreeMap<TableId, Table>>,
    /// Per Gateway: how many route attachments use each cluster.
    cluster_refs: BTreeMap<ObjKey, BTreeMap<String, u32>>,
    /// Namespace labels, read once per namespace.
    ns_labels: BTreeMap<String, BTreeMap<String, String>>,
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

/// (creationTimestamp, namespace/name, kind): the spec's tie-breaker between
/// routes, oldest first.
type Age = (String, ObjKey, Kind);

/// A route's rules, compiled once and shared by all its parents.
struct Compiled {
    age: Arc<Age>,
    rules: Vec<CompiledRule>,
    /// Clusters the rules forward to.
    clusters: BTreeSet<String>,
}

struct CompiledRule {
    index: usize,
    matches: Vec<ir::RouteMatch>,
    action: ir::RouteAction,
    request_headers: ir::HeaderMods,
    response_headers: ir::HeaderMods,
}

/// A route table: HTTP listeners share one per port, an HTTPS listener has
/// its own (`Some(listener index)`).
type TableId = (u16, Option<usize>);

/// Order of virtual hosts in a table (exact, then wildcards, `*` last).
type DomainOrder = (u8, Reverse<usize>, String);

struct Table {
    /// RouteConfiguration name.
    name: String,
    /// The listeners sharing the table, with their hostnames.
    listeners: Vec<(usize, Option<String>)>,
    /// Route entries per domain, in precedence order. Every listener
    /// hostname has a domain (possibly without entries).
    domains: BTreeMap<String, Vec<Entry>>,
    vhosts: BTreeMap<DomainOrder, Arc<ir::VirtualHost>>,
    /// Domains whose virtual host must be rebuilt.
    dirty: BTreeSet<String>,
    /// Every domain's virtual host must be built (a new table).
    all_dirty: bool,
}

type Precedence = (u8, Reverse<usize>, u8, Reverse<usize>, Reverse<usize>);
type SortKey = (Precedence, Arc<Age>, usize, usize);

/// A route entry of a table: its sort key, the listener it attached through.
struct Entry {
    key: SortKey,
    listener: usize,
    route: Arc<ir::Route>,
}

fn table_id(gw: &GatewayState, listener: usize) -> TableId {
    let l = &gw.listeners[listener];
    (l.port, (l.protocol == "HTTPS").then_some(listener))
}

/// The route table a listener of a Gateway uses.
fn table_mut<'t>(
    tables: &'t mut BTreeMap<ObjKey, BTreeMap<TableId, Table>>,
    gw: &GatewayState,
    listener: usize,
) -> Option<&'t mut Table> {
    tables
        .get_mut(&gw.key)
        .and_then(|t| t.get_mut(&table_id(gw, listener)))
}

/// Whether Envoy serves this listener of this Gateway.
fn served(gw: &GatewayState, listener: usize) -> bool {
    gw.bind_address().is_some() && gw.listeners[listener].programmable()
}

impl RouteIndex {
    /// An empty index for these Gateways: one route table (with a virtual
    /// host per listener hostname) for each table they serve.
    pub fn new(gateways: &GatewayMap) -> Self {
        let mut idx = RouteIndex::default();
        for gw in gateways.values() {
            for (i, l) in gw.listeners.iter().enumerate() {
                if !served(gw, i) {
                    continue;
                }
                let id = table_id(gw, i);
                let table = idx
                    .tables
                    .entry(gw.key.clone())
                    .or_default()
                    .entry(id)
                    .or_insert_with(|| Table {
                        name: match id.1 {
                            Some(_) => names::https_route_config(&gw.key, l.port, &l.name),
                            None => names::http_route_config(&gw.key, l.port),
                        },
                        listeners: Vec::new(),
                        domains: BTreeMap::new(),
                        vhosts: BTreeMap::new(),
                        dirty: BTreeSet::new(),
                        all_dirty: true,
                    });
                // An HTTPS table serves one listener, whatever its hostname
                // (SNI chose it already).
                let hostname = if id.1.is_some() {
                    None
                } else {
                    l.hostname.clone().filter(|h| !h.is_empty())
                };
                if let Some(h) = &hostname {
                    table.domains.entry(h.clone()).or_default();
                }
                table.listeners.push((i, hostname));
            }
        }
        idx
    }

    /// Re-reads the endpoints of every resolved cluster (EndpointSlices changed).
    pub fn refresh_endpoints(&mut self, inputs: &Inputs) -> &BTreeMap<String, ir::Cluster> {
        for c in self.backends.clusters.values_mut() {
            c.endpoints = backend::endpoints(inputs, &c.service, &c.port_name);
        }
        &self.backends.clusters
    }

    /// Compiles a GRPCRoute (as its HTTPRoute) and attaches it.
    pub fn add_grpc(
        &mut self,
        inputs: &Inputs,
        key: &ObjKey,
        route: &gateway_api::experimental::grpcroutes::GrpcRoute,
        gateways: &mut GatewayMap,
    ) -> Vec<RouteParentStatus> {
        let r = RouteInput::grpc(key, route);
        self.add(inputs, r.kind, key, &r.route, r.error.as_deref(), gateways)
    }

    /// Compiles a route, attaches it to the listeners of our Gateways, adds
    /// its entries to their route tables and computes its status. A route
    /// that cannot be compiled (`forced_error`, or bad rules) keeps its
    /// parentRefs for status. Returns the route's status entries for the
    /// parentRefs that are ours (empty: none).
    pub fn add(
        &mut self,
        inputs: &Inputs,
        kind: Kind,
        key: &ObjKey,
        route: &HttpRoute,
        forced_error: Option<&str>,
        gateways: &mut GatewayMap,
    ) -> Vec<RouteParentStatus> {
        let compiled = compile_route(inputs, kind, key, route, forced_error, &mut self.backends);
        self.attach(inputs, kind, key, route, compiled, gateways)
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
        let compile = |it: &RouteInput<'_>, b: &mut backend::Backends| {
            compile_route(inputs, it.kind, it.key, &it.route, it.error.as_deref(), b)
        };
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
                            part.iter().map(|it| compile(it, &mut b)).collect();
                        (out, b)
                    })
                })
                .collect();
            for it in items.iter().take(chunk) {
                compiled.push(compile(it, &mut self.backends));
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
            .map(|(it, c)| self.attach(inputs, it.kind, it.key, &it.route, c, gateways))
            .collect()
    }

    fn attach(
        &mut self,
        inputs: &Inputs,
        kind: Kind,
        key: &ObjKey,
        route: &HttpRoute,
        compiled: RouteCompile,
        gateways: &mut GatewayMap,
    ) -> Vec<RouteParentStatus> {
        let gen = generation(&route.metadata);
        if !self.ns_labels.contains_key(&key.namespace) {
            self.ns_labels.insert(
                key.namespace.clone(),
                inputs.namespace_labels(&key.namespace),
            );
        }
        let labels = &self.ns_labels[&key.namespace];
        let mut parents = Vec::new();
        let mut attachments = Vec::new();
        for pr in route.spec.parent_refs.iter().flatten() {
            let group = pr.group.as_deref().unwrap_or(GATEWAY_GROUP);
            let parent_kind = pr.kind.as_deref().unwrap_or("Gateway");
            if group != GATEWAY_GROUP || parent_kind != "Gateway" {
                continue;
            }
            let gw_key = ObjKey::new(pr.namespace.as_deref().unwrap_or(&key.namespace), &pr.name);
            let Some(gw) = gateways.get_mut(&gw_key) else {
                // Not a Gateway of ours (or not there): leave its status to others.
                continue;
            };
            let accepted = attach_to_gateway(
                labels,
                (kind, key),
                route,
                pr,
                gw,
                &compiled,
                &mut attachments,
            );
            let mut conditions = vec![match accepted {
                Ok(()) => compiled.accepted.clone().unwrap_or_else(|(reason, msg)| {
                    Condition::new(types::ACCEPTED, false, reason, msg, gen)
                }),
                Err((reason, msg)) => Condition::new(types::ACCEPTED, false, reason, msg, gen),
            }];
            conditions.push(match &compiled.ref_error {
                None => Condition::new(
                    types::RESOLVED_REFS,
                    true,
                    reasons::RESOLVED_REFS,
                    "All references resolved",
                    gen,
                ),
                Some(e) => Condition::new(
                    types::RESOLVED_REFS,
                    false,
                    e.reason,
                    e.message.clone(),
                    gen,
                ),
            });
            if let Some(msg) = &compiled.partially_invalid {
                conditions.push(Condition::new(
                    types::PARTIALLY_INVALID,
                    true,
                    reasons::UNSUPPORTED_VALUE,
                    msg.clone(),
                    gen,
                ));
            }
            parents.push(RouteParentStatus {
                parent_ref: ParentRef {
                    group: GATEWAY_GROUP.into(),
                    kind: "Gateway".into(),
                    namespace: pr.namespace.clone(),
                    name: pr.name.clone(),
                    section_name: pr.section_name.clone(),
                    port: pr.port,
                },
                controller_name: inputs.controller_name.clone(),
                conditions,
            });
        }
        if let Some(c) = &compiled.compiled {
            for a in &attachments {
                self.add_entries((kind, key), c, a, gateways);
            }
        }
        self.routes.insert(
            (kind, key.clone()),
            RouteState {
                attachments,
                compiled: compiled.compiled,
            },
        );
        parents
    }

    /// Adds one attachment's route entries (and cluster uses) to its table.
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
        let Some(table) = table_mut(&mut self.tables, gw, a.listener) else {
            return;
        };
        if !self.cluster_refs.contains_key(&a.gateway) {
            self.cluster_refs.insert(a.gateway.clone(), BTreeMap::new());
        }
        if let Some(refs) = self.cluster_refs.get_mut(&a.gateway) {
            for name in &c.clusters {
                match refs.get_mut(name) {
                    Some(n) => *n += 1,
                    None => {
                        refs.insert(name.clone(), 1);
                    }
                }
            }
        }
        let l = &gw.listeners[a.listener];
        let route_key = Arc::new(key.clone());
        let star = ["*".to_string()];
        let domains: &[String] = if a.hostnames.is_empty() {
            &star
        } else {
            &a.hostnames
        };
        let https = l.protocol == "HTTPS";
        for rule in &c.rules {
            // One action for all matches of the rule, unless a prefix
            // rewrite needs each match's prefix.
            let shared = (!uses_matched_prefix(&rule.action))
                .then(|| Arc::new(with_redirect_port(rule.action.clone(), l.port, https)));
            for (mi, m) in rule.matches.iter().enumerate() {
                let sort_key = (precedence(m), c.age.clone(), rule.index, mi);
                let route = Arc::new(ir::Route {
                    source: ir::RouteSource {
                        kind: kind.as_str(),
                        route: route_key.clone(),
                        rule: rule.index,
                        match_index: mi,
                    },
                    matcher: m.clone(),
                    action: match &shared {
                        Some(a) => a.clone(),
                        None => Arc::new(with_redirect_port(
                            with_matched_prefix(&rule.action, m),
                            l.port,
                            https,
                        )),
                    },
                    request_headers: rule.request_headers.clone(),
                    response_headers: rule.response_headers.clone(),
                });
                for d in domains {
                    if !table.domains.contains_key(d) {
                        table.domains.insert(d.clone(), Vec::new());
                    }
                    let Some(entries) = table.domains.get_mut(d) else {
                        continue;
                    };
                    // After equal keys: the same route attached through
                    // several listeners keeps its attachment order.
                    let at = entries.partition_point(|e| e.key <= sort_key);
                    entries.insert(
                        at,
                        Entry {
                            key: sort_key.clone(),
                            listener: a.listener,
                            route: route.clone(),
                        },
                    );
                    if !table.all_dirty && !table.dirty.contains(d) {
                        table.dirty.insert(d.clone());
                    }
                }
            }
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
            let Some(table) = table_mut(&mut self.tables, gw, a.listener) else {
                continue;
            };
            let mut emptied = Vec::new();
            let star = ["*".to_string()];
            let domains: &[String] = if a.hostnames.is_empty() {
                &star
            } else {
                &a.hostnames
            };
            for d in domains {
                let Some(entries) = table.domains.get_mut(d) else {
                    continue;
                };
                entries.retain(|e| {
                    !(*e.route.source.route == key.1 && e.route.source.kind == key.0.as_str())
                });
                table.dirty.insert(d.clone());
                if entries.is_empty() && !table.listeners.iter().any(|(_, h)| h.as_ref() == Some(d))
                {
                    emptied.push(d.clone());
                }
            }
            for d in emptied {
                table.domains.remove(&d);
            }
        }
    }

    /// Rebuilds the virtual hosts of changed domains, and of every domain
    /// that falls back to a changed wildcard domain.
    pub fn refresh(&mut self) {
        for table in self.tables.values_mut().flat_map(|t| t.values_mut()) {
            if table.all_dirty {
                table.all_dirty = false;
                table.dirty = table.domains.keys().cloned().collect();
            }
            if table.dirty.is_empty() {
                continue;
            }
            let mut wildcards: Vec<&String> = table
                .domains
                .keys()
                .filter(|d| d.starts_with('*'))
                .collect();
            wildcards.sort_by_cached_key(|d| hostname::specificity_key(d));
            let mut dirty = std::mem::take(&mut table.dirty);
            let dirty_wildcards: Vec<String> = dirty
                .iter()
                .filter(|d| d.starts_with('*'))
                .cloned()
                .collect();
            for w in &dirty_wildcards {
                for d in table.domains.keys() {
                    if hostname::falls_back_to(d, w) && !dirty.contains(d) {
                        dirty.insert(d.clone());
                    }
                }
            }
            for d in &dirty {
                let order = hostname::specificity_key(d);
                if !table.domains.contains_key(d) {
                    table.vhosts.remove(&order);
                    continue;
                }
                let vh = virtual_host(&table.name, &table.listeners, &table.domains, &wildcards, d);
                table.vhosts.insert(order, Arc::new(vh));
            }
        }
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
        let route_config = |id: &TableId| -> ir::RouteConfig {
            match self.tables.get(&gw.key).and_then(|t| t.get(id)) {
                Some(t) => ir::RouteConfig {
                    name: t.name.clone(),
                    virtual_hosts: t.vhosts.values().cloned().collect(),
                },
                None => ir::RouteConfig {
                    name: String::new(),
                    virtual_hosts: Vec::new(),
                },
            }
        };
        // Listeners: one per port.
        let mut ports: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, l) in gw.listeners.iter().enumerate() {
            if l.programmable() {
                ports.entry(l.port).or_default().push(i);
            }
        }
        for (port, idxs) in ports {
            let protocol = gw.listeners[idxs[0]].protocol.as_str();
            let kind = if protocol == "HTTPS" {
                let mut chains = Vec::new();
                for &i in &idxs {
                    let l = &gw.listeners[i];
                    chains.push(ir::TlsChain {
                        section: l.name.clone(),
                        server_names: l.hostname.iter().cloned().collect(),
                        secrets: l.secrets.clone(),
                        route_config: route_config(&table_id(gw, i)),
                    });
                    for s in &l.secrets {
                        if let Some(sec) = gw.secrets.get(s) {
                            out.secrets.insert(s.clone(), sec.clone());
                        }
                    }
                }
                // Most specific SNI first; the catch-all chain last.
                chains.sort_by_key(|c| {
                    c.server_names
                        .first()
                        .map(|s| hostname::specificity_key(s))
                        .unwrap_or_else(|| hostname::specificity_key("*"))
                });
                ir::ListenerKind::Https { chains }
            } else {
                ir::ListenerKind::Http {
                    route_config: route_config(&(port, None)),
                }
            };
            out.listeners.push(ir::Listener {
                name: names::listener(&gw.key, port),
                address: address.to_string(),
                port,
                kind,
            });
        }
        out
    }
}

/// The virtual host of domain `d`: its own routes, then those of the wider
/// wildcard domains it falls back to, as the spec's precedence asks.
///
/// A request belongs to the most specific listener matching its Host, and
/// only that listener's routes may serve it: a virtual host keeps the
/// routes of its domain's owning listener, and every listener hostname has
/// a virtual host (maybe without routes: 404) so that a more specific
/// listener without a matching route never falls through to a wider
/// listener's routes.
fn virtual_host(
    table_name: &str,
    listeners: &[(usize, Option<String>)],
    domains: &BTreeMap<String, Vec<Entry>>,
    wildcards: &[&String],
    d: &str,
) -> ir::VirtualHost {
    let own_listener = listeners
        .iter()
        .filter(|(_, h)| match h {
            None => true,
            Some(h) => d == h || hostname::falls_back_to(d, h),
        })
        .min_by_key(|(_, h)| hostname::specificity_key(h.as_deref().unwrap_or("*")))
        .map(|(i, _)| *i);
    let mine = |e: &&Entry| own_listener.is_none_or(|o| o == e.listener);
    let mut routes: Vec<Arc<ir::Route>> = domains
        .get(d)
        .into_iter()
        .flatten()
        .filter(mine)
        .map(|e| e.route.clone())
        .collect();
    for w in wildcards.iter().filter(|w| hostname::falls_back_to(d, w)) {
        routes.extend(
            domains
                .get(w.as_str())
                .into_iter()
                .flatten()
                .filter(mine)
                .map(|e| e.route.clone()),
        );
    }
    ir::VirtualHost {
        name: format!("{table_name}/{d}"),
        domains: vec![d.to_string()],
        routes,
        encoded: ir::Memo::default(),
    }
}

/// Result of compiling a route's rules, before attachment.
struct RouteCompile {
    /// `Ok` with the Accepted condition if at least one rule is usable.
    accepted: Result<Condition, (&'static str, String)>,
    partially_invalid: Option<String>,
    ref_error: Option<RefError>,
    compiled: Option<Compiled>,
}

fn compile_route(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    route: &HttpRoute,
    forced_error: Option<&str>,
    backends: &mut backend::Backends,
) -> RouteCompile {
    let gen = generation(&route.metadata);
    if let Some(e) = forced_error {
        return RouteCompile {
            accepted: Err((reasons::UNSUPPORTED_VALUE, e.to_string())),
            partially_invalid: None,
            ref_error: None,
            compiled: None,
        };
    }
    let unknown = inputs.unknown(kind, key);
    let route_level: Vec<&String> = unknown
        .iter()
        .filter(|p| !p.starts_with("spec.rules["))
        .collect();
    if !route_level.is_empty() {
        let fields: Vec<&str> = route_level.iter().map(|s| s.as_str()).collect();
        return RouteCompile {
            accepted: Err((
                reasons::UNSUPPORTED_VALUE,
                format!(
                    "fields not supported by this Switchyard: {}",
                    fields.join(", ")
                ),
            )),
            partially_invalid: None,
            ref_error: None,
            compiled: None,
        };
    }
    if route.spec.use_default_gateways.is_some() {
        return RouteCompile {
            accepted: Err((
                reasons::UNSUPPORTED_VALUE,
                "spec.useDefaultGateways is not supported".into(),
            )),
            partially_invalid: None,
            ref_error: None,
            compiled: None,
        };
    }
    let mut rules = Vec::new();
    let mut dropped = Vec::new();
    let mut first_drop_reason = None;
    let mut ref_error = None;
    let empty_rule = [HttpRouteRules::default()];
    let spec_rules = route
        .spec
        .rules
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(&empty_rule);
    for (i, rule) in spec_rules.iter().enumerate() {
        let prefix = format!("spec.rules[{i}]");
        let unknown_here: Vec<&str> = unknown
            .iter()
            .filter(|p| p.starts_with(&prefix))
            .map(|s| s.as_str())
            .collect();
        let res = if unknown_here.is_empty() {
            compile_rule(inputs, kind, key, i, rule, backends, &mut ref_error)
        } else {
            Err((
                reasons::UNSUPPORTED_VALUE,
                format!("fields not supported: {}", unknown_here.join(", ")),
            ))
        };
        match res {
            Ok(r) => rules.push(r),
            Err((reason, msg)) => {
                first_drop_reason.get_or_insert(reason);
                dropped.push(format!("rule {i}: {msg}"));
            }
        }
    }
    let age = (
        route
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        key.clone(),
        kind,
    );
    if rules.is_empty() {
        return RouteCompile {
            accepted: Err((
                first_drop_reason.unwrap_or(reasons::UNSUPPORTED_VALUE),
                format!("no usable rule: {}", dropped.join("; ")),
            )),
            partially_invalid: None,
            ref_error,
            compiled: None,
        };
    }
    let partially_invalid =
        (!dropped.is_empty()).then(|| format!("Dropped Rule(s): {}", dropped.join("; ")));
    RouteCompile {
        accepted: Ok(Condition::new(
            types::ACCEPTED,
            true,
            reasons::ACCEPTED,
            "Route is accepted",
            gen,
        )),
        partially_invalid,
        ref_error,
        compiled: Some(Compiled {
            age: Arc::new(age),
            clusters: rules
                .iter()
                .filter_map(|r| match &r.action {
                    ir::RouteAction::Forward(f) => Some(f.backends.iter()),
                    _ => None,
                })
                .flatten()
                .filter_map(|b| b.cluster.clone())
                .collect(),
            rules,
        }),
    }
}

type RuleError = (&'static str, String);

fn compile_rule(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    index: usize,
    rule: &HttpRouteRules,
    backends_cache: &mut backend::Backends,
    ref_error: &mut Option<RefError>,
) -> Result<CompiledRule, RuleError> {
    if rule.retry.is_some() {
        return Err((
            reasons::UNSUPPORTED_VALUE,
            "retry is not supported yet".into(),
        ));
    }
    if rule.session_persistence.is_some() {
        return Err((
            reasons::UNSUPPORTED_VALUE,
            "sessionPersistence is not supported yet".into(),
        ));
    }
    let timeouts = compile_timeouts(rule)?;
    // Matches.
    let default_match = [HttpRouteRulesMatches::default()];
    let spec_matches = rule
        .matches
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(&default_match);
    let mut matches = Vec::new();
    for (j, m) in spec_matches.iter().enumerate() {
        matches.push(
            compile_match(m)
                .map_err(|e| (reasons::UNSUPPORTED_VALUE, format!("matches[{j}]: {e}")))?,
        );
    }
    // Filters.
    let mut request_headers = ir::HeaderMods::default();
    let mut response_headers = ir::HeaderMods::default();
    let mut redirect = None;
    let mut rewrite: Option<ir::Rewrite> = None;
    for (j, f) in rule.filters.iter().flatten().enumerate() {
        apply_filter(
            f,
            &mut request_headers,
            &mut response_headers,
            &mut redirect,
            &mut rewrite,
            &matches,
        )
        .map_err(|(r, e)| (r, format!("filters[{j}]: {e}")))?;
    }
    if redirect.is_some() && rewrite.is_some() {
        return Err((
            reasons::INCOMPATIBLE_FILTERS,
            "RequestRedirect and URLRewrite cannot be combined".into(),
        ));
    }
    let action = if let Some(r) = redirect {
        if rule.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err((
                reasons::INCOMPATIBLE_FILTERS,
                "RequestRedirect cannot be combined with backendRefs".into(),
            ));
        }
        ir::RouteAction::Redirect(r)
    } else {
        let mut backends = Vec::new();
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
            let mut breq = ir::HeaderMods::default();
            let mut bresp = ir::HeaderMods::default();
            for (k, f) in b.filters.iter().flatten().enumerate() {
                backend_filter(f, &mut breq, &mut bresp).map_err(|e| {
                    (
                        reasons::UNSUPPORTED_VALUE,
                        format!("backendRefs[{j}].filters[{k}]: {e}"),
                    )
                })?;
            }
            let r = BackendRef {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref(),
                port: b.port,
            };
            let cluster = match backends_cache.resolve(inputs, kind.as_str(), &key.namespace, &r) {
                Ok(name) => Some(name),
                Err(e) => {
                    match ref_error {
                        // One reason per condition (the first); the message names every bad reference.
                        Some(first) => {
                            if !first.message.contains(&e.message) {
                                first.message = format!("{}; {}", first.message, e.message);
                            }
                        }
                        None => *ref_error = Some(e),
                    }
                    None
                }
            };
            if weight > 0 {
                backends.push(ir::WeightedBackend {
                    cluster,
                    weight,
                    request_headers: breq,
                    response_headers: bresp,
                });
            }
        }
        ir::RouteAction::Forward(ir::Forward {
            backends,
            rewrite,
            timeouts,
        })
    };
    Ok(CompiledRule {
        index,
        matches,
        action,
        request_headers,
        response_headers,
    })
}

fn compile_timeouts(rule: &HttpRouteRules) -> Result<ir::Timeouts, RuleError> {
    let Some(t) = &rule.timeouts else {
        return Ok(ir::Timeouts::default());
    };
    let parse =
        |field: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, RuleError> {
            match v.as_deref() {
                None => Ok(None),
                Some(s) => s
                    .parse::<gateway_api::Duration>()
                    .map(|d| {
                        Some(std::time::Duration::from_nanos(
                            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                        ))
                    })
                    .map_err(|e| {
                        (
                            reasons::UNSUPPORTED_VALUE,
                            format!("timeouts.{field} {s:?}: {e}"),
                        )
                    }),
            }
        };
    let request = parse("request", &t.request)?;
    let backend_request = parse("backendRequest", &t.backend_request)?;
    if let (Some(r), Some(b)) = (request, backend_request) {
        if !r.is_zero() && (b.is_zero() || b > r) {
            return Err((
                reasons::UNSUPPORTED_VALUE,
                "timeouts.backendRequest must not be longer than timeouts.request".into(),
            ));
        }
    }
    Ok(ir::Timeouts {
        request,
        backend_request,
    })
}

fn compile_match(m: &HttpRouteRulesMatches) -> Result<ir::RouteMatch, String> {
    let path = match &m.path {
        None => ir::PathMatch::Prefix("/".into()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            match p.r#type.clone().unwrap_or(PType::PathPrefix) {
                PType::Exact => {
                    check_path(&value)?;
                    ir::PathMatch::Exact(value)
                }
                PType::PathPrefix => {
                    check_path(&value)?;
                    let trimmed = value.trim_end_matches('/');
                    ir::PathMatch::Prefix(if trimmed.is_empty() {
                        "/".into()
                    } else {
                        trimmed.to_string()
                    })
                }
                PType::RegularExpression => {
                    check_regex(&value)?;
                    ir::PathMatch::Regex(value)
                }
            }
        }
    };
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        let name = h.name.to_ascii_lowercase();
        if headers.iter().any(|x: &ir::HeaderMatch| x.name == name) {
            // The spec: only the first match for a header name counts.
            continue;
        }
        let value = match h.r#type.clone().unwrap_or(HType::Exact) {
            HType::Exact => ir::StringMatch::Exact(h.value.clone()),
            HType::RegularExpression => {
                check_regex(&h.value)?;
                ir::StringMatch::Regex(h.value.clone())
            }
        };
        headers.push(ir::HeaderMatch { name, value });
    }
    let mut query_params = Vec::new();
    for q in m.query_params.iter().flatten() {
        if query_params
            .iter()
            .any(|x: &ir::HeaderMatch| x.name == q.name)
        {
            continue;
        }
        let value = match q.r#type.clone().unwrap_or(QType::Exact) {
            QType::Exact => ir::StringMatch::Exact(q.value.clone()),
            QType::RegularExpression => {
                check_regex(&q.value)?;
                ir::StringMatch::Regex(q.value.clone())
            }
        };
        query_params.push(ir::HeaderMatch {
            name: q.name.clone(),
            value,
        });
    }
    let method = m.method.as_ref().map(|mm| {
        serde_json::to_value(mm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    Ok(ir::RouteMatch {
        path,
        headers,
        query_params,
        method,
    })
}

fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path {p:?} must start with '/'"));
    }
    if p.contains("//")
        || p.contains("/./")
        || p.contains("/../")
        || p.ends_with("/..")
        || p.ends_with("/.")
    {
        return Err(format!("path {p:?} is not normalized"));
    }
    if p.contains('?') || p.contains('#') {
        return Err(format!("path {p:?} must not contain '?' or '#'"));
    }
    Ok(())
}

/// Envoy evaluates RE2; the `regex` crate accepts the same syntax family
/// (no look-around, no backreferences), so a pattern it rejects is one Envoy
/// would reject too.
fn check_regex(r: &str) -> Result<(), String> {
    regex::Regex::new(r).map(|_| ()).map_err(|e| {
        let first = e
            .to_string()
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        format!("invalid regular expression {r:?}: {first}")
    })
}

/// Copies a header modifier into the IR. The generated API types have one
/// struct per filter location (route, backendRef) with the same fields.
macro_rules! header_mods {
    ($m:expr, $into:expr) => {{
        let m = $m;
        let into: &mut ir::HeaderMods = $into;
        into.add.extend(
            m.add
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone())),
        );
        into.set.extend(
            m.set
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone())),
        );
        into.remove
            .extend(m.remove.iter().flatten().map(|s| s.to_ascii_lowercase()));
    }};
}

fn apply_filter(
    f: &HttpRouteRulesFilters,
    req: &mut ir::HeaderMods,
    resp: &mut ir::HeaderMods,
    redirect: &mut Option<ir::Redirect>,
    rewrite: &mut Option<ir::Rewrite>,
    matches: &[ir::RouteMatch],
) -> Result<(), RuleError> {
    let unsupported = |what: &str| {
        Err((
            reasons::UNSUPPORTED_VALUE,
            format!("filter type {what} is not supported yet"),
        ))
    };
    let missing = |what: &str| {
        Err((
            reasons::UNSUPPORTED_VALUE,
            format!("filter type {what} needs its {what} field"),
        ))
    };
    match f.r#type {
        FType::RequestHeaderModifier => {
            let Some(m) = &f.request_header_modifier else {
                return missing("requestHeaderModifier");
            };
            header_mods!(m, req);
        }
        FType::ResponseHeaderModifier => {
            let Some(m) = &f.response_header_modifier else {
                return missing("responseHeaderModifier");
            };
            header_mods!(m, resp);
        }
        FType::RequestRedirect => {
            let Some(r) = &f.request_redirect else {
                return missing("requestRedirect");
            };
            let path = match &r.path {
                None => None,
                Some(p) => Some(path_rewrite(
                    matches!(p.r#type, RedirectPathType::ReplaceFullPath),
                    p.replace_full_path.as_deref(),
                    p.replace_prefix_match.as_deref(),
                    matches,
                )?),
            };
            let status_code = r.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status_code) {
                return Err((
                    reasons::UNSUPPORTED_VALUE,
                    format!("redirect statusCode {status_code} is not supported"),
                ));
            }
            let scheme = r
                .scheme
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string));
            *redirect = Some(ir::Redirect {
                scheme,
                hostname: r.hostname.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path,
                status_code: status_code as u32,
            });
        }
        FType::UrlRewrite => {
            let Some(r) = &f.url_rewrite else {
                return missing("urlRewrite");
            };
            let path = match &r.path {
                None => None,
                Some(p) => Some(path_rewrite(
                    matches!(p.r#type, RewritePathType::ReplaceFullPath),
                    p.replace_full_path.as_deref(),
                    p.replace_prefix_match.as_deref(),
                    matches,
                )?),
            };
            *rewrite = Some(ir::Rewrite {
                hostname: r.hostname.clone(),
                path,
            });
        }
        FType::RequestMirror => return unsupported("RequestMirror"),
        FType::ExtensionRef => return unsupported("ExtensionRef"),
        FType::Cors => return unsupported("CORS"),
        FType::ExternalAuth => return unsupported("ExternalAuth"),
    }
    Ok(())
}

/// `full`: ReplaceFullPath (else ReplacePrefixMatch, which needs PathPrefix matches).
fn path_rewrite(
    full: bool,
    full_path: Option<&str>,
    prefix: Option<&str>,
    matches: &[ir::RouteMatch],
) -> Result<ir::PathRewrite, RuleError> {
    if full {
        let p = full_path.ok_or((
            reasons::UNSUPPORTED_VALUE,
            "ReplaceFullPath needs replaceFullPath".to_string(),
        ))?;
        return Ok(ir::PathRewrite::Full(p.to_string()));
    }
    let replacement = prefix.ok_or((
        reasons::UNSUPPORTED_VALUE,
        "ReplacePrefixMatch needs replacePrefixMatch".to_string(),
    ))?;
    // Every match must be a PathPrefix; the matched prefix is per route entry,
    // so the IR records a placeholder that xds::build fills per match.
    if !matches
        .iter()
        .all(|m| matches!(m.path, ir::PathMatch::Prefix(_)))
    {
        return Err((
            reasons::UNSUPPORTED_VALUE,
            "ReplacePrefixMatch requires every match of the rule to be a PathPrefix match".into(),
        ));
    }
    Ok(ir::PathRewrite::Prefix {
        matched: String::new(),
        replacement: replacement.to_string(),
    })
}

fn backend_filter(
    f: &HttpRouteRulesBackendRefsFilters,
    req: &mut ir::HeaderMods,
    resp: &mut ir::HeaderMods,
) -> Result<(), String> {
    match f.r#type {
        BfType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or("requestHeaderModifier missing")?;
            header_mods!(m, req);
            Ok(())
        }
        BfType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or("responseHeaderModifier missing")?;
            header_mods!(m, resp);
            Ok(())
        }
        ref other => Err(format!("backendRef filter type {other:?} is not supported")),
    }
}

/// Tries to attach a route (via one parentRef) to a Gateway's listeners.
fn attach_to_gateway(
    ns_labels: &BTreeMap<String, String>,
    (kind, key): (Kind, &ObjKey),
    route: &HttpRoute,
    pr: &HttpRouteParentRefs,
    gw: &mut GatewayState,
    compiled: &RouteCompile,
    attachments: &mut Vec<Attachment>,
) -> Result<(), (&'static str, String)> {
    let route_hostnames: Vec<String> = route.spec.hostnames.clone().unwrap_or_default();
    let candidates: Vec<usize> = gw
        .listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| pr.section_name.as_deref().is_none_or(|s| s == l.name))
        .filter(|(_, l)| pr.port.is_none_or(|p| i32::from(l.port) == p))
        .map(|(i, _)| i)
        .collect();
    if candidates.is_empty() {
        return Err((
            reasons::NO_MATCHING_PARENT,
            format!(
                "Gateway {} has no listener matching{}{}",
                gw.key,
                pr.section_name
                    .as_ref()
                    .map(|s| format!(" sectionName {s}"))
                    .unwrap_or_default(),
                pr.port.map(|p| format!(" port {p}")).unwrap_or_default()
            ),
        ));
    }
    let allowed: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| gw.listeners[i].attachable())
        .filter(|&i| {
            listener_allows(
                &gw.listeners[i],
                kind,
                &gw.key.namespace,
                &key.namespace,
                ns_labels,
            )
        })
        .collect();
    if allowed.is_empty() {
        return Err((
            reasons::NOT_ALLOWED_BY_LISTENERS,
            format!(
                "no listener of Gateway {} allows {}s from namespace {}",
                gw.key,
                kind.as_str(),
                key.namespace
            ),
        ));
    }
    let mut attached = false;
    for i in allowed {
        let Some(hosts) =
            hostname::intersect(gw.listeners[i].hostname.as_deref(), &route_hostnames)
        else {
            continue;
        };
        attached = true;
        if compiled.compiled.is_some() {
            gw.listeners[i].attached_routes += 1;
            attachments.push(Attachment {
                gateway: gw.key.clone(),
                listener: i,
                hostnames: hosts,
            });
        }
    }
    if !attached {
        return Err((
            reasons::NO_MATCHING_LISTENER_HOSTNAME,
            format!(
                "no hostname of the route intersects a listener hostname of Gateway {}",
                gw.key
            ),
        ));
    }
    Ok(())
}

fn listener_allows(
    l: &ListenerState,
    kind: Kind,
    gw_ns: &str,
    route_ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if !l.kinds.iter().any(|k| k == kind.as_str()) {
        return false;
    }
    let ns = l
        .spec
        .allowed_routes
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    match ns.and_then(|n| n.from.clone()).unwrap_or(NsFrom::Same) {
        NsFrom::Same => gw_ns == route_ns,
        NsFrom::All => true,
        NsFrom::Selector => ns.and_then(|n| n.selector.as_ref()).is_some_and(|sel| {
            sel.match_labels
                .iter()
                .flatten()
                .all(|(k, v)| labels.get(k) == Some(v))
                && sel.match_expressions.iter().flatten().all(|e| {
                    let vals = e.values.as_deref().unwrap_or(&[]);
                    match e.operator.as_str() {
                        "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
                        "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
                        "Exists" => labels.contains_key(&e.key),
                        "DoesNotExist" => !labels.contains_key(&e.key),
                        _ => false,
                    }
                })
        }),
    }
}

/// Precedence key of one compiled match (smaller sorts first).
fn precedence(m: &ir::RouteMatch) -> Precedence {
    let (kind, len) = match &m.path {
        ir::PathMatch::Exact(p) => (0, p.len()),
        ir::PathMatch::Regex(p) => (1, p.len()),
        ir::PathMatch::Prefix(p) => (2, p.len()),
    };
    (
        kind,
        Reverse(len),
        u8::from(m.method.is_none()),
        Reverse(m.headers.len()),
        Reverse(m.query_params.len()),
    )
}

/// Fills the matched prefix into a ReplacePrefixMatch rewrite/redirect.
/// The spec's redirect port rules: an explicit port is used (omitted when it
/// is the scheme's well-known port); without one, a redirect that changes the
/// scheme uses the new scheme's well-known port, and otherwise the listener's
/// port. Envoy sees the request's Host without its port (ports are ignored
/// for matching), so the port must be spelled out here.
fn with_redirect_port(
    action: ir::RouteAction,
    listener_port: u16,
    listener_https: bool,
) -> ir::RouteAction {
    let ir::RouteAction::Redirect(mut r) = action else {
        return action;
    };
    let well_known = |scheme: &str| if scheme == "https" { 443 } else { 80 };
    let listener_scheme = if listener_https { "https" } else { "http" };
    let scheme = r
        .scheme
        .clone()
        .unwrap_or_else(|| listener_scheme.to_string());
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) => well_known(s),
        (None, None) => listener_port,
    };
    r.port = (port != well_known(&scheme)).then_some(port);
    ir::RouteAction::Redirect(r)
}

/// Whether the action has a ReplacePrefixMatch (filled per match).
fn uses_matched_prefix(action: &ir::RouteAction) -> bool {
    let prefix = |p: &Option<ir::PathRewrite>| matches!(p, Some(ir::PathRewrite::Prefix { .. }));
    match action {
        ir::RouteAction::Forward(f) => f.rewrite.as_ref().is_some_and(|r| prefix(&r.path)),
        ir::RouteAction::Redirect(r) => prefix(&r.path),
        ir::RouteAction::Direct { .. } => false,
    }
}

fn with_matched_prefix(action: &ir::RouteAction, m: &ir::RouteMatch) -> ir::RouteAction {
    let matched = match &m.path {
        ir::PathMatch::Prefix(p) => p.clone(),
        _ => return action.clone(),
    };
    let fix = |p: &Option<ir::PathRewrite>| match p {
        Some(ir::PathRewrite::Prefix { replacement, .. }) => Some(ir::PathRewrite::Prefix {
            matched: matched.clone(),
            replacement: replacement.clone(),
        }),
        other => other.clone(),
    };
    match action {
        ir::RouteAction::Forward(f) => ir::RouteAction::Forward(ir::Forward {
            backends: f.backends.clone(),
            rewrite: f.rewrite.as_ref().map(|r| ir::Rewrite {
                hostname: r.hostname.clone(),
                path: fix(&r.path),
            }),
            timeouts: f.timeouts.clone(),
        }),
        ir::RouteAction::Redirect(r) => ir::RouteAction::Redirect(ir::Redirect {
            path: fix(&r.path),
            ..r.clone()
        }),
        other => other.clone(),
    }
}
