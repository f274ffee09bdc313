//! `switchyard-xds-probe`: opens one ADS stream (state of the world) the way
//! an Envoy would, subscribes to every type, and prints as JSON what the
//! control plane sent: which Gateways' listeners, routes, clusters and
//! secrets a client with the given certificate (or none) can obtain.
//! Operators use it to check what an identity is entitled to; the security
//! end-to-end tests use it as the attacker.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use envoy_types::pb::google::protobuf::{value::Kind, Struct, Value};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_stream::StreamExt;

use switchyard::xds::type_url;

#[derive(Parser)]
#[command(
    name = "switchyard-xds-probe",
    about = "What does the xDS server hand this client?"
)]
struct Args {
    /// xDS server address (host:port).
    #[arg(long)]
    server: String,
    /// Client certificate directory (`ca.crt`, `tls.crt`, `tls.key`); plaintext if absent.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Trust this CA for the server instead of `<tls-dir>/ca.crt`.
    #[arg(long)]
    server_ca: Option<PathBuf>,
    /// Server name to verify (and send as SNI).
    #[arg(long, default_value = "localhost")]
    server_name: String,
    #[arg(long, default_value = "xds-probe")]
    node_id: String,
    /// `node.metadata.gateways` to claim ("ns/a,ns/b").
    #[arg(long, default_value = "")]
    gateways: String,
    /// Answer every response with a NACK carrying this message.
    #[arg(long)]
    nack: Option<String>,
    /// How long to collect responses, in milliseconds.
    #[arg(long, default_value_t = 1500)]
    wait_ms: u64,
}

fn tls_config(args: &Args, dir: &std::path::Path) -> anyhow::Result<rustls::ClientConfig> {
    let ca = args.server_ca.clone().unwrap_or_else(|| dir.join("ca.crt"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca).with_context(|| ca.display().to_string())? {
        roots.add(c?)?;
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("tls.crt"))?.collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))?;
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

async fn channel(args: &Args) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", args.server))?
        .connect_timeout(Duration::from_secs(3));
    let Some(dir) = &args.tls_dir else {
        return Ok(endpoint.connect().await?);
    };
    let cfg = Arc::new(tls_config(args, dir)?);
    let server = args.server.clone();
    let name = ServerName::try_from(args.server_name.clone())?;
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let (cfg, server, name) = (cfg.clone(), server.clone(), name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(&server).await?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector(connector).await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let out = match probe(&args).await {
        Ok(v) => v,
        Err(e) => serde_json::json!({"connected": false, "error": format!("{e:#}")}),
    };
    println!("{out}");
}

async fn probe(args: &Args) -> anyhow::Result<serde_json::Value> {
    let mut client = AggregatedDiscoveryServiceClient::new(channel(args).await?);
    let node = Node {
        id: args.node_id.clone(),
        cluster: "xds-probe".into(),
        metadata: (!args.gateways.is_empty()).then(|| Struct {
            fields: [(
                "gateways".to_string(),
                Value {
                    kind: Some(Kind::StringValue(args.gateways.clone())),
                },
            )]
            .into_iter()
            .collect(),
        }),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    for (i, t) in type_url::PUSH_ORDER.iter().enumerate() {
        tx.send(DiscoveryRequest {
            node: (i == 0).then(|| node.clone()),
            type_url: t.to_string(),
            ..Default::default()
        })
        .await?;
    }
    let mut stream = client
        .stream_aggregated_resources(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut got: BTreeMap<String, BTreeMap<String, serde_json::Value>> = BTreeMap::new();
    let mut responses = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(args.wait_ms);
    let mut error = None;
    loop {
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = tokio::time::sleep_until(deadline) => break,
        };
        let resp = match msg {
            Some(Ok(r)) => r,
            Some(Err(status)) => {
                error = Some(format!("{:?}: {}", status.code(), status.message()));
                break;
            }
            None => break,
        };
        responses += 1;
        let short = resp.type_url.rsplit('.').next().unwrap_or("").to_string();
        let entry = got.entry(short).or_default();
        for any in &resp.resources {
            let (name, detail) = describe(&resp.type_url, &any.value);
            entry.insert(name, detail);
        }
        tx.send(DiscoveryRequest {
            version_info: resp.version_info.clone(),
            response_nonce: resp.nonce.clone(),
            type_url: resp.type_url.clone(),
            error_detail: args.nack.as_ref().map(|m| RpcStatus {
                code: 3,
                message: m.clone(),
                details: vec![],
            }),
            ..Default::default()
        })
        .await?;
    }
    Ok(serde_json::json!({
        "connected": error.is_none() || responses > 0,
        "error": error,
        "responses": responses,
        "resources": got,
    }))
}

/// The resource's name, and for a Secret whether it carries a private key.
fn describe(t: &str, bytes: &[u8]) -> (String, serde_json::Value) {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    let name = match t {
        type_url::LISTENER => Listener::decode(bytes).map(|m| m.name),
        type_url::ROUTE => RouteConfiguration::decode(bytes).map(|m| m.name),
        type_url::CLUSTER => Cluster::decode(bytes).map(|m| m.name),
        type_url::ENDPOINT => ClusterLoadAssignment::decode(bytes).map(|m| m.cluster_name),
        type_url::SECRET => {
            return match Secret::decode(bytes) {
                Ok(s) => {
                    let has_key = matches!(&s.r#type, Some(secret::Type::TlsCertificate(c)) if c.private_key.is_some());
                    (s.name, serde_json::json!({"private_key": has_key}))
                }
                Err(e) => (format!("<undecodable: {e}>"), serde_json::Value::Null),
            }
        }
        _ => Ok("?".to_string()),
    };
    (
        name.unwrap_or_else(|e| format!("<undecodable: {e}>")),
        serde_json::Value::Null,
    )
}
