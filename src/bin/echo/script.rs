//! Scripted behaviour of the HTTP echo for end-to-end tests of retries and
//! mirroring (query parameters of any path):
//!
//! * `key=K`: the request is counted under `K` (per process).
//! * `key=K&fail=N[&code=C][&delay_ms=D]`: the first `N` requests counted
//!   under `K` are answered with status `C` (default 503), each after `D`
//!   milliseconds; later ones are echoed as usual.
//! * `GET /__echo/count?key=K`: `{"key": K, "count": n}`, how many requests
//!   were counted under `K` (this one is not).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

fn counts() -> &'static Mutex<HashMap<String, u64>> {
    static COUNTS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    COUNTS.get_or_init(Default::default)
}

fn json(status: StatusCode, name: &str, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo-name", name)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The scripted answer to `req` and how long to wait before sending it, or
/// `None` when the request is answered as usual (after being counted).
pub(crate) fn answer<B>(
    name: &str,
    _local: SocketAddr,
    req: &Request<B>,
) -> Option<(Response<Full<Bytes>>, Option<Duration>)> {
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| {
            // Test keys and numbers: no percent-decoding needed.
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let key = query.get("key")?.clone();
    let mut counts = counts().lock().unwrap_or_else(|e| e.into_inner());
    if req.uri().path() == "/__echo/count" {
        let n = counts.get(&key).copied().unwrap_or(0);
        return Some((
            json(
                StatusCode::OK,
                name,
                serde_json::json!({"key": key, "count": n}),
            ),
            None,
        ));
    }
    let n = counts.entry(key.clone()).or_insert(0);
    *n += 1;
    let fail: u64 = query.get("fail").and_then(|f| f.parse().ok()).unwrap_or(0);
    if *n > fail {
        return None;
    }
    let code = query
        .get("code")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let delay = query
        .get("delay_ms")
        .and_then(|d| d.parse::<u64>().ok())
        .map(Duration::from_millis);
    let body =
        serde_json::json!({"name": name, "key": key, "attempt": *n, "failed": code.as_u16()});
    Some((json(code, name, body), delay))
}

/// `resp`, once `delay` has passed.
pub(crate) async fn after<T>(delay: Option<Duration>, resp: T) -> T {
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    resp
}
