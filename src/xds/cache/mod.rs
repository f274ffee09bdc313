//! Versioned resource cache between the builder and the ADS streams.
//!
//! The cache holds one immutable [`State`] (all Gateways' resources plus a
//! global version) behind an `Arc`; writers build a new one and swap it in,
//! streams read the current one whenever they are woken. Two `watch`
//! channels wake the streams: one for full snapshots, one for endpoint-only
//! updates (only streams that watch EDS listen to it).
//!
//! The global version only moves when the served content moves: a rebuild
//! whose resources are byte-identical (same names, same content hashes)
//! keeps the version and wakes nobody.
//!
//! The cache also keeps the registry of connected streams with their
//! per-type ACK/NACK state, which feeds `/debug/nodes`, the
//! [`XdsEvent`] broadcast and [`Cache::acked_everywhere`] (Programmed).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::{debug, info, warn};

use super::authz::Entitlement;
use super::{type_url, Resource, Snapshot};

/// Resources of one type, by name.
pub(crate) type TypeMap = BTreeMap<String, Arc<Resource>>;

static EMPTY: TypeMap = BTreeMap::new();

/// Resources by type URL. Cloning is cheap (one `Arc` per type).
#[derive(Clone, Debug, Default)]
pub(crate) struct View {
    by_type: BTreeMap<&'static str, Arc<TypeMap>>,
}

impl View {
    fn from_set(set: super::ResourceSet) -> Self {
        let by_type = set
            .by_type
            .into_iter()
            .filter(|(_, m)| !m.is_empty())
            .map(|(t, m)| {
                (
                    t,
                    Arc::new(m.into_iter().map(|(n, r)| (n, Arc::new(r))).collect()),
                )
            })
            .collect();
        View { by_type }
    }

    /// The resources of one type (empty for a type this view does not have).
    pub(crate) fn get(&self, type_url: &str) -> &TypeMap {
        self.by_type
            .get(type_url)
            .map(|m| m.as_ref())
            .unwrap_or(&EMPTY)
    }

    /// Same names and same content hashes for every type.
    fn same(&self, other: &View) -> bool {
        self.by_type.len() == other.by_type.len()
            && self
                .by_type
                .iter()
                .zip(other.by_type.iter())
                .all(|((ta, a), (tb, b))| {
                    ta == tb
                        && (Arc::ptr_eq(a, b)
                            || (a.len() == b.len()
                                && a.iter().zip(b.iter()).all(|((na, ra), (nb, rb))| {
                                    na == nb && ra.version == rb.version
                                })))
                })
    }
}

/// Union of several Gateways' views. Same-named resources are identical by
/// construction; if they are not, the first Gateway's wins (with a warning
/// when `warn_conflicts`).
fn union<'a>(views: &[(&'a str, &'a View)], warn_conflicts: bool) -> View {
    let mut types: BTreeSet<&'static str> = BTreeSet::new();
    for (_, v) in views {
        types.extend(v.by_type.keys().copied());
    }
    let mut out = View::default();
    for t in types {
        let present: Vec<(&str, &Arc<TypeMap>)> = views
            .iter()
            .filter_map(|(gw, v)| v.by_type.get(t).map(|m| (*gw, m)))
            .collect();
        if let [(_, only)] = present.as_slice() {
            out.by_type.insert(t, Arc::clone(only));
            continue;
        }
        let mut merged: TypeMap = BTreeMap::new();
        let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
        for (gw, m) in &present {
            for (name, r) in m.iter() {
                match merged.get(name) {
                    None => {
                        merged.insert(name.clone(), Arc::clone(r));
                        owner.insert(name.as_str(), gw);
                    }
                    Some(first) if first.version != r.version && warn_conflicts => {
                        warn!(
                            type_url = t,
                            resource = %name,
                            kept = owner.get(name.as_str()).copied().unwrap_or(""),
                            ignored = gw,
                            "same-named xDS resource differs between Gateways; keeping the first"
                        );
                    }
                    Some(_) => {}
                }
            }
        }
        out.by_type.insert(t, Arc::new(merged));
    }
    out
}

/// Which Gateways a node receives.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// What the node asked for in `node.metadata.gateways` (`ns/name`);
    /// empty = all it may receive.
    pub requested: Vec<String>,
    /// What its client certificate entitles it to (mTLS port); `None` on a
    /// plaintext port, where the metadata alone decides.
    pub entitled: Option<Arc<Entitlement>>,
}

impl Selection {
    /// Whether the node receives Gateway `gw` (`ns/name`).
    pub fn serves(&self, gw: &str) -> bool {
        (self.requested.is_empty() || self.requested.iter().any(|r| r == gw))
            && self.entitled.as_ref().is_none_or(|e| e.allows(gw))
    }

    /// Every Gateway, whatever the snapshot holds.
    fn everything(&self) -> bool {
        self.requested.is_empty() && self.entitled.as_ref().is_none_or(|e| e.fleet)
    }
}

/// Reads the `gateways` field of an Envoy node's metadata: either a string
/// `"ns/a,ns/b"` or a list of strings. Absent or empty selects every Gateway.
pub(crate) fn requested_from_metadata(
    md: Option<&envoy_types::pb::google::protobuf::Struct>,
) -> Vec<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        for part in s.split(',') {
            let part = part.trim();
            if !part.is_empty() && !out.iter().any(|x| x == part) {
                out.push(part.to_string());
            }
        }
    };
    match md
        .and_then(|m| m.fields.get("gateways"))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) => push(s),
        Some(Kind::ListValue(l)) => {
            for v in &l.values {
                if let Some(Kind::StringValue(s)) = &v.kind {
                    push(s);
                }
            }
        }
        _ => {}
    }
    out
}

/// One consistent generation of everything the cache serves.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) version: u64,
    gateways: BTreeMap<String, View>,
    /// Union over every Gateway (the view of nodes that select all).
    all: View,
}

impl State {
    /// What a node with this selection sees.
    pub(crate) fn view(&self, sel: &Selection) -> View {
        if sel.everything() {
            return self.all.clone();
        }
        let views: Vec<(&str, &View)> = self
            .gateways
            .iter()
            .filter(|(gw, _)| sel.serves(gw))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        match views.as_slice() {
            [] => View::default(),
            [(_, only)] => (*only).clone(),
            // Conflicts were already reported when `all` was built.
            _ => union(&views, false),
        }
    }

    /// The Gateways (`ns/name`) of this snapshot a node with this selection
    /// receives.
    pub(crate) fn gateways_of(&self, sel: &Selection) -> Vec<String> {
        self.gateways
            .keys()
            .filter(|gw| sel.serves(gw))
            .cloned()
            .collect()
    }
}

/// Which variant of ADS a stream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// State of the world (`StreamAggregatedResources`).
    Sotw,
    /// Incremental (`DeltaAggregatedResources`).
    Delta,
}

/// A rejected response, as Envoy reported it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// Global version the rejected response was built from.
    pub version: u64,
    pub nonce: String,
    /// Envoy's `error_detail.message`.
    pub error: String,
    /// Resources carried by the rejected response.
    pub resource_names: Vec<String>,
    pub at_unix_ms: u64,
}

/// ACK/NACK state of one resource type on one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TypeAckState {
    /// Highest global version the node is known to run for this type (it
    /// ACKed a response built from it, or that version did not change what
    /// the node should have). 0 = nothing yet.
    pub acked_version: u64,
    /// Nonce of the last ACKed response.
    pub acked_nonce: String,
    pub last_nack: Option<Nack>,
}

/// One connected stream (normally one Envoy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeState {
    pub stream_id: u64,
    pub node_id: String,
    pub cluster: String,
    pub protocol: Protocol,
    /// Which Gateways it receives.
    #[serde(flatten)]
    pub selection: Selection,
    pub connected_at_unix_ms: u64,
    /// By type URL; present once the node has subscribed to the type.
    pub types: BTreeMap<String, TypeAckState>,
}

/// ACK/NACK notifications (see [`Cache::subscribe_events`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum XdsEvent {
    /// `node` now runs `type_url` at global version `version`: it ACKed a
    /// response built from that version, or that version left its content
    /// for this type unchanged.
    Ack {
        node: String,
        type_url: String,
        version: u64,
        nonce: String,
    },
    /// `node` rejected the response built from `version`.
    Nack {
        node: String,
        type_url: String,
        version: u64,
        error: String,
        resource_names: Vec<String>,
    },
}

/// Short, bounded metric label for a type URL.
pub(crate) fn type_label(t: &str) -> &'static str {
    match t {
        type_url::CLUSTER => "cds",
        type_url::ENDPOINT => "eds",
        type_url::LISTENER => "lds",
        type_url::ROUTE => "rds",
        type_url::SCOPED_ROUTE => "srds",
        type_url::SECRET => "sds",
        _ => "other",
    }
}

pub(crate) fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The versioned resource cache. Share it with `Arc`.
pub struct Cache {
    state: Mutex<Arc<State>>,
    /// Serialises writers so a version is computed from its predecessor.
    writer: Mutex<()>,
    full_tx: watch::Sender<u64>,
    eds_tx: watch::Sender<u64>,
    events: broadcast::Sender<XdsEvent>,
    nodes: Mutex<BTreeMap<u64, NodeState>>,
    next_stream: AtomicU64,
    /// When recent versions were published (fleet convergence).
    published: Mutex<converge::Published>,
    /// When the convergence gauge was last recomputed (unix ms).
    convergence_at: AtomicU64,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("version", &self.current().version)
            .finish_non_exhaustive()
    }
}

impl Cache {
    pub fn new() -> Arc<Cache> {
        let (full_tx, _) = watch::channel(0);
        let (eds_tx, _) = watch::channel(0);
        let (events, _) = broadcast::channel(1024);
        Arc::new(Cache {
            state: Mutex::new(Arc::new(State::default())),
            writer: Mutex::new(()),
            full_tx,
            eds_tx,
            events,
            nodes: Mutex::new(BTreeMap::new()),
            next_stream: AtomicU64::new(1),
            published: Mutex::new(converge::Published::default()),
            convergence_at: AtomicU64::new(0),
        })
    }

    pub(crate) fn current(&self) -> Arc<State> {
        Arc::clone(&lock(&self.state))
    }

    fn publish(&self, st: State) {
        let version = st.version;
        *lock(&self.state) = Arc::new(st);
        crate::metrics::catalogue::SNAPSHOT_VERSION.set([], version as f64);
        lock(&self.published).record(version, now_unix_ms());
        self.refresh_convergence();
    }

    /// [`Cache::refresh_convergence`] unless it ran in the last
    /// [`converge::ACK_REFRESH_MS`]: a change to N nodes brings 5×N ACKs,
    /// and each refresh walks every node (quadratic in the fleet size). The
    /// slow tick that callers run anyway catches up with the last ACKs.
    fn refresh_convergence_throttled(&self) {
        let now = now_unix_ms();
        let last = self.convergence_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= converge::ACK_REFRESH_MS {
            self.refresh_convergence();
        }
    }

    /// Recomputes `switchyard_xds_nodes_not_converged` (on NACK/snapshot/
    /// connection events, throttled on ACKs; call it on a slow tick too, for
    /// a grace running out and the ACKs the throttle skipped).
    pub fn refresh_convergence(&self) {
        self.convergence_at.store(now_unix_ms(), Ordering::Relaxed);
        let version = self.current().version;
        let n = {
            let nodes = lock(&self.nodes);
            converge::not_converged(
                nodes.values(),
                version,
                &lock(&self.published),
                now_unix_ms(),
                converge::GRACE_MS,
            )
        };
        crate::metrics::catalogue::XDS_NODES_NOT_CONVERGED.set([], n as f64);
    }

    /// Replaces everything (including endpoints set by [`Cache::set_endpoints`])
    /// and wakes every stream. Returns the global version, which grows with
    /// every content change; a snapshot identical to the current one returns
    /// the current version and pushes nothing.
    pub fn set_snapshot(&self, snap: Snapshot) -> u64 {
        let _w = lock(&self.writer);
        let cur = self.current();
        let gateways: BTreeMap<String, View> = snap
            .gateways
            .into_iter()
            .map(|(gw, set)| (gw, View::from_set(set)))
            .collect();
        let identical = cur.gateways.len() == gateways.len()
            && cur
                .gateways
                .iter()
                .zip(gateways.iter())
                .all(|((ga, a), (gb, b))| ga == gb && a.same(b));
        // The first snapshot is always published, even an empty one: version 0
        // means "nothing published yet" and streams wait for it.
        if identical && cur.version > 0 {
            debug!(version = cur.version, "snapshot unchanged; nothing to push");
            return cur.version;
        }
        let version = cur.version + 1;
        let all = {
            let views: Vec<(&str, &View)> = gateways.iter().map(|(k, v)| (k.as_str(), v)).collect();
            union(&views, true)
        };
        self.publish(State {
            version,
            gateways,
            all,
        });
        info!(version, "new xDS snapshot");
        self.full_tx.send_replace(version);
        version
    }

    /// Replaces EDS resources (ClusterLoadAssignments keyed by cluster name)
    /// in every Gateway that has them, leaving everything else alone, and
    /// wakes only streams that watch EDS. Names the current snapshot does not
    /// carry are ignored (the next full snapshot brings its own endpoints).
    pub fn set_endpoints(&self, cla: BTreeMap<String, Resource>) {
        let _w = lock(&self.writer);
        let cur = self.current();
        let cla: TypeMap = cla.into_iter().map(|(n, r)| (n, Arc::new(r))).collect();
        let mut gateways = cur.gateways.clone();
        let mut changed = false;
        for view in gateways.values_mut() {
            let Some(eps) = view.by_type.get(type_url::ENDPOINT) else {
                continue;
            };
            let mut next: Option<TypeMap> = None;
            for (name, old) in eps.iter() {
                if let Some(new) = cla.get(name) {
                    if new.version != old.version {
                        next.get_or_insert_with(|| (**eps).clone())
                            .insert(name.clone(), Arc::clone(new));
                    }
                }
            }
            if let Some(m) = next {
                view.by_type.insert(type_url::ENDPOINT, Arc::new(m));
                changed = true;
            }
        }
        if !changed {
            debug!(
                version = cur.version,
                "endpoints unchanged; nothing to push"
            );
            return;
        }
        let version = cur.version + 1;
        let mut all = cur.all.clone();
        let views: Vec<(&str, &View)> = gateways.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let eds = union(&views, true)
            .by_type
            .remove(type_url::ENDPOINT)
            .unwrap_or_default();
        all.by_type.insert(type_url::ENDPOINT, eds);
        self.publish(State {
            version,
            gateways,
            all,
        });
        debug!(version, "new endpoints");
        self.eds_tx.send_replace(version);
    }

    /// Wakes on every full snapshot.
    pub(crate) fn watch_full(&self) -> watch::Receiver<u64> {
        self.full_tx.subscribe()
    }

    /// Wakes on every endpoint-only update.
    pub(crate) fn watch_endpoints(&self) -> watch::Receiver<u64> {
        self.eds_tx.subscribe()
    }

    /// ACK/NACK events from every stream. A slow receiver may lag (and then
    /// should re-read [`Cache::node_states`]).
    pub fn subscribe_events(&self) -> broadcast::Receiver<XdsEvent> {
        self.events.subscribe()
    }

    /// Every connected stream with its per-type ACK/NACK state.
    pub fn node_states(&self) -> Vec<NodeState> {
        lock(&self.nodes).values().cloned().collect()
    }

    /// The lowest version any connected node runs for `types` (each node's
    /// lowest among those it subscribed to); `None` without such a node.
    /// Reads the registry in place: called per ACK, it must not copy it.
    pub fn acked_floor(&self, types: &[&str]) -> Option<u64> {
        lock(&self.nodes)
            .values()
            .filter_map(|n| {
                types
                    .iter()
                    .filter_map(|t| n.types.get(*t).map(|s| s.acked_version))
                    .min()
            })
            .min()
    }

    /// Whether every connected node runs, for every type it subscribes to,
    /// the configuration of global version `version` or newer. A connected
    /// node that has not subscribed to anything yet counts as not done.
    /// Vacuously true with no node connected (check [`Cache::node_states`]
    /// when at least one Envoy is required).
    pub fn acked_everywhere(&self, version: u64) -> bool {
        lock(&self.nodes)
            .values()
            .all(|n| !n.types.is_empty() && n.types.values().all(|t| t.acked_version >= version))
    }

    /// Registers a stream; the registration ends when the handle drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        node_id: &str,
        cluster: &str,
        protocol: Protocol,
        selection: &Selection,
    ) -> NodeHandle {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let mut nodes = lock(&self.nodes);
        nodes.insert(
            id,
            NodeState {
                stream_id: id,
                node_id: node_id.to_string(),
                cluster: cluster.to_string(),
                protocol,
                selection: selection.clone(),
                connected_at_unix_ms: now_unix_ms(),
                types: BTreeMap::new(),
            },
        );
        set_connected(nodes.len());
        NodeHandle {
            cache: Arc::clone(self),
            id,
            node: node_id.to_string(),
        }
    }
}

fn set_connected(n: usize) {
    crate::metrics::catalogue::XDS_CONNECTED_NODES.set([], n as f64);
}

/// A stream's entry in the node registry.
pub(crate) struct NodeHandle {
    cache: Arc<Cache>,
    id: u64,
    node: String,
}

impl NodeHandle {
    fn with_type(&self, t: &str, f: impl FnOnce(&mut TypeAckState)) {
        let mut nodes = lock(&self.cache.nodes);
        if let Some(n) = nodes.get_mut(&self.id) {
            f(n.types.entry(t.to_string()).or_default());
        }
    }

    pub(crate) fn subscribed(&self, t: &str) {
        self.with_type(t, |_| {});
    }

    /// The node runs `t` at `version` (never moves backwards).
    pub(crate) fn acked(&self, t: &str, version: u64, nonce: &str) {
        self.with_type(t, |s| {
            s.acked_version = s.acked_version.max(version);
            s.acked_nonce = nonce.to_string();
        });
        self.cache.refresh_convergence_throttled();
        let _ = self.cache.events.send(XdsEvent::Ack {
            node: self.node.clone(),
            type_url: t.to_string(),
            version,
            nonce: nonce.to_string(),
        });
    }

    pub(crate) fn nacked(&self, t: &str, nack: Nack) {
        crate::metrics::catalogue::XDS_NACKS.inc([type_label(t)]);
        let ev = XdsEvent::Nack {
            node: self.node.clone(),
            type_url: t.to_string(),
            version: nack.version,
            error: nack.error.clone(),
            resource_names: nack.resource_names.clone(),
        };
        self.with_type(t, |s| s.last_nack = Some(nack));
        self.cache.refresh_convergence();
        let _ = self.cache.events.send(ev);
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        let mut nodes = lock(&self.cache.nodes);
        nodes.remove(&self.id);
        set_connected(nodes.len());
        drop(nodes);
        self.cache.refresh_convergence();
    }
}

pub mod converge;
#[cfg(test)]
mod tests;
