//! `switchyard fleet status|config|drift`: the fleet as the admin API
//! (`switchyard.admin.v1`, `--admin-grpc-listen`) reports it.

pub mod drift;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use anyhow::Context;
use serde_json::{json, Value};

use crate::admin_grpc::pb;
use crate::admin_grpc::pb::admin_service_client::AdminServiceClient;

/// Default address of the admin API (`--admin-grpc-listen`).
pub const DEFAULT_ADMIN: &str = "127.0.0.1:18002";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
    Yaml,
}

#[derive(clap::Subcommand)]
pub enum FleetCommand {
    /// Every connected Envoy with the version it runs per type
    /// (SYNCED: the served version; STALE: an older one; NACK: it rejected
    /// the last response; "-": not subscribed).
    Status {
        #[arg(long, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN)]
        admin: String,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
    /// What we serve to a node (its Envoy node id), private keys redacted.
    Config {
        node: String,
        #[arg(long, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN)]
        admin: String,
        /// Only this type (repeatable): cds, eds, lds, rds, sds.
        #[arg(long = "type")]
        types: Vec<String>,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Output,
    },
    /// Compares what we serve to a node with its Envoy's /config_dump.
    /// Exit status 1 when they differ.
    Drift {
        node: String,
        #[arg(long, env = "SWITCHYARD_ADMIN", default_value = DEFAULT_ADMIN)]
        admin: String,
        /// Envoy's admin address (loopback in our deployments: use
        /// `kubectl port-forward` or run this in the Pod).
        #[arg(long, default_value = "http://127.0.0.1:19000")]
        envoy_admin: String,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: Output,
    },
}

fn endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

async fn client(addr: &str) -> anyhow::Result<AdminServiceClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(endpoint(addr))
        .with_context(|| format!("admin address {addr:?}"))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(60))
        .connect()
        .await
        .with_context(|| format!("connecting to the admin API at {addr}"))?;
    Ok(AdminServiceClient::new(ch)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20))
}

/// Runs a fleet command; returns the exit status (0, or 1 on drift).
pub fn run(cmd: FleetCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd, out))
}

async fn run_async(cmd: FleetCommand, out: &mut dyn Write) -> anyhow::Result<i32> {
    match cmd {
        FleetCommand::Status { admin, output } => {
            let resp = client(&admin)
                .await?
                .list_nodes(pb::ListNodesRequest {})
                .await
                .map_err(|s| anyhow::anyhow!("ListNodes: {}", s.message()))?
                .into_inner();
            match output {
                Output::Text => write!(out, "{}", status_table(&resp))?,
                Output::Json => {
                    writeln!(out, "{}", serde_json::to_string_pretty(&nodes_json(&resp))?)?
                }
                Output::Yaml => write!(out, "{}", crate::pipeline::to_yaml(&nodes_json(&resp)))?,
            }
            Ok(0)
        }
        FleetCommand::Config {
            node,
            admin,
            types,
            output,
        } => {
            let resp = node_config(&admin, &node, types).await?;
            let doc = config_json(&resp)?;
            match output {
                Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?,
                Output::Yaml | Output::Text => write!(out, "{}", crate::pipeline::to_yaml(&doc))?,
            }
            Ok(0)
        }
        FleetCommand::Drift {
            node,
            admin,
            envoy_admin,
            output,
        } => {
            let resp = node_config(&admin, &node, Vec::new()).await?;
            let mut pushed: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
            for t in &resp.types {
                let slot = pushed.entry(t.type_url.clone()).or_default();
                for r in &t.resources {
                    let v: Value = serde_json::from_str(&r.json).with_context(|| {
                        format!(
                            "{} {}: malformed JSON from the admin API",
                            t.short_name, r.name
                        )
                    })?;
                    slot.insert(r.name.clone(), v);
                }
            }
            let addr = envoy_admin.clone();
            let dump = tokio::task::spawn_blocking(move || config_dump(&addr)).await??;
            let report = drift::compare(&pushed, &dump);
            match output {
                Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?,
                Output::Yaml => write!(
                    out,
                    "{}",
                    crate::pipeline::to_yaml(&serde_json::to_value(&report)?)
                )?,
                Output::Text => write!(out, "{}", drift_text(&node, resp.version, &report))?,
            }
            Ok(i32::from(report.has_drift()))
        }
    }
}

async fn node_config(
    admin: &str,
    node: &str,
    types: Vec<String>,
) -> anyhow::Result<pb::GetNodeConfigResponse> {
    Ok(client(admin)
        .await?
        .get_node_config(pb::GetNodeConfigRequest {
            node_id: node.to_string(),
            types,
        })
        .await
        .map_err(|s| anyhow::anyhow!("GetNodeConfig {node}: {}", s.message()))?
        .into_inner())
}

/// `GET /config_dump?include_eds` from Envoy's admin (HTTP/1.1, one
/// request per connection; Envoy answers HTTP/1.0 with 426).
fn config_dump(envoy_admin: &str) -> anyhow::Result<Value> {
    let hostport = envoy_admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&hostport)
        .with_context(|| format!("connecting to Envoy's admin at {hostport}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
    write!(
        s,
        "GET /config_dump?include_eds HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed answer from Envoy's admin")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = &raw[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body).context("malformed chunked answer from Envoy's admin")?
    } else {
        body.to_vec()
    };
    let status = head.split_whitespace().nth(1).unwrap_or("");
    anyhow::ensure!(
        status == "200",
        "Envoy's admin at {hostport} answered {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
    serde_json::from_slice(&body).context("decoding Envoy's /config_dump")
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// SYNCED / STALE / NACK for one type of one node.
fn cell(t: &pb::TypeState, version: u64) -> String {
    match &t.last_nack {
        Some(n) if n.version > t.acked_version => format!("NACK ({})", n.version),
        _ if t.acked_version >= version && version > 0 => format!("SYNCED ({})", t.acked_version),
        _ => format!("STALE ({}/{version})", t.acked_version),
    }
}

fn protocol_name(p: i32) -> &'static str {
    match pb::Protocol::try_from(p) {
        Ok(pb::Protocol::Sotw) => "SotW",
        Ok(pb::Protocol::Delta) => "Delta",
        _ => "?",
    }
}

/// The `fleet status` table.
pub fn status_table(resp: &pb::ListNodesResponse) -> String {
    const TYPES: [&str; 5] = ["cds", "eds", "lds", "rds", "sds"];
    let mut rows = vec![[
        "NODE", "CLUSTER", "GATEWAYS", "PROTOCOL", "CDS", "EDS", "LDS", "RDS", "SDS",
    ]
    .map(str::to_string)
    .to_vec()];
    for n in &resp.nodes {
        let mut row = vec![
            n.node_id.clone(),
            n.cluster.clone(),
            if n.gateways.is_empty() {
                "-".into()
            } else {
                n.gateways.join(",")
            },
            protocol_name(n.protocol).to_string(),
        ];
        for t in TYPES {
            row.push(
                n.types
                    .iter()
                    .find(|s| s.short_name == t)
                    .map(|s| cell(s, resp.snapshot_version))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        s.push_str(line.join("   ").trim_end());
        s.push('\n');
    }
    s.push_str(&format!(
        "snapshot version {}, {} node(s)\n",
        resp.snapshot_version,
        resp.nodes.len()
    ));
    s
}

fn nodes_json(resp: &pb::ListNodesResponse) -> Value {
    let nodes: Vec<Value> = resp
        .nodes
        .iter()
        .map(|n| {
            let types: serde_json::Map<String, Value> = n
                .types
                .iter()
                .map(|t| {
                    (
                        t.short_name.clone(),
                        json!({
                            "typeUrl": t.type_url,
                            "ackedVersion": t.acked_version,
                            "ackedNonce": t.acked_nonce,
                            "current": t.current,
                            "state": cell(t, resp.snapshot_version).split(' ').next().unwrap_or(""),
                            "lastNack": t.last_nack.as_ref().map(|k| json!({
                                "version": k.version, "nonce": k.nonce, "error": k.error,
                                "resourceNames": k.resource_names, "atUnixMs": k.at_unix_ms,
                            })),
                        }),
                    )
                })
                .collect();
            json!({
                "streamId": n.stream_id,
                "nodeId": n.node_id,
                "cluster": n.cluster,
                "protocol": protocol_name(n.protocol),
                "gateways": n.gateways,
                "requestedGateways": n.requested_gateways,
                "entitled": {"fleet": n.entitled_fleet, "namespaces": n.entitled_namespaces, "gateways": n.entitled_gateways},
                "connectedAtUnixMs": n.connected_at_unix_ms,
                "types": types,
            })
        })
        .collect();
    json!({ "snapshotVersion": resp.snapshot_version, "nodes": nodes })
}

fn config_json(resp: &pb::GetNodeConfigResponse) -> anyhow::Result<Value> {
    let mut types = serde_json::Map::new();
    for t in &resp.types {
        let list = t
            .resources
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.json)
                    .with_context(|| format!("{} {}", t.short_name, r.name))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        types.insert(t.short_name.clone(), Value::Array(list));
    }
    Ok(json!({ "node": resp.node_id, "version": resp.version, "resources": types }))
}

/// The human form of a drift report.
pub fn drift_text(node: &str, version: u64, r: &drift::Report) -> String {
    let mut s = String::new();
    for id in &r.missing_in_envoy {
        s.push_str(&format!("missing in Envoy  {} {}\n", id.type_, id.name));
    }
    for id in &r.extra_in_envoy {
        s.push_str(&format!("extra in Envoy    {} {}\n", id.type_, id.name));
    }
    for d in &r.different {
        let state = d
            .envoy_state
            .as_deref()
            .map(|st| format!(" (Envoy: {st})"))
            .unwrap_or_default();
        s.push_str(&format!(
            "different         {} {}{state}\n",
            d.id.type_, d.id.name
        ));
        for p in &d.paths {
            s.push_str(&format!("    {p}\n"));
        }
    }
    for (id, e) in &r.uncomparable {
        s.push_str(&format!(
            "uncomparable      {} {}: {e}\n",
            id.type_, id.name
        ));
    }
    if r.has_drift() {
        let n = r.missing_in_envoy.len()
            + r.extra_in_envoy.len()
            + r.different.len()
            + r.uncomparable.len();
        s.push_str(&format!(
            "{node}: DRIFT, {n} resource(s) differ from version {version}\n"
        ));
    } else {
        s.push_str(&format!(
            "{node}: no drift from version {version} ({} static resource(s) of the bootstrap not compared)\n",
            r.static_resources.len()
        ));
    }
    s
}
