//! Launches and supervises a local Envoy (standalone mode): renders the
//! bootstrap template, restarts Envoy with capped backoff if it exits,
//! forwards its log lines to tracing, and stops it on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    pub binary: PathBuf,
    pub bootstrap_template: PathBuf,
    pub work_dir: PathBuf,
    pub node_id: String,
    pub node_cluster: String,
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Gateways this Envoy serves (`ns/name`); empty = all.
    pub gateways: Vec<String>,
    /// Delta (incremental) xDS instead of state of the world.
    pub delta: bool,
    pub extra_args: Vec<String>,
}

/// Fills the `${...}` placeholders of the bootstrap template.
pub fn render_bootstrap(template: &str, cfg: &EnvoyConfig) -> String {
    let xds_host = if cfg.xds_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.xds_addr.ip().to_string()
    };
    template
        .replace("${NODE_ID}", &cfg.node_id)
        .replace("${NODE_CLUSTER}", &cfg.node_cluster)
        .replace("${GATEWAYS}", &cfg.gateways.join(","))
        .replace(
            "${ADS_API_TYPE}",
            if cfg.delta { "DELTA_GRPC" } else { "GRPC" },
        )
        .replace("${XDS_HOST}", &xds_host)
        .replace("${XDS_PORT}", &cfg.xds_addr.port().to_string())
        .replace("${ADMIN_ADDRESS}", &cfg.admin_addr.ip().to_string())
        .replace("${ADMIN_PORT}", &cfg.admin_addr.port().to_string())
}

/// Runs Envoy until `shutdown` becomes true.
pub async fn supervise(
    cfg: EnvoyConfig,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let template = std::fs::read_to_string(&cfg.bootstrap_template).with_context(|| {
        format!(
            "reading the Envoy bootstrap template {}",
            cfg.bootstrap_template.display()
        )
    })?;
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating {}", cfg.work_dir.display()))?;
    let bootstrap = cfg.work_dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap, render_bootstrap(&template, &cfg))
        .with_context(|| format!("writing {}", bootstrap.display()))?;
    let mut backoff = Duration::from_millis(250);
    loop {
        let started = Instant::now();
        let mut cmd = Command::new(&cfg.binary);
        cmd.arg("-c")
            .arg(&bootstrap)
            // A distinct base id per admin port lets several Envoys share a host.
            .args(["--base-id", &cfg.admin_addr.port().to_string()])
            .args([
                "--log-level",
                "info",
                "--drain-time-s",
                "5",
                "--parent-shutdown-time-s",
                "10",
            ])
            .args(&cfg.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting Envoy {}", cfg.binary.display()))?;
        info!(pid = child.id(), admin = %cfg.admin_addr, "Envoy started");
        for pipe in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        {
            tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("[warning]")
                        || line.contains("[error]")
                        || line.contains("[critical]")
                    {
                        warn!(target: "envoy", "{line}");
                    } else {
                        info!(target: "envoy", "{line}");
                    }
                }
            });
        }
        let exited = tokio::select! {
            status = child.wait() => Some(status),
            _ = shutdown.wait_for(|v| *v) => None,
        };
        match exited {
            None => {
                info!("stopping Envoy");
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                return Ok(());
            }
            Some(status) => {
                let status = status.context("waiting for Envoy")?;
                warn!(%status, "Envoy exited; restarting");
                crate::metrics::counter_add(
                    "switchyard_envoy_restarts_total",
                    "Restarts of the supervised Envoy.",
                    &[],
                    1,
                );
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(250);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|v| *v) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Polls Envoy's `/ready` until it answers 200 or `timeout` passes.
pub async fn wait_ready(admin: SocketAddr, timeout: Duration) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            let req = format!("GET /ready HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut buf = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut buf)).await;
                if buf.starts_with(b"HTTP/1.1 200") {
                    return true;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
