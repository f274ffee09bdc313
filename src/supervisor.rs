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
use tracing::{debug, error, info, warn};

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

/// Runs Envoy until `shutdown` becomes true: renders the bootstrap into
/// `work_dir`, restarts Envoy with capped exponential backoff (250 ms … 10 s,
/// reset after 30 s of uptime) whenever it exits, and stops it on shutdown.
/// The child is killed if this future is dropped (`kill_on_drop`).
/// A setup failure (unreadable template, unwritable work dir, binary that
/// cannot be started) ends supervision; it is logged here and returned.
pub async fn supervise(cfg: EnvoyConfig, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let res = run(cfg, shutdown).await;
    if let Err(e) = &res {
        error!("Envoy supervision stopped: {e:#}");
    }
    res
}

async fn run(cfg: EnvoyConfig, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
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
                    forward_log_line(&line);
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
                // Clean exit through the admin API first (flushes logs, frees
                // the shared memory of --base-id); SIGKILL if that fails.
                let asked = admin_request(
                    cfg.admin_addr,
                    "POST",
                    "/quitquitquit",
                    Duration::from_millis(500),
                )
                .await
                .is_some();
                let exited = asked
                    && tokio::time::timeout(Duration::from_secs(3), child.wait())
                        .await
                        .is_ok();
                if !exited {
                    let _ = child.start_kill();
                    let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                }
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
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(resp) = admin_request(admin, "GET", "/ready", Duration::from_secs(1)).await {
            if resp.starts_with(b"HTTP/1.1 200") {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// One request to Envoy's admin listener; the raw response, or None if it
/// could not be sent or no answer came within `timeout`.
async fn admin_request(
    admin: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf).await;
        (!buf.is_empty()).then_some(buf)
    };
    tokio::time::timeout(timeout, exchange).await.ok().flatten()
}

/// One line of Envoy's log, split into its parts. Envoy's default format is
/// `[time][thread][level][logger] [file:line] message`.
#[derive(Debug, PartialEq, Eq)]
struct EnvoyLine<'a> {
    level: &'a str,
    logger: &'a str,
    source: &'a str,
    message: &'a str,
}

fn parse_envoy_line(line: &str) -> Option<EnvoyLine<'_>> {
    let mut rest = line;
    let mut fields = [""; 4];
    for f in &mut fields {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        *f = &inner[..end];
        rest = &inner[end + 1..];
    }
    let inner = rest.strip_prefix(" [")?;
    let end = inner.find(']')?;
    let source = &inner[..end];
    let message = inner[end + 1..]
        .strip_prefix(' ')
        .unwrap_or(&inner[end + 1..]);
    Some(EnvoyLine {
        level: fields[2],
        logger: fields[3],
        source,
        message,
    })
}

/// Forwards one Envoy log line to tracing (target "envoy") at its own level.
/// The indented extension inventory Envoy prints at start goes to debug.
fn forward_log_line(line: &str) {
    let Some(l) = parse_envoy_line(line) else {
        info!(target: "envoy", "{line}");
        return;
    };
    let inventory = l.logger == "main" && l.message.starts_with("  ");
    match l.level {
        "critical" | "error" => {
            error!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message)
        }
        "warning" => warn!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message),
        "info" if !inventory => {
            info!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message)
        }
        _ => debug!(target: "envoy", logger = l.logger, src = l.source, "{}", l.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path, binary: PathBuf) -> EnvoyConfig {
        EnvoyConfig {
            binary,
            bootstrap_template: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/envoy-bootstrap/bootstrap.yaml"
            )),
            work_dir: dir.to_path_buf(),
            node_id: "node-1".into(),
            node_cluster: "switchyard".into(),
            xds_addr: "0.0.0.0:18000".parse().unwrap(),
            admin_addr: "127.0.0.1:19000".parse().unwrap(),
            gateways: vec!["default/a".into(), "infra/b".into()],
            delta: false,
            extra_args: vec![],
        }
    }

    #[test]
    fn renders_every_placeholder_of_the_shipped_bootstrap() {
        let c = cfg(std::path::Path::new("/nonexistent"), PathBuf::from("envoy"));
        let template = std::fs::read_to_string(&c.bootstrap_template).unwrap();
        let out = render_bootstrap(&template, &c);
        let left = regex::Regex::new(r"\$\{[A-Z_]+\}").unwrap();
        assert!(!left.is_match(&out), "{out}");
        let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(doc["node"]["id"].as_str(), Some("node-1"));
        assert_eq!(
            doc["node"]["metadata"]["gateways"].as_str(),
            Some("default/a,infra/b")
        );
        let ads = &doc["dynamic_resources"]["ads_config"];
        assert_eq!(ads["api_type"].as_str(), Some("GRPC"));
        let ep = &doc["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]
            ["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
        // A wildcard listen address is reached through loopback.
        assert_eq!(ep["address"].as_str(), Some("127.0.0.1"));
        assert_eq!(ep["port_value"].as_u64(), Some(18000));
        assert_eq!(
            doc["admin"]["address"]["socket_address"]["port_value"].as_u64(),
            Some(19000)
        );
        let delta = render_bootstrap(&template, &EnvoyConfig { delta: true, ..c });
        assert!(delta.contains("api_type: DELTA_GRPC"));
    }

    #[test]
    fn parses_envoy_log_lines() {
        let l = parse_envoy_line(
            "[2026-11-23 08:46:48.431][16518][info][upstream] [source/common/listener_manager/lds_api.cc:110] lds: add/update listener 'x'",
        )
        .unwrap();
        assert_eq!(
            l,
            EnvoyLine {
                level: "info",
                logger: "upstream",
                source: "source/common/listener_manager/lds_api.cc:110",
                message: "lds: add/update listener 'x'",
            }
        );
        assert_eq!(parse_envoy_line("not an envoy line"), None);
        assert_eq!(parse_envoy_line("[a][b][c]"), None);
    }

    #[tokio::test]
    async fn restarts_an_exiting_process_and_stops_on_shutdown() {
        let dir =
            std::env::temp_dir().join(format!("switchyard-supervisor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // A stand-in for Envoy that logs one line and exits at once.
        let fake = dir.join("fake-envoy");
        std::fs::write(
            &fake,
            "#!/bin/sh\necho started >> \"$(dirname \"$0\")/runs\"\nexit 3\n",
        )
        .unwrap();
        let status = std::process::Command::new("chmod")
            .arg("+x")
            .arg(&fake)
            .status()
            .unwrap();
        assert!(status.success());
        let (tx, rx) = watch::channel(false);
        // Admin port 9 (discard): nothing answers /quitquitquit.
        let mut c = cfg(&dir, fake);
        c.admin_addr = "127.0.0.1:9".parse().unwrap();
        let task = tokio::spawn(supervise(c, rx));
        // Backoff 250 ms, then 500 ms: at least two runs within ~1 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        let runs = || {
            std::fs::read_to_string(dir.join("runs"))
                .map(|s| s.lines().count())
                .unwrap_or(0)
        };
        while runs() < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(runs() >= 2, "restarted {} times", runs());
        assert!(dir.join("bootstrap.yaml").exists());
        tx.send(true).unwrap();
        let res = tokio::time::timeout(Duration::from_secs(2), task).await;
        assert!(matches!(res, Ok(Ok(Ok(())))), "{res:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
