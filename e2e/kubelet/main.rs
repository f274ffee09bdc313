//! `switchyard-kubelet`: a process kubelet for Switchyard's local test cluster.
//!
//! It registers one Node and keeps it Ready, binds unscheduled Pods to it
//! (there is no scheduler), and runs each Pod's containers as local
//! processes: one network namespace per Pod (a veth into a bridge, an address
//! from the Pod CIDR) and a private mount namespace in which Secret and
//! ConfigMap volumes appear at the paths the Pod asks for. Images map to
//! local binaries through a small table; an unknown image gets a clear
//! container status instead of a hang. Test infrastructure, not product code.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, Node, ObjectReference, Pod, Secret,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde::Deserialize;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;
use tracing::{info, warn};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    kubeconfig: PathBuf,
    #[arg(long, default_value = "e2e-node")]
    node_name: String,
    #[arg(long, default_value = "sybr0")]
    bridge: String,
    #[arg(long, default_value = "10.244.0.1")]
    bridge_ip: Ipv4Addr,
    #[arg(long, default_value = "10.244.0.0/24")]
    pod_cidr: String,
    /// Per-Pod state: volumes, logs.
    #[arg(long)]
    run_dir: PathBuf,
    /// YAML list of {match: "image substring", binary: "name or path"}.
    #[arg(long)]
    image_map: PathBuf,
    /// Directory where relative binary names are looked up.
    #[arg(long)]
    bin_dir: PathBuf,
}

#[derive(Deserialize, Clone, Debug)]
struct ImageRule {
    #[serde(rename = "match")]
    pattern: String,
    binary: String,
    /// Arguments used when the container gives none.
    #[serde(default)]
    default_args: Vec<String>,
}

struct Running {
    netns: String,
    veth: String,
    ip: Ipv4Addr,
    children: Vec<(String, Child)>,
    mounts: Vec<PathBuf>,
}

struct State {
    args: Args,
    rules: Vec<ImageRule>,
    pods: HashMap<String, Running>,
    used_ips: BTreeSet<Ipv4Addr>,
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

async fn sh(cmd: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .await
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let rules: Vec<ImageRule> = serde_yaml::from_str(
        &std::fs::read_to_string(&args.image_map)
            .with_context(|| format!("reading {}", args.image_map.display()))?,
    )?;
    std::env::set_var("KUBECONFIG", &args.kubeconfig);
    let client = Client::try_default()
        .await
        .context("connecting to the API server")?;
    register_node(&client, &args).await?;
    let state = Arc::new(Mutex::new(State {
        args: args.clone(),
        rules,
        pods: HashMap::new(),
        used_ips: BTreeSet::new(),
    }));

    tokio::spawn(heartbeat(client.clone(), args.clone()));
    let pods: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher::watcher(pods, watcher::Config::default())
        .default_backoff()
        .boxed();
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::pin!(term);
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { break };
                match ev {
                    Ok(Event::Apply(p)) | Ok(Event::InitApply(p)) => {
                        if let Err(e) = on_pod(&client, &state, p).await {
                            warn!("pod: {e:#}");
                        }
                    }
                    Ok(Event::Delete(p)) => {
                        let key = pod_key(&p);
                        stop_pod(&state, &key).await;
                    }
                    Ok(_) => {}
                    Err(e) => warn!("watch: {e}"),
                }
            }
            _ = &mut term => break,
        }
    }
    let keys: Vec<String> = state.lock().await.pods.keys().cloned().collect();
    for k in keys {
        stop_pod(&state, &k).await;
    }
    Ok(())
}

async fn register_node(client: &Client, args: &Args) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": args.node_name, "labels": {"kubernetes.io/hostname": args.node_name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": args.pod_cidr, "podCIDRs": [args.pod_cidr]},
    }))?;
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    patch_node_status(&nodes, args).await
}

async fn patch_node_status(nodes: &Api<Node>, args: &Args) -> anyhow::Result<()> {
    let t = now();
    let status = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "switchyard process kubelet is ready",
                        "lastHeartbeatTime": t, "lastTransitionTime": t}],
        "addresses": [{"type": "InternalIP", "address": args.bridge_ip.to_string()}, {"type": "Hostname", "address": args.node_name}],
        "capacity": {"cpu": "2", "memory": "24Gi", "pods": "250"},
        "allocatable": {"cpu": "2", "memory": "24Gi", "pods": "250"},
        "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.36.3-switchyard",
                     "kubeProxyVersion": "", "containerRuntimeVersion": "process://1", "kernelVersion": "", "osImage": "",
                     "machineID": "", "systemUUID": "", "bootID": ""}
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

async fn heartbeat(client: Client, args: Args) {
    let nodes: Api<Node> = Api::all(client);
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        if let Err(e) = patch_node_status(&nodes, &args).await {
            warn!("node heartbeat: {e}");
        }
    }
}

async fn on_pod(client: &Client, state: &Arc<Mutex<State>>, pod: Pod) -> anyhow::Result<()> {
    let key = pod_key(&pod);
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let node_name = state.lock().await.args.node_name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if pod.metadata.deletion_timestamp.is_some() {
        stop_pod(state, &key).await;
        let _ = pods
            .delete(
                &name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
        return Ok(());
    }
    let spec = pod.spec.clone().unwrap_or_default();
    match spec.node_name.as_deref() {
        None | Some("") => {
            let binding = Binding {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                target: ObjectReference {
                    kind: Some("Node".into()),
                    name: Some(node_name),
                    api_version: Some("v1".into()),
                    ..Default::default()
                },
            };
            let _: serde_json::Value = pods
                .create_subresource("binding", &name, &PostParams::default(), &binding)
                .await?;
            return Ok(());
        }
        Some(n) if n != node_name => return Ok(()),
        _ => {}
    }
    if state.lock().await.pods.contains_key(&key) {
        return Ok(());
    }
    if matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    ) {
        return Ok(());
    }
    start_pod(client, state, &pod).await
}

fn resolve_image(
    rules: &[ImageRule],
    bin_dir: &Path,
    image: &str,
) -> Option<(PathBuf, Vec<String>)> {
    let r = rules.iter().find(|r| image.contains(&r.pattern))?;
    let p = PathBuf::from(&r.binary);
    let path = if p.is_absolute() { p } else { bin_dir.join(p) };
    Some((path, r.default_args.clone()))
}

async fn start_pod(client: &Client, state: &Arc<Mutex<State>>, pod: &Pod) -> anyhow::Result<()> {
    let key = pod_key(pod);
    let ns = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = pod.metadata.name.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // Unknown images: a clear status, never a hang.
    let (args, rules) = {
        let st = state.lock().await;
        (st.args.clone(), st.rules.clone())
    };
    let mut programs = Vec::new();
    for c in &spec.containers {
        let image = c.image.clone().unwrap_or_default();
        match resolve_image(&rules, &args.bin_dir, &image) {
            Some(p) => programs.push((c.clone(), p)),
            None => {
                let status = serde_json::json!({"status": {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()},
                    {"type": "Ready", "status": "False", "reason": "ImageNotMapped", "lastTransitionTime": now(),
                     "message": format!("image {image} has no local binary in the process kubelet's image map")}],
                    "containerStatuses": [{"name": c.name, "image": image, "imageID": "", "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": "ImageNotMapped", "message": format!("no local binary for image {image}")}}}]}});
                pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                warn!(pod = %key, image, "image not mapped");
                return Ok(());
            }
        }
    }

    // Network: netns + veth into the bridge.
    let hash = short_hash(&key);
    let netns = format!("sy-{hash}");
    let veth = format!("syv{hash}");
    let ip = {
        let mut st = state.lock().await;
        let base = args.bridge_ip.octets();
        let ip = (2u8..=254)
            .map(|i| Ipv4Addr::new(base[0], base[1], base[2], i))
            .find(|ip| !st.used_ips.contains(ip));
        let Some(ip) = ip else {
            bail!("pod CIDR exhausted")
        };
        st.used_ips.insert(ip);
        ip
    };
    let _ = sh(&["ip", "netns", "delete", &netns]).await;
    let _ = sh(&["ip", "link", "delete", &veth]).await;
    sh(&["ip", "netns", "add", &netns]).await?;
    sh(&[
        "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
    ])
    .await?;
    sh(&["ip", "link", "set", &veth, "master", &args.bridge, "up"]).await?;
    let cidr = format!("{ip}/24");
    sh(&["ip", "-n", &netns, "addr", "add", &cidr, "dev", "eth0"]).await?;
    sh(&["ip", "-n", &netns, "link", "set", "eth0", "up"]).await?;
    sh(&["ip", "-n", &netns, "link", "set", "lo", "up"]).await?;
    sh(&[
        "ip",
        "-n",
        &netns,
        "route",
        "add",
        "default",
        "via",
        &args.bridge_ip.to_string(),
    ])
    .await?;

    // Volumes: Secret and ConfigMap contents as files.
    let pod_dir = args.run_dir.join(format!("{ns}_{name}"));
    std::fs::create_dir_all(&pod_dir)?;
    let mut volume_dirs: BTreeMap<String, PathBuf> = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        let dir = pod_dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&dir)?;
        if let Some(s) = &v.secret {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            if let Some(sec) = secrets
                .get_opt(s.secret_name.as_deref().unwrap_or(""))
                .await?
            {
                for (k, val) in sec.data.unwrap_or_default() {
                    std::fs::write(dir.join(k), val.0)?;
                }
            }
        }
        if let Some(c) = &v.config_map {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
            if let Some(cm) = cms.get_opt(&c.name).await? {
                for (k, val) in cm.data.unwrap_or_default() {
                    std::fs::write(dir.join(k), val)?;
                }
            }
        }
        volume_dirs.insert(v.name.clone(), dir);
    }

    let mut children = Vec::new();
    let mut mounts = Vec::new();
    for (c, (binary, default_args)) in &programs {
        let env = container_env(client, &ns, &name, pod, c, ip).await?;
        let mut argv: Vec<String> = vec![binary.display().to_string()];
        let cmd_rest: Vec<String> = c
            .command
            .clone()
            .unwrap_or_default()
            .into_iter()
            .skip(1)
            .collect();
        let cargs = c.args.clone().unwrap_or_default();
        if cmd_rest.is_empty() && cargs.is_empty() {
            argv.extend(default_args.iter().cloned());
        } else {
            argv.extend(cmd_rest);
            argv.extend(cargs);
        }
        // Bind-mount volumes inside a private mount namespace, then exec.
        let mut script = String::from("set -e\n");
        for m in c.volume_mounts.iter().flatten() {
            if let Some(src) = volume_dirs.get(&m.name) {
                script.push_str(&format!(
                    "mkdir -p '{0}' && mount --bind '{1}' '{0}'\n",
                    m.mount_path,
                    src.display()
                ));
                mounts.push(PathBuf::from(&m.mount_path));
            }
        }
        script.push_str("exec \"$@\"\n");
        let log = std::fs::File::create(pod_dir.join(format!("{}.log", c.name)))?;
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &netns,
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .process_group(0);
        if let Some(dir) = &c.working_dir {
            cmd.current_dir(dir);
        }
        let child = cmd.spawn().with_context(|| format!("starting {argv:?}"))?;
        info!(pod = %key, container = %c.name, ip = %ip, "started {argv:?}");
        children.push((c.name.clone(), child));
    }
    state.lock().await.pods.insert(
        key.clone(),
        Running {
            netns,
            veth,
            ip,
            children,
            mounts,
        },
    );

    // Status: Running now, Ready once the declared TCP ports accept connections.
    let ports: Vec<u16> = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .filter_map(|p| u16::try_from(p.container_port).ok())
        .collect();
    report(&pods, &name, pod, ip, &args, false).await?;
    let client = client.clone();
    let pod = pod.clone();
    let state = state.clone();
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        for _ in 0..600 {
            if !state.lock().await.pods.contains_key(&key) {
                return;
            }
            let mut ok = true;
            for p in &ports {
                if tokio::time::timeout(
                    Duration::from_millis(300),
                    tokio::net::TcpStream::connect((ip, *p)),
                )
                .await
                .map(|r| r.is_ok())
                    != Ok(true)
                {
                    ok = false;
                }
            }
            if ok {
                if let Err(e) = report(&pods, &name, &pod, ip, &args, true).await {
                    warn!(pod = %key, "status: {e}");
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        warn!(pod = %key, "ports never opened");
    });
    Ok(())
}

async fn container_env(
    client: &Client,
    ns: &str,
    name: &str,
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            v.clone()
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                match f.field_path.as_str() {
                    "metadata.name" => name.to_string(),
                    "metadata.namespace" => ns.to_string(),
                    "status.podIP" => ip.to_string(),
                    "spec.nodeName" => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.clone())
                        .unwrap_or_default(),
                    "spec.serviceAccountName" => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_default(),
                    other => {
                        warn!(field = other, "unsupported fieldRef");
                        String::new()
                    }
                }
            } else if let Some(s) = &from.secret_key_ref {
                let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
                secrets
                    .get_opt(&s.name)
                    .await?
                    .and_then(|sec| {
                        sec.data.and_then(|d| {
                            d.get(&s.key)
                                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                        })
                    })
                    .unwrap_or_default()
            } else if let Some(cm) = &from.config_map_key_ref {
                let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                cms.get_opt(&cm.name)
                    .await?
                    .and_then(|m| m.data.and_then(|d| d.get(&cm.key).cloned()))
                    .unwrap_or_default()
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        out.push((e.name.clone(), value));
    }
    Ok(out)
}

async fn report(
    pods: &Api<Pod>,
    name: &str,
    pod: &Pod,
    ip: Ipv4Addr,
    args: &Args,
    ready: bool,
) -> anyhow::Result<()> {
    let t = now();
    let r = if ready { "True" } else { "False" };
    let statuses: Vec<serde_json::Value> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| {
            serde_json::json!({"name": c.name, "image": c.image, "imageID": format!("process://{}", c.image.clone().unwrap_or_default()),
                "ready": ready, "started": true, "restartCount": 0, "state": {"running": {"startedAt": t}}})
        })
        .collect();
    let status = serde_json::json!({"status": {
        "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
        "hostIP": args.bridge_ip.to_string(), "hostIPs": [{"ip": args.bridge_ip.to_string()}], "startTime": t,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            {"type": "Initialized", "status": "True", "lastTransitionTime": t},
            {"type": "ContainersReady", "status": r, "lastTransitionTime": t},
            {"type": "Ready", "status": r, "lastTransitionTime": t}],
        "containerStatuses": statuses}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(())
}

async fn stop_pod(state: &Arc<Mutex<State>>, key: &str) {
    let running = {
        let mut st = state.lock().await;
        let r = st.pods.remove(key);
        if let Some(r) = &r {
            st.used_ips.remove(&r.ip);
        }
        r
    };
    let Some(mut r) = running else { return };
    for (name, child) in r.children.iter_mut() {
        if let Some(pid) = child.id() {
            // The whole process group (ip netns exec → unshare → sh → program).
            let _ = Command::new("kill")
                .args(["-TERM", &format!("-{pid}")])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        info!(pod = %key, container = %name, "stopped");
    }
    let _ = sh(&["ip", "link", "delete", &r.veth]).await;
    let _ = sh(&["ip", "netns", "delete", &r.netns]).await;
    for m in &r.mounts {
        // The mounts lived in the Pod's private mount namespace; only the empty
        // mount-point directories remain on the host.
        let _ = std::fs::remove_dir(m);
    }
}
