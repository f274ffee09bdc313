//! The xDS cache: what every Envoy should have, plus what every Envoy said
//! about it (ACK/NACK).
//!
//! Resources are kept per Gateway; an Envoy node selects Gateways through
//! its node metadata field `gateways` ("ns/a,ns/b" or a list; absent or
//! empty = all). Its view is the union over the selected Gateways.
//! Endpoints can be replaced on their own (`set_endpoints`) so that endpoint
//! churn never touches clusters, listeners or routes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tracing::warn;

use super::{type_url, Resource, Snapshot};

/// Resources of one node's view: type URL → name → resource.
pub type View = BTreeMap<&'static str, BTreeMap<String, Resource>>;

/// What an Envoy did with a response.
#[derive(Clone, Debug, Serialize)]
pub enum XdsEvent {
    Ack {
        node: String,
        type_url: String,
        version: String,
    },
    Nack {
        node: String,
        type_url: String,
        version: String,
        error: String,
        resource_names: Vec<String>,
    },
}

/// The last NACK of one resource type on one node.
#[derive(Clone, Debug, Serialize)]
pub struct Nack {
    pub version: String,
    pub nonce: String,
    pub error: String,
    pub resource_names: Vec<String>,
    pub at_unix_secs: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct TypeState {
    /// Version string of the last response the node ACKed.
    pub acked_version: String,
    /// Nonce of a response not yet answered.
    pub pending_nonce: Option<String>,
    /// Names the node holds (as last sent).
    pub resources: usize,
    pub last_nack: Option<Nack>,
}

/// One connected Envoy stream.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeState {
    pub stream_id: u64,
    pub node_id: String,
    pub cluster: String,
    pub protocol: &'static str,
    pub gateways: Vec<String>,
    /// Snapshot version whose resources this node has ACKed in full.
    pub synced_version: u64,
    pub types: BTreeMap<String, TypeState>,
}

struct Inner {
    version: u64,
    snapshot: Snapshot,
    /// EDS overrides from `set_endpoints`, by cluster name.
    endpoints: BTreeMap<String, Resource>,
}

pub struct Cache {
    inner: RwLock<Inner>,
    changed: watch::Sender<u64>,
    events: broadcast::Sender<XdsEvent>,
    nodes: Mutex<BTreeMap<u64, NodeState>>,
    /// Views computed at the current version, by gateway selection.
    views: Mutex<BTreeMap<Vec<String>, (u64, Arc<View>)>>,
}

impl Cache {
    pub fn new() -> Arc<Cache> {
        let (changed, _) = watch::channel(0);
        let (events, _) = broadcast::channel(1024);
        Arc::new(Cache {
            inner: RwLock::new(Inner {
                version: 0,
                snapshot: Snapshot::default(),
                endpoints: BTreeMap::new(),
            }),
            changed,
            events,
            nodes: Mutex::new(BTreeMap::new()),
            views: Mutex::new(BTreeMap::new()),
        })
    }

    /// Replaces everything; returns the new version. Identical content keeps
    /// the version (and so wakes nobody).
    pub fn set_snapshot(&self, snap: Snapshot) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.snapshot == snap && inner.endpoints.is_empty() {
            return inner.version;
        }
        // A new snapshot was translated from the newest inputs: its own
        // endpoints supersede earlier EDS-only overrides.
        inner.endpoints.clear();
        inner.snapshot = snap;
        inner.version += 1;
        let v = inner.version;
        drop(inner);
        crate::metrics::gauge_set(
            "switchyard_snapshot_version",
            "Version of the configuration being served.",
            &[],
            v as f64,
        );
        self.changed.send_replace(v);
        v
    }

    /// Replaces the endpoints of the given clusters only.
    pub fn set_endpoints(&self, clas: BTreeMap<String, Resource>) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = false;
        for (name, r) in clas {
            let current = inner.endpoints.get(&name).or_else(|| {
                inner
                    .snapshot
                    .gateways
                    .values()
                    .find_map(|s| s.get(type_url::ENDPOINT).and_then(|m| m.get(&name)))
            });
            if current.map(|c| &c.version) != Some(&r.version) {
                inner.endpoints.insert(name, r);
                changed = true;
            }
        }
        if !changed {
            return inner.version;
        }
        inner.version += 1;
        let v = inner.version;
        drop(inner);
        crate::metrics::gauge_set(
            "switchyard_snapshot_version",
            "Version of the configuration being served.",
            &[],
            v as f64,
        );
        self.changed.send_replace(v);
        v
    }

    pub fn version(&self) -> u64 {
        self.inner.read().map(|i| i.version).unwrap_or(0)
    }

    /// Wakes on every version change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn subscribe_events(&self) -> broadcast::Receiver<XdsEvent> {
        self.events.subscribe()
    }

    /// The view of a node selecting `gateways` (empty = all), and its
    /// version; computed once per version and selection, then shared.
    pub fn view(&self, gateways: &[String]) -> (u64, Arc<View>) {
        let version = self.version();
        if let Some((v, view)) = self
            .views
            .lock()
            .ok()
            .and_then(|m| m.get(gateways).cloned())
        {
            if v == version {
                return (v, view);
            }
        }
        let (v, view) = self.compute_view(gateways);
        let view = Arc::new(view);
        if let Ok(mut m) = self.views.lock() {
            m.retain(|_, (mv, _)| *mv == v);
            m.insert(gateways.to_vec(), (v, view.clone()));
        }
        (v, view)
    }

    fn compute_view(&self, gateways: &[String]) -> (u64, View) {
        let inner = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut view: View = BTreeMap::new();
        for (gw, set) in &inner.snapshot.gateways {
            if !gateways.is_empty() && !gateways.iter().any(|g| g == gw) {
                continue;
            }
            for (t, rs) in &set.by_type {
                let into = view.entry(t).or_default();
                for (name, r) in rs {
                    match into.get(name) {
                        Some(existing) if existing.version != r.version => {
                            warn!(resource = %name, type_url = t, "two Gateways produced different content for one resource; serving the first");
                        }
                        Some(_) => {}
                        None => {
                            into.insert(name.clone(), r.clone());
                        }
                    }
                }
            }
        }
        if let Some(eds) = view.get_mut(type_url::ENDPOINT) {
            for (name, r) in eds.iter_mut() {
                if let Some(o) = inner.endpoints.get(name) {
                    *r = o.clone();
                }
            }
        }
        (inner.version, view)
    }

    pub(crate) fn emit(&self, ev: XdsEvent) {
        let _ = self.events.send(ev);
    }

    pub(crate) fn update_node(&self, st: NodeState) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.insert(st.stream_id, st);
        crate::metrics::gauge_set(
            "switchyard_xds_connected_nodes",
            "Envoy streams connected.",
            &[],
            nodes.len() as f64,
        );
    }

    pub(crate) fn remove_node(&self, stream_id: u64) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.remove(&stream_id);
        crate::metrics::gauge_set(
            "switchyard_xds_connected_nodes",
            "Envoy streams connected.",
            &[],
            nodes.len() as f64,
        );
    }

    /// Every connected stream's state.
    pub fn node_states(&self) -> Vec<NodeState> {
        self.nodes
            .lock()
            .map(|n| n.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether every connected node has ACKed a configuration at least as new as `version`.
    pub fn acked_everywhere(&self, version: u64) -> bool {
        self.nodes
            .lock()
            .map(|n| n.values().all(|s| s.synced_version >= version))
            .unwrap_or(false)
    }

    /// Names of the nodes connected now.
    pub fn node_ids(&self) -> BTreeSet<String> {
        self.nodes
            .lock()
            .map(|n| n.values().map(|s| s.node_id.clone()).collect())
            .unwrap_or_default()
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
