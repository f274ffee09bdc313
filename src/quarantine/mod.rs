//! NACK isolation: when Envoy rejects xDS resources, find the objects that
//! produced them, quarantine those, and rebuild without them, so one bad
//! route never freezes the route table it shares with every other route of
//! its port. See docs/nack-isolation.md.
//!
//! Pure bookkeeping (no I/O, no clock): the engine feeds it every
//! translation ([`Quarantine::observe`]) and every ACK/NACK
//! ([`Quarantine::on_ack`], [`Quarantine::on_nack`]); before translating
//! it asks for the inputs to translate ([`Quarantine::apply`]) and after,
//! for the status to report ([`Quarantine::overlay_status`]).
//!
//! - *Provenance* is derived on demand from the IR model built at the
//!   rejected version (kept for the last [`HISTORY`] versions, shared
//!   `Arc`s): a RouteConfiguration's contributors are the routes of its
//!   virtual hosts, a Listener's the L4 routes of its chains.
//! - *Suspects* are contributors that are routes and changed after the
//!   version the rejecting node last ran for that type (and not only after
//!   the rejected version). Objects that did not
//!   change are confirmed (every node ran them), so quarantining them would
//!   change nothing.
//! - A quarantined object is translated at its last confirmed content
//!   (what every Envoy ran) or, if it has none (new since then), left out.
//! - The quarantine lifts when the object changes again (its new content is
//!   tried once) or when the controller restarts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use gateway_api::experimental::{
    grpcroutes::GrpcRoute, httproutes::HttpRoute, tcproutes::TcpRoute, tlsroutes::TlsRoute,
    udproutes::UdpRoute,
};
use tracing::{info, warn};

use crate::inputs::{Changes, Inputs, Kind, ObjKey, Stored};
use crate::ir::{App, Model};
use crate::status::{Condition, ObjectStatus, StatusSet};
use crate::translate::conditions::{reasons, types};

/// Models kept to map a NACK of a recent version back to its objects.
pub const HISTORY: usize = 16;

/// At most this many objects quarantined at once; beyond, a NACK is only
/// reported (a rejection that many objects explain is not one bad object).
pub const MAX_QUARANTINED: usize = 256;

/// A source object.
pub type Src = (Kind, ObjKey);

/// The content of a route object (the kinds that can be quarantined),
/// shared with the [`Inputs`] it was read from (no copy).
#[derive(Clone, Debug, PartialEq)]
pub enum Obj {
    Http(Stored<HttpRoute>),
    Grpc(Stored<GrpcRoute>),
    Tls(Stored<TlsRoute>),
    Tcp(Stored<TcpRoute>),
    Udp(Stored<UdpRoute>),
}

/// Whether objects of `kind` can be quarantined.
pub fn quarantinable(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HTTPRoute | Kind::GRPCRoute | Kind::TLSRoute | Kind::TCPRoute | Kind::UDPRoute
    )
}

/// The object's content in `inputs` (`None`: absent or not quarantinable).
pub fn get(inputs: &Inputs, kind: Kind, key: &ObjKey) -> Option<Obj> {
    Some(match kind {
        Kind::HTTPRoute => Obj::Http(inputs.http_routes.get(key)?.clone()),
        Kind::GRPCRoute => Obj::Grpc(inputs.grpc_routes.get(key)?.clone()),
        Kind::TLSRoute => Obj::Tls(inputs.tls_routes.get(key)?.clone()),
        Kind::TCPRoute => Obj::Tcp(inputs.tcp_routes.get(key)?.clone()),
        Kind::UDPRoute => Obj::Udp(inputs.udp_routes.get(key)?.clone()),
        _ => return None,
    })
}

/// Puts `obj` in `inputs` under `kind`/`key`, or removes the object (`None`).
fn put(inputs: &mut Inputs, kind: Kind, key: &ObjKey, obj: Option<&Obj>) {
    match obj {
        None => inputs.remove(kind, key),
        Some(Obj::Http(o)) => {
            inputs.http_routes.insert(key.clone(), o.clone());
        }
        Some(Obj::Grpc(o)) => {
            inputs.grpc_routes.insert(key.clone(), o.clone());
        }
        Some(Obj::Tls(o)) => {
            inputs.tls_routes.insert(key.clone(), o.clone());
        }
        Some(Obj::Tcp(o)) => {
            inputs.tcp_routes.insert(key.clone(), o.clone());
        }
        Some(Obj::Udp(o)) => {
            inputs.udp_routes.insert(key.clone(), o.clone());
        }
    }
}

fn kind_named(s: &str) -> Option<Kind> {
    crate::kinds::routes().find(|k| k.as_str() == s)
}

/// The route objects that contributed to each named xDS resource of `model`.
pub fn contributors(model: &Model, names: &[String]) -> BTreeSet<Src> {
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let mut out = BTreeSet::new();
    for gw in model.gateways.values() {
        for l in &gw.listeners {
            let listener_wanted = wanted.contains(l.name.as_str());
            for chain in &l.chains {
                match &chain.app {
                    App::Http(rc) => {
                        // The whole table, or the virtual hosts of the
                        // named shards of it (`xds::build::shard`).
                        let shards: Vec<(u32, u32)> = if wanted.contains(rc.name.as_str()) {
                            vec![(0, 1)]
                        } else {
                            wanted
                                .iter()
                                .filter_map(|n| crate::xds::build::shard::parse_shard_name(n))
                                .filter(|(t, _, _)| *t == rc.name)
                                .map(|(_, i, k)| (i, k))
                                .collect()
                        };
                        if shards.is_empty() {
                            continue;
                        }
                        for vh in rc.virtual_hosts.iter().filter(|vh| {
                            shards
                                .iter()
                                .any(|(i, k)| crate::xds::build::shard::in_shard(vh, *i, *k))
                        }) {
                            for r in &vh.routes {
                                if let Some(k) = kind_named(r.source.kind) {
                                    out.insert((k, (*r.source.route).clone()));
                                }
                            }
                        }
                    }
                    App::Tcp(p) | App::Udp(p) if listener_wanted => {
                        // `<kind>/<ns>/<name>`
                        let mut parts = p.route.splitn(3, '/');
                        if let (Some(k), Some(ns), Some(name)) = (
                            parts.next().and_then(kind_named),
                            parts.next(),
                            parts.next(),
                        ) {
                            out.insert((k, ObjKey::new(ns, name)));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// An object changed after the last version every node confirmed.
#[derive(Clone, Debug)]
struct Unconfirmed {
    /// Global version of its first change since it was last confirmed.
    first_changed: u64,
    /// Global version of its latest change.
    changed_at: u64,
    /// Its content as of the last confirmed version (`None`: it did not exist).
    before: Option<Obj>,
}

/// One quarantined object.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Envoy's error.
    pub error: String,
    /// The node that rejected it and the rejected global version.
    pub node: String,
    pub version: u64,
    /// The rejected content: the quarantine lifts when the object differs.
    rejected: Option<Obj>,
    /// What is served instead (`None`: left out).
    fallback: Option<Obj>,
    /// Its status as translated from the rejected content.
    status: Option<ObjectStatus>,
}

impl Entry {
    /// Whether the object is still served, at its last accepted content.
    pub fn served(&self) -> bool {
        self.fallback.is_some()
    }

    /// The condition message for the object.
    pub fn message(&self) -> String {
        format!(
            "Envoy rejected the configuration built from this route: {}; {}",
            self.error.trim(),
            if self.served() {
                "served at its last accepted version"
            } else {
                "not served"
            }
        )
    }
}

/// What a NACK led to.
#[derive(Debug, Default, PartialEq)]
pub struct Verdict {
    /// Objects quarantined now (rebuild with them recorded as changed).
    pub quarantined: Vec<Src>,
}

/// The quarantine state; one per engine.
#[derive(Debug, Default)]
pub struct Quarantine {
    /// Current content of every quarantinable object (as the provider has it).
    mirror: BTreeMap<Src, Obj>,
    unconfirmed: BTreeMap<Src, Unconfirmed>,
    history: VecDeque<(u64, Arc<Model>)>,
    entries: BTreeMap<Src, Entry>,
}

impl Quarantine {
    pub fn entries(&self) -> &BTreeMap<Src, Entry> {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether changes wait for the fleet's ACK ([`Quarantine::on_ack`]).
    pub fn awaits_confirmation(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    /// The inputs to translate: `inputs` with every quarantined object at
    /// its fallback (or left out), plus those objects recorded in `changes`.
    /// Borrowed as is when nothing is quarantined.
    pub fn apply<'a>(
        &self,
        inputs: &'a Inputs,
        changes: &mut Changes,
    ) -> std::borrow::Cow<'a, Inputs> {
        if self.entries.is_empty() {
            return std::borrow::Cow::Borrowed(inputs);
        }
        let mut out = inputs.clone();
        for ((kind, key), e) in &self.entries {
            put(&mut out, *kind, key, e.fallback.as_ref());
            changes.record(*kind, key);
        }
        std::borrow::Cow::Owned(out)
    }

    /// Records, before a translation of the provider's `inputs` (not the
    /// quarantined view), what changed since the last confirmed version
    /// (`version`: the first global version that can carry the change), and
    /// lifts the quarantine of objects that changed. Returns the objects
    /// whose quarantine lifted.
    pub fn observe(&mut self, inputs: &Inputs, changes: &Changes, version: u64) -> Vec<Src> {
        let candidates: BTreeSet<Src> = if changes.all {
            let mut all: BTreeSet<Src> = self.mirror.keys().cloned().collect();
            for k in crate::kinds::routes() {
                all.extend(inputs.keys_of(k).into_iter().map(|key| (k, key)));
            }
            all
        } else {
            changes
                .objects
                .iter()
                .filter(|(k, _)| quarantinable(*k))
                .cloned()
                .collect()
        };
        let mut lifted = Vec::new();
        for src in candidates {
            let new = get(inputs, src.0, &src.1);
            let old = self.mirror.get(&src).cloned();
            if new == old {
                continue;
            }
            if let Some(rejected) = self.entries.get(&src).map(|e| e.rejected.clone()) {
                if new != rejected {
                    let e = self.lift(&src);
                    // What every node ran is the fallback, not the rejected content.
                    self.unconfirmed.insert(
                        src.clone(),
                        Unconfirmed {
                            first_changed: version,
                            changed_at: version,
                            before: e.and_then(|e| e.fallback),
                        },
                    );
                    lifted.push(src.clone());
                }
            }
            let before = old;
            self.unconfirmed
                .entry(src.clone())
                .or_insert(Unconfirmed {
                    first_changed: version,
                    changed_at: version,
                    before,
                })
                .changed_at = version;
            match new {
                Some(o) => self.mirror.insert(src, o),
                None => self.mirror.remove(&src),
            };
        }
        lifted
    }

    /// Keeps the model published as global `version` (for NACKs of it).
    pub fn record(&mut self, version: u64, model: Arc<Model>) {
        match self.history.back_mut() {
            Some((v, m)) if *v == version => *m = model,
            _ => self.history.push_back((version, model)),
        }
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Every connected node runs every type it subscribes to at `floor` or
    /// later: changes up to `floor` are confirmed.
    pub fn on_ack(&mut self, floor: u64) {
        let quarantined = &self.entries;
        self.unconfirmed
            .retain(|src, u| u.changed_at > floor || quarantined.contains_key(src));
    }

    /// A node rejected `resources` of global `version`, having last run that
    /// type at `acked`. Quarantines the suspects (see the module doc);
    /// `status` is the current translated status (saved for the report).
    pub fn on_nack(
        &mut self,
        node: &str,
        version: u64,
        acked: u64,
        error: &str,
        resources: &[String],
        status: &StatusSet,
    ) -> Verdict {
        let Some(model) = self
            .history
            .iter()
            .rev()
            .find(|(v, _)| *v <= version)
            .map(|(_, m)| Arc::clone(m))
        else {
            warn!(
                version,
                "NACK of a version older than the kept history; not attributable to objects"
            );
            return Verdict::default();
        };
        let contributors = contributors(&model, resources);
        let suspects: Vec<Src> = contributors
            .iter()
            .filter(|s| !self.entries.contains_key(*s))
            // Changed after what the node ran, and (as far as we know)
            // before the rejected version: a later edit is not to blame.
            .filter(|s| {
                self.unconfirmed
                    .get(*s)
                    .is_some_and(|u| u.changed_at > acked && u.first_changed <= version)
            })
            .cloned()
            .collect();
        if suspects.is_empty() {
            warn!(
                node, version, ?resources, contributors = contributors.len(),
                "Envoy rejected configuration that no changed route explains; nothing quarantined (the Gateway reports Programmed=False)"
            );
            return Verdict::default();
        }
        if self.entries.len() + suspects.len() > MAX_QUARANTINED {
            warn!(
                node,
                version,
                suspects = suspects.len(),
                "NACK would quarantine more than {MAX_QUARANTINED} objects; nothing quarantined"
            );
            return Verdict::default();
        }
        for src in &suspects {
            let fallback = self.unconfirmed.get(src).and_then(|u| u.before.clone());
            let e = Entry {
                error: error.to_string(),
                node: node.to_string(),
                version,
                rejected: self.mirror.get(src).cloned(),
                fallback,
                status: status.get(src.0, &src.1).cloned(),
            };
            warn!(
                kind = src.0.as_str(), object = %src.1, node, version,
                served_at_last_accepted = e.served(),
                "quarantined: {}", e.message()
            );
            crate::metrics::catalogue::XDS_REJECTED_OBJECTS.set(labels(src), 1.0);
            self.entries.insert(src.clone(), e);
        }
        Verdict {
            quarantined: suspects,
        }
    }

    fn lift(&mut self, src: &Src) -> Option<Entry> {
        let e = self.entries.remove(src)?;
        crate::metrics::catalogue::XDS_REJECTED_OBJECTS.remove(labels(src));
        info!(kind = src.0.as_str(), object = %src.1, "quarantine lifted: the object changed; its new content is tried");
        Some(e)
    }

    /// `status` with each quarantined object's status as translated from its
    /// rejected content, `Accepted=False` (`UnsupportedValue`) on every parent.
    pub fn overlay_status(&self, status: &StatusSet) -> StatusSet {
        let mut out = status.clone();
        for (src, e) in &self.entries {
            let Some(mut st) = e.status.clone() else {
                continue;
            };
            mark(&mut st, &e.message());
            out.objects.insert(src.clone(), st);
        }
        out
    }
}

/// Label values of `switchyard_xds_rejected_objects` (kind, namespace, name).
fn labels(src: &Src) -> [&str; 3] {
    [
        src.0.as_str(),
        src.1.namespace.as_str(),
        src.1.name.as_str(),
    ]
}

/// Sets `Accepted=False`, reason `UnsupportedValue`, on every parent entry.
fn mark(st: &mut ObjectStatus, message: &str) {
    let ObjectStatus::Route { parents } = st else {
        return;
    };
    for p in parents.iter_mut() {
        let generation = p
            .conditions
            .iter()
            .map(|c| c.observed_generation)
            .max()
            .unwrap_or(0);
        let cond = Condition::new(
            types::ACCEPTED,
            false,
            reasons::UNSUPPORTED_VALUE,
            message.to_string(),
            generation,
        );
        match p.conditions.iter_mut().find(|c| c.type_ == types::ACCEPTED) {
            Some(c) => *c = cond,
            None => p.conditions.push(cond),
        }
    }
}

#[cfg(test)]
mod tests;
