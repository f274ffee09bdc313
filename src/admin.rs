//! Switchyard's own HTTP endpoint: health, Prometheus metrics and debug views.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Supplies the debug views (JSON) at request time.
pub trait DebugSource: Send + Sync + 'static {
    fn snapshot_json(&self) -> serde_json::Value;
    fn nodes_json(&self) -> serde_json::Value;
    fn ready(&self) -> bool;
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    source: Arc<dyn DebugSource>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            r = listener.accept() => r?,
            _ = &mut shutdown => return Ok(()),
        };
        let source = source.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let source = source.clone();
                async move {
                    let pretty =
                        |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
                    let resp = match req.uri().path() {
                        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
                        "/readyz" if source.ready() => {
                            respond(StatusCode::OK, "text/plain", "ready\n".into())
                        }
                        "/readyz" => respond(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            "not ready\n".into(),
                        ),
                        "/metrics" => respond(
                            StatusCode::OK,
                            "text/plain; version=0.0.4",
                            crate::metrics::render(),
                        ),
                        "/debug/snapshot" => respond(
                            StatusCode::OK,
                            "application/json",
                            pretty(source.snapshot_json()),
                        ),
                        "/debug/nodes" => respond(
                            StatusCode::OK,
                            "application/json",
                            pretty(source.nodes_json()),
                        ),
                        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Resolves on SIGINT or SIGTERM (Kubernetes stops Pods with SIGTERM).
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
