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
use tracing::{error, info, warn};

mod envoy_log;
use envoy_log::{
    forward_log_line, is_access_log_line, remember_error, tail_log, AccessLines, LastErrors,
};

/// The bootstrap template shipped with this binary (envoy-bootstrap/), so
/// `switchyard standalone --envoy` works from any directory.
pub const BOOTSTRAP_TEMPLATE: &str = include_str!("../envoy-bootstrap/bootstrap.yaml");
const SDS_CLIENT_CERT: &str = include_str!("../envoy-bootstrap/xds-client-cert.sds.yaml");
const SDS_CA: &str = include_str!("../envoy-bootstrap/xds-ca.sds.yaml");

/// A run shorter than this counts as a failed start.
const MIN_HEALTHY_RUN: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct EnvoyConfig {
    pub binary: PathBuf,
    /// Overrides [`BOOTSTRAP_TEMPLATE`].
    pub bootstrap_template: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub node_id: String,
    pub node_cluster: String,
    pub xds_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// Port of the Prometheus stats listener; 0 removes it.
    pub stats_port: u16,
    /// Gateways this Envoy serves (`ns/name`); empty = all.
    pub gateways: Vec<String>,
    /// Delta (incremental) xDS instead of state of the world.
    pub delta: bool,
    pub extra_args: Vec<String>,
    /// mTLS to the xDS server; `None` = plaintext.
    pub xds_tls: Option<EnvoyXdsTls>,
    /// Leave Envoy running when Switchyard stops, for the next Switchyard
    /// to adopt (no dropped connection across a control-plane restart).
    pub keep_on_exit: bool,
    /// Give up (and fail) after this many consecutive failed starts.
    pub max_failed_starts: u32,
}

/// The supervised Envoy's side of the xDS mTLS.
#[derive(Clone, Debug)]
pub struct EnvoyXdsTls {
    /// Client certificate directory (`ca.crt`, `tls.crt`, `tls.key`).
    pub cert_dir: PathBuf,
    /// Name in the server's certificate (SNI, and the SAN Envoy checks).
    pub server_name: String,
}

/// Fills the `${...}` placeholders of the bootstrap template; without
/// `cfg.xds_tls` the control-plane connection is plaintext (the template's
/// transport socket is removed).
pub fn render_bootstrap(template: &str, cfg: &EnvoyConfig) -> anyhow::Result<String> {
    let xds_host = if cfg.xds_addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        cfg.xds_addr.ip().to_string()
    };
    let (sds_dir, server_name) = match &cfg.xds_tls {
        Some(t) => (cfg.work_dir.display().to_string(), t.server_name.clone()),
        None => (String::new(), String::new()),
    };
    let text = template
        .replace("${NODE_ID}", &cfg.node_id)
        .replace("${NODE_CLUSTER}", &cfg.node_cluster)
        .replace("${GATEWAYS}", &cfg.gateways.join(","))
        .replace(
            "${ADS_API_TYPE}",
            if cfg.delta { "DELTA_GRPC" } else { "GRPC" },
        )
        .replace("${XDS_HOST}", &xds_host)
        .replace("${XDS_PORT}", &cfg.xds_addr.port().to_string())
        .replace("${XDS_SERVER_NAME}", &server_name)
        .replace("${XDS_TLS_SDS_DIR}", &sds_dir)
        .replace("${ADMIN_ADDRESS}", &cfg.admin_addr.ip().to_string())
        .replace("${ADMIN_PORT}", &cfg.admin_addr.port().to_string())
        .replace("${STATS_PORT}", &cfg.stats_port.to_string());
    if cfg.xds_tls.is_some() && cfg.stats_port != 0 {
        return Ok(text);
    }
    let mut doc: serde_yaml::Value =
        serde_yaml::from_str(&text).context("the bootstrap template is not YAML")?;
    if cfg.stats_port == 0 {
        remove_stats_listener(&mut doc);
    }
    if cfg.xds_tls.is_some() {
        return Ok(serde_yaml::to_string(&doc)?);
    }
    let clusters = doc
        .get_mut("static_resources")
        .and_then(|r| r.get_mut("clusters"))
        .and_then(|c| c.as_sequence_mut())
        .context("the bootstrap template has no static_resources.clusters")?;
    for c in clusters.iter_mut() {
        if c.get("name").and_then(|n| n.as_str()) == Some("xds_cluster") {
            if let Some(m) = c.as_mapping_mut() {
                m.remove("transport_socket");
            }
        }
    }
    Ok(serde_yaml::to_string(&doc)?)
}

/// Removes the Prometheus stats listener and its admin cluster.
fn remove_stats_listener(doc: &mut serde_yaml::Value) {
    let Some(res) = doc.get_mut("static_resources") else {
        return;
    };
    for (list, name) in [
        ("listeners", "switchyard_stats"),
        ("clusters", "envoy_admin"),
    ] {
        if let Some(items) = res.get_mut(list).and_then(|l| l.as_sequence_mut()) {
            items.retain(|i| i.get("name").and_then(|n| n.as_str()) != Some(name));
        }
    }
}

/// Writes the file-based SDS configs the bootstrap points at (mTLS only).
fn write_sds_files(cfg: &EnvoyConfig) -> anyhow::Result<()> {
    let Some(tls) = &cfg.xds_tls else {
        return Ok(());
    };
    let dir = std::fs::canonicalize(&tls.cert_dir).with_context(|| {
        format!(
            "the xDS client certificate directory {}",
            tls.cert_dir.display()
        )
    })?;
    for (name, template) in [
        ("xds-client-cert.sds.yaml", SDS_CLIENT_CERT),
        ("xds-ca.sds.yaml", SDS_CA),
    ] {
        let path = cfg.work_dir.join(name);
        std::fs::write(
            &path,
            template.replace("${XDS_TLS_DIR}", &dir.display().to_string()),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Whether the supervised Envoy is up (for `/readyz`).
pub type Health = std::sync::Arc<std::sync::atomic::AtomicBool>;

fn set_up(health: &Health, up: bool) {
    health.store(up, std::sync::atomic::Ordering::Relaxed);
    crate::metrics::catalogue::ENVOY_UP.set([], if up { 1.0 } else { 0.0 });
}

/// Runs Envoy until `shutdown` becomes true: renders the bootstrap into
/// `work_dir`, restarts Envoy with capped exponential backoff (250 ms … 10 s,
/// reset after a healthy run) whenever it exits, and stops it on shutdown
/// (unless `keep_on_exit`). An Envoy with our node id already answering on
/// the admin address (left by a previous Switchyard) is adopted, not
/// replaced. Envoy runs in its own process group, so a terminal's Ctrl-C or
/// a kill of Switchyard does not reach it.
///
/// Fails (logged here and returned, so the caller can exit non-zero) when
/// Envoy cannot be set up or started, or after `max_failed_starts`
/// consecutive runs shorter than 10 s; `health` is false while Envoy is down.
pub async fn supervise(
    cfg: EnvoyConfig,
    shutdown: watch::Receiver<bool>,
    health: Health,
) -> anyhow::Result<()> {
    set_up(&health, false);
    let res = run(cfg, shutdown, &health).await;
    set_up(&health, false);
    if let Err(e) = &res {
        error!("Envoy supervision stopped: {e:#}");
    }
    res
}

/// Whether an Envoy of ours (same node id) answers on the admin address.
async fn ours_running(cfg: &EnvoyConfig) -> bool {
    let Some(resp) = admin_request(
        cfg.admin_addr,
        "GET",
        "/server_info",
        Duration::from_secs(1),
    )
    .await
    else {
        return false;
    };
    let text = String::from_utf8_lossy(&resp);
    let want = format!("\"id\": \"{}\"", cfg.node_id);
    text.starts_with("HTTP/1.1 200") && text.replace("\":\"", "\": \"").contains(&want)
}

/// Stops the Envoy on the admin address: `/quitquitquit` (flushes logs,
/// frees the shared memory of --base-id).
async fn quit(cfg: &EnvoyConfig) -> bool {
    admin_request(
        cfg.admin_addr,
        "POST",
        "/quitquitquit",
        Duration::from_millis(500),
    )
    .await
    .is_some()
}

async fn run(
    cfg: EnvoyConfig,
    mut shutdown: watch::Receiver<bool>,
    health: &Health,
) -> anyhow::Result<()> {
    let template = match &cfg.bootstrap_template {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading the Envoy bootstrap template {}", p.display()))?,
        None => BOOTSTRAP_TEMPLATE.to_string(),
    };
    std::fs::create_dir_all(&cfg.work_dir)
        .with_context(|| format!("creating {}", cfg.work_dir.display()))?;
    write_sds_files(&cfg)?;
    let bootstrap = cfg.work_dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap, render_bootstrap(&template, &cfg)?)
        .with_context(|| format!("writing {}", bootstrap.display()))?;
    let log_path = cfg.work_dir.join("envoy.log");
    let mut backoff = Duration::from_millis(250);
    let mut failed_starts = 0u32;
    loop {
        if ours_running(&cfg).await {
            info!(admin = %cfg.admin_addr, node = %cfg.node_id, "adopting the Envoy already running with this node id");
            set_up(health, true);
            let _tail = AbortOnDrop(tokio::spawn(tail_log(
                log_path.clone(),
                true,
                Default::default(),
            )));
            let mut misses = 0;
            loop {
                let stop = tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                    _ = shutdown.wait_for(|v| *v) => true,
                };
                if stop {
                    if !cfg.keep_on_exit {
                        info!("stopping the adopted Envoy");
                        quit(&cfg).await;
                    }
                    return Ok(());
                }
                if ours_running(&cfg).await {
                    misses = 0;
                } else {
                    misses += 1;
                    if misses >= 3 {
                        warn!("the adopted Envoy stopped answering; starting a new one");
                        set_up(health, false);
                        break;
                    }
                }
            }
        }
        let started = Instant::now();
        let mut args: Vec<std::ffi::OsString> = vec!["-c".into(), bootstrap.clone().into()];
        // A distinct base id per admin port lets several Envoys share a host.
        args.extend(
            [
                "--base-id".to_string(),
                cfg.admin_addr.port().to_string(),
                "--log-level".into(),
                "info".into(),
                "--drain-time-s".into(),
                "5".into(),
                "--parent-shutdown-time-s".into(),
                "10".into(),
            ]
            .map(Into::into),
        );
        args.extend(cfg.extra_args.iter().map(Into::into));
        let mut cmd = if cfg.keep_on_exit {
            // Envoy outlives us. Two things would stop it: the parent-death
            // signal Envoy asks for (SIGTERM when its parent exits), and
            // SIGPIPE on a log pipe we held. So its parent is a shell that
            // waits for it (and outlives us), and it logs to a file, which
            // we (and the next Switchyard) follow.
            let _ = std::fs::write(&log_path, b"");
            args.extend(["--log-path".into(), log_path.clone().into()]);
            let mut c = Command::new("/bin/sh");
            c.arg("-c")
                .arg("\"$0\" \"$@\"; exit $?")
                .arg(&cfg.binary)
                .args(&args)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c
        } else {
            let mut c = Command::new(&cfg.binary);
            c.args(&args).stdout(Stdio::piped()).stderr(Stdio::piped());
            c
        };
        cmd.stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(!cfg.keep_on_exit);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting Envoy {}", cfg.binary.display()))?;
        info!(pid = child.id(), admin = %cfg.admin_addr, "Envoy started");
        let last_errors = LastErrors::default();
        let _tail = cfg.keep_on_exit.then(|| {
            AbortOnDrop(tokio::spawn(tail_log(
                log_path.clone(),
                false,
                last_errors.clone(),
            )))
        });
        let mut readers = Vec::new();
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
            let last_errors = last_errors.clone();
            readers.push(tokio::spawn(async move {
                let mut lines = BufReader::new(pipe).lines();
                let mut access = AccessLines::default();
                while let Ok(Some(line)) = lines.next_line().await {
                    if is_access_log_line(&line) {
                        access.push(&line);
                        // Out once what the pipe delivered is consumed.
                        if lines.get_ref().buffer().is_empty() || access.full() {
                            access.write_out();
                        }
                        continue;
                    }
                    access.write_out();
                    if forward_log_line(&line) {
                        remember_error(&last_errors, line);
                    }
                }
                access.write_out();
            }));
        }
        // Up once Envoy says it is ready (initialized, serving): a process
        // that exits right after starting never counts as up.
        let mut up = false;
        let exited = loop {
            enum Next {
                Exited(std::io::Result<std::process::ExitStatus>),
                Stop,
                Probe,
            }
            let next = tokio::select! {
                status = child.wait() => Next::Exited(status),
                _ = shutdown.wait_for(|v| *v) => Next::Stop,
                _ = tokio::time::sleep(Duration::from_millis(100)), if !up => Next::Probe,
            };
            match next {
                Next::Exited(status) => break Some(status),
                Next::Stop => break None,
                Next::Probe => {
                    let ready =
                        admin_request(cfg.admin_addr, "GET", "/ready", Duration::from_secs(1))
                            .await
                            .is_some_and(|r| r.starts_with(b"HTTP/1.1 200"));
                    if ready {
                        up = true;
                        set_up(health, true);
                    }
                }
            }
        };
        match exited {
            None if cfg.keep_on_exit => {
                info!(
                    pid = child.id(),
                    "leaving Envoy running for the next Switchyard (--keep-envoy-on-exit)"
                );
                return Ok(());
            }
            None => {
                info!("stopping Envoy");
                // Clean exit through the admin API first; SIGKILL if that fails.
                let exited = quit(&cfg).await
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
                set_up(health, false);
                let status = status.context("waiting for Envoy")?;
                crate::metrics::catalogue::ENVOY_RESTARTS.inc([]);
                if started.elapsed() >= MIN_HEALTHY_RUN {
                    backoff = Duration::from_millis(250);
                    failed_starts = 0;
                } else {
                    failed_starts += 1;
                }
                // Its last lines are still in the pipes: read them first.
                for r in readers {
                    let _ = tokio::time::timeout(Duration::from_millis(500), r).await;
                }
                let errors = last_errors
                    .lock()
                    .map(|l| l.join(" | "))
                    .unwrap_or_default();
                if failed_starts >= cfg.max_failed_starts.max(1) {
                    anyhow::bail!(
                        "Envoy exited {failed_starts} times in a row within {}s of starting (last: {status}); giving up. Its last errors: {}",
                        MIN_HEALTHY_RUN.as_secs(),
                        if errors.is_empty() { "none logged" } else { &errors }
                    );
                }
                warn!(%status, failed_starts, last_errors = %errors, "Envoy exited; restarting in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.wait_for(|v| *v) => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Aborts a helper task when the scope that needs it ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path, binary: PathBuf) -> EnvoyConfig {
        EnvoyConfig {
            binary,
            bootstrap_template: None,
            work_dir: dir.to_path_buf(),
            node_id: "node-1".into(),
            node_cluster: "switchyard".into(),
            xds_addr: "0.0.0.0:18000".parse().unwrap(),
            admin_addr: "127.0.0.1:19000".parse().unwrap(),
            stats_port: 19001,
            gateways: vec!["default/a".into(), "infra/b".into()],
            delta: false,
            extra_args: vec![],
            xds_tls: None,
            keep_on_exit: false,
            max_failed_starts: 5,
        }
    }

    #[test]
    fn renders_every_placeholder_of_the_shipped_bootstrap() {
        let c = cfg(std::path::Path::new("/nonexistent"), PathBuf::from("envoy"));
        let template = BOOTSTRAP_TEMPLATE;
        let out = render_bootstrap(template, &c).unwrap();
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
        assert!(
            doc["static_resources"]["clusters"][0]["transport_socket"].is_null(),
            "plaintext: no TLS transport socket"
        );
        let delta = render_bootstrap(
            template,
            &EnvoyConfig {
                delta: true,
                ..c.clone()
            },
        )
        .unwrap();
        assert!(delta.contains("api_type: DELTA_GRPC"));
        let tls = EnvoyConfig {
            xds_tls: Some(EnvoyXdsTls {
                cert_dir: "/certs".into(),
                server_name: "switchyard-xds.example".into(),
            }),
            ..c
        };
        let out = render_bootstrap(template, &tls).unwrap();
        assert!(!left.is_match(&out), "{out}");
        let doc: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        let ctx = &doc["static_resources"]["clusters"][0]["transport_socket"]["typed_config"];
        assert_eq!(ctx["sni"].as_str(), Some("switchyard-xds.example"));
        assert_eq!(
            ctx["common_tls_context"]["tls_certificate_sds_secret_configs"][0]["sds_config"]
                ["path_config_source"]["path"]
                .as_str(),
            Some("/nonexistent/xds-client-cert.sds.yaml")
        );
    }

    #[test]
    fn stats_listener_gets_its_port_or_is_removed() {
        let c = cfg(std::path::Path::new("/nonexistent"), PathBuf::from("envoy"));
        let listener = |out: &str| {
            let doc: serde_yaml::Value = serde_yaml::from_str(out).unwrap();
            let res = &doc["static_resources"];
            let l = res["listeners"].as_sequence().and_then(|l| {
                l.iter()
                    .find(|l| l["name"].as_str() == Some("switchyard_stats"))
                    .map(|l| l["address"]["socket_address"]["port_value"].as_u64())
            });
            let admin = res["clusters"].as_sequence().and_then(|c| {
                c.iter()
                    .find(|c| c["name"].as_str() == Some("envoy_admin"))
                    .map(|c| {
                        c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                            ["address"]["socket_address"]["port_value"]
                            .as_u64()
                    })
            });
            (l, admin)
        };
        let on = render_bootstrap(BOOTSTRAP_TEMPLATE, &c).unwrap();
        assert_eq!(listener(&on), (Some(Some(19001)), Some(Some(19000))));
        for xds_tls in [
            None,
            Some(EnvoyXdsTls {
                cert_dir: "/certs".into(),
                server_name: "x".into(),
            }),
        ] {
            let off = EnvoyConfig {
                stats_port: 0,
                xds_tls,
                ..c.clone()
            };
            let out = render_bootstrap(BOOTSTRAP_TEMPLATE, &off).unwrap();
            assert_eq!(listener(&out), (None, None), "{out}");
        }
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
        let mut c = cfg(&dir, fake.clone());
        c.admin_addr = "127.0.0.1:9".parse().unwrap();
        c.max_failed_starts = 100;
        let health = Health::default();
        let task = tokio::spawn(supervise(c, rx, health));
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

        // A crash loop is bounded: supervision fails with Envoy's own errors.
        std::fs::write(
            &fake,
            "#!/bin/sh\necho '[2026-11-29 10:00:00.000][1][critical][main] [source/server/server.cc:1] cannot bind 0.0.0.0:80' >&2\nexit 1\n",
        )
        .unwrap();
        let (_tx, rx) = watch::channel(false);
        let mut c = cfg(&dir, fake.clone());
        c.admin_addr = "127.0.0.1:9".parse().unwrap();
        c.max_failed_starts = 2;
        let health = Health::default();
        let res = tokio::time::timeout(Duration::from_secs(5), supervise(c, rx, health.clone()))
            .await
            .expect("gives up within the bound");
        let err = format!("{:#}", res.unwrap_err());
        assert!(
            err.contains("2 times in a row") && err.contains("cannot bind"),
            "{err}"
        );
        assert!(!health.load(std::sync::atomic::Ordering::Relaxed));

        // A binary that cannot start fails at once.
        let (_tx, rx) = watch::channel(false);
        let c = cfg(&dir, dir.join("no-such-envoy"));
        let res = tokio::time::timeout(Duration::from_secs(5), supervise(c, rx, Health::default()))
            .await
            .expect("fails at once");
        assert!(format!("{:#}", res.unwrap_err()).contains("starting Envoy"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
