//! Standalone mode: a YAML directory in, ADS out, status files written,
//! optionally a supervised local Envoy. No Kubernetes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::engine::Engine;
use crate::inputs::{Changes, Inputs};
use crate::kinds::Retranslate;
use crate::provider::addresses::AddressPool;
use crate::provider::file::{DirLoader, LastGoodStore, LoadError};
use crate::status_file::FileStatusWriter;
use crate::xds::cache::Cache;

pub struct Options {
    pub config_dir: PathBuf,
    pub status_dir: PathBuf,
    pub controller_name: String,
    pub xds_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// The gRPC admin API (`switchyard.admin.v1`).
    pub admin_grpc_listen: SocketAddr,
    pub address_pool: String,
    /// Address mode of classes without parametersRef (VirtualIP: the
    /// pool; NodeAddresses: 0.0.0.0 and the Node objects' addresses).
    pub address_mode: crate::addressing::AddressMode,
    pub envoy: Option<crate::supervisor::EnvoyConfig>,
    /// mTLS certificate directory of the xDS server (`ca.crt`, `tls.crt`,
    /// `tls.key`); `None` serves plaintext (loopback only).
    pub xds_tls_dir: Option<PathBuf>,
    /// Debounce for file events.
    pub debounce: Duration,
    /// Envoy configuration choices (`--envoy-access-log`).
    pub build: crate::xds::build::Options,
}

/// What the admin endpoint shows.
struct State {
    cache: Arc<Cache>,
    last: Mutex<LastRun>,
    /// Whether the supervised Envoy runs (`None` without `--envoy`).
    envoy_up: Option<crate::supervisor::Health>,
    model: crate::engine::ModelHandle,
}

#[derive(Default)]
struct LastRun {
    version: u64,
    errors: Vec<LoadError>,
    objects: usize,
    resources: serde_json::Value,
    ready: bool,
}

impl crate::admin::DebugSource for State {
    fn snapshot_json(&self) -> serde_json::Value {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "version": last.version,
            "objects": last.objects,
            "errors": last.errors,
            "resources": last.resources,
        })
    }
    fn nodes_json(&self) -> serde_json::Value {
        serde_json::to_value(self.cache.node_states()).unwrap_or_default()
    }
    fn model(&self) -> Option<Arc<crate::ir::Model>> {
        Some(self.model.get())
    }
    fn ready(&self) -> bool {
        let envoy_up = self
            .envoy_up
            .as_ref()
            .is_none_or(|h| h.load(std::sync::atomic::Ordering::Relaxed));
        envoy_up && self.last.lock().map(|l| l.ready).unwrap_or(false)
    }
}

/// Resource names and versions per Gateway and type (for /debug/snapshot).
fn resource_index(snap: &crate::xds::Snapshot) -> serde_json::Value {
    let mut gws = serde_json::Map::new();
    for (gw, set) in &snap.gateways {
        let mut types = serde_json::Map::new();
        for (t, rs) in &set.by_type {
            let short = t.rsplit('.').next().unwrap_or(t).to_string();
            types.insert(
                short,
                rs.iter()
                    .map(|(n, r)| (n.clone(), serde_json::Value::String(r.version.clone())))
                    .collect(),
            );
        }
        gws.insert(gw.clone(), serde_json::Value::Object(types));
    }
    serde_json::Value::Object(gws)
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    let cache = Cache::new();
    let state = Arc::new(State {
        cache: cache.clone(),
        last: Mutex::new(LastRun::default()),
        envoy_up: opts
            .envoy
            .as_ref()
            .map(|_| crate::supervisor::Health::default()),
        model: crate::engine::ModelHandle::default(),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

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
    info!(xds = %opts.xds_listen, admin = %opts.admin_listen, admin_grpc = %opts.admin_grpc_listen, dir = %opts.config_dir.display(), "standalone mode starting");

    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let xds_tls = match &opts.xds_tls_dir {
        Some(dir) => Some(
            crate::xds::tls::ServerTls::watch(dir.clone())
                .with_context(|| format!("--xds-tls-dir {}", dir.display()))?,
        ),
        None => None,
    };
    let xds_task = tokio::spawn(crate::xds::server::serve(
        cache.clone(),
        xds_listener,
        xds_tls,
        wait(shutdown_rx.clone()),
    ));
    let admin_task = tokio::spawn(crate::admin::serve(
        admin_listener,
        state.clone(),
        wait(shutdown_rx.clone()),
    ));
    let admin_grpc_task = tokio::spawn(crate::admin_grpc::serve(
        admin_grpc_listener,
        crate::admin_grpc::AdminState {
            cache: cache.clone(),
            model: state.model.clone(),
            status: status_handle.clone(),
            controller_name: opts.controller_name.clone(),
        },
        wait(shutdown_rx.clone()),
    ));

    // File events → the paths they name (or "rescan everything") and a
    // coalescing wake-up.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let touched = Arc::new(Mutex::new(Touched::default()));
    let _watcher = {
        use notify::{RecursiveMode, Watcher};
        let tx = tx.clone();
        let touched = touched.clone();
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let mut t = touched.lock().unwrap_or_else(|p| p.into_inner());
            match res {
                Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => return,
                Ok(ev) => t.add(&ev),
                Err(_) => t.rescan = true,
            }
            drop(t);
            let _ = tx.try_send(());
        })
        .context("starting the file watcher")?;
        w.watch(&opts.config_dir, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", opts.config_dir.display()))?;
        w
    };

    let reloader = Reloader {
        touched,
        loader: DirLoader::new(&opts.config_dir)
            .with_last_good(LastGoodStore::new(opts.status_dir.join(LAST_GOOD_DIR))),
        pool: AddressPool::new(crate::addressing::AddressDefaults {
            mode: opts.address_mode,
            pool: Some(
                crate::addressing::parse_pool(&opts.address_pool).ok_or_else(|| {
                    crate::provider::addresses::PoolError::Parse(opts.address_pool.clone())
                })?,
            ),
            standalone: true,
            ..Default::default()
        }),
        writer: FileStatusWriter::new(&opts.status_dir),
        status_out: spawn_status_writer(FileStatusWriter::new(&opts.status_dir), status_handle)?,
        engine: Engine::new(cache.clone())
            .with_model_handle(state.model.clone())
            .with_build_options(opts.build.clone()),
        last_errors: Vec::new(),
        translated: None,
        controller_name: opts.controller_name.clone(),
        recheck_at: None,
        grants: Default::default(),
    };
    // Reloads (reading, parsing, translating, writing status) run on their
    // own thread: this loop never waits for one, so a signal is always seen
    // at once. The first reload starts now.
    let reload_tx = spawn_reloader(reloader, state.clone(), opts.debounce)?;

    let mut envoy_task = opts.envoy.map(|cfg| {
        tokio::spawn(crate::supervisor::supervise(
            cfg,
            shutdown_rx.clone(),
            state.envoy_up.clone().unwrap_or_default(),
        ))
    });
    let mut failure: Option<anyhow::Error> = None;

    let mut xds_events = cache.subscribe_events();
    // One signal listener for the whole loop: a SIGTERM that arrives while a
    // reload runs must not be lost.
    let shutdown = crate::admin::shutdown_signal();
    tokio::pin!(shutdown);
    // ACKs arrive in bursts (one per type): status is rewritten once the
    // burst has settled. The settle is a deadline, never a sleep, so a file
    // event that arrives meanwhile is handled at once.
    let mut status_due: Option<tokio::time::Instant> = None;
    // Fleet convergence has a grace that runs out without any event.
    let mut convergence = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = convergence.tick() => cache.refresh_convergence(),
            ev = xds_events.recv() => {
                match ev {
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    // NACK isolation needs every ACK/NACK (a lagged one is
                    // re-sent by Envoy's next reply or the retry).
                    Ok(ev) => { let _ = reload_tx.send(Cmd::Xds(ev)); }
                    Err(_) => {}
                }
                status_due.get_or_insert_with(|| tokio::time::Instant::now() + ACK_SETTLE);
            }
            _ = sleep_until_due(status_due) => {
                status_due = None;
                while let Ok(ev) = xds_events.try_recv() {
                    let _ = reload_tx.send(Cmd::Xds(ev));
                }
                let _ = reload_tx.send(Cmd::WriteStatus);
            }
            Some(()) = rx.recv() => {
                // The reload thread coalesces the burst (debounce).
                let _ = reload_tx.send(Cmd::Reload);
            }
            _ = &mut shutdown => {
                info!("shutting down");
                break;
            }
            // Supervision gave up (Envoy cannot start or keeps crashing):
            // fail loudly rather than run without a data plane.
            r = async { envoy_task.as_mut().expect("guarded").await }, if envoy_task.is_some() => {
                envoy_task = None;
                let err = match r {
                    Ok(Ok(())) => anyhow::anyhow!("the supervised Envoy stopped"),
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::anyhow!("Envoy supervision task failed: {e}"),
                };
                failure = Some(err.context("--envoy"));
                break;
            }
        }
    }
    let _ = shutdown_tx.send(true);
    if let Some(t) = envoy_task {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), xds_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_grpc_task).await;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the reload loop keeps between runs.
/// Files named by events since the last reload.
#[derive(Default)]
struct Touched {
    paths: BTreeSet<PathBuf>,
    /// An event that cannot be narrowed to files (a directory, a watcher
    /// error or overflow): rescan the whole directory.
    rescan: bool,
}

impl Touched {
    fn add(&mut self, ev: &notify::Event) {
        if ev.need_rescan() || ev.paths.is_empty() {
            self.rescan = true;
        }
        for p in &ev.paths {
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if p.is_dir() || (!hidden && !yaml && !p.exists()) {
                // A directory appeared or (maybe) went away.
                self.rescan = true;
            } else if yaml {
                self.paths.insert(p.clone());
            }
        }
    }
}

struct Reloader {
    touched: Arc<Mutex<Touched>>,
    loader: DirLoader,
    pool: AddressPool,
    /// `errors.yaml` (status files are the status thread's).
    writer: FileStatusWriter,
    /// Status to write, to the status thread ([`spawn_status_writer`]).
    status_out: std::sync::mpsc::Sender<StatusJob>,
    engine: Engine,
    last_errors: Vec<LoadError>,
    translated: Option<Translated>,
    controller_name: String,
    /// When objects kept for a vanished file are to be checked again.
    recheck_at: Option<Instant>,
    grants: crate::metrics::refgrants::GrantTracker,
}

/// One status to write: every object's status with `Programmed` as the
/// fleet reports it, and the shadowed-rule notes.
struct StatusJob {
    status: crate::status::StatusSet,
    notes: BTreeMap<(crate::kinds::Kind, crate::inputs::ObjKey), Vec<String>>,
}

/// Starts the status thread: it writes the newest [`StatusJob`] (older ones
/// still queued are skipped), exports the status metrics and publishes the
/// status for the gRPC admin API. Comparing every object's status with what
/// was written costs tens of milliseconds at 50,000 routes: on its own
/// thread, the next change's translation and push never wait for it.
fn spawn_status_writer(
    mut writer: FileStatusWriter,
    published: crate::admin_grpc::StatusHandle,
) -> anyhow::Result<std::sync::mpsc::Sender<StatusJob>> {
    let (tx, rx) = std::sync::mpsc::channel::<StatusJob>();
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let mut metrics = crate::metrics::status::StatusMetrics::default();
            while let Ok(mut job) = rx.recv() {
                while let Ok(newer) = rx.try_recv() {
                    job = newer;
                }
                metrics.update(&job.status);
                writer.set_notes(&job.notes);
                if let Err(e) = writer.write(&job.status) {
                    error!(dir = %writer.dir().display(), "writing status: {e}");
                }
                published.set(job.status);
            }
        })
        .context("starting the status thread")?;
    Ok(tx)
}

/// How often an idle reload thread wakes to check certificate expiry.
const EXPIRY_CHECK: Duration = Duration::from_secs(3600);

/// Where the last good version of each config file is kept, under `--status-dir`.
pub const LAST_GOOD_DIR: &str = "last-good";

/// Work for the reload thread.
enum Cmd {
    /// Files changed: reload (after the debounce).
    Reload,
    /// Envoy ACKed or NACKed: rewrite status.
    WriteStatus,
    /// An ACK or NACK, for NACK isolation (a NACK may quarantine objects
    /// and rebuild without them).
    Xds(crate::xds::cache::XdsEvent),
}

/// Starts the reload thread: the first reload at once, then one per
/// [`Cmd::Reload`] (a burst coalesced over `debounce`), a status write per
/// [`Cmd::WriteStatus`], and a reload when vanished objects are due. It
/// ends when the sender is dropped; a reload still running at shutdown is
/// not waited for (a plain thread: the process exits without it).
fn spawn_reloader(
    mut r: Reloader,
    state: Arc<State>,
    debounce: Duration,
) -> anyhow::Result<std::sync::mpsc::Sender<Cmd>> {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel::<Cmd>();
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            r.reload(&state);
            loop {
                // At least hourly: certificate expiry messages (see
                // `certs::expiry_refresh_due`) follow the clock.
                let wake = r
                    .recheck_at
                    .map(|t| t.saturating_duration_since(Instant::now()))
                    .unwrap_or(EXPIRY_CHECK)
                    .min(EXPIRY_CHECK);
                // Never a busy loop, even if a recheck stays due.
                let cmd = rx.recv_timeout(wake.max(Duration::from_millis(10)));
                match cmd {
                    Ok(Cmd::WriteStatus) => r.write_status(),
                    Ok(Cmd::Xds(ev)) => r.on_xds(&state, &ev),
                    Ok(Cmd::Reload) => {
                        // Coalesce the burst of events an editor's save produces.
                        std::thread::sleep(debounce);
                        let mut status = false;
                        let mut xds = Vec::new();
                        for c in rx.try_iter() {
                            match c {
                                Cmd::WriteStatus => status = true,
                                Cmd::Xds(ev) => xds.push(ev),
                                Cmd::Reload => {}
                            }
                        }
                        r.reload(&state);
                        for ev in &xds {
                            r.on_xds(&state, ev);
                        }
                        if status {
                            r.write_status();
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => r.reload(&state),
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
        .context("starting the reload thread")?;
    Ok(tx)
}

impl Reloader {
    fn reload(&mut self, state: &State) {
        self.reload_inner(state);
        // Saved after the push: off the critical path.
        self.loader.persist();
    }

    fn reload_inner(&mut self, state: &State) {
        let t0 = Instant::now();
        let touched = std::mem::take(&mut *self.touched.lock().unwrap_or_else(|p| p.into_inner()));
        let mut refresh = if touched.rescan || self.translated.is_none() {
            self.loader.refresh(&self.controller_name)
        } else {
            self.loader
                .refresh_paths(&self.controller_name, &touched.paths)
        };
        self.recheck_at = refresh.recheck_at;
        let before = self.loader.inputs().assigned_addresses.clone();
        self.pool.assign(self.loader.inputs_mut());
        if self.loader.inputs().assigned_addresses != before {
            refresh.changes.record_all();
        }
        if crate::certs::expiry_refresh_due(
            self.engine.served_certificates(),
            self.loader.inputs().now,
            crate::certs::wall_clock(),
        ) {
            refresh.changes.record_all();
        }
        let errors_changed = refresh.errors != self.last_errors;
        if refresh.changes.is_empty() && !errors_changed && self.translated.is_some() {
            debug!("no change");
            return;
        }
        if refresh.changes.within(Retranslate::Endpoints)
            && !errors_changed
            && self.translated.is_some()
        {
            let n = self.engine.endpoints_only(self.loader.inputs());
            info!(
                clusters = n,
                elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
                "endpoints updated (no route re-translation)"
            );
            return;
        }
        self.last_errors = refresh.errors.clone();
        self.loader.inputs_mut().now = Some(crate::certs::wall_clock());
        let first = self.translated.is_none();
        let (translated, up) = apply(
            &mut self.writer,
            &mut self.engine,
            state,
            self.loader.inputs(),
            &refresh.changes,
            refresh.errors,
            t0,
        );
        self.translated = Some(translated);
        let grants = self.grants.observe(self.loader.inputs(), &refresh.changes);
        if !first {
            // Standalone has no Events: the log says it (warn when refused).
            crate::metrics::refgrants::report(&up, self.engine.status(), &grants);
        }
        self.write_status();
    }

    /// NACK isolation: a NACK that quarantines objects rebuilds at once
    /// without them (or with their last accepted content).
    fn on_xds(&mut self, state: &State, ev: &crate::xds::cache::XdsEvent) {
        let quarantined = self.engine.on_xds_event(ev);
        if quarantined.is_empty() || self.translated.is_none() {
            return;
        }
        let mut changes = Changes::default();
        for (kind, key) in &quarantined {
            changes.record(*kind, key);
        }
        let (translated, _) = apply(
            &mut self.writer,
            &mut self.engine,
            state,
            self.loader.inputs(),
            &changes,
            self.last_errors.clone(),
            Instant::now(),
        );
        self.translated = Some(translated);
        self.write_status();
    }

    /// Writes the status with `Programmed` as the Envoy fleet reports it.
    fn write_status(&mut self) {
        // Status is written once a burst of ACKs settled: so is the NACK
        // isolation's confirmation floor.
        self.engine.settle_acks();
        let Some(t) = &self.translated else { return };
        let nodes = self.engine.cache().node_states();
        let status = crate::programmed::overlay(
            self.engine.status(),
            &t.snapshot,
            &nodes,
            t.version,
            |_, _| false,
        );
        // Shadowed rules: a `notes:` list next to the route's status.
        let notes = self.engine.shadowed().notes().clone();
        let _ = self.status_out.send(StatusJob { status, notes });
    }
}

/// The last snapshot, kept to re-derive `Programmed` on ACK/NACK.
struct Translated {
    snapshot: crate::xds::Snapshot,
    version: u64,
}

fn apply(
    writer: &mut FileStatusWriter,
    engine: &mut Engine,
    state: &State,
    inputs: &Inputs,
    changes: &Changes,
    errors: Vec<LoadError>,
    t0: Instant,
) -> (Translated, crate::translate::Update) {
    for e in &errors {
        error!(file = %e.file, line = ?e.line, "{}", e.message);
    }
    let objects = inputs.object_count();
    let (up, snap) = engine.translate(inputs, changes);
    let resources = resource_index(&snap);
    let version = engine.version;
    if let Err(e) = writer.write_errors(&errors) {
        error!(dir = %writer.dir().display(), "writing errors.yaml: {e}");
    }
    crate::metrics::catalogue::RELOADS.inc([]);
    crate::metrics::catalogue::CONFIG_ERRORS.set([], errors.len() as f64);
    info!(
        version,
        objects,
        errors = errors.len(),
        full = up.full,
        elapsed_ms = t0.elapsed().as_secs_f64() * 1e3,
        "configuration applied"
    );
    let mut last = state.last.lock().unwrap_or_else(|p| p.into_inner());
    *last = LastRun {
        version,
        errors,
        objects,
        resources,
        ready: true,
    };
    drop(last);
    (
        Translated {
            snapshot: snap,
            version,
        },
        up,
    )
}

/// How long a burst of xDS ACKs/NACKs is left to settle before status is rewritten.
pub(crate) const ACK_SETTLE: Duration = Duration::from_millis(5);

/// Sleeps until `due`; never completes when there is nothing due.
pub(crate) async fn sleep_until_due(due: Option<tokio::time::Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
