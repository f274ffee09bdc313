//! `switchyard-kubelet`: a process kubelet for Switchyard's local test cluster.
//!
//! It registers one Node and keeps it Ready (status heartbeat and a Lease),
//! binds unscheduled Pods to it (there is no scheduler), and runs each Pod's
//! containers as local processes: one network namespace per Pod (a veth into
//! a bridge, an address from the Pod CIDR) and a private mount namespace in
//! which Secret, ConfigMap and other volumes appear at the paths the Pod asks
//! for. Images map to local binaries through a small YAML table; an unknown
//! image gets the waiting reason `ImageNotMapped` instead of a hang.
//!
//! Each container's stdout and stderr are kept as CRI log files (`logs`),
//! served over HTTPS on the kubelet port for the API server's pods/log
//! subresource (`server`), so `kubectl logs` works.
//!
//! Test infrastructure, not product code: no cgroups, no images, no probes
//! beyond "the declared TCP ports accept connections".
#![forbid(unsafe_code)]

mod logs;
mod server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, KeyToPath, Node, ObjectReference, Pod, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tracing::{info, warn};

const FIELD_MANAGER: &str = "switchyard-kubelet";
/// Longest grace period honoured on deletion (tests should not wait 30 s).
const MAX_GRACE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(200);

#[derive(Parser, Clone, Debug)]
#[command(
    name = "switchyard-kubelet",
    about = "Process kubelet for the local test cluster"
)]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "e2e-node")]
    node_name: String,
    /// Bridge the Pods' veths join; created when missing.
    #[arg(long, default_value = "sybr0")]
    bridge: String,
    /// The bridge's (host's) address: the Pods' gateway and the Node's InternalIP.
    #[arg(long, default_value = "10.244.0.1")]
    bridge_ip: Ipv4Addr,
    /// Pod addresses come from this /24 (the bridge address excluded).
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_cidr: String,
    /// Per-Pod state: volumes, logs.
    #[arg(long)]
    run_dir: PathBuf,
    /// YAML list of {match: "image substring", binary: "name or path", default_args: [...]}.
    #[arg(long)]
    image_map: PathBuf,
    /// Directory where relative binary names are looked up.
    #[arg(long)]
    bin_dir: PathBuf,
    /// HTTPS port for the API server (container logs); advertised in the
    /// Node's status.daemonEndpoints. Served only with a serving certificate.
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// Address the HTTPS server listens on (default: --bridge-ip, the
    /// Node's InternalIP).
    #[arg(long)]
    address: Option<IpAddr>,
    /// Serving certificate (PEM) for the kubelet port; without it and
    /// --tls-private-key-file nothing is served and the Node advertises port 0.
    #[arg(long, requires = "tls_private_key_file")]
    tls_cert_file: Option<PathBuf>,
    #[arg(long, requires = "tls_cert_file")]
    tls_private_key_file: Option<PathBuf>,
    /// CA whose client certificates may call the kubelet port (the API
    /// server's --kubelet-client-certificate); without it, anyone may.
    #[arg(long)]
    client_ca_file: Option<PathBuf>,
}

impl Args {
    /// The port advertised on the Node: 0 when nothing is served.
    fn served_port(&self) -> u16 {
        if self.tls_cert_file.is_some() {
            self.port
        } else {
            0
        }
    }
}

#[derive(Deserialize, Clone, Debug)]
struct ImageRule {
    /// A substring of the image reference.
    #[serde(rename = "match")]
    pattern: String,
    /// Binary to run: absolute, or relative to --bin-dir.
    binary: String,
    /// Arguments used when the container gives neither command nor args.
    #[serde(default)]
    default_args: Vec<String>,
}

/// Why a Pod's processes stop.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stop {
    /// The Pod is being deleted: SIGTERM, wait up to the grace period, then
    /// report the final status and remove the object.
    Delete { grace: Duration },
    /// The object is gone already (or was replaced): stop and clean up.
    Gone,
    /// The kubelet is shutting down: stop and clean up, leave the API alone.
    Shutdown,
}

struct PodHandle {
    key: String,
    stop: watch::Sender<Option<Stop>>,
    task: tokio::task::JoinHandle<()>,
}

struct Kubelet {
    args: Args,
    rules: Mutex<Vec<ImageRule>>,
    client: Client,
    /// Running Pods by UID.
    pods: Mutex<HashMap<String, PodHandle>>,
    used_ips: Mutex<HashSet<Ipv4Addr>>,
    /// Last host number handed out (2..=254).
    ip_cursor: Mutex<u8>,
    /// Mount points created on the host (removed, if empty, at shutdown).
    created: Mutex<Vec<PathBuf>>,
    /// Where each Pod's container logs are (read by the HTTPS server).
    logs: Arc<logs::LogState>,
}

fn pod_key(p: &Pod) -> String {
    format!(
        "{}/{}",
        p.metadata.namespace.as_deref().unwrap_or("default"),
        p.metadata.name.as_deref().unwrap_or("")
    )
}

fn short_hash(s: &str) -> String {
    // FNV-1a, 32 bits: short stable names for netns and veths (IFNAMSIZ is 15).
    let mut h: u32 = 0x811c9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x01000193);
    }
    format!("{h:08x}")
}

fn now() -> Time {
    Time(Timestamp::now())
}

async fn sh(cmd: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .await
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn signal_group(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, "--", &format!("-{pid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let rules: Vec<ImageRule> = serde_yaml::from_str(
        &std::fs::read_to_string(&args.image_map)
            .with_context(|| format!("reading {}", args.image_map.display()))?,
    )
    .with_context(|| format!("parsing {}", args.image_map.display()))?;
    std::fs::create_dir_all(&args.run_dir)?;
    ensure_bridge(&args).await?;

    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .context("reading the kubeconfig")?;
    let client = Client::try_from(config).context("connecting to the API server")?;
    let log_state = Arc::new(logs::LogState::default());
    // Listen before the Node advertises the port.
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_private_key_file) {
        let acceptor = server::tls_acceptor(cert, key, args.client_ca_file.as_deref())?;
        let addr = (
            args.address.unwrap_or(IpAddr::V4(args.bridge_ip)),
            args.port,
        );
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr:?} (the kubelet port)"))?;
        tokio::spawn(server::serve(listener, acceptor, log_state.clone()));
    }
    register_node(&client, &args).await?;
    tokio::spawn(heartbeat(client.clone(), args.clone()));

    let kubelet = Arc::new(Kubelet {
        args,
        rules: Mutex::new(rules),
        client: client.clone(),
        pods: Mutex::new(HashMap::new()),
        used_ips: Mutex::new(HashSet::new()),
        ip_cursor: Mutex::new(254),
        created: Mutex::new(Vec::new()),
        logs: log_state,
    });

    let mut stream = watcher::watcher(Api::<Pod>::all(client), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    info!(node = %kubelet.args.node_name, "process kubelet started");
    // UIDs seen during a (re)list: Pods we run that are missing were deleted
    // while the watch was down.
    let mut listed: Option<HashSet<String>> = None;
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Init) => listed = Some(HashSet::new()),
                    Ok(Event::InitApply(p)) => {
                        if let (Some(l), Some(uid)) = (listed.as_mut(), p.metadata.uid.clone()) {
                            l.insert(uid);
                        }
                        kubelet.on_pod(p).await;
                    }
                    Ok(Event::InitDone) => {
                        if let Some(l) = listed.take() {
                            let gone: Vec<String> = kubelet.pods.lock().unwrap().keys()
                                .filter(|u| !l.contains(*u)).cloned().collect();
                            for uid in gone {
                                kubelet.stop(&uid, Stop::Gone);
                            }
                        }
                    }
                    Ok(Event::Apply(p)) => kubelet.on_pod(p).await,
                    Ok(Event::Delete(p)) => {
                        if let Some(uid) = &p.metadata.uid {
                            kubelet.stop(uid, Stop::Gone);
                        }
                    }
                    Err(e) => warn!("watch: {e}"),
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    info!("shutting down: stopping all Pods");
    let handles: Vec<PodHandle> = kubelet
        .pods
        .lock()
        .unwrap()
        .drain()
        .map(|(_, h)| h)
        .collect();
    for h in &handles {
        h.stop.send_replace(Some(Stop::Shutdown));
    }
    for h in handles {
        let _ = tokio::time::timeout(Duration::from_secs(8), h.task).await;
    }
    for p in kubelet.created.lock().unwrap().drain(..).rev() {
        if p.is_dir() {
            let _ = remove_empty_tree(&p);
        } else if std::fs::metadata(&p).is_ok_and(|m| m.len() == 0) {
            let _ = std::fs::remove_file(&p);
        }
    }
    Ok(())
}

async fn ensure_bridge(args: &Args) -> anyhow::Result<()> {
    if sh(&["ip", "link", "show", &args.bridge]).await.is_err() {
        sh(&["ip", "link", "add", &args.bridge, "type", "bridge"]).await?;
    }
    let addrs = sh(&["ip", "-4", "-o", "addr", "show", "dev", &args.bridge]).await?;
    if !addrs.contains(&format!(" {}/", args.bridge_ip)) {
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", args.bridge_ip),
            "dev",
            &args.bridge,
        ])
        .await?;
    }
    sh(&["ip", "link", "set", &args.bridge, "up"]).await?;
    Ok(())
}

// --- Node ----------------------------------------------------------------------

async fn register_node(client: &Client, args: &Args) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": args.node_name, "labels": {
            "kubernetes.io/hostname": args.node_name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
        "spec": {"podCIDR": args.pod_cidr, "podCIDRs": [args.pod_cidr]},
    }))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 409 => break,
            Err(e) if Instant::now() < deadline => {
                warn!("registering node: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e).context("registering the node"),
        }
    }
    patch_node_status(&nodes, args).await?;
    renew_lease(client, args).await;
    info!(node = %args.node_name, "node registered and Ready");
    Ok(())
}

async fn patch_node_status(nodes: &Api<Node>, args: &Args) -> anyhow::Result<()> {
    let t = now();
    let cond = |ty: &str, status: &str, reason: &str, message: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": message,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    let status = json!({"status": {
        "conditions": [
            cond("Ready", "True", "KubeletReady", "switchyard process kubelet is posting ready status"),
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        ],
        "addresses": [{"type": "InternalIP", "address": args.bridge_ip.to_string()},
                      {"type": "Hostname", "address": args.node_name}],
        // Where the API server reaches this kubelet (pods/log); 0 = not served.
        "daemonEndpoints": {"kubeletEndpoint": {"Port": args.served_port()}},
        "capacity": {"cpu": "2", "memory": "24Gi", "pods": "250"},
        "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "250"},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3-switchyard",
                     "kubeProxyVersion": "", "containerRuntimeVersion": "process://1", "kernelVersion": "",
                     "osImage": "switchyard process kubelet", "machineID": "", "systemUUID": "", "bootID": ""}
    }});
    nodes
        .patch_status(
            &args.node_name,
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

async fn renew_lease(client: &Client, args: &Args) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": args.node_name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": args.node_name, "leaseDurationSeconds": 40,
                 "renewTime": MicroTime(Timestamp::now())},
    });
    if let Err(e) = leases
        .patch(
            &args.node_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
    {
        warn!("node lease: {e}");
    }
}

async fn heartbeat(client: Client, args: Args) {
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = patch_node_status(&nodes, &args).await {
            warn!("node heartbeat: {e}");
        }
        renew_lease(&client, &args).await;
    }
}

// --- Pod dispatch ----------------------------------------------------------------

impl Kubelet {
    async fn on_pod(self: &Arc<Self>, pod: Pod) {
        let key = pod_key(&pod);
        if let Err(e) = self.on_pod_inner(pod).await {
            warn!(pod = %key, "{e:#}");
        }
    }

    async fn on_pod_inner(self: &Arc<Self>, pod: Pod) -> anyhow::Result<()> {
        let key = pod_key(&pod);
        let Some(uid) = pod.metadata.uid.clone() else {
            return Ok(());
        };
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let deleting = pod.metadata.deletion_timestamp.is_some();

        if node.is_empty() {
            if deleting {
                return Ok(());
            }
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    uid: Some(uid.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Node".into()),
                    name: Some(self.args.node_name.clone()),
                    ..Default::default()
                },
            };
            match api
                .create_subresource::<_, Value>("binding", &name, &PostParams::default(), &binding)
                .await
            {
                Ok(_) => info!(pod = %key, "bound to {}", self.args.node_name),
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
                Err(e) => return Err(e).context("binding"),
            }
            return Ok(());
        }
        if node != self.args.node_name {
            return Ok(());
        }
        let running = self.pods.lock().unwrap().contains_key(&uid);
        if deleting {
            if running {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or(MAX_GRACE)
                    .min(MAX_GRACE);
                self.stop(&uid, Stop::Delete { grace });
            } else {
                // Nothing runs here for it (never started, or finished): let it go.
                delete_now(&api, &name, &uid).await;
            }
            return Ok(());
        }
        if running {
            return Ok(());
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(());
        }
        // Another Pod object with the same name that we still run is an old
        // incarnation: it is gone.
        let stale: Vec<String> = self
            .pods
            .lock()
            .unwrap()
            .iter()
            .filter(|(u, h)| h.key == key && **u != uid)
            .map(|(u, _)| u.clone())
            .collect();
        for u in stale {
            self.stop(&u, Stop::Gone);
        }
        let (tx, rx) = watch::channel(None);
        let me = self.clone();
        let p = pod.clone();
        let task = tokio::spawn(async move {
            let uid = p.metadata.uid.clone().unwrap_or_default();
            let key = pod_key(&p);
            if let Err(e) = me.run_pod(p, rx).await {
                warn!(pod = %key, "pod task failed: {e:#}");
            }
            me.pods.lock().unwrap().remove(&uid);
        });
        self.pods.lock().unwrap().insert(
            uid,
            PodHandle {
                key,
                stop: tx,
                task,
            },
        );
        Ok(())
    }

    fn stop(&self, uid: &str, why: Stop) {
        if let Some(h) = self.pods.lock().unwrap().get(uid) {
            // An earlier, stronger reason (Gone) is not weakened to Delete.
            h.stop.send_if_modified(|cur| {
                if cur.is_none() || why == Stop::Gone || why == Stop::Shutdown {
                    *cur = Some(why);
                    true
                } else {
                    false
                }
            });
        }
    }

    /// An address for a Pod: the one it already reports (kubelet restart),
    /// if free; else the next free one after the last handed out, so that a
    /// deleted Pod's address is not reused at once (stale EndpointSlices).
    fn alloc_ip(&self, preferred: Option<Ipv4Addr>) -> anyhow::Result<Ipv4Addr> {
        let base = self.args.bridge_ip.octets();
        let host = |i: u8| Ipv4Addr::new(base[0], base[1], base[2], i);
        let mut used = self.used_ips.lock().unwrap();
        let free = |ip: &Ipv4Addr| *ip != self.args.bridge_ip && !used.contains(ip);
        let ip = match preferred {
            Some(p)
                if p.octets()[..3] == base[..3]
                    && (2..=254).contains(&p.octets()[3])
                    && free(&p) =>
            {
                p
            }
            _ => {
                let mut cursor = self.ip_cursor.lock().unwrap();
                let start = *cursor;
                let found = (0..253u16)
                    .map(|k| host((((u16::from(start) - 2 + 1 + k) % 253) + 2) as u8))
                    .find(|ip| free(ip))
                    .ok_or_else(|| anyhow!("pod CIDR {} exhausted", self.args.pod_cidr))?;
                *cursor = found.octets()[3];
                found
            }
        };
        used.insert(ip);
        Ok(ip)
    }

    /// The image map is re-read on every use, so edits apply to new Pods
    /// without a kubelet restart (the last good version is kept on errors).
    fn resolve_image(&self, image: &str) -> Option<(PathBuf, Vec<String>)> {
        let rules = match std::fs::read_to_string(&self.args.image_map)
            .map_err(anyhow::Error::from)
            .and_then(|t| serde_yaml::from_str::<Vec<ImageRule>>(&t).map_err(anyhow::Error::from))
        {
            Ok(r) => {
                *self.rules.lock().unwrap() = r.clone();
                r
            }
            Err(e) => {
                warn!(
                    "image map {}: {e:#}; using the last good one",
                    self.args.image_map.display()
                );
                self.rules.lock().unwrap().clone()
            }
        };
        let r = rules.iter().find(|r| image.contains(&r.pattern))?;
        let p = PathBuf::from(&r.binary);
        let path = if p.is_absolute() {
            p
        } else {
            self.args.bin_dir.join(p)
        };
        Some((path, r.default_args.clone()))
    }
}

async fn delete_now(api: &Api<Pod>, name: &str, uid: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => warn!(pod = name, "delete: {e}"),
    }
}

// --- One Pod ---------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq)]
enum CState {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started: Time,
    },
    Terminated {
        code: i32,
        reason: String,
        started: Option<Time>,
        finished: Time,
    },
}

impl CState {
    fn waiting(reason: &str, message: impl Into<String>) -> Self {
        CState::Waiting {
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            CState::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            CState::Running { started } => json!({"running": {"startedAt": started}}),
            CState::Terminated {
                code,
                reason,
                started,
                finished,
            } => json!({"terminated": {
                "exitCode": code, "reason": reason, "startedAt": started, "finishedAt": finished}}),
        }
    }
}

struct Ctr {
    spec: Container,
    /// The mapped local binary.
    bin: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    /// (source on the host, path inside the Pod), parents first.
    mounts: Vec<(PathBuf, String)>,
    /// TCP ports that must accept connections before the container is Ready.
    ready_ports: Vec<u16>,
    child: Option<Child>,
    started_at: Instant,
    state: CState,
    last: Option<CState>,
    restarts: i32,
    ready: bool,
    restart_at: Option<Instant>,
}

/// Everything a Pod holds on the host, released when it stops.
#[derive(Default)]
struct Resources {
    netns: Option<String>,
    veth: Option<String>,
    ip: Option<Ipv4Addr>,
}

struct PodRun<'a> {
    kubelet: &'a Kubelet,
    pod: Pod,
    api: Api<Pod>,
    ns: String,
    name: String,
    uid: String,
    dir: PathBuf,
    ip: Ipv4Addr,
    host_network: bool,
    res: Resources,
    ctrs: Vec<Ctr>,
    scheduled: Time,
    ready_since: Time,
    pod_ready: bool,
    last_status: Option<Value>,
}

/// Waiting that may end: a Secret not created yet, for example.
struct NotYet(String);

impl Kubelet {
    async fn run_pod(
        &self,
        pod: Pod,
        mut stop: watch::Receiver<Option<Stop>>,
    ) -> anyhow::Result<()> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let host_network = spec.host_network.unwrap_or(false);
        let mut run = PodRun {
            kubelet: self,
            api: Api::namespaced(self.client.clone(), &ns),
            dir: self
                .args
                .run_dir
                .join(format!("{ns}_{name}_{}", &short_hash(&uid))),
            ip: self.args.bridge_ip,
            host_network,
            res: Resources::default(),
            ctrs: Vec::new(),
            scheduled: now(),
            ready_since: now(),
            pod_ready: false,
            last_status: None,
            pod,
            ns,
            name,
            uid,
        };
        // Logs of an earlier incarnation run by a previous kubelet process
        // (same UID): its processes are gone, restart counts start over.
        let _ = std::fs::remove_dir_all(run.dir.join("logs"));
        self.logs.register_pod(&run.key(), &run.dir);
        let result = run.run(&mut stop).await;
        if let Err(e) = &result {
            warn!(pod = %run.key(), "{e:#}");
            run.report_failure(&format!("{e:#}")).await;
            // Keep the Pod known (no restart loop) until it is deleted.
            run.release().await;
            while stop.borrow().is_none() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
        }
        let why = *stop.borrow();
        run.terminate(why.unwrap_or(Stop::Shutdown)).await;
        Ok(())
    }
}

impl PodRun<'_> {
    fn key(&self) -> String {
        format!("{}/{}", self.ns, self.name)
    }

    fn spec(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.pod.spec.clone().unwrap_or_default()
    }

    async fn run(&mut self, stop: &mut watch::Receiver<Option<Stop>>) -> anyhow::Result<()> {
        let spec = self.spec();
        // Images first: an unmapped image is reported and never started.
        let mut programs = Vec::new();
        for c in &spec.containers {
            let image = c.image.clone().unwrap_or_default();
            match self.kubelet.resolve_image(&image) {
                Some((bin, _)) if !bin.exists() => {
                    self.report_waiting(c, "BinaryNotFound", &format!(
                        "image {image} maps to {}, which does not exist (run make cluster-build)", bin.display())).await;
                    return self.idle(stop).await;
                }
                Some(p) => programs.push(p),
                None => {
                    warn!(pod = %self.key(), image, "image not mapped");
                    self.report_waiting(
                        c,
                        "ImageNotMapped",
                        &format!(
                        "image {image} has no local binary in the process kubelet's image map ({})",
                        self.kubelet.args.image_map.display()),
                    )
                    .await;
                    return self.idle(stop).await;
                }
            }
        }
        // Volumes and environment; wait (bounded only by deletion) for
        // Secrets and ConfigMaps that do not exist yet.
        std::fs::create_dir_all(&self.dir)?;
        let volumes = loop {
            match self.prepare_volumes().await {
                Ok(v) => break v,
                Err(Ok(NotYet(msg))) => {
                    self.report_waiting(&spec.containers[0], "ContainerCreating", &msg)
                        .await;
                    if wait_stop(stop, Duration::from_secs(1)).await {
                        return Ok(());
                    }
                }
                Err(Err(e)) => return Err(e),
            }
        };
        self.setup_network().await?;
        for (c, (bin, default_args)) in spec.containers.iter().zip(programs.iter()) {
            let (env, argv) = loop {
                match self.container_env(c).await {
                    Ok(env) => {
                        let argv = container_argv(c, default_args, &env);
                        break (env, argv);
                    }
                    Err(Ok(NotYet(msg))) => {
                        self.report_waiting(c, "CreateContainerConfigError", &msg)
                            .await;
                        if wait_stop(stop, Duration::from_secs(1)).await {
                            return Ok(());
                        }
                    }
                    Err(Err(e)) => return Err(e),
                }
            };
            let mounts = self.container_mounts(c, &volumes)?;
            let ready_ports = ready_ports(c);
            self.ctrs.push(Ctr {
                spec: c.clone(),
                bin: bin.clone(),
                argv,
                env,
                mounts,
                ready_ports,
                child: None,
                started_at: Instant::now(),
                state: CState::waiting("ContainerCreating", ""),
                last: None,
                restarts: 0,
                ready: false,
                restart_at: Some(Instant::now()),
            });
        }
        if !self.run_init_containers(stop).await? {
            return Ok(());
        }

        // Supervise: start, restart per restartPolicy, readiness, status.
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        loop {
            if stop.borrow().is_some() {
                return Ok(());
            }
            let mut changed = false;
            for i in 0..self.ctrs.len() {
                // Exited?
                let exited = match self.ctrs[i].child.as_mut() {
                    Some(child) => child.try_wait()?,
                    None => None,
                };
                if let Some(st) = exited {
                    let key = self.key();
                    let c = &mut self.ctrs[i];
                    c.child = None;
                    let code = st.code().unwrap_or_else(|| 128 + st.signal_number());
                    let started = match &c.state {
                        CState::Running { started } => Some(started.clone()),
                        _ => None,
                    };
                    c.state = CState::Terminated {
                        code,
                        reason: if code == 0 {
                            "Completed".into()
                        } else {
                            "Error".into()
                        },
                        started,
                        finished: now(),
                    };
                    c.ready = false;
                    warn!(pod = %key, container = %c.spec.name, code, "container exited");
                    let again = policy == "Always" || (policy == "OnFailure" && code != 0);
                    if again {
                        let backoff = Duration::from_secs(1u64 << c.restarts.clamp(0, 4) as u64)
                            .min(MAX_GRACE);
                        c.restart_at = Some(Instant::now() + backoff);
                    }
                    changed = true;
                }
                // (Re)start?
                if self.ctrs[i].child.is_none()
                    && self.ctrs[i].restart_at.is_some_and(|t| Instant::now() >= t)
                {
                    self.ctrs[i].restart_at = None;
                    if matches!(self.ctrs[i].state, CState::Terminated { .. }) {
                        self.ctrs[i].last = Some(self.ctrs[i].state.clone());
                        self.ctrs[i].restarts += 1;
                    }
                    match self.spawn(i) {
                        Ok(child) => {
                            let c = &mut self.ctrs[i];
                            c.child = Some(child);
                            c.started_at = Instant::now();
                            c.state = CState::Running { started: now() };
                        }
                        Err(e) => {
                            let c = &mut self.ctrs[i];
                            c.state = CState::waiting("RunContainerError", format!("{e:#}"));
                            c.restart_at = Some(Instant::now() + Duration::from_secs(5));
                        }
                    }
                    changed = true;
                }
                // Ready?
                if !self.ctrs[i].ready
                    && self.ctrs[i].child.is_some()
                    && self.container_ready(i).await
                {
                    self.ctrs[i].ready = true;
                    info!(pod = %self.key(), container = %self.ctrs[i].spec.name, ip = %self.ip, "container ready");
                    changed = true;
                }
            }
            if changed {
                self.report().await;
            }
            let all_done = self.ctrs.iter().all(|c| {
                c.child.is_none()
                    && c.restart_at.is_none()
                    && matches!(c.state, CState::Terminated { .. })
            });
            if all_done {
                // Finished for good (restartPolicy Never/OnFailure); the
                // final status is reported; keep the Pod until deleted.
                self.release().await;
                return self.idle(stop).await;
            }
            if wait_stop(stop, TICK).await {
                return Ok(());
            }
        }
    }

    /// Waits until the Pod is stopped.
    async fn idle(&mut self, stop: &mut watch::Receiver<Option<Stop>>) -> anyhow::Result<()> {
        while stop.borrow().is_none() {
            if stop.changed().await.is_err() {
                break;
            }
        }
        Ok(())
    }

    /// Init containers, in order, each to completion. False if stopped.
    async fn run_init_containers(
        &mut self,
        stop: &mut watch::Receiver<Option<Stop>>,
    ) -> anyhow::Result<bool> {
        let inits = self.spec().init_containers.unwrap_or_default();
        for c in inits {
            let image = c.image.clone().unwrap_or_default();
            let Some((bin, default_args)) = self.kubelet.resolve_image(&image) else {
                self.report_waiting(
                    &c,
                    "ImageNotMapped",
                    &format!("init container image {image} is not mapped"),
                )
                .await;
                self.idle(stop).await?;
                return Ok(false);
            };
            let env = match self.container_env(&c).await {
                Ok(e) => e,
                Err(Ok(NotYet(m))) => bail!("init container {}: {m}", c.name),
                Err(Err(e)) => return Err(e),
            };
            let argv = container_argv(&c, &default_args, &env);
            let mut cmd = self.command(&bin, &argv, &env, &[], &c);
            let mut child = cmd
                .spawn()
                .with_context(|| format!("starting init container {}", c.name))?;
            logs::capture(
                &mut child,
                logs::log_file(&self.dir, &c.name, 0),
                &self.kubelet.logs,
            );
            loop {
                if let Some(st) = child.try_wait()? {
                    if !st.success() {
                        bail!("init container {} failed: {st}", c.name);
                    }
                    break;
                }
                if wait_stop(stop, TICK).await {
                    if let Some(pid) = child.id() {
                        signal_group(pid, "-KILL").await;
                    }
                    let _ = child.wait().await;
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    // --- Network ---------------------------------------------------------------

    async fn setup_network(&mut self) -> anyhow::Result<()> {
        if self.host_network {
            return Ok(());
        }
        let hash = short_hash(&self.uid);
        let netns = format!("sy-{hash}");
        let veth = format!("syv{hash}");
        let preferred = self
            .pod
            .status
            .as_ref()
            .and_then(|st| st.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok());
        let ip = self.kubelet.alloc_ip(preferred)?;
        self.res.ip = Some(ip);
        self.ip = ip;
        remove_netns(&netns).await;
        let _ = sh(&["ip", "link", "delete", &veth]).await;
        sh(&["ip", "netns", "add", &netns]).await?;
        self.res.netns = Some(netns.clone());
        sh(&[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
        ])
        .await?;
        self.res.veth = Some(veth.clone());
        let bridge = &self.kubelet.args.bridge;
        let gw = self.kubelet.args.bridge_ip.to_string();
        let cidr = format!("{ip}/24");
        sh(&["ip", "link", "set", &veth, "master", bridge, "up"]).await?;
        sh(&["ip", "-n", &netns, "addr", "add", &cidr, "dev", "eth0"]).await?;
        sh(&["ip", "-n", &netns, "link", "set", "eth0", "up"]).await?;
        sh(&["ip", "-n", &netns, "link", "set", "lo", "up"]).await?;
        sh(&["ip", "-n", &netns, "route", "add", "default", "via", &gw]).await?;
        info!(pod = %self.key(), %ip, netns, "network ready");
        Ok(())
    }

    // --- Volumes ---------------------------------------------------------------

    /// Materialises the Pod's volumes under its directory: name → host path.
    async fn prepare_volumes(
        &self,
    ) -> Result<BTreeMap<String, PathBuf>, Result<NotYet, anyhow::Error>> {
        let client = self.kubelet.client.clone();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.ns);
        let cms: Api<ConfigMap> = Api::namespaced(client, &self.ns);
        let mut out = BTreeMap::new();
        for v in self.spec().volumes.unwrap_or_default() {
            if let Some(h) = &v.host_path {
                if h.type_.as_deref() == Some("DirectoryOrCreate") {
                    std::fs::create_dir_all(&h.path).map_err(|e| Err(e.into()))?;
                }
                out.insert(v.name.clone(), PathBuf::from(&h.path));
                continue;
            }
            let dir = self.dir.join("volumes").join(&v.name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).map_err(|e| Err(e.into()))?;
            if let Some(s) = &v.secret {
                let sname = s.secret_name.clone().unwrap_or_default();
                match secrets.get_opt(&sname).await.map_err(|e| Err(e.into()))? {
                    Some(sec) => {
                        let data = secret_data(&sec);
                        write_keys(&dir, &data, s.items.as_deref(), s.default_mode).map_err(Err)?;
                    }
                    None if s.optional == Some(true) => {}
                    None => return Err(Ok(NotYet(format!("secret \"{sname}\" not found")))),
                }
            }
            if let Some(c) = &v.config_map {
                match cms.get_opt(&c.name).await.map_err(|e| Err(e.into()))? {
                    Some(cm) => {
                        write_keys(
                            &dir,
                            &configmap_data(&cm),
                            c.items.as_deref(),
                            c.default_mode,
                        )
                        .map_err(Err)?;
                    }
                    None if c.optional == Some(true) => {}
                    None => return Err(Ok(NotYet(format!("configmap \"{}\" not found", c.name)))),
                }
            }
            if let Some(p) = &v.projected {
                for src in p.sources.iter().flatten() {
                    if let Some(s) = &src.secret {
                        match secrets.get_opt(&s.name).await.map_err(|e| Err(e.into()))? {
                            Some(sec) => write_keys(
                                &dir,
                                &secret_data(&sec),
                                s.items.as_deref(),
                                p.default_mode,
                            )
                            .map_err(Err)?,
                            None if s.optional == Some(true) => {}
                            None => {
                                return Err(Ok(NotYet(format!("secret \"{}\" not found", s.name))))
                            }
                        }
                    }
                    if let Some(c) = &src.config_map {
                        match cms.get_opt(&c.name).await.map_err(|e| Err(e.into()))? {
                            Some(cm) => write_keys(
                                &dir,
                                &configmap_data(&cm),
                                c.items.as_deref(),
                                p.default_mode,
                            )
                            .map_err(Err)?,
                            None if c.optional == Some(true) => {}
                            None => {
                                return Err(Ok(NotYet(format!(
                                    "configmap \"{}\" not found",
                                    c.name
                                ))))
                            }
                        }
                    }
                    if let Some(d) = &src.downward_api {
                        for item in d.items.iter().flatten() {
                            if let Some(f) = &item.field_ref {
                                let val = self.field_value(&f.field_path);
                                write_file(
                                    &dir.join(&item.path),
                                    val.as_bytes(),
                                    item.mode.or(p.default_mode),
                                )
                                .map_err(Err)?;
                            }
                        }
                    }
                }
            }
            if let Some(d) = &v.downward_api {
                for item in d.items.iter().flatten() {
                    if let Some(f) = &item.field_ref {
                        let val = self.field_value(&f.field_path);
                        write_file(
                            &dir.join(&item.path),
                            val.as_bytes(),
                            item.mode.or(d.default_mode),
                        )
                        .map_err(Err)?;
                    }
                }
            }
            // emptyDir and anything else: the (empty) directory itself.
            out.insert(v.name.clone(), dir);
        }
        Ok(out)
    }

    /// Bind mounts for one container, creating missing mount points on the host
    /// (recorded, and removed when the Pod stops).
    fn container_mounts(
        &mut self,
        c: &Container,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> anyhow::Result<Vec<(PathBuf, String)>> {
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let Some(src) = volumes.get(&m.name) else {
                bail!("volumeMount {} names no volume", m.name);
            };
            let src = match m.sub_path.as_deref() {
                Some(sp) if !sp.is_empty() => src.join(sp),
                _ => src.clone(),
            };
            let target = PathBuf::from(&m.mount_path);
            if !target.exists() {
                // Remember the topmost directory we create.
                let mut top = target.clone();
                while let Some(parent) = top.parent() {
                    if parent.exists() {
                        break;
                    }
                    top = parent.to_path_buf();
                }
                if src.is_file() {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&target, b"")?;
                } else {
                    std::fs::create_dir_all(&target)?;
                }
                self.kubelet.created.lock().unwrap().push(top.clone());
                record_created(&self.kubelet.args.run_dir, &top);
            }
            mounts.push((src, m.mount_path.clone()));
        }
        mounts.sort_by_key(|(_, p)| Path::new(p).components().count());
        Ok(mounts)
    }

    // --- Environment -----------------------------------------------------------

    fn field_value(&self, path: &str) -> String {
        let meta = &self.pod.metadata;
        let spec = self.spec();
        let label = |map: &Option<BTreeMap<String, String>>, prefix: &str| -> Option<String> {
            let k = path.strip_prefix(prefix)?.strip_suffix("']")?;
            map.as_ref()?.get(k).cloned()
        };
        match path {
            "metadata.name" => self.name.clone(),
            "metadata.namespace" => self.ns.clone(),
            "metadata.uid" => self.uid.clone(),
            "spec.nodeName" => self.kubelet.args.node_name.clone(),
            "spec.serviceAccountName" => spec.service_account_name.unwrap_or_default(),
            "status.podIP" | "status.podIPs" => self.ip.to_string(),
            "status.hostIP" | "status.hostIPs" => self.kubelet.args.bridge_ip.to_string(),
            p if p.starts_with("metadata.labels['") => {
                label(&meta.labels, "metadata.labels['").unwrap_or_default()
            }
            p if p.starts_with("metadata.annotations['") => {
                label(&meta.annotations, "metadata.annotations['").unwrap_or_default()
            }
            other => {
                warn!(field = other, "unsupported fieldRef");
                String::new()
            }
        }
    }

    async fn container_env(
        &self,
        c: &Container,
    ) -> Result<Vec<(String, String)>, Result<NotYet, anyhow::Error>> {
        let client = self.kubelet.client.clone();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.ns);
        let cms: Api<ConfigMap> = Api::namespaced(client, &self.ns);
        let mut env: Vec<(String, String)> = Vec::new();
        fn set(env: &mut Vec<(String, String)>, k: String, v: String) {
            env.retain(|(n, _)| *n != k);
            env.push((k, v));
        }
        for from in c.env_from.iter().flatten() {
            let prefix = from.prefix.clone().unwrap_or_default();
            if let Some(r) = &from.secret_ref {
                match secrets.get_opt(&r.name).await.map_err(|e| Err(e.into()))? {
                    Some(s) => {
                        for (k, v) in secret_data(&s) {
                            set(
                                &mut env,
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v).into_owned(),
                            );
                        }
                    }
                    None if r.optional == Some(true) => {}
                    None => return Err(Ok(NotYet(format!("secret \"{}\" not found", r.name)))),
                }
            }
            if let Some(r) = &from.config_map_ref {
                match cms.get_opt(&r.name).await.map_err(|e| Err(e.into()))? {
                    Some(cm) => {
                        for (k, v) in configmap_data(&cm) {
                            set(
                                &mut env,
                                format!("{prefix}{k}"),
                                String::from_utf8_lossy(&v).into_owned(),
                            );
                        }
                    }
                    None if r.optional == Some(true) => {}
                    None => return Err(Ok(NotYet(format!("configmap \"{}\" not found", r.name)))),
                }
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                expand(v, &env)
            } else if let Some(from) = &e.value_from {
                if let Some(f) = &from.field_ref {
                    self.field_value(&f.field_path)
                } else if let Some(r) = &from.secret_key_ref {
                    let v = secrets
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| Err(e.into()))?
                        .and_then(|s| secret_data(&s).remove(&r.key));
                    match v {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(Ok(NotYet(format!(
                                "secret \"{}\" key \"{}\" not found",
                                r.name, r.key
                            ))))
                        }
                    }
                } else if let Some(r) = &from.config_map_key_ref {
                    let v = cms
                        .get_opt(&r.name)
                        .await
                        .map_err(|e| Err(e.into()))?
                        .and_then(|m| configmap_data(&m).remove(&r.key));
                    match v {
                        Some(v) => String::from_utf8_lossy(&v).into_owned(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(Ok(NotYet(format!(
                                "configmap \"{}\" key \"{}\" not found",
                                r.name, r.key
                            ))))
                        }
                    }
                } else if from.resource_field_ref.is_some() {
                    "0".into()
                } else {
                    String::new()
                }
            } else {
                String::new()
            };
            set(&mut env, e.name.clone(), value);
        }
        Ok(env)
    }

    // --- Processes -------------------------------------------------------------

    fn command(
        &self,
        bin: &Path,
        argv: &[String],
        env: &[(String, String)],
        mounts: &[(PathBuf, String)],
        c: &Container,
    ) -> Command {
        // ip netns exec NS unshare --mount --propagation private sh -c SCRIPT sh SRC DST ... -- BIN ARGS
        // Every step execs, so the child's PID is the program's.
        let mut script = String::from("set -e\n");
        for _ in mounts {
            script.push_str("mount --bind \"$1\" \"$2\"; shift 2\n");
        }
        script.push_str("shift\nexec \"$@\"\n");
        let mut cmd = if let Some(netns) = &self.res.netns {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", netns, "unshare"]);
            cmd
        } else {
            Command::new("unshare")
        };
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ]);
        for (src, dst) in mounts {
            cmd.arg(src).arg(dst);
        }
        cmd.arg("--").arg(bin).args(argv);
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOSTNAME", &self.name)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(std::process::Stdio::null())
            .kill_on_drop(false)
            .process_group(0);
        if let Some(dir) = &c.working_dir {
            cmd.current_dir(dir);
        }
        // Both streams go through the kubelet into the CRI log file
        // (`logs::capture` after spawning).
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<Child> {
        let c = &self.ctrs[i];
        let bin = &c.bin;
        let mut cmd = self.command(bin, &c.argv, &c.env, &c.mounts, &c.spec);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        logs::capture(
            &mut child,
            logs::log_file(&self.dir, &c.spec.name, c.restarts),
            &self.kubelet.logs,
        );
        info!(pod = %self.key(), container = %c.spec.name, ip = %self.ip, pid = child.id(),
              "started {} {:?}", bin.display(), c.argv);
        // "PID EXECUTABLE" for down.sh, which kills the PID only while it
        // still runs that executable.
        if let Some(pid) = child.id() {
            let exe = std::fs::canonicalize(bin).unwrap_or_else(|_| bin.to_path_buf());
            let _ = std::fs::write(
                self.dir.join(format!("{}.pid", c.spec.name)),
                format!("{pid} {}\n", exe.display()),
            );
        }
        Ok(child)
    }

    /// Ready when every declared TCP port accepts a connection; without
    /// declared ports, once the process listens on anything (or after 3 s).
    async fn container_ready(&self, i: usize) -> bool {
        let c = &self.ctrs[i];
        if !c.ready_ports.is_empty() {
            for p in &c.ready_ports {
                let ok = tokio::time::timeout(
                    Duration::from_millis(300),
                    tokio::net::TcpStream::connect((self.ip, *p)),
                )
                .await
                .is_ok_and(|r| r.is_ok());
                if !ok {
                    return false;
                }
            }
            return true;
        }
        if self.host_network {
            return true;
        }
        let pid = c.child.as_ref().and_then(|ch| ch.id());
        pid.is_some_and(listens) || c.started_at.elapsed() > Duration::from_secs(3)
    }

    // --- Teardown --------------------------------------------------------------

    /// Stops every process (SIGTERM, grace, SIGKILL), releases host resources
    /// and, on deletion, reports the final status and removes the object.
    async fn terminate(&mut self, why: Stop) {
        let grace = match why {
            Stop::Delete { grace } => grace,
            Stop::Gone => Duration::from_secs(1),
            Stop::Shutdown => Duration::from_secs(3),
        };
        for c in &self.ctrs {
            if let Some(pid) = c.child.as_ref().and_then(|ch| ch.id()) {
                signal_group(pid, "-TERM").await;
            }
        }
        let deadline = Instant::now() + grace;
        for i in 0..self.ctrs.len() {
            let Some(mut child) = self.ctrs[i].child.take() else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let st = match tokio::time::timeout(left, child.wait()).await {
                Ok(st) => st.ok(),
                Err(_) => {
                    if let Some(pid) = child.id() {
                        signal_group(pid, "-KILL").await;
                    }
                    let _ = child.start_kill();
                    child.wait().await.ok()
                }
            };
            let code = st
                .map(|s| s.code().unwrap_or_else(|| 128 + s.signal_number()))
                .unwrap_or(137);
            let key = self.key();
            let c = &mut self.ctrs[i];
            let started = match &c.state {
                CState::Running { started } => Some(started.clone()),
                _ => None,
            };
            c.state = CState::Terminated {
                code,
                reason: if code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                started,
                finished: now(),
            };
            c.ready = false;
            info!(pod = %key, container = %c.spec.name, code, "stopped");
        }
        self.release().await;
        if let Stop::Delete { .. } = why {
            self.report().await;
            delete_now(&self.api, &self.name, &self.uid).await;
            info!(pod = %self.key(), "deleted");
        }
    }

    /// Returns the netns, veth, address and created mount points to the host.
    async fn release(&mut self) {
        if let Some(veth) = self.res.veth.take() {
            let _ = sh(&["ip", "link", "delete", &veth]).await;
        }
        if let Some(netns) = self.res.netns.take() {
            remove_netns(&netns).await;
        }
        if let Some(ip) = self.res.ip.take() {
            self.kubelet.used_ips.lock().unwrap().remove(&ip);
        }
        // Mount points created on the host stay until the kubelet exits (or
        // down.sh runs): removing one that another Pod's mount namespace uses
        // would detach that Pod's volume.
    }

    // --- Status ----------------------------------------------------------------

    fn status_json(&self) -> Value {
        let spec = self.spec();
        let all_ready = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.ready);
        let any_running = self.ctrs.iter().any(|c| c.child.is_some());
        let all_terminated = !self.ctrs.is_empty()
            && self.ctrs.iter().all(|c| {
                c.child.is_none()
                    && c.restart_at.is_none()
                    && matches!(c.state, CState::Terminated { .. })
            });
        let phase = if all_terminated {
            if self
                .ctrs
                .iter()
                .all(|c| matches!(c.state, CState::Terminated { code: 0, .. }))
            {
                "Succeeded"
            } else {
                "Failed"
            }
        } else if any_running || self.ctrs.iter().any(|c| c.restarts > 0) {
            "Running"
        } else {
            "Pending"
        };
        let r = if all_ready { "True" } else { "False" };
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|cs| {
                let c = self.ctrs.iter().find(|c| c.spec.name == cs.name);
                let image = cs.image.clone().unwrap_or_default();
                let mut v = json!({"name": cs.name, "image": image, "imageID": format!("process://{image}"),
                    "containerID": format!("process://{}/{}", self.uid, cs.name),
                    "ready": c.is_some_and(|c| c.ready), "started": c.is_some_and(|c| c.child.is_some()),
                    "restartCount": c.map_or(0, |c| c.restarts),
                    "state": c.map_or_else(|| CState::waiting("ContainerCreating", "").to_json(), |c| c.state.to_json())});
                if let Some(last) = c.and_then(|c| c.last.as_ref()) {
                    v["lastState"] = last.to_json();
                }
                v
            })
            .collect();
        let mut st = json!({
            "phase": phase,
            "hostIP": self.kubelet.args.bridge_ip.to_string(),
            "hostIPs": [{"ip": self.kubelet.args.bridge_ip.to_string()}],
            "startTime": self.scheduled,
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": self.scheduled},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.scheduled},
                {"type": "Initialized", "status": "True", "lastTransitionTime": self.scheduled},
                {"type": "ContainersReady", "status": r, "lastTransitionTime": self.ready_since},
                {"type": "Ready", "status": r, "lastTransitionTime": self.ready_since}],
            "containerStatuses": statuses});
        if self.res.ip.is_some() || self.host_network {
            st["podIP"] = json!(self.ip.to_string());
            st["podIPs"] = json!([{"ip": self.ip.to_string()}]);
        }
        json!({ "status": st })
    }

    async fn report(&mut self) {
        let all_ready = !self.ctrs.is_empty() && self.ctrs.iter().all(|c| c.ready);
        if all_ready != self.pod_ready {
            self.pod_ready = all_ready;
            self.ready_since = now();
        }
        let status = self.status_json();
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => warn!(pod = %self.key(), "status: {e}"),
        }
    }

    async fn report_waiting(&mut self, c: &Container, reason: &str, message: &str) {
        let image = c.image.clone().unwrap_or_default();
        let status = json!({"status": {
            "phase": "Pending",
            "hostIP": self.kubelet.args.bridge_ip.to_string(),
            "startTime": self.scheduled,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": self.scheduled},
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": message,
                 "lastTransitionTime": self.scheduled},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": message,
                 "lastTransitionTime": self.scheduled}],
            "containerStatuses": [{"name": c.name, "image": image, "imageID": "", "ready": false, "started": false,
                "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}]}});
        if self.last_status.as_ref() == Some(&status) {
            return;
        }
        match self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            Ok(_) => self.last_status = Some(status),
            Err(e) => warn!(pod = %self.key(), "status: {e}"),
        }
    }

    async fn report_failure(&mut self, message: &str) {
        let status = json!({"status": {"phase": "Failed", "reason": "ProcessKubeletError", "message": message}});
        if let Err(e) = self
            .api
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
        {
            warn!(pod = %self.key(), "status: {e}");
        }
    }
}

/// Sleeps up to `d`; true if the Pod was told to stop meanwhile.
async fn wait_stop(stop: &mut watch::Receiver<Option<Stop>>, d: Duration) -> bool {
    if stop.borrow().is_some() {
        return true;
    }
    let _ = tokio::time::timeout(d, stop.changed()).await;
    stop.borrow().is_some()
}

trait SignalNumber {
    fn signal_number(&self) -> i32;
}

impl SignalNumber for std::process::ExitStatus {
    fn signal_number(&self) -> i32 {
        use std::os::unix::process::ExitStatusExt;
        self.signal().unwrap_or(9)
    }
}

/// command/args with the image's default: the image's entrypoint is the mapped
/// binary, so `command[0]` is replaced by it; `$(VAR)` expands from the env.
fn container_argv(c: &Container, default_args: &[String], env: &[(String, String)]) -> Vec<String> {
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let argv: Vec<String> = if command.is_empty() && args.is_empty() {
        default_args.to_vec()
    } else {
        command.into_iter().skip(1).chain(args).collect()
    };
    argv.iter().map(|a| expand(a, env)).collect()
}

/// Kubernetes' `$(VAR)` expansion; `$$` is a literal `$`, unknown names stay.
fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(a) = after.strip_prefix('$') {
            out.push('$');
            rest = a;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(j) => {
                    let name = &body[..j];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[j + 1..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn ready_ports(c: &Container) -> Vec<u16> {
    let mut ports: Vec<u16> = c
        .ports
        .iter()
        .flatten()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    if let Some(probe) = &c.readiness_probe {
        let port = probe
            .tcp_socket
            .as_ref()
            .map(|t| &t.port)
            .or(probe.http_get.as_ref().map(|h| &h.port));
        let resolved = match port {
            Some(IntOrString::Int(p)) => u16::try_from(*p).ok(),
            Some(IntOrString::String(name)) => c
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok()),
            None => None,
        };
        if let Some(p) = resolved {
            ports = vec![p];
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Does the network namespace of `pid` hold a listening TCP or a bound UDP socket?
fn listens(pid: u32) -> bool {
    let table = |f: &str, want_listen: bool| -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/net/{f}"))
            .map(|s| {
                s.lines().skip(1).any(|l| {
                    let st = l.split_whitespace().nth(3).unwrap_or("");
                    !want_listen || st == "0A"
                })
            })
            .unwrap_or(false)
    };
    table("tcp", true) || table("tcp6", true) || table("udp", false) || table("udp6", false)
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = s
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in s.string_data.clone().unwrap_or_default() {
        out.insert(k, v.into_bytes());
    }
    out
}

fn configmap_data(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = c
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in c.binary_data.clone().unwrap_or_default() {
        out.insert(k, v.0);
    }
    out
}

fn write_file(path: &Path, data: &[u8], mode: Option<i32>) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    let mode = mode.unwrap_or(0o644) as u32 & 0o7777;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Secret/ConfigMap keys as files: all keys, or just `items` (key → path).
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
) -> anyhow::Result<()> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                let Some(v) = data.get(&it.key) else {
                    bail!("key \"{}\" not found", it.key);
                };
                let rel = Path::new(&it.path);
                if rel.is_absolute() || rel.components().any(|c| c.as_os_str() == "..") {
                    bail!("invalid item path {}", it.path);
                }
                write_file(&dir.join(rel), v, it.mode.or(default_mode))?;
            }
        }
        _ => {
            for (k, v) in data {
                write_file(&dir.join(k), v, default_mode)?;
            }
        }
    }
    Ok(())
}

/// Appends a created mount point to run_dir/created-paths (for down.sh).
fn record_created(run_dir: &Path, p: &Path) {
    use std::io::Write;
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("created-paths"))
    {
        let _ = writeln!(f, "{}", p.display());
    }
}

/// Removes a directory tree only where it holds nothing but empty directories.
fn remove_empty_tree(p: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(p)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            let _ = remove_empty_tree(&e.path());
        }
    }
    std::fs::remove_dir(p)
}

/// Kills whatever still runs in a network namespace, then deletes it.
async fn remove_netns(netns: &str) {
    if let Ok(pids) = sh(&["ip", "netns", "pids", netns]).await {
        for pid in pids.split_whitespace() {
            let _ = sh(&["kill", "-KILL", pid]).await;
        }
    }
    let _ = sh(&["ip", "netns", "delete", netns]).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("A".into(), "1".into()), ("B".into(), "two".into())]
    }

    #[test]
    fn expands_like_kubernetes() {
        assert_eq!(expand("$(A)-$(B)", &env()), "1-two");
        assert_eq!(expand("$$(A) $(C) $", &env()), "$(A) $(C) $");
        assert_eq!(expand("x$(A", &env()), "x$(A");
    }

    #[test]
    fn argv_replaces_the_entrypoint_with_the_mapped_binary() {
        let c: Container = serde_json::from_value(json!({
            "name": "c", "command": ["/echo", "--listen"], "args": ["0.0.0.0:$(A)"]}))
        .unwrap();
        assert_eq!(
            container_argv(&c, &["--default".into()], &env()),
            ["--listen", "0.0.0.0:1"]
        );
        let bare: Container = serde_json::from_value(json!({"name": "c"})).unwrap();
        assert_eq!(
            container_argv(&bare, &["--default".into()], &env()),
            ["--default"]
        );
    }

    #[test]
    fn readiness_ports_follow_ports_and_probes() {
        let c: Container = serde_json::from_value(json!({"name": "c",
            "ports": [{"containerPort": 3000, "name": "http"}, {"containerPort": 53, "protocol": "UDP"}]}))
        .unwrap();
        assert_eq!(ready_ports(&c), [3000]);
        let p: Container = serde_json::from_value(json!({"name": "c",
            "ports": [{"containerPort": 3000, "name": "http"}, {"containerPort": 9000, "name": "admin"}],
            "readinessProbe": {"httpGet": {"port": "admin"}}}))
        .unwrap();
        assert_eq!(ready_ports(&p), [9000]);
    }

    #[test]
    fn secret_items_map_keys_to_paths() {
        let dir = std::env::temp_dir().join(format!("sy-kubelet-test-{}", std::process::id()));
        let data: BTreeMap<String, Vec<u8>> = [
            ("tls.crt".to_string(), b"C".to_vec()),
            ("tls.key".to_string(), b"K".to_vec()),
        ]
        .into();
        let items: Vec<KeyToPath> = serde_json::from_value(json!([
            {"key": "tls.crt", "path": "crt"}, {"key": "tls.key", "path": "sub/key", "mode": 0o600}]))
        .unwrap();
        write_keys(&dir, &data, Some(&items), Some(0o644)).unwrap();
        assert_eq!(std::fs::read(dir.join("crt")).unwrap(), b"C");
        assert_eq!(std::fs::read(dir.join("sub/key")).unwrap(), b"K");
        let mode = std::fs::metadata(dir.join("sub/key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join("tls.crt").exists());
        let bad: Vec<KeyToPath> =
            serde_json::from_value(json!([{"key": "tls.crt", "path": "../x"}])).unwrap();
        assert!(write_keys(&dir, &data, Some(&bad), None).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
