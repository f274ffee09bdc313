//! `switchyard-echo`: a small test backend for examples, tests and benchmarks.
//!
//! * `--listen ADDR`: HTTP/1.1 + h2c. Every request gets a JSON body naming
//!   this backend and echoing what it received; `/status/NNN` answers with
//!   that status code.
//! * `--tcp ADDR`: raw TCP. Each connection first receives `<name>\n`, then
//!   every byte sent is echoed back until the client closes.
//! * `--udp ADDR`: UDP. Every datagram is answered with `<name>:` followed by
//!   the datagram's bytes.
//! * `--tls ADDR` (with `--tls-cert`/`--tls-key`): TLS-terminating TCP echo.
//!   After the handshake the client receives `<name> sni=<SNI or ->\n`, then
//!   everything is echoed as with `--tcp`.
//! * `--https ADDR` (with `--tls-cert`/`--tls-key`): HTTPS (HTTP/1.1 or
//!   HTTP/2), answered as `--listen` is, plus an `x-echo-sni` response header
//!   naming the SNI the client sent. With `--https-client-ca FILE` the
//!   client must present a certificate issued by that CA; `x-echo-client-cert`
//!   then says `verified`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgGroup, Parser};
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

#[path = "echo/https.rs"]
mod https;
#[path = "echo/script.rs"]
mod script; // key=/fail= query parameters and /__echo/count (retries, mirrors)
use https::run_https;

/// How long a TLS client gets to complete its handshake.
pub(crate) const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(
    name = "switchyard-echo",
    about = "Echo backend: answers JSON naming itself and echoing the request \
             (HTTP), or echoes raw bytes (TCP, UDP, TLS)",
    group(
        ArgGroup::new("mode")
            .args(["listen", "tcp", "udp", "tls", "https"])
            .required(true)
            .multiple(true)
    ),
    group(ArgGroup::new("tls_modes").args(["tls", "https"]).multiple(true))
)]
struct Args {
    /// HTTP/1.1 + h2c address to listen on (repeatable).
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Raw TCP echo address (repeatable): sends `<name>\n`, then echoes.
    #[arg(long = "tcp", value_name = "ADDR")]
    tcp: Vec<SocketAddr>,
    /// UDP echo address (repeatable): answers each datagram with `<name>:<datagram>`.
    #[arg(long = "udp", value_name = "ADDR")]
    udp: Vec<SocketAddr>,
    /// TLS echo address (repeatable): after the handshake sends
    /// `<name> sni=<SNI or ->\n`, then echoes. Needs --tls-cert and --tls-key.
    #[arg(long = "tls", value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])]
    tls: Vec<SocketAddr>,
    /// HTTPS address (repeatable): the HTTP echo over TLS. Needs --tls-cert and --tls-key.
    #[arg(long = "https", value_name = "ADDR", requires_all = ["tls_cert", "tls_key"])]
    https: Vec<SocketAddr>,
    /// CA (PEM) that HTTPS clients' certificates must be issued by (client certificates required).
    #[arg(long = "https-client-ca", value_name = "FILE", requires = "https")]
    https_client_ca: Option<PathBuf>,
    /// PEM certificate chain for --tls and --https.
    #[arg(long = "tls-cert", value_name = "FILE", requires = "tls_modes")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for --tls and --https.
    #[arg(long = "tls-key", value_name = "FILE", requires = "tls_modes")]
    tls_key: Option<PathBuf>,
    /// Name reported in every response (default: $ECHO_NAME, $POD_NAME, hostname).
    #[arg(long)]
    name: Option<String>,
}

fn default_name() -> String {
    for var in ["ECHO_NAME", "POD_NAME"] {
        if let Ok(v) = std::env::var(var) {
            if !v.is_empty() {
                return v;
            }
        }
    }
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "echo".into())
}

fn answer(
    name: &str,
    local: SocketAddr,
    req: &Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    let mut headers: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = serde_json::Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
        match headers.get_mut(k.as_str()) {
            Some(serde_json::Value::Array(a)) => a.push(v),
            Some(existing) => {
                let first = existing.clone();
                *existing = serde_json::Value::Array(vec![first, v]);
            }
            None => {
                headers.insert(k.as_str().to_string(), v);
            }
        }
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let path = req.uri().path().to_string();
    let status = path
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let body = serde_json::json!({
        "name": name,
        "listen": local.to_string(),
        "method": req.method().as_str(),
        "path": path,
        "query": req.uri().query().unwrap_or(""),
        "host": host,
        "headers": headers,
        "protocol": format!("{:?}", req.version()),
    });
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-name", name)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Builds the TLS acceptor for `--tls` from PEM files (ring provider).
fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    tls_acceptor_with(cert, key, None)
}

/// [`tls_acceptor`], requiring client certificates issued by `client_ca` when given.
fn tls_acceptor_with(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading certificates from {}: {e}", cert.display()))?;
    if certs.is_empty() {
        anyhow::bail!("no certificate found in {}", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading private key from {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow::anyhow!("TLS protocol versions: {e}"))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => builder.with_client_cert_verifier(https::client_verifier(ca, provider)?),
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| anyhow::anyhow!("TLS certificate/key: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name: Arc<str> = args.name.unwrap_or_else(default_name).into();
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) if !args.tls.is_empty() => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    // Every connection holds a receiver; `stop_tx.closed()` resolves once
    // all of them have finished (graceful drain on SIGTERM / Ctrl-C).
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut accept_loops = tokio::task::JoinSet::new();
    for addr in args.listen {
        let listener = bind_tcp(addr).await?;
        eprintln!(
            "switchyard-echo {name} listening on {}",
            listener.local_addr()?
        );
        accept_loops.spawn(run_http(listener, name.clone(), stop_rx.clone()));
    }
    for addr in args.tcp {
        let listener = bind_tcp(addr).await?;
        eprintln!(
            "switchyard-echo {name} listening on {} (tcp)",
            listener.local_addr()?
        );
        accept_loops.spawn(run_tcp(listener, name.clone(), stop_rx.clone()));
    }
    for addr in args.udp {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding udp {addr}: {e}"))?;
        eprintln!(
            "switchyard-echo {name} listening on {} (udp)",
            socket.local_addr()?
        );
        accept_loops.spawn(run_udp(socket, name.clone()));
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        if !args.https.is_empty() {
            let https = tls_acceptor_with(cert, key, args.https_client_ca.as_deref())?;
            for addr in &args.https {
                let listener = bind_tcp(*addr).await?;
                eprintln!(
                    "switchyard-echo {name} listening on {} (https)",
                    listener.local_addr()?
                );
                accept_loops.spawn(run_https(
                    listener,
                    https.clone(),
                    name.clone(),
                    stop_rx.clone(),
                ));
            }
        }
    }
    if let Some(acceptor) = acceptor {
        for addr in args.tls {
            let listener = bind_tcp(addr).await?;
            eprintln!(
                "switchyard-echo {name} listening on {} (tls)",
                listener.local_addr()?
            );
            accept_loops.spawn(run_tls(
                listener,
                acceptor.clone(),
                name.clone(),
                stop_rx.clone(),
            ));
        }
    }
    drop(stop_rx);
    tokio::select! {
        _ = accept_loops.join_next() => {}
        _ = switchyard::admin::shutdown_signal() => {}
    }
    accept_loops.abort_all();
    while accept_loops.join_next().await.is_some() {}
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(2), stop_tx.closed()).await;
    Ok(())
}

async fn bind_tcp(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))
}

/// Accepts connections forever, spawning `handle` for each one.
pub(crate) async fn accept_loop<F, Fut>(listener: TcpListener, mut handle: F)
where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(handle(stream, peer));
            }
            Err(e) => {
                // E.g. out of file descriptors: back off instead of spinning.
                eprintln!("switchyard-echo: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// HTTP/1.1 + h2c accept loop (`--listen`).
async fn run_http(listener: TcpListener, name: Arc<str>, stop: watch::Receiver<bool>) {
    accept_loop(listener, move |stream, _| {
        serve(stream, name.clone(), stop.clone())
    })
    .await
}

/// Raw TCP echo accept loop (`--tcp`).
async fn run_tcp(listener: TcpListener, name: Arc<str>, stop: watch::Receiver<bool>) {
    accept_loop(listener, move |stream, peer| {
        let greeting = format!("{name}\n");
        let stop = stop.clone();
        async move {
            let _ = stream.set_nodelay(true);
            if let Err(e) = echo_stream(stream, greeting.as_bytes(), stop).await {
                eprintln!("switchyard-echo: tcp {peer}: {e}");
            }
        }
    })
    .await
}

/// TLS echo accept loop (`--tls`).
async fn run_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    name: Arc<str>,
    stop: watch::Receiver<bool>,
) {
    accept_loop(listener, move |stream, peer| {
        let acceptor = acceptor.clone();
        let name = name.clone();
        let stop = stop.clone();
        async move {
            let _ = stream.set_nodelay(true);
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        eprintln!("switchyard-echo: tls {peer}: handshake: {e}");
                        return;
                    }
                    Err(_) => {
                        eprintln!("switchyard-echo: tls {peer}: handshake timed out");
                        return;
                    }
                };
            let sni = tls.get_ref().1.server_name().unwrap_or("-").to_string();
            let greeting = format!("{name} sni={sni}\n");
            if let Err(e) = echo_stream(tls, greeting.as_bytes(), stop).await {
                eprintln!("switchyard-echo: tls {peer}: {e}");
            }
        }
    })
    .await
}

/// Writes `greeting`, then echoes every byte read until the peer closes
/// its sending side (or `stop` turns true), then closes.
async fn echo_stream<S>(
    mut stream: S,
    greeting: &[u8],
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(greeting).await?;
    stream.flush().await?;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => r?,
            _ = stop.wait_for(|v| *v) => break,
        };
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        stream.flush().await?;
    }
    stream.shutdown().await
}

/// UDP echo loop (`--udp`): answers each datagram with `<name>:<datagram>`.
async fn run_udp(socket: UdpSocket, name: Arc<str>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut reply = Vec::with_capacity(name.len() + 1 + buf.len());
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("switchyard-echo: udp recv: {e}");
                // ICMP-induced errors are per-packet; anything else: back off.
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
                ) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                continue;
            }
        };
        reply.clear();
        reply.extend_from_slice(name.as_bytes());
        reply.push(b':');
        reply.extend_from_slice(&buf[..n]);
        if let Err(e) = socket.send_to(&reply, peer).await {
            eprintln!("switchyard-echo: udp send to {peer}: {e}");
        }
    }
}

/// Serves one connection (HTTP/1.1 or h2c, detected); finishes in-flight
/// requests and closes when `stop` turns true.
async fn serve(
    stream: tokio::net::TcpStream,
    name: Arc<str>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // The address this connection arrived on (also right for wildcard binds).
    let Ok(local) = stream.local_addr() else {
        return;
    };
    serve_io(stream, local, name, stop, Vec::new()).await;
}

/// Serves HTTP on one connection (any byte stream), adding `extra`
/// headers to every response.
pub(crate) async fn serve_io<S>(
    stream: S,
    local: SocketAddr,
    name: Arc<str>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    extra: Vec<(&'static str, String)>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let (mut resp, delay) = script::answer(&name, local, &req)
            .unwrap_or_else(|| (answer(&name, local, &req), None));
        for (k, v) in &extra {
            if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
                resp.headers_mut().insert(*k, v);
            }
        }
        async move { Ok::<_, Infallible>(script::after(delay, resp).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let stopped = async {
        let _ = stop.wait_for(|v| *v).await;
    };
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "127.0.0.1:0";
    const T: Duration = Duration::from_secs(5);

    async fn within<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(T, f).await.expect("timed out")
    }

    /// Reads one `\n`-terminated line byte by byte (no over-read).
    async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> String {
        let mut line = Vec::new();
        loop {
            let b = within(s.read_u8()).await.expect("read line");
            line.push(b);
            if b == b'\n' {
                return String::from_utf8(line).expect("utf-8 line");
            }
        }
    }

    /// Sends some bytes, checks they come back, half-closes, and checks
    /// the server closes too.
    async fn check_echo<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
        for msg in [&b"hello"[..], b"\x00\xffbinary\n", &[b'x'; 40_000]] {
            within(s.write_all(msg)).await.expect("write");
            within(s.flush()).await.expect("flush");
            let mut got = vec![0u8; msg.len()];
            within(s.read_exact(&mut got)).await.expect("read echo");
            assert_eq!(got, msg);
        }
        within(s.shutdown()).await.expect("shutdown");
        let mut rest = Vec::new();
        within(s.read_to_end(&mut rest)).await.expect("read to end");
        assert!(rest.is_empty(), "unexpected trailing bytes: {rest:?}");
    }

    #[test]
    fn args_need_some_mode() {
        assert!(Args::try_parse_from(["echo"]).is_err());
        assert!(Args::try_parse_from(["echo", "--name", "a"]).is_err());
        let a = Args::try_parse_from(["echo", "--listen", "127.0.0.1:1"]).expect("listen");
        assert_eq!(a.listen.len(), 1);
        let a = Args::try_parse_from(["echo", "--udp", "127.0.0.1:1", "--udp", "[::1]:2"])
            .expect("udp only");
        assert_eq!(a.udp.len(), 2);
        assert!(a.listen.is_empty());
        assert!(
            Args::try_parse_from(["echo", "--tcp", "127.0.0.1:1", "--listen", "[::]:2"]).is_ok()
        );
        // --tls needs both files; files need --tls.
        assert!(Args::try_parse_from(["echo", "--tls", "127.0.0.1:1"]).is_err());
        assert!(Args::try_parse_from(["echo", "--tls", "127.0.0.1:1", "--tls-cert", "c"]).is_err());
        assert!(Args::try_parse_from([
            "echo",
            "--tls",
            "127.0.0.1:1",
            "--tls-cert",
            "c",
            "--tls-key",
            "k"
        ])
        .is_ok());
        assert!(Args::try_parse_from([
            "echo",
            "--tcp",
            "127.0.0.1:1",
            "--tls-cert",
            "c",
            "--tls-key",
            "k"
        ])
        .is_err());
        // --https takes the same files; alone it is a mode.
        assert!(Args::try_parse_from(["echo", "--https", "127.0.0.1:1"]).is_err());
        let a = Args::try_parse_from([
            "echo",
            "--https",
            "127.0.0.1:1",
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--https-client-ca",
            "ca",
        ])
        .expect("https");
        assert_eq!(a.https.len(), 1);
        assert!(Args::try_parse_from([
            "echo",
            "--listen",
            "127.0.0.1:1",
            "--https-client-ca",
            "ca"
        ])
        .is_err());
    }

    #[tokio::test]
    async fn http_still_answers() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let listener = TcpListener::bind(LOCAL).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(run_http(listener, "h1".into(), stop_rx));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            b"GET /status/201?x=1 HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write");
        let mut resp = String::new();
        within(s.read_to_string(&mut resp)).await.expect("read");
        assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
        assert!(resp.contains("x-echo-name: h1"), "{resp}");
        let body = resp.split("\r\n\r\n").nth(1).expect("body");
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["name"], "h1");
        assert_eq!(v["host"], "example.test");
        assert_eq!(v["query"], "x=1");
    }

    #[tokio::test]
    async fn tcp_greets_then_echoes() {
        let (_stop_tx, stop_rx) = watch::channel(false);
        let listener = TcpListener::bind(LOCAL).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(run_tcp(listener, "t1".into(), stop_rx));
        for _ in 0..2 {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            assert_eq!(read_line(&mut s).await, "t1\n");
            check_echo(&mut s).await;
        }
    }

    #[tokio::test]
    async fn tcp_closes_on_stop() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let listener = TcpListener::bind(LOCAL).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accept = tokio::spawn(run_tcp(listener, "t2".into(), stop_rx));
        let mut s = TcpStream::connect(addr).await.expect("connect");
        assert_eq!(read_line(&mut s).await, "t2\n");
        accept.abort();
        stop_tx.send(true).expect("send stop");
        let mut rest = Vec::new();
        within(s.read_to_end(&mut rest)).await.expect("read to end");
        assert!(rest.is_empty());
        // Every connection has dropped its receiver.
        within(stop_tx.closed()).await;
    }

    #[tokio::test]
    async fn udp_prefixes_name() {
        let server = UdpSocket::bind(LOCAL).await.expect("bind");
        let addr = server.local_addr().expect("addr");
        tokio::spawn(run_udp(server, "u1".into()));
        let client = UdpSocket::bind(LOCAL).await.expect("bind client");
        client.connect(addr).await.expect("connect");
        let mut buf = vec![0u8; 2048];
        for msg in [&b"ping"[..], b"", b"\x00\x01\xfe\xff"] {
            // UDP may drop; retry a few times on loopback just in case.
            let mut got = None;
            for _ in 0..5 {
                client.send(msg).await.expect("send");
                if let Ok(r) =
                    tokio::time::timeout(Duration::from_millis(500), client.recv(&mut buf)).await
                {
                    got = Some(r.expect("recv"));
                    break;
                }
            }
            let n = got.expect("no UDP reply");
            let mut want = b"u1:".to_vec();
            want.extend_from_slice(msg);
            assert_eq!(&buf[..n], &want[..]);
        }
    }

    /// Test-only verifier: accepts any server certificate (the test checks
    /// the echo/SNI behaviour, not PKI), but still checks handshake signatures.
    #[derive(Debug)]
    struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

    impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
        fn verify_server_cert(
            &self,
            _end_entity: &rustls::pki_types::CertificateDer<'_>,
            _intermediates: &[rustls::pki_types::CertificateDer<'_>],
            _server_name: &rustls::pki_types::ServerName<'_>,
            _ocsp_response: &[u8],
            _now: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &rustls::pki_types::CertificateDer<'_>,
            dss: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// A temporary directory removed on drop.
    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Generates a self-signed P-256 cert/key with `openssl`; `None` if the
    /// `openssl` binary is not installed.
    fn self_signed(dir: &Path) -> Option<(PathBuf, PathBuf)> {
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        let out = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .arg("ec_paramgen_curve:prime256v1")
            .args(["-nodes", "-days", "1", "-subj", "/CN=echo.test", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output();
        match out {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("running openssl: {e}"),
            Ok(o) => {
                assert!(
                    o.status.success(),
                    "openssl failed: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
                Some((cert, key))
            }
        }
    }

    #[tokio::test]
    async fn tls_greets_with_sni_then_echoes() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = TempDir(std::env::temp_dir().join(format!(
            "switchyard-echo-test-{}-{nanos}",
            std::process::id()
        )));
        std::fs::create_dir_all(&dir.0).expect("temp dir");
        let Some((cert, key)) = self_signed(&dir.0) else {
            println!("skipping tls_greets_with_sni_then_echoes: openssl not installed");
            return;
        };
        let acceptor = tls_acceptor(&cert, &key).expect("acceptor");
        // Bad inputs give errors, not panics.
        assert!(tls_acceptor(&dir.0.join("missing.pem"), &key).is_err());
        assert!(tls_acceptor(&key, &key).is_err());
        assert!(tls_acceptor(&cert, &cert).is_err());

        let (_stop_tx, stop_rx) = watch::channel(false);
        let listener = TcpListener::bind(LOCAL).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(run_tls(listener, acceptor, "s1".into(), stop_rx));

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));

        // A DNS name is sent as SNI; an IP address is not.
        let cases = [
            (
                rustls::pki_types::ServerName::try_from("echo.test").expect("dns name"),
                "s1 sni=echo.test\n",
            ),
            (
                rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
                "s1 sni=-\n",
            ),
        ];
        for (server_name, want) in cases {
            let tcp = TcpStream::connect(addr).await.expect("connect");
            let mut tls = within(connector.connect(server_name, tcp))
                .await
                .expect("handshake");
            assert_eq!(read_line(&mut tls).await, want);
            check_echo(&mut tls).await;
        }

        // A plaintext client fails the handshake without taking the server down.
        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain
            .write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut rest = Vec::new();
        let _ = within(plain.read_to_end(&mut rest)).await;
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let server_name = rustls::pki_types::ServerName::try_from("again.test").expect("dns");
        let mut tls = within(connector.connect(server_name, tcp))
            .await
            .expect("handshake");
        assert_eq!(read_line(&mut tls).await, "s1 sni=again.test\n");
    }
}
