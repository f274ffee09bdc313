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
use crate::provider::kube::lease::{self, Leadership, LeaseConfig, Timing};
use crate::provider::kube::status::{writes_status, KubeStatusWriter, RawObjects};
use crate::provider::kube::watch::{self as kwatch, Change};
use crate::status::StatusSet;
use crate::xds::cache::Cache;

pub struct Options {
    pub controller_name: String,
    pub xds_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The gRPC admin API (`switchyard.admin.v1`).
    pub admin_grpc_listen: SocketAddr,
    /// Address mode, pool, port range and Envoy pod selector for classes
    /// without parametersRef (docs/networking.md).
    pub addressing: crate::addressing::AddressDefaults,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub debounce: Duration,
    /// mTLS certificate directory of the xDS server; `None` only with
    /// `--xds-insecure`.
    pub xds_tls_dir: Option<std::path::PathBuf>,
    /// Create a Service (and EndpointSlices) per Gateway, carrying
    /// `spec.infrastructure` metadata (provider/kube/infra.rs).
    pub gateway_services: bool,
    /// Envoy configuration choices (`--envoy-access-log`).
    pub build: crate::xds::build::Options,
}

struct DebugState {
    cache: Arc<Cache>,
    version: Mutex<(u64, bool)>,
    model: crate::engine::ModelHandle,
}

impl crate::admin::DebugSource for DebugState {
    fn snapshot_json(&self) -> serde_json::Value {
        let (version, _) = *self.version.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({ "version": version })
    }
    fn nodes_json(&self) -> serde_json::Value {
        serde_json::to_value(self.cache.node_states()).unwrap_or_default()
    }
    fn model(&self) -> Option<Arc<crate::ir::Model>> {
        Some(self.model.get())
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
    /// Objects whose newest version could not be decoded (their last good
    /// version, if any, stays in `inputs`): written into their status.
    undecodable: BTreeMap<(Kind, ObjKey), Undecodable>,
    /// API resources of newly watched kinds, for the status writer.
    registrations: Vec<(Kind, kube::api::ApiResource)>,
}

/// The newest version of an object that could not be decoded.
#[derive(Clone, Debug, PartialEq)]
struct Undecodable {
    generation: i64,
    error: String,
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
    fn new(controller_name: &str) -> Self {
        World {
            inputs: Inputs::new(controller_name),
            raw: RawObjects::new(),
            watching: BTreeSet::new(),
            synced: BTreeSet::new(),
            discovered: false,
            changes: Changes::default(),
            invalid: Vec::new(),
            undecodable: BTreeMap::new(),
            registrations: Vec::new(),
        }
    }

    fn apply(&mut self, change: Change) {
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
                let generation = v
                    .pointer("/metadata/generation")
                    .and_then(|g| g.as_i64())
                    .unwrap_or(1);
                match self.inputs.insert_value(v) {
                    Ok(_) => {
                        self.undecodable.remove(&(kind, key));
                    }
                    Err(e) => {
                        // A malformed object is never a crash: its last good
                        // version (if any) stays in force, as in standalone
                        // mode; the error names the object and the field.
                        let kept = self.inputs.keys_of(kind).contains(&key);
                        warn!(
                            kind = kind.as_str(),
                            object = %key,
                            generation,
                            last_good_kept = kept,
                            "object could not be decoded: {e}"
                        );
                        let error = e.to_string();
                        self.invalid.push((kind, reference, error.clone()));
                        crate::metrics::catalogue::INVALID_OBJECTS.inc([kind.as_str()]);
                        self.undecodable
                            .insert((kind, key), Undecodable { generation, error });
                    }
                }
                self.count_undecodable();
            }
            Change::Deleted(kind, v) => {
                let key = key_of(kind, &v);
                self.forget(kind, &key);
                self.count_undecodable();
            }
            Change::Relisted(kind, list) => {
                self.synced.insert(kind);
                // Everything of this kind the API server no longer has goes:
                // decoded objects, raw copies (status targets) and objects
                // known only as undecodable (deleted while the watch was down).
                let keep: BTreeSet<ObjKey> = list.iter().map(|v| key_of(kind, v)).collect();
                let mut known: BTreeSet<ObjKey> = self.inputs.keys_of(kind).into_iter().collect();
                known.extend(
                    self.raw
                        .keys()
                        .chain(self.undecodable.keys())
                        .filter(|(k, _)| *k == kind)
                        .map(|(_, key)| key.clone()),
                );
                for k in known.difference(&keep) {
                    self.forget(kind, k);
                }
                for v in list {
                    self.apply(Change::Applied(kind, v));
                }
                self.count_undecodable();
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
                self.registrations.push((kind, ar));
            }
        }
    }

    /// Drops every trace of an object (deleted, or gone at a relist).
    fn forget(&mut self, kind: Kind, key: &ObjKey) {
        self.mark(kind, key);
        self.inputs.remove(kind, key);
        self.raw.remove(&(kind, key.clone()));
        self.undecodable.remove(&(kind, key.clone()));
    }

    fn count_undecodable(&self) {
        crate::metrics::catalogue::UNDECODABLE_OBJECTS.set([], self.undecodable.len() as f64);
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

/// How long status writes may give way to waiting configuration changes
/// before a pass writes regardless (a steady stream of changes must not keep
/// status from being written).
const STATUS_MAX_DEFER: Duration = Duration::from_secs(1);
/// What a pass of deferred status writes may take before a waiting change
/// goes first again: status progresses, and a change waits this long at most.
const STATUS_STARVED_SLICE: Duration = Duration::from_millis(50);

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

/// Marks, in the status to write, every object whose newest version could not
/// be decoded while its last good version is served: `Accepted=False`
/// (routes: `UnsupportedValue`, others: `Invalid`) at the new generation,
/// naming the field and the generation still in force. The other conditions
/// keep the generation they were computed from. An object with no good
/// version has no status of ours and is reported by Event and log only.
fn mark_undecodable(status: &mut StatusSet, undecodable: &BTreeMap<(Kind, ObjKey), Undecodable>) {
    use crate::status::{Condition, ObjectStatus};
    use crate::translate::conditions::{reasons, types};
    for ((kind, key), bad) in undecodable {
        let Some(st) = status.objects.get_mut(&(*kind, key.clone())) else {
            continue;
        };
        let mark = |conds: &mut Vec<Condition>, reason: &'static str| {
            let served = conds
                .iter()
                .map(|c| c.observed_generation)
                .max()
                .unwrap_or(0);
            let msg = format!(
                "generation {} could not be decoded, the last good version (generation {served}) \
                 is still served: {}",
                bad.generation, bad.error
            );
            let c = Condition::new(types::ACCEPTED, false, reason, msg, bad.generation);
            match conds.iter_mut().find(|c| c.type_ == types::ACCEPTED) {
                Some(old) => *old = c,
                None => conds.insert(0, c),
            }
        };
        match st {
            ObjectStatus::Route { parents } => {
                for p in parents.iter_mut() {
                    mark(&mut p.conditions, reasons::UNSUPPORTED_VALUE);
                }
            }
            ObjectStatus::GatewayClass { conditions, .. }
            | ObjectStatus::Gateway { conditions, .. }
            | ObjectStatus::ListenerSet { conditions, .. }
            | ObjectStatus::Conditions { conditions } => mark(conditions, reasons::INVALID),
            ObjectStatus::Policy { ancestors } => {
                for a in ancestors.iter_mut() {
                    mark(&mut a.conditions, reasons::INVALID);
                }
            }
        }
    }
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

/// An Event on each route whose cross-namespace references became refused
/// (Warning) or permitted (Normal). When ReferenceGrants were deleted in the
/// same translation the Warning's reason is `ReferenceGrantRemoved` and its
/// note names them, so `kubectl describe httproute X` shows why traffic stopped.
async fn publish_trust_events(
    recorder: &kube::runtime::events::Recorder,
    changes: &[crate::metrics::refgrants::TrustChange],
    removed_grants: &[ObjKey],
) {
    use kube::runtime::events::{Event, EventType};
    let removed = crate::metrics::refgrants::names(removed_grants);
    for c in changes {
        let (type_, reason, note) = if c.permitted {
            (EventType::Normal, "ReferencePermitted", c.message.clone())
        } else if !removed_grants.is_empty() {
            (
                EventType::Warning,
                "ReferenceGrantRemoved",
                format!("ReferenceGrant {removed} removed: {}", c.message),
            )
        } else {
            (EventType::Warning, "RefNotPermitted", c.message.clone())
        };
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(c.kind.info().api_version()),
            kind: Some(c.kind.as_str().to_string()),
            namespace: Some(c.route.namespace.clone()),
            name: Some(c.route.name.clone()),
            ..Default::default()
        };
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(event_note(&note)),
            action: "ResolveReferences".into(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&ev, &reference).await {
            warn!(route = %c.route, "publishing event failed: {e}");
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
        model: crate::engine::ModelHandle::default(),
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
    let admin_grpc_listener = tokio::net::TcpListener::bind(opts.admin_grpc_listen)
        .await
        .with_context(|| format!("binding the gRPC admin port {}", opts.admin_grpc_listen))?;
    let status_handle = crate::admin_grpc::StatusHandle::default();
    tokio::spawn(crate::admin_grpc::serve(
        admin_grpc_listener,
        crate::admin_grpc::AdminState {
            cache: cache.clone(),
            model: debug.model.clone(),
            status: status_handle.clone(),
            controller_name: opts.controller_name.clone(),
        },
        wait(shutdown_rx.clone()),
    ));
    let xds_tls =
        match &opts.xds_tls_dir {
            Some(dir) => Some(crate::xds::tls::ServerTls::watch(dir.clone()).with_context(
                || format!("xDS mTLS certificates (--xds-tls-dir {})", dir.display()),
            )?),
            None => None,
        };
    tokio::spawn(crate::xds::server::serve(
        cache.clone(),
        xds_listener,
        xds_tls,
        wait(shutdown_rx.clone()),
    ));
    tokio::spawn(crate::admin::serve(
        admin_listener,
        debug.clone(),
        wait(shutdown_rx.clone()),
    ));

    let (tx, mut rx) = mpsc::channel::<Change>(1024);
    tokio::spawn(kwatch::run(client.clone(), tx, Duration::from_secs(30)));
    // `leader_rx` only wakes the loop; whether this replica may write is
    // `leadership`, a deadline checked at each write (see lease.rs).
    let (leader_tx, mut leader_rx) = watch::channel(false);
    let leadership = Leadership::new();
    let timing = Timing::for_lease(opts.lease_duration);
    let lease_task = tokio::spawn(lease::run(
        client.clone(),
        LeaseConfig {
            namespace: opts.lease_namespace.clone(),
            name: opts.lease_name.clone(),
            identity: opts.identity.clone(),
            timing,
        },
        leadership.clone(),
        leader_tx,
    ));
    info!(
        identity = %opts.identity,
        xds = %opts.xds_listen,
        lease_s = timing.lease.as_secs_f64(),
        renew_deadline_s = timing.renew_deadline.as_secs_f64(),
        retry_s = timing.retry.as_secs_f64(),
        "controller started"
    );

    let mut writer = KubeStatusWriter::new(client.clone(), opts.controller_name.clone());
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: opts.controller_name.clone(),
            instance: Some(opts.identity.clone()),
        },
    );
    let mut engine = Engine::new(cache.clone())
        .with_model_handle(debug.model.clone())
        .with_build_options(opts.build.clone());
    let mut pool = AddressPool::new(opts.addressing.clone());
    let mut world = World::new(&opts.controller_name);
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
    let mut shadow_events = crate::provider::kube::events::ShadowEvents::default();
    let mut rotation_events = crate::provider::kube::cert_events::RotationEvents::default();
    let mut infra = opts.gateway_services.then(|| {
        crate::provider::kube::infra::InfraWriter::new(client.clone(), opts.controller_name.clone())
    });
    let mut infra_pending = false;
    let mut grants = crate::metrics::refgrants::GrantTracker::default();
    // Status as metrics: exported by the replica that writes status only.
    let mut status_metrics = crate::metrics::status::StatusMetrics::new();
    let mut nack_events: Vec<nack::Quarantined> = Vec::new();
    let mut last_translation: Option<Instant> = None;
    let mut status_behind_since: Option<Instant> = None;
    loop {
        tokio::select! {
            change = rx.recv() => {
                let Some(change) = change else { break };
                world.apply(change);
                // Coalesce a burst of events: a change after a quiet spell is
                // translated at once (leading edge); changes that follow
                // within the debounce of the last translation wait for it
                // to end and go out together.
                let deadline = last_translation.map_or_else(Instant::now, |t| t + opts.debounce);
                // (Timeout polls `recv` before it checks the deadline, so
                // what is queued is taken even when the deadline passed, up
                // to tokio's cooperative budget: a longer burst goes out in
                // two translations.)
                while let Ok(Some(c)) = tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                    world.apply(c);
                }
                for (kind, ar) in world.registrations.drain(..) {
                    writer.register(kind, ar);
                }
            }
            _ = leader_rx.changed() => {}
            ev = xds_events.recv() => {
                let ev = match ev {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    Err(_) => None,
                    Ok(ev) => Some(ev),
                };
                // NACK isolation: quarantined objects are re-translated below.
                if let Some(ev) = ev {
                    nack::isolate(&mut engine, &ev, &mut world.changes, &mut nack_events);
                }
                // ACKs come in bursts (one per type): Programmed is re-derived
                // once the burst settled, without holding up changes meanwhile.
                ack_due.get_or_insert_with(|| tokio::time::Instant::now() + crate::standalone::ACK_SETTLE);
                if world.changes.is_empty() {
                    continue;
                }
            }
            _ = crate::standalone::sleep_until_due(ack_due) => {
                ack_due = None;
                while let Ok(ev) = xds_events.try_recv() {
                    nack::isolate(&mut engine, &ev, &mut world.changes, &mut nack_events);
                }
                engine.settle_acks();
            }
            // A tick alone re-derives status only while something is pending
            // (a Programmed grace running out, postponed or failed writes):
            // an idle controller does no per-object work.
            _ = status_retry.tick() => {
                cache.refresh_convergence();
                let expiry_due = last_snapshot.is_some()
                    && crate::certs::expiry_refresh_due(
                        engine.served_certificates(),
                        world.inputs.now,
                        crate::certs::wall_clock(),
                    );
                if expiry_due {
                    // Listener messages count the days to a certificate's expiry.
                    world.changes.record_all();
                } else if !status_pending && !infra_pending && pending_since.is_empty() && !shadow_events.backlog() {
                    continue;
                }
            }
            _ = &mut shutdown => break,
        }
        if !world.changes.is_empty() && world.initial_sync_done() {
            let t0 = Instant::now();
            last_translation = Some(t0);
            let mut changes = std::mem::take(&mut world.changes);
            if changes.within(Retranslate::Endpoints) && last_snapshot.is_some() {
                let n = engine.endpoints_only(&world.inputs);
                info!(
                    clusters = n,
                    elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "endpoints updated (no route re-translation)"
                );
            } else {
                let before = (
                    world.inputs.assigned_addresses.clone(),
                    world.inputs.assigned_ports.clone(),
                );
                pool.assign(&mut world.inputs);
                if (
                    &world.inputs.assigned_addresses,
                    &world.inputs.assigned_ports,
                ) != (&before.0, &before.1)
                {
                    changes.record_all();
                }
                world.inputs.now = Some(crate::certs::wall_clock());
                let (up, snap) = engine.translate(&world.inputs, &changes);
                let grant_changes = grants.observe(&world.inputs, &changes);
                let first = last_snapshot.is_none();
                last_snapshot = Some((snap, engine.version));
                info!(
                    version = engine.version,
                    full = up.full,
                    elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
                    "configuration translated"
                );
                if !first {
                    let changes =
                        crate::metrics::refgrants::report(&up, engine.status(), &grant_changes);
                    if !changes.is_empty() && leadership.is_leader() {
                        publish_trust_events(&recorder, &changes, &grant_changes.removed).await;
                    }
                }
            }
            if let Ok(mut v) = debug.version.lock() {
                *v = (engine.version, true);
            }
            // A standby replica shows the translated status (the leader
            // replaces it below with what it writes).
            if !leadership.is_leader() {
                status_handle.set(engine.status().clone());
            }
        }
        let quarantined = std::mem::take(&mut nack_events);
        if !quarantined.is_empty() && leadership.is_leader() {
            nack::publish_events(&recorder, quarantined, &world.raw).await;
        }
        let invalid = std::mem::take(&mut world.invalid);
        if !invalid.is_empty() && leadership.is_leader() {
            publish_invalid_events(&recorder, invalid).await;
        }
        // A Warning Event (InvalidCertificateRotation) per refused rotation.
        if leadership.is_leader() && last_snapshot.is_some() {
            rotation_events
                .publish(&recorder, &world.inputs, engine.served_certificates())
                .await;
        }
        // A Warning Event (ShadowedRule) per rule that became shadowed.
        if leadership.is_leader() && last_snapshot.is_some() {
            let current = engine.shadowed().current();
            shadow_events.publish(&recorder, current, &world.raw).await;
        }
        if !leadership.is_leader() {
            status_metrics.clear();
        }
        if leadership.is_leader() {
            if let Some((snap, version)) = &last_snapshot {
                // Programmed as the Envoy fleet reports it (ACK/NACK).
                let now = Instant::now();
                let mut pending = BTreeSet::new();
                let mut status = crate::programmed::overlay(
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
                mark_undecodable(&mut status, &world.undecodable);
                status_metrics.update(&status);
                status_handle.set(status.clone());
                // A change waiting in the watch queue goes first: the pass
                // stops before its next patch and resumes after the change
                // went out; status that waited STATUS_MAX_DEFER gets a slice
                // of STATUS_STARVED_SLICE per pass whatever waits.
                let starving = status_behind_since.is_some_and(|t| t.elapsed() > STATUS_MAX_DEFER);
                let pass = Instant::now();
                let waiting =
                    || !rx.is_empty() && (!starving || pass.elapsed() > STATUS_STARVED_SLICE);
                status_pending = writer
                    .write(&status, &world.raw, &leadership, &waiting)
                    .await
                    .1;
                if !status_pending {
                    status_behind_since = None;
                } else if status_behind_since.is_none() {
                    status_behind_since = Some(Instant::now());
                }
                if let Some(infra) = infra.as_mut().filter(|_| leadership.is_leader()) {
                    let desired =
                        crate::provider::kube::infra::desired(&world.inputs, engine.status());
                    infra_pending = infra.sync(&desired).await;
                }
            }
        }
    }
    let _ = shutdown_tx.send(true);
    // No renewal may race the release.
    lease_task.abort();
    let _ = lease_task.await;
    // Released whenever the record still names us (even past our deadline:
    // nobody took over then), so a standby need not wait a full duration.
    {
        lease::release(
            client,
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
            timing.attempt_timeout,
        )
        .await;
    }
    Ok(())
}

mod nack;
#[cfg(test)]
mod tests;
