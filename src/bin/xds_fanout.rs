//! `switchyard-xds-fanout`: many light ADS clients in one process, for the
//! fleet fan-out benchmark (`bench/run.py --only fanout`). Each simulated
//! node opens its own connection and stream (state of the world or delta),
//! subscribes to every type as a wildcard, and ACKs every response at once;
//! nothing is decoded (an Envoy would also parse and apply, which the real
//! Envoys of the benchmark do).
//!
//! Driven by lines on stdin, answered by JSON lines on stdout:
//! - at start: `{"event":"synced",...}` once every node has had a response
//!   for clusters, listeners and routes (or `"event":"timeout"`);
//! - `wait MARKER TIMEOUT_MS`: from now, how long until every node has ACKed a
//!   response carrying a resource whose bytes contain MARKER (e.g. the
//!   hostname of a route just added): `{"event":"converged","all_ms",
//!   "p50_ms","p99_ms","missing",...}`. With `--admin-grpc` and
//!   `--watch-nodes`, also how long until those (real Envoy) nodes ACKed the
//!   snapshot that followed, from the controller's node registry;
//! - `quit`.
#![forbid(unsafe_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DiscoveryRequest};
use tokio::io::AsyncBufReadExt;
use tokio_stream::StreamExt;

use switchyard::admin_grpc::pb::admin_service_client::AdminServiceClient;
use switchyard::admin_grpc::pb::ListNodesRequest;
use switchyard::xds::type_url;

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    Sotw,
    Delta,
}

#[derive(Parser)]
#[command(
    name = "switchyard-xds-fanout",
    about = "Many light ADS clients: how long until every node has a change?"
)]
struct Args {
    /// xDS server address (host:port), plaintext.
    #[arg(long)]
    server: String,
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, value_enum, default_value = "delta")]
    protocol: Protocol,
    /// Node ids are `<prefix>-<i>`.
    #[arg(long, default_value = "sim")]
    node_prefix: String,
    /// Initial sync deadline, in milliseconds.
    #[arg(long, default_value_t = 120_000)]
    sync_timeout_ms: u64,
    /// The controller's admin gRPC address, to follow `--watch-nodes`.
    #[arg(long)]
    admin_grpc: Option<String>,
    /// Node ids (comma-separated) whose convergence is read from the admin API.
    #[arg(long, default_value = "")]
    watch_nodes: String,
}

/// Types a node must have heard from before it counts as synced.
const SYNC_TYPES: [&str; 3] = [type_url::CLUSTER, type_url::LISTENER, type_url::ROUTE];

struct Marker {
    text: Vec<u8>,
    start: Instant,
    seen: Vec<Option<Duration>>,
}

struct Shared {
    markers: Vec<Marker>,
    synced: Vec<bool>,
    failed: Vec<Option<String>>,
}

type State = Arc<Mutex<Shared>>;

fn lock(s: &State) -> std::sync::MutexGuard<'_, Shared> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records what one response to node `i` carried.
fn on_response(state: &State, i: usize, got: &mut [bool; 3], type_url: &str, values: &[&[u8]]) {
    if let Some(k) = SYNC_TYPES.iter().position(|t| *t == type_url) {
        got[k] = true;
    }
    let mut s = lock(state);
    if got.iter().all(|g| *g) {
        s.synced[i] = true;
    }
    for m in s.markers.iter_mut() {
        if m.seen[i].is_none()
            && values
                .iter()
                .any(|v| memchr::memmem::find(v, &m.text).is_some())
        {
            m.seen[i] = Some(m.start.elapsed());
        }
    }
}

fn node(args: &Args, i: usize) -> Node {
    Node {
        id: format!("{}-{i}", args.node_prefix),
        cluster: "xds-fanout".into(),
        ..Default::default()
    }
}

async fn run_node(args: Arc<Args>, i: usize, state: State) -> anyhow::Result<()> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.server))?
        .connect_timeout(Duration::from_secs(10));
    // Like Envoy, retry the connection with a backoff (a thousand nodes
    // connecting at once can overflow the server's accept backlog).
    let mut attempt = 0u32;
    let channel = loop {
        match endpoint.connect().await {
            Ok(c) => break c,
            Err(_) if attempt < 20 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt.min(5)))).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let mut got = [false; 3];
    match args.protocol {
        Protocol::Sotw => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for (k, t) in type_url::PUSH_ORDER.iter().enumerate() {
                tx.send(DiscoveryRequest {
                    node: (k == 0).then(|| node(&args, i)),
                    type_url: t.to_string(),
                    ..Default::default()
                })?;
            }
            let mut stream = client
                .stream_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await?
                .into_inner();
            while let Some(resp) = stream.next().await {
                let resp = resp?;
                tx.send(DiscoveryRequest {
                    version_info: resp.version_info.clone(),
                    response_nonce: resp.nonce.clone(),
                    type_url: resp.type_url.clone(),
                    ..Default::default()
                })?;
                let values: Vec<&[u8]> = resp.resources.iter().map(|a| &a.value[..]).collect();
                on_response(&state, i, &mut got, &resp.type_url, &values);
            }
        }
        Protocol::Delta => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            for (k, t) in type_url::PUSH_ORDER.iter().enumerate() {
                // Explicit wildcard: in delta, only listeners and clusters
                // are wildcard when nothing is named.
                tx.send(DeltaDiscoveryRequest {
                    node: (k == 0).then(|| node(&args, i)),
                    type_url: t.to_string(),
                    resource_names_subscribe: vec!["*".into()],
                    ..Default::default()
                })?;
            }
            let mut stream = client
                .delta_aggregated_resources(tokio_stream::wrappers::UnboundedReceiverStream::new(
                    rx,
                ))
                .await?
                .into_inner();
            while let Some(resp) = stream.next().await {
                let resp = resp?;
                tx.send(DeltaDiscoveryRequest {
                    response_nonce: resp.nonce.clone(),
                    type_url: resp.type_url.clone(),
                    ..Default::default()
                })?;
                let values: Vec<&[u8]> = resp
                    .resources
                    .iter()
                    .filter_map(|r| r.resource.as_ref().map(|a| &a.value[..]))
                    .collect();
                on_response(&state, i, &mut got, &resp.type_url, &values);
            }
        }
    }
    anyhow::bail!("stream closed by the server")
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let k = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Some(ms(sorted[k.min(sorted.len() - 1)]))
}

/// Waits until every node has seen `marker` (or the timeout); the summary.
async fn wait_marker(state: &State, marker: &str, timeout: Duration) -> serde_json::Value {
    let start = Instant::now();
    let idx = {
        let mut s = lock(state);
        let n = s.synced.len();
        s.markers.push(Marker {
            text: marker.as_bytes().to_vec(),
            start,
            seen: vec![None; n],
        });
        s.markers.len() - 1
    };
    loop {
        let done = lock(state).markers[idx].seen.iter().all(Option::is_some);
        if done || start.elapsed() > timeout {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut s = lock(state);
    let m = s.markers.remove(idx);
    let mut seen: Vec<Duration> = m.seen.iter().flatten().copied().collect();
    seen.sort();
    serde_json::json!({
        "event": "converged",
        "marker": marker,
        "nodes": m.seen.len(),
        "missing": m.seen.len() - seen.len(),
        "all_ms": (seen.len() == m.seen.len()).then(|| seen.last().map(|d| ms(*d))).flatten(),
        "first_ms": seen.first().map(|d| ms(*d)),
        "p50_ms": percentile(&seen, 0.5),
        "p99_ms": percentile(&seen, 0.99),
    })
}

/// With `--admin-grpc`: after the snapshot moves past `before`, how long
/// until every watched node runs it (all its types current).
async fn wait_watched(
    admin: &mut AdminServiceClient<tonic::transport::Channel>,
    watch: &[String],
    start: Instant,
    before: u64,
    timeout: Duration,
) -> anyhow::Result<Option<f64>> {
    while start.elapsed() < timeout {
        let r = admin.list_nodes(ListNodesRequest {}).await?.into_inner();
        if r.snapshot_version > before {
            let done = watch.iter().all(|id| {
                r.nodes
                    .iter()
                    .filter(|n| &n.node_id == id)
                    .any(|n| !n.types.is_empty() && n.types.iter().all(|t| t.current))
            });
            if done {
                return Ok(Some(ms(start.elapsed())));
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(None)
}

async fn snapshot_version(
    admin: &mut AdminServiceClient<tonic::transport::Channel>,
) -> anyhow::Result<u64> {
    Ok(admin
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .snapshot_version)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let state: State = Arc::new(Mutex::new(Shared {
        markers: vec![],
        synced: vec![false; args.nodes],
        failed: vec![None; args.nodes],
    }));
    let t0 = Instant::now();
    for i in 0..args.nodes {
        let (args, state) = (args.clone(), state.clone());
        tokio::spawn(async move {
            // Like Envoy, a stream that fails before the node synced is
            // opened again after a backoff (a thousand nodes connecting at
            // once can see resets); a failure after that is reported.
            let mut attempt = 0u64;
            loop {
                let Err(e) = run_node(args.clone(), i, state.clone()).await else {
                    break;
                };
                let synced = lock(&state).synced[i];
                attempt += 1;
                if synced || attempt > 20 {
                    lock(&state).failed[i] = Some(format!("{e:#}"));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * attempt.min(5))).await;
            }
        });
    }
    let sync_deadline = Duration::from_millis(args.sync_timeout_ms);
    loop {
        let (synced, failed) = {
            let s = lock(&state);
            (
                s.synced.iter().filter(|x| **x).count(),
                s.failed.iter().flatten().next().cloned(),
            )
        };
        if let Some(err) = failed {
            println!("{}", serde_json::json!({"event": "failed", "error": err}));
            std::process::exit(1);
        }
        if synced == args.nodes || t0.elapsed() > sync_deadline {
            let event = if synced == args.nodes {
                "synced"
            } else {
                "timeout"
            };
            println!(
                "{}",
                serde_json::json!({"event": event, "nodes": args.nodes, "synced": synced, "ms": ms(t0.elapsed())})
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let watch: Vec<String> = args
        .watch_nodes
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut admin = match &args.admin_grpc {
        Some(a) if !watch.is_empty() => Some(
            AdminServiceClient::new(
                tonic::transport::Endpoint::from_shared(format!("http://{a}"))?
                    .connect()
                    .await?,
            )
            .max_decoding_message_size(256 << 20),
        ),
        _ => None,
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["wait", marker, timeout_ms] => {
                let timeout = Duration::from_millis(timeout_ms.parse()?);
                let before = match admin.as_mut() {
                    Some(a) => Some(snapshot_version(a).await?),
                    None => None,
                };
                // The caller makes the change once it reads this line.
                println!(
                    "{}",
                    serde_json::json!({"event": "armed", "marker": marker})
                );
                let start = Instant::now();
                let (mut out, watched) = match (admin.as_mut(), before) {
                    (Some(a), Some(before)) => {
                        let (o, w) = tokio::join!(
                            wait_marker(&state, marker, timeout),
                            wait_watched(a, &watch, start, before, timeout)
                        );
                        (o, w?)
                    }
                    _ => (wait_marker(&state, marker, timeout).await, None),
                };
                if admin.is_some() {
                    out["watched_ms"] = serde_json::json!(watched);
                }
                println!("{out}");
            }
            ["quit"] => break,
            _ => println!(
                "{}",
                serde_json::json!({"event": "error", "error": format!("unknown command {line:?}")})
            ),
        }
    }
    Ok(())
}
