//! The kubelet's HTTPS endpoint (port 10250 by default): what the API server
//! calls for the pods/log subresource (`kubectl logs`). Only
//! `GET /containerLogs/{namespace}/{pod}/{container}` and `/healthz` are
//! served; exec, attach, port-forward, metrics and the rest answer 404.
//!
//! With a client CA, every client must present a certificate it signed (the
//! API server's `--kubelet-client-certificate`); there is no finer
//! authorization (a real kubelet asks the API server with a
//! SubjectAccessReview).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::jiff::Timestamp;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{info, warn};

use crate::logs::{self, LogOptions, LogState};

type Body = BoxBody<Bytes, Infallible>;

/// How often a followed log is polled for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

pub fn tls_acceptor(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> anyhow::Result<TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading certificates from {}: {e}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading the private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| anyhow::anyhow!("reading {}: {e}", ca.display()))?;
                roots.add(c).context("client CA")?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .context("client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("serving certificate and key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until the process exits.
pub async fn serve(listener: TcpListener, acceptor: TlsAcceptor, state: Arc<LogState>) {
    if let Ok(a) = listener.local_addr() {
        info!(address = %a, "serving container logs over HTTPS");
    }
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("kubelet server: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        warn!(%peer, "kubelet server: TLS handshake: {e}");
                        return;
                    }
                    Err(_) => return,
                };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(req, &state, peer).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into())).boxed());
    *r.status_mut() = status;
    r.headers_mut()
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r
}

async fn handle<B>(req: Request<B>, state: &Arc<LogState>, peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if req.method() != hyper::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET is served\n");
    }
    if path == "/healthz" {
        return text(StatusCode::OK, "ok");
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["containerLogs", ns, pod, container] = parts.as_slice() else {
        return text(
            StatusCode::NOT_FOUND,
            format!("{path}: not served by the process kubelet\n"),
        );
    };
    let opts = match LogOptions::parse(&query, Timestamp::now()) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    tracing::debug!(%peer, ns, pod, container, ?opts, "containerLogs");
    let Some(dir) = state.pod_dir(&format!("{ns}/{pod}")) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {ns}/{pod} not found on this node\n"),
        );
    };
    let files = logs::log_files(&dir, container);
    let file = if opts.previous {
        match files.len() {
            n if n >= 2 => files[n - 2].clone(),
            _ => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "previous terminated container \"{container}\" in pod \"{pod}\" not found\n"
                ),
                )
            }
        }
    } else {
        match files.last() {
            Some(f) => f.clone(),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                    "container \"{container}\" in pod \"{pod}\" is waiting to start: no logs yet\n"
                ),
                )
            }
        }
    };
    let data = match tokio::fs::read(&file).await {
        Ok(d) => d,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}\n", file.display()),
            )
        }
    };
    let end = logs::complete(&data);
    let start = opts.tail.map_or(0, |n| logs::tail_start(&data[..end], n));
    let mut budget = opts.limit;
    let first = logs::render(&data[start..end], &opts, &mut budget);
    // Follow the current run only while it still writes (as the kubelet
    // does: the stream ends when the container exits).
    if !opts.follow || opts.previous || !state.is_open(&file) || budget == Some(0) {
        return ok(Full::new(Bytes::from(first)).boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    let state = state.clone();
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Frame::data(Bytes::from(first)))).await.is_err() {
            return;
        }
        let _ = follow(&file, end as u64, &opts, budget, &state, &tx).await;
    });
    ok(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
}

fn ok(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut()
        .insert("content-type", "text/plain; charset=utf-8".parse().unwrap());
    r
}

/// Sends what is appended to `file` from `offset` on, until the container
/// stops writing it, the budget is spent or the client goes away.
async fn follow(
    file: &Path,
    mut offset: u64,
    opts: &LogOptions,
    mut budget: Option<u64>,
    state: &LogState,
    tx: &tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
) -> std::io::Result<()> {
    let mut f = tokio::fs::File::open(file).await?;
    let mut pending = Vec::new();
    loop {
        // Read the "still open" flag first: whatever was written before the
        // writer closed is then read below.
        let open = state.is_open(file);
        f.seek(std::io::SeekFrom::Start(offset)).await?;
        let mut chunk = Vec::new();
        f.read_to_end(&mut chunk).await?;
        offset += chunk.len() as u64;
        pending.extend(chunk);
        let end = logs::complete(&pending);
        if end > 0 {
            let out = logs::render(&pending[..end], opts, &mut budget);
            pending.drain(..end);
            if !out.is_empty() && tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                return Ok(());
            }
        }
        if !open || budget == Some(0) {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
}
