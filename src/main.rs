//! `switchyard` CLI: wiring only.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use switchyard::inputs::DEFAULT_CONTROLLER_NAME;
use switchyard::pipeline;

/// mimalloc halves translation time at thousands of routes versus the system
/// allocator. Its options for the long-running commands: [`switchyard::allocator`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Writes CLI output to stdout; a closed pipe (`switchyard explain … | head`)
/// ends the process quietly instead of panicking as `println!` does.
fn emit(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    use std::io::Write;
    match std::io::stdout().lock().write_fmt(args) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

/// `print!` through [`emit`].
macro_rules! out {
    ($($t:tt)*) => { emit(format_args!($($t)*))? };
}

/// `println!` through [`emit`].
macro_rules! outln {
    () => { emit(format_args!("\n"))? };
    ($($t:tt)*) => { emit(format_args!("{}\n", format_args!($($t)*)))? };
}

#[derive(Parser)]
#[command(
    name = "switchyard",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SWITCHYARD_GIT_COMMIT"), ")"),
    about = "Gateway API control plane for Envoy"
)]
struct Cli {
    /// Log filter (tracing EnvFilter syntax), e.g. `info,switchyard=debug`.
    #[arg(long, env = "SWITCHYARD_LOG", default_value = "info", global = true)]
    log: String,
    /// Log line format on stderr: `text` (human) or `json` (one object per line).
    #[arg(
        long,
        env = "SWITCHYARD_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    /// DIAGNOSTICS/TESTS ONLY: turn off one of Switchyard's up-front checks
    /// of what Envoy accepts (`modifiable-header`), so that Envoy itself
    /// rejects such input (exercises NACK isolation end to end). Never use
    /// it in production.
    #[arg(
        long = "unsafe-skip-validation",
        value_name = "CHECK",
        global = true,
        hide = true
    )]
    unsafe_skip_validation: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Yaml,
    Json,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExplainFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Translate manifests offline and print the Envoy resources and statuses.
    Translate {
        /// Manifest files or directories (multi-document YAML).
        #[arg(short = 'f', long = "file", required = true)]
        files: Vec<PathBuf>,
        #[arg(short = 'o', long, value_enum, default_value = "yaml")]
        output: Format,
        /// Address pool for Gateways without spec.addresses.
        #[arg(long, default_value = "127.0.0.1/32")]
        address_pool: String,
        #[arg(long, default_value = DEFAULT_CONTROLLER_NAME)]
        controller_name: String,
    },
    /// Show where a request goes and why: the Gateway listener, the route
    /// and rule it matches, what the rule does, the backends and their
    /// state, and every rule that matched too but lost.
    Explain {
        /// Manifest files or directories (offline).
        #[arg(short = 'f', long = "file", required_unless_present_any = ["server", "diff"])]
        files: Vec<PathBuf>,
        /// Ask a running controller or standalone instance (its admin
        /// address, e.g. 127.0.0.1:18001) about what it serves now.
        #[arg(long, conflicts_with_all = ["files", "diff"])]
        server: Option<String>,
        /// `[METHOD] URL`, e.g. 'GET https://shop.example.com:443/cart?x=1';
        /// tls://, tcp:// and udp:// URLs for L4 listeners.
        #[arg(short = 'r', long)]
        request: Option<String>,
        /// Request header `Name: value` (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The Gateway (NAMESPACE/NAME) when several listen on the port.
        #[arg(long)]
        gateway: Option<String>,
        /// The Gateway address when several Gateways listen on the port.
        #[arg(long)]
        address: Option<String>,
        /// TLS server name (default: the URL's host for https:// and tls://).
        #[arg(long)]
        sni: Option<String>,
        /// L4 without --request: the listener port (TLS with --sni, else TCP;
        /// --udp for UDP).
        #[arg(long, conflicts_with = "request")]
        port: Option<u16>,
        #[arg(long, requires = "port")]
        udp: bool,
        /// Many requests: JSON lines (`{"url": ..., "method": ..., "headers": [[k, v]], "id": ...}`)
        /// or `[METHOD] URL` lines; `-` reads stdin. With -o json the answers
        /// are JSON lines in the same order.
        #[arg(long, conflicts_with_all = ["request", "port"])]
        requests: Option<PathBuf>,
        /// Compare two configurations (files or directories): print the
        /// requests (from --requests, or sampled to cover every match of
        /// both) whose destination changes. Exit status 1 when some do.
        #[arg(long, num_args = 2, value_names = ["OLD", "NEW"])]
        diff: Option<Vec<PathBuf>>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: ExplainFormat,
        #[arg(long, default_value = "127.0.0.1/32")]
        address_pool: String,
        #[arg(long, default_value = DEFAULT_CONTROLLER_NAME)]
        controller_name: String,
    },
    /// Kubernetes mode: watch the API server, serve the Envoy fleet over ADS,
    /// write status (Lease holder only).
    Controller {
        #[arg(long, env = "SWITCHYARD_CONTROLLER_NAME", default_value = DEFAULT_CONTROLLER_NAME)]
        controller_name: String,
        #[arg(long, default_value = "0.0.0.0:18000")]
        xds_listen: SocketAddr,
        #[arg(long, default_value = "0.0.0.0:18001")]
        admin_listen: SocketAddr,
        /// gRPC admin API (switchyard.admin.v1, `switchyard fleet`). It
        /// shows every Gateway's configuration (never private keys): keep it
        /// on loopback and reach it with `kubectl port-forward`.
        #[arg(long, default_value = "127.0.0.1:18002")]
        admin_grpc_listen: SocketAddr,
        /// How Gateways of classes without parametersRef get addresses:
        /// LoadBalancer, NodeAddresses or VirtualIP (docs/networking.md).
        #[arg(long, env = "SWITCHYARD_ADDRESS_MODE", default_value = "LoadBalancer")]
        address_mode: switchyard::addressing::AddressMode,
        /// VirtualIP mode: addresses for Gateways without spec.addresses
        /// (CIDR or IP). No default: without it VirtualIP Gateways are
        /// AddressNotAssigned.
        #[arg(long, env = "SWITCHYARD_ADDRESS_POOL")]
        address_pool: Option<String>,
        /// LoadBalancer mode: ports Envoy listens on (FROM-TO), one per
        /// Gateway and listener port.
        #[arg(long, env = "SWITCHYARD_LB_PORT_RANGE", default_value = "20000-29999")]
        lb_port_range: switchyard::addressing::PortRange,
        /// Labels of the Envoy pods: the selector of the Gateways' Services
        /// in LoadBalancer and NodeAddresses modes.
        #[arg(long, env = "SWITCHYARD_ENVOY_POD_SELECTOR", default_value = switchyard::addressing::DEFAULT_ENVOY_POD_SELECTOR)]
        envoy_pod_selector: String,
        #[arg(long, env = "POD_NAMESPACE", default_value = "switchyard-system")]
        lease_namespace: String,
        #[arg(long, default_value = "switchyard-controller")]
        lease_name: String,
        /// This replica's identity in the Lease (defaults to the Pod name).
        #[arg(long, env = "POD_NAME", default_value = "")]
        identity: String,
        #[arg(long, default_value_t = 15)]
        lease_duration_secs: u64,
        /// Coalescing window for API events, in milliseconds.
        #[arg(long, default_value_t = 10)]
        debounce_ms: u64,
        /// mTLS certificates of the xDS server (`ca.crt`, `tls.crt`,
        /// `tls.key`, e.g. a mounted Secret); re-read when they change.
        #[arg(
            long,
            env = "SWITCHYARD_XDS_TLS_DIR",
            default_value = "/etc/switchyard/xds-tls"
        )]
        xds_tls_dir: PathBuf,
        /// Serve xDS without TLS: any client reaching the port can read
        /// every Gateway's configuration and private keys. Tests only.
        #[arg(long, env = "SWITCHYARD_XDS_INSECURE")]
        xds_insecure: bool,
        /// Create a Service per Gateway in its namespace (with the
        /// Gateway's addresses as endpoints and spec.infrastructure
        /// labels/annotations); `false` needs no write access to Services
        /// and EndpointSlices.
        #[arg(long, env = "SWITCHYARD_GATEWAY_SERVICES", default_value_t = true, action = clap::ArgAction::Set)]
        gateway_services: bool,
        /// A JSON access log line on Envoy's stdout per request / TCP
        /// connection (docs/observability.md); `false` turns it off.
        #[arg(long, env = "SWITCHYARD_ENVOY_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
        envoy_access_log: bool,
        /// A port whose route table holds more virtual hosts than this is
        /// served in shards (scoped routes keyed on a hash of the host), so
        /// a route change makes Envoy re-read one shard, not the whole
        /// table (docs/scaling.md); 0 never shards.
        #[arg(long, env = "SWITCHYARD_ROUTE_SHARDS_ABOVE", default_value_t = switchyard::xds::build::DEFAULT_SHARD_THRESHOLD)]
        route_shards_above: usize,
    },
    /// Issue the xDS mTLS certificates: a CA (reused if present), the xDS
    /// server's, and one per Envoy client with its identity.
    Certgen {
        /// Output directory (ca/, server/, one directory per client).
        #[arg(long, required_unless_present = "kubernetes_namespace")]
        out: Option<PathBuf>,
        /// Instead of files, keep the CA and the leaves in Secrets of this
        /// namespace (switchyard-xds-ca, -server, -envoy from the first
        /// --client); existing ones are kept unless --rotate.
        #[arg(long, conflicts_with = "out")]
        kubernetes_namespace: Option<String>,
        /// With --kubernetes-namespace: re-issue the server and Envoy
        /// certificates (same CA).
        #[arg(long, requires = "kubernetes_namespace")]
        rotate: bool,
        /// DNS name or IP address Envoy dials for xDS (repeatable).
        #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
        /// NAME=IDENTITY[,IDENTITY...], identity being `fleet` (all
        /// Gateways), `namespace:<ns>` or `gateway:<ns>/<name>` (repeatable).
        #[arg(long = "client", default_values_t = ["envoy=fleet".to_string()])]
        clients: Vec<String>,
        /// Validity of the server and client certificates, in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
    /// Inspect the Envoy fleet through a running instance's gRPC admin API
    /// (--admin-grpc-listen): status, what each node was sent, drift.
    Fleet {
        #[command(subcommand)]
        command: switchyard::cli::fleet::FleetCommand,
    },
    /// Serve a directory of manifests to Envoy, with no Kubernetes.
    Standalone {
        #[arg(long)]
        config_dir: PathBuf,
        /// Where status files go: <dir>/<kind>/<namespace>/<name>.yaml.
        #[arg(long, default_value = "status")]
        status_dir: PathBuf,
        #[arg(long, default_value = "127.0.0.1:18000")]
        xds_listen: SocketAddr,
        /// Health, /metrics and /debug endpoints.
        #[arg(long, default_value = "127.0.0.1:18001")]
        admin_listen: SocketAddr,
        /// gRPC admin API (switchyard.admin.v1, `switchyard fleet`); it
        /// shows every Gateway's configuration (never private keys).
        #[arg(long, default_value = "127.0.0.1:18002")]
        admin_grpc_listen: SocketAddr,
        /// Addresses for Gateways without spec.addresses (CIDR or IP), in
        /// VirtualIP mode.
        #[arg(long, default_value = "127.0.0.1/32")]
        address_pool: String,
        /// How Gateways of classes without parametersRef get addresses:
        /// VirtualIP (the pool) or NodeAddresses (0.0.0.0; addresses of the
        /// Node objects in --config-dir). LoadBalancer needs Kubernetes.
        #[arg(long, env = "SWITCHYARD_ADDRESS_MODE", default_value = "VirtualIP")]
        address_mode: switchyard::addressing::AddressMode,
        #[arg(long, default_value = DEFAULT_CONTROLLER_NAME)]
        controller_name: String,
        /// Launch and supervise this Envoy binary.
        #[arg(long)]
        envoy: Option<PathBuf>,
        /// Envoy's admin address (loopback).
        #[arg(long, default_value = "127.0.0.1:19000")]
        envoy_admin: SocketAddr,
        /// Bootstrap template for the supervised Envoy (default: the one
        /// built into this binary, envoy-bootstrap/bootstrap.yaml).
        #[arg(long)]
        bootstrap: Option<PathBuf>,
        /// Serve xDS over mTLS with these server certificates (`ca.crt`,
        /// `tls.crt`, `tls.key`); nodes then receive only what their
        /// certificate entitles them to.
        #[arg(long)]
        xds_tls_dir: Option<PathBuf>,
        /// Client certificate directory of the supervised Envoy (with --xds-tls-dir).
        #[arg(long)]
        envoy_xds_tls_dir: Option<PathBuf>,
        /// Allow plaintext xDS on a non-loopback --xds-listen (any client
        /// reaching it can read every Gateway's configuration and keys).
        #[arg(long)]
        xds_insecure: bool,
        /// The name the supervised Envoy expects in the xDS server's certificate.
        #[arg(long, default_value = "localhost")]
        xds_server_name: String,
        /// Leave the supervised Envoy running on exit; the next
        /// `switchyard standalone` with the same --envoy-admin adopts it,
        /// so a control-plane restart drops no connection.
        #[arg(long)]
        keep_envoy_on_exit: bool,
        /// Exit non-zero after this many consecutive Envoy runs shorter than 10 s.
        #[arg(long, default_value_t = 5)]
        envoy_max_failed_starts: u32,
        /// Use the delta (incremental) ADS protocol for the supervised Envoy.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        delta: bool,
        /// Working directory for the supervised Envoy (rendered bootstrap, logs).
        #[arg(long, default_value = "")]
        envoy_work_dir: String,
        /// Debounce for file changes, in milliseconds.
        #[arg(long, default_value_t = 10)]
        debounce_ms: u64,
        /// Extra argument for the supervised Envoy (repeatable), e.g. `--envoy-extra-arg=--concurrency --envoy-extra-arg=1`.
        #[arg(long = "envoy-extra-arg", allow_hyphen_values = true)]
        envoy_extra_args: Vec<String>,
        /// Port of the supervised Envoy's Prometheus stats listener (all
        /// addresses, path /stats/prometheus); 0 turns it off.
        #[arg(long, default_value_t = 19001)]
        envoy_stats_port: u16,
        /// A JSON access log line on Envoy's stdout per request / TCP
        /// connection (docs/observability.md); `false` turns it off.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        envoy_access_log: bool,
        /// A port whose route table holds more virtual hosts than this is
        /// served in shards (scoped routes keyed on a hash of the host), so
        /// a route change makes Envoy re-read one shard, not the whole
        /// table (docs/scaling.md); 0 never shards.
        #[arg(long, default_value_t = switchyard::xds::build::DEFAULT_SHARD_THRESHOLD)]
        route_shards_above: usize,
    },
}

use switchyard::cli::load_paths;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Before any thread starts: a long-running command re-executes itself
    // with the allocator options it lacks (returns only when nothing is
    // to do, or when that failed).
    let reexec = match cli.command {
        Command::Controller { .. } | Command::Standalone { .. } => {
            switchyard::allocator::reexec_with_options().err()
        }
        _ => None,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => logs.json().with_current_span(false).init(),
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    if let Some(e) = reexec {
        tracing::warn!(error = %e, "could not re-execute with the allocator options; running with mimalloc's defaults");
    }
    switchyard::metrics::record_build_info();
    for check in &cli.unsafe_skip_validation {
        switchyard::translate::validate::envoy::skip_check(check).map_err(anyhow::Error::msg)?;
        tracing::warn!(
            check,
            "--unsafe-skip-validation: this check is OFF; Envoy will reject such input (diagnostics only)"
        );
    }
    match cli.command {
        Command::Translate {
            files,
            output,
            address_pool,
            controller_name,
        } => {
            let mut inputs = load_paths(&files, &controller_name)?;
            inputs.now = Some(switchyard::certs::wall_clock());
            switchyard::provider::addresses::AddressPool::parse(&address_pool)?.assign(&mut inputs);
            let (out, snap) = pipeline::run(&inputs);
            let doc = serde_json::json!({
                "xds": pipeline::xds_document(&snap)?,
                "status": pipeline::status_documents(&out),
            });
            match output {
                Format::Yaml => out!("{}", pipeline::to_yaml(&doc)),
                Format::Json => outln!("{}", serde_json::to_string_pretty(&doc)?),
            }
            Ok(())
        }
        Command::Explain {
            files,
            server,
            request,
            headers,
            gateway,
            address,
            sni,
            port,
            udp,
            requests,
            diff,
            output,
            address_pool,
            controller_name,
        } => {
            use switchyard::cli::explain as ex;
            if let Some(pair) = diff {
                let old = switchyard::cli::load_model(&pair[..1], &controller_name, &address_pool)?;
                let new = switchyard::cli::load_model(&pair[1..], &controller_name, &address_pool)?;
                let given = requests.as_deref().map(ex::read_requests).transpose()?;
                let changes = ex::diff(&old, &new, given);
                if output == ExplainFormat::Json {
                    outln!("{}", serde_json::to_string_pretty(&changes)?);
                } else if changes.is_empty() {
                    outln!("no request changes destination");
                } else {
                    for c in &changes {
                        let method = c.request.method.as_deref().unwrap_or("GET");
                        let h: Vec<String> = c
                            .request
                            .headers
                            .iter()
                            .map(|(k, v)| format!(" -H '{k}: {v}'"))
                            .collect();
                        outln!("{method} {}{}", c.request.url, h.concat());
                        outln!("  before: {}", c.before);
                        outln!("  after:  {}", c.after);
                    }
                    outln!("{} request(s) change destination", changes.len());
                }
                std::process::exit(i32::from(!changes.is_empty()));
            }
            let batch_mode = requests.is_some();
            let specs = match (&requests, &request, port) {
                (Some(path), _, _) => ex::read_requests(path)?,
                (None, Some(r), _) => {
                    let mut spec = ex::RequestSpec::parse_line(r)?
                        .ok_or_else(|| anyhow::anyhow!("--request is empty"))?;
                    for h in &headers {
                        let (k, v) = h.split_once(':').ok_or_else(|| {
                            anyhow::anyhow!("header {h:?}: expected `Name: value`")
                        })?;
                        spec.headers
                            .push((k.trim().to_string(), v.trim().to_string()));
                    }
                    vec![spec]
                }
                (None, None, Some(p)) => {
                    let scheme = match (udp, &sni) {
                        (true, _) => "udp",
                        (false, Some(_)) => "tls",
                        (false, None) => "tcp",
                    };
                    let host = sni
                        .clone()
                        .or_else(|| address.clone())
                        .unwrap_or_else(|| "127.0.0.1".into());
                    vec![ex::RequestSpec {
                        url: format!("{scheme}://{host}:{p}"),
                        ..Default::default()
                    }]
                }
                (None, None, None) => anyhow::bail!("give --request, --port, --requests or --diff"),
            };
            let specs: Vec<ex::RequestSpec> = specs
                .into_iter()
                .map(|mut s| {
                    s.gateway = s.gateway.or_else(|| gateway.clone());
                    s.address = s.address.or_else(|| address.clone());
                    s.sni = s.sni.or_else(|| sni.clone());
                    s
                })
                .collect();
            let answers = match &server {
                Some(addr) => ex::live(addr, &specs)?,
                None => {
                    let model =
                        switchyard::cli::load_model(&files, &controller_name, &address_pool)?;
                    ex::batch(&model, &specs)
                }
            };
            let mut failed = false;
            for (i, a) in answers.iter().enumerate() {
                failed |= a.get("error").is_some();
                match (output, batch_mode) {
                    (ExplainFormat::Json, true) => outln!("{}", serde_json::to_string(a)?),
                    (ExplainFormat::Json, false) => {
                        outln!("{}", serde_json::to_string_pretty(a)?)
                    }
                    (ExplainFormat::Text, _) => {
                        if i > 0 {
                            outln!();
                        }
                        out!("{}", ex::render_text(a));
                    }
                }
            }
            if failed && !batch_mode {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Controller {
            controller_name,
            xds_listen,
            admin_listen,
            admin_grpc_listen,
            address_mode,
            address_pool,
            lb_port_range,
            envoy_pod_selector,
            lease_namespace,
            lease_name,
            identity,
            lease_duration_secs,
            debounce_ms,
            xds_tls_dir,
            xds_insecure,
            gateway_services,
            envoy_access_log,
            route_shards_above,
        } => {
            let identity = if identity.is_empty() {
                format!(
                    "{}-{}",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "switchyard".into()),
                    std::process::id()
                )
            } else {
                identity
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(switchyard::controller::run(
                switchyard::controller::Options {
                    controller_name,
                    xds_listen,
                    admin_listen,
                    admin_grpc_listen,
                    addressing: switchyard::addressing::AddressDefaults {
                        mode: address_mode,
                        pool: address_pool
                            .as_deref()
                            .filter(|p| !p.is_empty())
                            .map(|p| {
                                switchyard::addressing::parse_pool(p).ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "--address-pool {p:?} is not a CIDR or an IP address"
                                    )
                                })
                            })
                            .transpose()?,
                        lb_ports: lb_port_range,
                        envoy_pod_selector: switchyard::addressing::parse_selector(
                            &envoy_pod_selector,
                        )?,
                        standalone: false,
                    },
                    lease_namespace,
                    lease_name,
                    identity,
                    lease_duration: Duration::from_secs(lease_duration_secs.max(3)),
                    debounce: Duration::from_millis(debounce_ms),
                    xds_tls_dir: (!xds_insecure).then_some(xds_tls_dir),
                    gateway_services,
                    build: switchyard::xds::build::Options {
                        access_log: envoy_access_log,
                        route_shards_above,
                    },
                },
            ))
        }
        Command::Fleet { command } => {
            // Exit status: 0, 1 = drift, 2 = could not ask (like `diff`).
            let mut buf = Vec::new();
            match switchyard::cli::fleet::run(command, &mut buf) {
                Ok(code) => {
                    out!("{}", String::from_utf8_lossy(&buf));
                    std::process::exit(code)
                }
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    std::process::exit(2)
                }
            }
        }
        Command::Certgen {
            out,
            kubernetes_namespace,
            rotate,
            server_names,
            clients,
            days,
        } => {
            let clients = clients
                .iter()
                .map(|c| {
                    switchyard::certgen::Client::parse(c)
                        .map_err(|e| anyhow::anyhow!("--client {e}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let opts = switchyard::certgen::Options {
                out: out.unwrap_or_default(),
                server_names,
                clients,
                days,
            };
            let report = match kubernetes_namespace {
                Some(ns) => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(switchyard::certgen::run_kubernetes(&opts, &ns, rotate))?,
                None => switchyard::certgen::run(&opts)?,
            };
            for line in report {
                outln!("{line}");
            }
            Ok(())
        }
        Command::Standalone {
            config_dir,
            status_dir,
            xds_listen,
            admin_listen,
            admin_grpc_listen,
            address_pool,
            address_mode,
            controller_name,
            envoy,
            envoy_admin,
            bootstrap,
            delta,
            envoy_work_dir,
            debounce_ms,
            envoy_extra_args,
            xds_tls_dir,
            envoy_xds_tls_dir,
            xds_server_name,
            xds_insecure,
            keep_envoy_on_exit,
            envoy_max_failed_starts,
            envoy_stats_port,
            envoy_access_log,
            route_shards_above,
        } => {
            anyhow::ensure!(
                xds_tls_dir.is_some() || xds_listen.ip().is_loopback() || xds_insecure,
                "--xds-listen {xds_listen} is reachable from other hosts: serve it over mTLS (--xds-tls-dir, see `switchyard certgen`) or accept plaintext explicitly with --xds-insecure"
            );
            anyhow::ensure!(
                config_dir.is_dir(),
                "--config-dir {} is not a directory",
                config_dir.display()
            );
            anyhow::ensure!(
                envoy.is_none() || xds_tls_dir.is_some() == envoy_xds_tls_dir.is_some(),
                "--xds-tls-dir and --envoy-xds-tls-dir go together with --envoy (the server's and the supervised Envoy's certificates)"
            );
            let envoy = envoy.map(|binary| {
                let work_dir = if envoy_work_dir.is_empty() {
                    std::env::temp_dir().join(format!("switchyard-envoy-{}", envoy_admin.port()))
                } else {
                    PathBuf::from(&envoy_work_dir)
                };
                switchyard::supervisor::EnvoyConfig {
                    binary,
                    bootstrap_template: bootstrap.clone(),
                    xds_tls: envoy_xds_tls_dir.map(|cert_dir| {
                        switchyard::supervisor::EnvoyXdsTls {
                            cert_dir,
                            server_name: xds_server_name.clone(),
                        }
                    }),
                    keep_on_exit: keep_envoy_on_exit,
                    max_failed_starts: envoy_max_failed_starts,
                    work_dir,
                    node_id: format!("switchyard-standalone-{}", envoy_admin.port()),
                    node_cluster: "switchyard".into(),
                    xds_addr: xds_listen,
                    admin_addr: envoy_admin,
                    stats_port: envoy_stats_port,
                    gateways: Vec::new(),
                    delta,
                    extra_args: envoy_extra_args,
                }
            });
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(switchyard::standalone::run(
                switchyard::standalone::Options {
                    config_dir,
                    status_dir,
                    controller_name,
                    xds_listen,
                    admin_listen,
                    admin_grpc_listen,
                    address_pool,
                    address_mode,
                    envoy,
                    xds_tls_dir,
                    debounce: Duration::from_millis(debounce_ms),
                    build: switchyard::xds::build::Options {
                        access_log: envoy_access_log,
                        route_shards_above,
                    },
                },
            ))
        }
    }
}
