//! HTTP route tables of one Gateway: HTTP listeners share one per port, an
//! HTTPS listener has its own. Each keeps the route entries of every domain
//! in precedence order and the virtual hosts built from them; only the
//! virtual hosts whose entries changed are rebuilt.
//!
//! When several HTTPS listeners share a port, the table of each also has a
//! virtual host for every other listener's hostname (`*` for one without):
//! a Host that belongs to another listener than the one the connection's SNI
//! chose is answered 421 Misdirected Request (docs/misdirected-requests.md).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::gateway::GatewayState;
use super::hostname;
use super::http::{self, CompiledRule};
use super::index::Age;
use crate::inputs::{Kind, ObjKey};
use crate::ir::{self, names};

/// A route table: `(port, Some(listener index))` for an HTTPS listener,
/// `(port, None)` for the HTTP listeners of a port.
pub(super) type TableId = (u16, Option<usize>);

/// Order of virtual hosts in a table (exact, then wildcards, `*` last).
type DomainOrder = (u8, Reverse<usize>, String);

type SortKey = (ir::Precedence, Arc<Age>, usize, usize);

pub(super) struct Table {
    /// RouteConfiguration name.
    pub name: String,
    /// The listeners whose hostnames decide which one owns a Host: for an
    /// HTTP table, the listeners sharing it; for an HTTPS table, its own
    /// listener (hostname `None`: SNI chose it already) or, when several
    /// HTTPS listeners share the port, all of them with their hostnames.
    listeners: Vec<(usize, Option<String>)>,
    /// The HTTPS listener this table serves; a Host owned by another of
    /// `listeners` is misdirected (421). `None` for an HTTP table.
    serving: Option<usize>,
    /// Domains that keep a virtual host without route entries (listener
    /// hostnames; `*` for a listener without one when hosts can be
    /// misdirected).
    kept: BTreeSet<String>,
    /// Name and hostname of each of those listeners (for `explain`).
    listener_names: BTreeMap<usize, (String, Option<String>)>,
    /// Route entries per domain, in precedence order. Every listener
    /// hostname has a domain (possibly without entries).
    domains: BTreeMap<String, Vec<Entry>>,
    vhosts: BTreeMap<DomainOrder, Arc<ir::VirtualHost>>,
    /// Domains whose virtual host must be rebuilt.
    dirty: BTreeSet<String>,
    /// Every domain's virtual host must be built (a new table).
    all_dirty: bool,
}

/// A route entry of a table: its sort key, the listener it attached through.
struct Entry {
    key: SortKey,
    listener: usize,
    route: Arc<ir::Route>,
}

/// Route tables of every Gateway.
#[derive(Default)]
pub(super) struct Tables {
    by_gateway: BTreeMap<ObjKey, BTreeMap<TableId, Table>>,
}

pub(super) fn table_id(gw: &GatewayState, listener: usize) -> TableId {
    let l = &gw.listeners[listener];
    (l.port, (l.protocol == "HTTPS").then_some(listener))
}

fn is_http(protocol: &str) -> bool {
    matches!(protocol, "HTTP" | "HTTPS")
}

impl Tables {
    /// Empty tables (with a virtual host per listener hostname) for the
    /// served HTTP and HTTPS listeners of `gw`.
    pub fn add_gateway(&mut self, gw: &GatewayState, served: impl Fn(usize) -> bool) {
        for (i, l) in gw.listeners.iter().enumerate() {
            if !served(i) || !is_http(&l.protocol) {
                continue;
            }
            let id = table_id(gw, i);
            let table = self
                .by_gateway
                .entry(gw.key.clone())
                .or_default()
                .entry(id)
                .or_insert_with(|| Table {
                    name: match id.1 {
                        Some(_) => names::https_route_config(&gw.key, l.port, &l.name),
                        None => names::http_route_config(&gw.key, l.port),
                    },
                    listeners: Vec::new(),
                    serving: None,
                    kept: BTreeSet::new(),
                    listener_names: BTreeMap::new(),
                    domains: BTreeMap::new(),
                    vhosts: BTreeMap::new(),
                    dirty: BTreeSet::new(),
                    all_dirty: true,
                });
            let own_hostname = l.hostname.clone().filter(|h| !h.is_empty());
            table
                .listener_names
                .insert(i, (l.name.clone(), own_hostname.clone()));
            if id.1.is_none() {
                if let Some(h) = &own_hostname {
                    table.domains.entry(h.clone()).or_default();
                    table.kept.insert(h.clone());
                }
                table.listeners.push((i, own_hostname));
                continue;
            }
            table.serving = Some(i);
            let peers: Vec<usize> = (0..gw.listeners.len())
                .filter(|&j| {
                    let p = &gw.listeners[j];
                    served(j) && p.protocol == "HTTPS" && p.port == l.port
                })
                .collect();
            if peers.len() < 2 {
                // The only HTTPS listener of the port serves any Host its
                // routes name (SNI chose it already): nothing to misdirect to.
                table.listeners.push((i, None));
                continue;
            }
            // Several HTTPS listeners: a Host belongs to the most specific
            // listener whose hostname matches it, as SNI would choose.
            for j in peers {
                let p = &gw.listeners[j];
                let h = p.hostname.clone().filter(|h| !h.is_empty());
                let domain = h.clone().unwrap_or_else(|| "*".to_string());
                table.domains.entry(domain.clone()).or_default();
                table.kept.insert(domain);
                table.listener_names.insert(j, (p.name.clone(), h.clone()));
                table.listeners.push((j, h));
            }
        }
    }

    fn table_mut(&mut self, gw: &GatewayState, listener: usize) -> Option<&mut Table> {
        self.by_gateway
            .get_mut(&gw.key)
            .and_then(|t| t.get_mut(&table_id(gw, listener)))
    }

    /// The route configuration of a table (empty when it has none).
    pub fn route_config(&self, gw: &ObjKey, id: &TableId) -> ir::RouteConfig {
        match self.by_gateway.get(gw).and_then(|t| t.get(id)) {
            Some(t) => ir::RouteConfig {
                name: t.name.clone(),
                virtual_hosts: t.vhosts.values().cloned().collect(),
            },
            None => ir::RouteConfig {
                name: String::new(),
                virtual_hosts: Vec::new(),
            },
        }
    }

    /// Adds the entries of one route's rules, attached through `listener`
    /// under `hostnames` (empty: any host).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        gw: &GatewayState,
        listener: usize,
        hostnames: &[String],
        (kind, key): (Kind, &ObjKey),
        age: &Arc<Age>,
        rules: &[CompiledRule],
    ) {
        let Some(table) = self.table_mut(gw, listener) else {
            return;
        };
        let l = &gw.listeners[listener];
        let route_key = Arc::new(key.clone());
        let star = ["*".to_string()];
        let domains: &[String] = if hostnames.is_empty() {
            &star
        } else {
            hostnames
        };
        let https = l.protocol == "HTTPS";
        for rule in rules {
            // One action for all matches of the rule, unless a prefix
            // rewrite needs each match's prefix.
            let shared = match &rule.shared_action {
                Some(a) => Some(a.clone()),
                None => (!http::uses_matched_prefix(&rule.action)).then(|| {
                    Arc::new(http::with_redirect_port(rule.action.clone(), l.port, https))
                }),
            };
            for (mi, m) in rule.matches.iter().enumerate() {
                let sort_key = (m.precedence(), age.clone(), rule.index, mi);
                let route = Arc::new(ir::Route {
                    source: ir::RouteSource {
                        kind: kind.as_str(),
                        route: route_key.clone(),
                        rule: rule.index,
                        match_index: mi,
                        rule_name: rule.name.clone(),
                        age: age.clone(),
                    },
                    matcher: m.clone(),
                    action: match &shared {
                        Some(a) => a.clone(),
                        None => Arc::new(http::with_redirect_port(
                            http::with_matched_prefix(&rule.action, m),
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
                            listener,
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

    /// Takes out the entries a route added through `listener`.
    pub fn remove(
        &mut self,
        gw: &GatewayState,
        listener: usize,
        hostnames: &[String],
        (kind, key): (Kind, &ObjKey),
    ) {
        let Some(table) = self.table_mut(gw, listener) else {
            return;
        };
        let mut emptied = Vec::new();
        let star = ["*".to_string()];
        let domains: &[String] = if hostnames.is_empty() {
            &star
        } else {
            hostnames
        };
        for d in domains {
            let Some(entries) = table.domains.get_mut(d) else {
                continue;
            };
            entries.retain(|e| {
                !(*e.route.source.route == *key && e.route.source.kind == kind.as_str())
            });
            table.dirty.insert(d.clone());
            if entries.is_empty() && !table.kept.contains(d) {
                emptied.push(d.clone());
            }
        }
        for d in emptied {
            table.domains.remove(&d);
        }
    }

    /// Takes `prev`'s virtual host wherever the one just built is equal to
    /// it (same table, same domain): the value, and with it its encoding
    /// (`ir::VirtualHost::encoded`), carries over from the previous full
    /// translation, so a Gateway or Service change that leaves a virtual
    /// host as it was costs neither its encoding nor its re-sending. Returns
    /// how many were taken.
    pub fn adopt_equal(&mut self, prev: &Tables) -> usize {
        let mut taken = 0;
        for (gw, tables) in &mut self.by_gateway {
            let Some(old_tables) = prev.by_gateway.get(gw) else {
                continue;
            };
            for (id, table) in tables {
                let Some(old) = old_tables.get(id).filter(|o| o.name == table.name) else {
                    continue;
                };
                for (order, vh) in &mut table.vhosts {
                    if let Some(o) = old.vhosts.get(order) {
                        if !Arc::ptr_eq(o, vh) && **o == **vh {
                            *vh = o.clone();
                            taken += 1;
                        }
                    }
                }
            }
        }
        taken
    }

    /// Rebuilds the virtual hosts of changed domains, and of every domain
    /// that falls back to a changed wildcard domain.
    pub fn refresh(&mut self) {
        for table in self.by_gateway.values_mut().flat_map(|t| t.values_mut()) {
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
                let vh = virtual_host(table, &wildcards, d);
                table.vhosts.insert(order, Arc::new(vh));
            }
        }
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
/// listener's routes. In the table of an HTTPS listener, a domain owned by
/// another HTTPS listener of the port is misdirected (421).
fn virtual_host(table: &Table, wildcards: &[&String], d: &str) -> ir::VirtualHost {
    let domains = &table.domains;
    let own_listener = table
        .listeners
        .iter()
        .filter(|(_, h)| match h {
            None => true,
            Some(h) => d == h || hostname::falls_back_to(d, h),
        })
        .min_by_key(|(_, h)| hostname::specificity_key(h.as_deref().unwrap_or("*")))
        .map(|(i, _)| *i);
    let listener = own_listener.and_then(|i| table.listener_names.get(&i).cloned());
    if let (Some(serving), Some(owner)) = (table.serving, own_listener) {
        if serving != owner {
            // Another HTTPS listener of the port owns this Host: the
            // connection's SNI chose the wrong one (RFC 9110 §15.5.20).
            return ir::VirtualHost {
                name: format!("{}/{d}", table.name),
                domains: vec![d.to_string()],
                routes: Vec::new(),
                route_domains: Vec::new(),
                listener,
                misdirected: true,
                encoded: ir::Memo::default(),
            };
        }
    }
    let mine = |e: &&Entry| own_listener.is_none_or(|o| o == e.listener);
    let mut routes: Vec<Arc<ir::Route>> = Vec::new();
    let mut route_domains = Vec::new();
    let fallbacks = wildcards.iter().filter(|w| hostname::falls_back_to(d, w));
    for from in std::iter::once(d).chain(fallbacks.map(|w| w.as_str())) {
        let before = routes.len();
        routes.extend(
            domains
                .get(from)
                .into_iter()
                .flatten()
                .filter(mine)
                .map(|e| e.route.clone()),
        );
        if routes.len() > before {
            route_domains.push((from.to_string(), routes.len() - before));
        }
    }
    ir::VirtualHost {
        name: format!("{}/{d}", table.name),
        domains: vec![d.to_string()],
        routes,
        route_domains,
        listener,
        misdirected: false,
        encoded: ir::Memo::default(),
    }
}
