//! Kubernetes mode: watches → Inputs → translate → xDS cache, and status
//! written by the Lease holder only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::engine::Engine;
use crate::inputs::Changes;
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::kinds::Retranslate;
use crate::provider::addresses::AddressPool;
use crate::provider::kube::lease::{self, LeaseConfig};
use crate::provider::kube::status::{writes_status, KubeStatusWriter, RawObjects};
use crate::provider::kube::watch::{self as kwatch, Change};
use crate::status::StatusSet;
use crate::translate::Update;
use crate::xds::cache::Cache;

pub struct Options {
    pub controller_name: String,
    pub xds_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub address_pool: String,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub debounce: Duration,
}

struct DebugState {
    cache: Arc<Cache>,
    version: Mutex<(u64, bool)>,
}

impl crate::admin::DebugSource for DebugState {
    fn snapshot_json(&self) -> serde_json::Value {
        let (version, _) = *self.version.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({ "version": version })
    }
    fn nodes_json(&self) -> serde_json::Value {
        serde_json::to_value(self.cache.node_states()).unwrap_or_default()
    }
    fn ready(&self) -> bool {
        self.version.lock().map(|v| v.1).unwrap_or(false)
    }
}

fn key_of(kind: Kind, v: &serde_json::Value) -> ObjKey {
    let meta = v.get("metadata");
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(|x| x.as_str())
        .unwrap_or("")
        .to_string();
    let ns = if kind.namespaced() {
        meta.and_then(|m| m.get("namespace"))
            .and_then(|x| x.as_str())
            .unwrap_or("default")
            .to_string()
    } else {
        String::new()
    };
    ObjKey::new(ns, name)
}

/// State the loop keeps between translations.
struct World {
    inputs: Inputs,
    raw: RawObjects,
    /// Kinds being watched, and those whose initial list has arrived.
    watching: BTreeSet<Kind>,
    synced: BTreeSet<Kind>,
    discovered: bool,
    /// What changed since the last translation.
    changes: Changes,
    /// Objects skipped since the last loop turn because they could not be
    /// decoded: (kind, reference, error); each becomes a Warning Event.
    invalid: Vec<(Kind, k8s_openapi::api::core::v1::ObjectReference, String)>,
}

/// An Event's reference to the object `v` (as received from a watch).
fn reference_of(kind: Kind, v: &serde_json::Value) -> k8s_openapi::api::core::v1::ObjectReference {
    let meta = v.get("metadata");
    let s = |m: Option<&serde_json::Value>, k: &str| {
        m.and_then(|m| m.get(k))
            .and_then(|x| x.as_str())
            .map(str::to_string)
    };
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: s(Some(v), "apiVersion"),
        kind: Some(kind.as_str().to_string()),
        namespace: s(meta, "namespace"),
        name: s(meta, "name"),
        uid: s(meta, "uid"),
        resource_version: s(meta, "resourceVersion"),
        ..Default::default()
    }
}

impl World {
    fn apply(&mut self, change: Change, writer: &mut KubeStatusWriter) {
        match change {
            Change::Applied(kind, v) => {
                let key = key_of(kind, &v);
                if writes_status(kind) {
                    let prev = self.raw.insert((kind, key.clone()), v.clone());
                    // Our own status writes come back as watch events: nothing to translate.
                    if prev.as_ref().is_some_and(|p| same_except_status(p, &v)) {
                        return;
                    }
                }
                self.mark(kind, &key);
                let reference = reference_of(kind, &v);
                if let Err(e) = self.inputs.insert_value(v) {
                    // A malformed object is skipped (and counted), never a crash; the
                    // previous version of it is dropped so nothing half-valid is served.
                    warn!(kind = kind.as_str(), object = %key, "skipping object: {e}");
                    self.invalid.push((kind, reference, e.to_string()));
                    crate::metrics::counter_add(
                        "switchyard_invalid_objects_total",
                        "Objects that could not be decoded.",
                        &[("kind", kind.as_str())],
                        1,
                    );
                    self.inputs.remove(kind, &key);
                }
            }
            Change::Deleted(kind, v) => {
                let key = key_of(kind, &v);
                self.mark(kind, &key);
                self.raw.remove(&(kind, key.clone()));
                self.inputs.remove(kind, &key);
            }
            Change::Relisted(kind, list) => {
                self.synced.insert(kind);
                let keep: BTreeSet<ObjKey> = list.iter().map(|v| key_of(kind, v)).collect();
                let existing: Vec<ObjKey> = self.inputs.keys_of(kind);
                for k in existing.into_iter().filter(|k| !keep.contains(k)) {
                    self.changes.record(kind, &k);
                    self.inputs.remove(kind, &k);
                    self.raw.remove(&(kind, k));
                }
                for v in list {
                    self.apply(Change::Applied(kind, v), writer);
                }
            }
            Change::MissingKinds(kinds) => {
                self.discovered = true;
                self.inputs.missing_kinds = kinds;
                self.changes.record_all();
            }
            Change::BundleVersion(v) => {
                self.inputs.crd_bundle_version = v;
                self.changes.record_all();
            }
            Change::Watching(kind, ar) => {
                self.watching.insert(kind);
                writer.register(kind, ar);
            }
        }
    }

    /// Translating before every watched kind has been listed once would push
    /// a partial configuration (e.g. Gateways without their routes) and make
    /// Envoy drop traffic after a controller restart.
    fn initial_sync_done(&self) -> bool {
        self.discovered && self.watching.is_subset(&self.synced)
    }

    fn mark(&mut self, kind: Kind, key: &ObjKey) {
        self.changes.record(kind, key);
    }
}

/// How long a Gateway that the API server shows as `Programmed=True` keeps
/// that status while the Envoy fleet catches up (a new version not yet
/// ACKed, Envoys reconnecting after a controller restart). Longer than
/// that, the truth (`Pending`) is written.
const PROGRAMMED_GRACE: Duration = Duration::from_secs(5);

/// Whether the API server's copy of Gateway `gw` says `Programmed=True`.
fn programmed_now(raw: &RawObjects, gw: &ObjKey) -> bool {
    raw.get(&(Kind::Gateway, gw.clone()))
        .and_then(|v| v.pointer("/status/conditions"))
        .and_then(|c| c.as_array())
        .is_some_and(|conds| {
            conds.iter().any(|c| {
                c.get("type").and_then(|t| t.as_str()) == Some("Programmed")
                    && c.get("status").and_then(|s| s.as_str()) == Some("True")
            })
        })
}

/// Whether two versions of an object differ only in status/resourceVersion.
fn same_except_status(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("status");
            if let Some(meta) = m.get_mut("metadata").and_then(|x| x.as_object_mut()) {
                meta.remove("resourceVersion");
                meta.remove("managedFields");
            }
        }
        v
    };
    strip(a) == strip(b)
}

/// Routes whose cross-namespace trust changed between two translations:
/// (kind, route, now permitted?, message). A ReferenceGrant created or deleted
/// shows up here as the routes it let in or cut off.
fn trust_changes(up: &Update, now: &StatusSet) -> Vec<(Kind, ObjKey, bool, String)> {
    use crate::status::ObjectStatus;
    let refused = |st: Option<&ObjectStatus>| -> Option<String> {
        match st {
            Some(ObjectStatus::Route { parents }) => parents.iter().find_map(|p| {
                p.conditions
                    .iter()
                    .find(|c| c.type_ == "ResolvedRefs" && c.reason == "RefNotPermitted")
                    .map(|c| c.message.to_string())
            }),
            _ => None,
        }
    };
    let mut out = Vec::new();
    let touched: Vec<(Kind, ObjKey)> = match &up.touched {
        Some(t) => t.clone(),
        None => now.objects.keys().cloned().collect(),
    };
    for (kind, key) in &touched {
        if !kind.is_route() {
            continue;
        }
        let before = refused(up.previous.get(*kind, key));
        let after = refused(now.get(*kind, key));
        match (before, after) {
            (None, Some(msg)) => out.push((*kind, key.clone(), false, msg)),
            (Some(_), None) => out.push((
                *kind,
                key.clone(),
                true,
                "cross-namespace references are permitted again".into(),
            )),
            _ => {}
        }
    }
    out
}

async fn publish_trust_events(
    recorder: &kube::runtime::events::Recorder,
    changes: Vec<(Kind, ObjKey, bool, String)>,
) {
    use kube::runtime::events::{Event, EventType};
    for (kind, key, permitted, msg) in changes {
        let (type_, reason) = if permitted {
            (EventType::Normal, "ReferencePermitted")
        } else {
            (EventType::Warning, "RefNotPermitted")
        };
        if permitted {
            info!(kind = kind.as_str(), route = %key, "trust restored: {msg}");
        } else {
            warn!(kind = kind.as_str(), route = %key, "trust removed: {msg}");
        }
        crate::metrics::counter_add(
            "switchyard_trust_changes_total",
            "Routes whose cross-namespace references became permitted or refused.",
            &[
                ("kind", kind.as_str()),
                ("permitted", if permitted { "true" } else { "false" }),
            ],
            1,
        );
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(kind.info().api_version()),
            kind: Some(kind.as_str().to_string()),
            namespace: Some(key.namespace.clone()),
            name: Some(key.name.clone()),
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(event_note(&msg)),
            action: "ResolveReferences".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            warn!(route = %key, "publishing event failed: {e}");
        }
    }
}

/// Event notes are limited to 1 KiB by the API server.
fn event_note(msg: &str) -> String {
    const MAX: usize = 1000;
    if msg.len() <= MAX {
        return msg.to_string();
    }
    let mut end = MAX;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &msg[..end])
}

/// A Warning Event (reason InvalidObject) on each object that was skipped
/// because it could not be decoded, naming the field (serde's path).
async fn publish_invalid_events(
    recorder: &kube::runtime::events::Recorder,
    invalid: Vec<(Kind, k8s_openapi::api::core::v1::ObjectReference, String)>,
) {
    use kube::runtime::events::{Event, EventType};
    for (kind, reference, msg) in invalid {
        let ev = Event {
            type_: EventType::Warning,
            reason: "InvalidObject".into(),
            note: Some(event_note(&format!(
                "skipped by Switchyard (the rest of the configuration is served): {msg}"
            ))),
            action: "Decode".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            warn!(kind = kind.as_str(), "publishing event failed: {e}");
        }
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API server")?;
    let cache = Cache::new();
    let debug = Arc::new(DebugState {
        cache: cache.clone(),
        version: Mutex::new((0, false)),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let xds_listener = tokio::net::TcpListener::bind(opts.xds_listen)
        .await
        .with_context(|| format!("binding the xDS port {}", opts.xds_listen))?;
    let admin_listener = tokio::net::TcpListener::bind(opts.admin_listen)
        .await
        .with_context(|| format!("binding the admin port {}", opts.admin_listen))?;
    tokio::spawn(crate::xds::server::serve(
        cache.clone(),
        xds_listener,
        wait(shutdown_rx.clone()),
    ));
    tokio::spawn(crate::admin::serve(
        admin_listener,
        debug.clone(),
        wait(shutdown_rx.clone()),
    ));

    let (tx, mut rx) = mpsc::channel::<Change>(1024);
    tokio::spawn(kwatch::run(client.clone(), tx, Duration::from_secs(30)));
    let (leader_tx, mut leader_rx) = watch::channel(false);
    tokio::spawn(lease::run(
        client.clone(),
        LeaseConfig {
            namespace: opts.lease_namespace.clone(),
            name: opts.lease_name.clone(),
            identity: opts.identity.clone(),
            lease_duration: opts.lease_duration,
            renew_every: opts.lease_duration / 3,
        },
        leader_tx,
    ));
    info!(identity = %opts.identity, xds = %opts.xds_listen, "controller started");

    let mut writer = KubeStatusWriter::new(client.clone(), opts.controller_name.clone());
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: opts.controller_name.clone(),
            instance: Some(opts.identity.clone()),
        },
    );
    let mut engine = Engine::new(cache.clone());
    let mut pool = AddressPool::parse(&opts.address_pool)?;
    let mut world = World {
        inputs: Inputs::new(&opts.controller_name),
        raw: RawObjects::new(),
        watching: BTreeSet::new(),
        synced: BTreeSet::new(),
        discovered: false,
        changes: Changes::default(),
        invalid: Vec::new(),
    };
    let mut last_snapshot: Option<(crate::xds::Snapshot, u64)> = None;
    let mut xds_events = cache.subscribe_events();
    let mut status_retry = tokio::time::interval(Duration::from_secs(1));
    // One signal listener for the whole loop: a SIGTERM that arrives while the
    // loop is busy (e.g. writing status) must not be lost.
    let shutdown = crate::admin::shutdown_signal();
    tokio::pin!(shutdown);
    let mut pending_since: BTreeMap<ObjKey, Instant> = BTreeMap::new();
    let mut status_pending = false;
    let mut ack_due: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { break };
                world.apply(change, &mut writer);
                // Coalesce a burst of events.
                let deadline = Instant::now() + opts.debounce;
                while let Ok(Some(c)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    world.apply(c, &mut writer);
                }
            }
            _ = leader_rx.changed() => {}
            ev = xds_events.recv() => {
                if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    break;
                }
                // ACKs come in bursts (one per type): Programmed is re-derived
                // once the burst settled, without holding up changes meanwhile.
                ack_due.get_or_insert_with(|| tokio::time::Instant::now() + crate::standalone::ACK_SETTLE);
                continue;
            }
            _ = crate::standalone::sleep_until_due(ack_due) => {
                ack_due = None;
                while xds_events.try_recv().is_ok() {}
            }
            // A tick alone re-derives status only while something is pending
            // (a Programmed grace running out, postponed or failed writes):
            // an idle controller does no per-object work.
            _ = status_retry.tick() => {
                if !status_pending && pending_since.is_empty() {
                    continue;
                }
            }
            _ = &mut shutdown => break,
        }
        if !world.changes.is_empty() && world.initial_sync_done() {
            let t0 = Instant::now();
            let mut changes = std::mem::take(&mut world.changes);
            if changes.within(Retranslate::Endpoints) && last_snapshot.is_some() {
                let n = engine.endpoints_only(&world.inputs);
                info!(
                    clusters = n,
                    elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "endpoints updated (no route re-translation)"
                );
            } else {
                let before = world.inputs.assigned_addresses.clone();
                pool.assign(&mut world.inputs);
                if world.inputs.assigned_addresses != before {
                    changes.record_all();
                }
                let (up, snap) = engine.translate(&world.inputs, &changes);
                let first = last_snapshot.is_none();
                last_snapshot = Some((snap, engine.version));
                info!(
                    version = engine.version,
                    full = up.full,
                    elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "configuration translated"
                );
                if !first {
                    let changes = trust_changes(&up, engine.status());
                    if !changes.is_empty() && *leader_rx.borrow() {
                        publish_trust_events(&recorder, changes).await;
                    }
                }
            }
            if let Ok(mut v) = debug.version.lock() {
                *v = (engine.version, true);
            }
        }
        let invalid = std::mem::take(&mut world.invalid);
        if !invalid.is_empty() && *leader_rx.borrow() {
            publish_invalid_events(&recorder, invalid).await;
        }
        if *leader_rx.borrow() {
            if let Some((snap, version)) = &last_snapshot {
                // Programmed as the Envoy fleet reports it (ACK/NACK).
                let now = Instant::now();
                let mut pending = BTreeSet::new();
                let status = crate::programmed::overlay(
                    engine.status(),
                    snap,
                    &cache.node_states(),
                    *version,
                    |gw, _| {
                        pending.insert(gw.clone());
                        let since = *pending_since.entry(gw.clone()).or_insert(now);
                        now.duration_since(since) < PROGRAMMED_GRACE
                            && programmed_now(&world.raw, gw)
                    },
                );
                // A Gateway that is no longer pending starts a fresh grace next time.
                pending_since.retain(|gw, _| pending.contains(gw));
                status_pending = writer.write(&status, &world.raw).await.1;
            }
        }
    }
    let _ = shutdown_tx.send(true);
    if *leader_rx.borrow() {
        lease::release(
            client,
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_notes_fit_the_api_limit_on_a_char_boundary() {
        let long = "é".repeat(700); // 1,400 bytes
        let note = event_note(&long);
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.ends_with('…'));
        assert_eq!(event_note("short"), "short");
    }

    #[test]
    fn reference_names_the_object_of_a_watch_event() {
        let v = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "r", "namespace": "ns", "uid": "u-1", "resourceVersion": "7"}});
        let r = reference_of(Kind::HTTPRoute, &v);
        assert_eq!(
            r.api_version.as_deref(),
            Some("gateway.networking.k8s.io/v1")
        );
        assert_eq!(r.kind.as_deref(), Some("HTTPRoute"));
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref()),
            (Some("ns"), Some("r"))
        );
        assert_eq!(r.uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn programmed_now_reads_the_api_servers_copy() {
        let key = ObjKey::new("ns", "gw");
        let mut raw = RawObjects::new();
        assert!(!programmed_now(&raw, &key));
        raw.insert(
            (Kind::Gateway, key.clone()),
            json!({"status": {"conditions": [
                {"type": "Accepted", "status": "True"},
                {"type": "Programmed", "status": "False"}]}}),
        );
        assert!(!programmed_now(&raw, &key));
        raw.insert(
            (Kind::Gateway, key.clone()),
            json!({"status": {"conditions": [{"type": "Programmed", "status": "True"}]}}),
        );
        assert!(programmed_now(&raw, &key));
    }
}
