//! `switchyard-echo`: a small HTTP/1.1 + h2c backend for examples, tests and
//! benchmarks. Every request gets a JSON body naming this backend and echoing
//! what it received; `/status/NNN` answers with that status code.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Parser)]
#[command(
    name = "switchyard-echo",
    about = "Echo backend: answers JSON naming itself and echoing the request"
)]
struct Args {
    /// Address to listen on (repeatable).
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name: Arc<str> = args.name.unwrap_or_else(default_name).into();
    // Every connection holds a receiver; `stop_tx.closed()` resolves once
    // all of them have finished (graceful drain on SIGTERM / Ctrl-C).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut accept_loops = tokio::task::JoinSet::new();
    for addr in args.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding {addr}: {e}"))?;
        eprintln!(
            "switchyard-echo {name} listening on {}",
            listener.local_addr()?
        );
        let name = name.clone();
        let stop_rx = stop_rx.clone();
        accept_loops.spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        eprintln!("switchyard-echo: accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                tokio::spawn(serve(stream, name.clone(), stop_rx.clone()));
            }
        });
    }
    drop(stop_rx);
    tokio::select! {
        _ = accept_loops.join_next() => {}
        _ = switchyard::admin::shutdown_signal() => {}
    }
    accept_loops.abort_all();
    while accept_loops.join_next().await.is_some() {}
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stop_tx.closed()).await;
    Ok(())
}

/// Serves one connection (HTTP/1.1 or h2c, detected); finishes in-flight
/// requests and closes when `stop` turns true.
async fn serve(
    stream: tokio::net::TcpStream,
    name: Arc<str>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    // The address this connection arrived on (also right for wildcard binds).
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let resp = answer(&name, local, &req);
        async move { Ok::<_, Infallible>(resp) }
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
