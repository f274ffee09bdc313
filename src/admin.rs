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
    /// The model being served, for `POST /explain`.
    fn model(&self) -> Option<Arc<crate::ir::Model>> {
        None
    }
}

/// Largest `POST /explain` body accepted.
const MAX_EXPLAIN_BODY: usize = 4 << 20;

/// `POST /explain`: a JSON array of request specs → a JSON array of decisions.
async fn explain(
    source: &dyn DebugSource,
    req: Request<hyper::body::Incoming>,
) -> Response<Full<Bytes>> {
    use http_body_util::BodyExt;
    if req.method() != hyper::Method::POST {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "POST a JSON array of requests\n".into(),
        );
    }
    let body = match http_body_util::Limited::new(req.into_body(), MAX_EXPLAIN_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain",
                format!("reading the body: {e}\n"),
            )
        }
    };
    let specs: Vec<crate::cli::explain::RequestSpec> = match serde_json::from_slice(&body) {
        Ok(s) => s,
        Err(e) => {
            return respond(
                StatusCode::BAD_REQUEST,
                "text/plain",
                format!("expected a JSON array of requests: {e}\n"),
            )
        }
    };
    let Some(model) = source.model() else {
        return respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "nothing translated yet\n".into(),
        );
    };
    let answers = crate::cli::explain::batch(&model, &specs);
    respond(
        StatusCode::OK,
        "application/json",
        serde_json::to_string(&answers).unwrap_or_default(),
    )
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
                    if req.uri().path() == "/explain" {
                        return Ok::<_, Infallible>(explain(&*source, req).await);
                    }
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
