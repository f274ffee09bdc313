//! `switchyard explain`: requests in (one on the command line, or a file of
//! them), decisions out (text or JSON), against manifests (offline) or a
//! running instance's served model (live, `POST /explain` on its admin
//! port); and `--diff`, which shows the requests whose destination changes
//! between two configurations.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ir;
use crate::ir::eval::{self, ParseError, RegexCache, Request};

/// One request as `--requests` files (JSON lines) and `POST /explain`
/// carry it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Echoed back with the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// `http://`, `https://`, `tls://`, `tcp://` or `udp://` URL.
    pub url: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// `namespace/name` when several Gateways listen on the port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
}

impl RequestSpec {
    pub fn to_request(&self) -> Result<Request, ParseError> {
        let line = match &self.method {
            Some(m) => format!("{m} {}", self.url),
            None => self.url.clone(),
        };
        let mut r = Request::parse(&line)?;
        r.headers = self.headers.clone();
        if let Some(g) = &self.gateway {
            r.gateway = Some(eval::parse_gateway(g)?);
        }
        r.address = self.address.clone();
        if let Some(s) = &self.sni {
            r.sni = Some(s.clone());
        }
        Ok(r)
    }

    /// A line of a requests file: a JSON object, or `[METHOD] URL`.
    /// Blank lines and `#` comments give `None`.
    pub fn parse_line(line: &str) -> anyhow::Result<Option<RequestSpec>> {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return Ok(None);
        }
        if line.starts_with('{') {
            return Ok(Some(serde_json::from_str(line)?));
        }
        let mut words = line.split_whitespace();
        let (method, url) = match (words.next(), words.next()) {
            (Some(m), Some(u)) => (Some(m.to_string()), u.to_string()),
            (Some(u), None) => (None, u.to_string()),
            _ => return Ok(None),
        };
        Ok(Some(RequestSpec {
            method,
            url,
            ..RequestSpec::default()
        }))
    }
}

/// Reads a requests file (`-` for stdin).
pub fn read_requests(path: &std::path::Path) -> anyhow::Result<Vec<RequestSpec>> {
    let mut text = String::new();
    if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let spec = RequestSpec::parse_line(line)
            .with_context(|| format!("{}:{}", path.display(), i + 1))?;
        out.extend(spec);
    }
    Ok(out)
}

/// Evaluates each spec: the decision as JSON with `id`, or `{id, error}`.
pub fn batch(model: &ir::Model, specs: &[RequestSpec]) -> Vec<Value> {
    let re = RegexCache::default();
    specs
        .iter()
        .map(|s| {
            let answer = s
                .to_request()
                .map_err(|e| e.to_string())
                .and_then(|r| eval::evaluate_with(model, &r, &re).map_err(|e| e.to_string()));
            let mut v = match answer {
                Ok(d) => serde_json::to_value(d).unwrap_or_default(),
                Err(e) => serde_json::json!({ "error": e }),
            };
            if let (Some(obj), Some(id)) = (v.as_object_mut(), &s.id) {
                obj.insert("id".into(), id.clone());
            }
            v
        })
        .collect()
}

/// Asks a running switchyard (controller or standalone) at `addr` (its
/// admin address) to evaluate `specs` against what it serves.
pub fn live(addr: &str, specs: &[RequestSpec]) -> anyhow::Result<Vec<Value>> {
    let body = serde_json::to_vec(specs)?;
    let hostport = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut s = std::net::TcpStream::connect(&hostport)
        .with_context(|| format!("connecting to the admin API at {hostport}"))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(60)))?;
    write!(
        s,
        "POST /explain HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(&body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, payload) = text
        .split_once("\r\n\r\n")
        .context("malformed answer from the admin API")?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        anyhow::bail!("{hostport} answered {status}: {}", payload.trim());
    }
    serde_json::from_str(payload).context("decoding the admin API's answer")
}

/// Human-readable form of one answer (a decision's JSON or an error).
pub fn render_text(v: &Value) -> String {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return format!("error: {e}\n");
    }
    let d: DecisionView = match serde_json::from_value(v.clone()) {
        Ok(d) => d,
        Err(e) => return format!("error: unexpected answer: {e}\n"),
    };
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("{label:<9} {text}\n"));
    };
    let r = &d.request;
    let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    line(
        "Request",
        format!(
            "{} {} {} port {}{}",
            r.method,
            r.host,
            r.path,
            r.port,
            if headers.is_empty() {
                String::new()
            } else {
                format!(" [{}]", headers.join("; "))
            }
        ),
    );
    line(
        "Gateway",
        match (&d.gateway, &d.address) {
            (Some(g), Some(a)) => format!("{g} ({a})"),
            (Some(g), None) => g.clone(),
            _ => "none".into(),
        },
    );
    if let Some(l) = &d.listener {
        let name = l.name.clone().unwrap_or_else(|| "-".into());
        let host = l.hostname.clone().unwrap_or_else(|| "any hostname".into());
        line("Listener", format!("{name} ({host}): {}", l.why));
    }
    match (&d.route, &d.rule) {
        (Some(rt), Some(ru)) => {
            let name = ru
                .name
                .as_ref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            line(
                "Route",
                format!(
                    "{} {}/{} rule {}{name} match {}",
                    rt.kind, rt.namespace, rt.name, ru.index, ru.match_index
                ),
            );
        }
        (Some(rt), None) => line("Route", format!("{} {}/{}", rt.kind, rt.namespace, rt.name)),
        _ => line("Route", "none".into()),
    }
    if !d.matched.is_empty() {
        line("Matched", d.matched.join("; "));
    }
    let answer = if let Some(why) = &d.refused {
        format!("connection refused: {why}")
    } else if let Some(s) = d.status {
        match &d.location {
            Some(l) => format!("the Gateway answers {s}, Location {l}"),
            None => format!("the Gateway answers {s}"),
        }
    } else {
        "forwarded".into()
    };
    line("Answer", answer);
    for b in &d.backends {
        let port = b.port.map(|p| format!(":{p}")).unwrap_or_default();
        let state = if b.resolved {
            format!("{} endpoints", b.endpoints)
        } else {
            format!("UNRESOLVED: {}", b.problem.clone().unwrap_or_default())
        };
        let grant = b
            .reference_grant
            .as_ref()
            .map(|g| format!(", allowed by ReferenceGrant {g}"))
            .unwrap_or_default();
        line(
            "Backend",
            format!(
                "{} {}/{}{port} weight {}: {state}{grant}",
                b.kind, b.namespace, b.name, b.weight
            ),
        );
    }
    for f in &d.filters {
        line("Filter", format!("{}: {}", f.kind, f.detail));
    }
    for l in &d.lost {
        let name = l
            .rule_name
            .as_ref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        line(
            "Lost",
            format!(
                "{} {}/{} rule {}{name}: {}",
                l.route.kind, l.route.namespace, l.route.name, l.rule, l.reason
            ),
        );
    }
    for n in &d.notes {
        line("Note", n.clone());
    }
    out
}

/// The JSON schema read back (live answers arrive as JSON).
#[derive(Deserialize)]
struct DecisionView {
    request: RequestView,
    gateway: Option<String>,
    address: Option<String>,
    listener: Option<ListenerView>,
    route: Option<RouteView>,
    rule: Option<RuleView>,
    matched: Vec<String>,
    status: Option<u32>,
    location: Option<String>,
    refused: Option<String>,
    backends: Vec<BackendView>,
    filters: Vec<FilterView>,
    lost: Vec<LostView>,
    notes: Vec<String>,
}

#[derive(Deserialize)]
struct RequestView {
    method: String,
    host: String,
    path: String,
    port: u16,
    headers: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct ListenerView {
    name: Option<String>,
    hostname: Option<String>,
    why: String,
}

#[derive(Deserialize)]
struct RouteView {
    kind: String,
    namespace: String,
    name: String,
}

#[derive(Deserialize)]
struct RuleView {
    index: usize,
    name: Option<String>,
    #[serde(rename = "match")]
    match_index: usize,
}

#[derive(Deserialize)]
struct BackendView {
    kind: String,
    namespace: String,
    name: String,
    port: Option<i32>,
    weight: u32,
    resolved: bool,
    endpoints: usize,
    reference_grant: Option<String>,
    problem: Option<String>,
}

#[derive(Deserialize)]
struct FilterView {
    #[serde(rename = "type")]
    kind: String,
    detail: String,
}

#[derive(Deserialize)]
struct LostView {
    route: RouteView,
    rule: usize,
    rule_name: Option<String>,
    reason: String,
}

/// Where a decision sends a request, for comparing two configurations: the
/// route, and the outcome (status, or backends and weights).
pub fn destination(v: &Value) -> String {
    if let Some(e) = v.get("error").and_then(Value::as_str) {
        return format!("error: {e}");
    }
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let route = match v.get("route").filter(|r| !r.is_null()) {
        // Not the rule index: inserting a rule renumbers the ones after it.
        Some(r) => format!("{} {}/{}: ", s(r, "kind"), s(r, "namespace"), s(r, "name")),
        None => String::new(),
    };
    let outcome = if let Some(r) = v.get("refused").and_then(Value::as_str) {
        format!("refused ({r})")
    } else if let Some(code) = v.get("status").and_then(Value::as_u64) {
        match v.get("location").and_then(Value::as_str) {
            Some(l) => format!("{code} → {l}"),
            None => code.to_string(),
        }
    } else {
        let backends: Vec<String> = v
            .get("backends")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|b| {
                let port = b
                    .get("port")
                    .and_then(Value::as_i64)
                    .map(|p| format!(":{p}"))
                    .unwrap_or_default();
                let weight = b.get("weight").and_then(Value::as_u64).unwrap_or(0);
                let broken = if b.get("resolved").and_then(Value::as_bool) == Some(true) {
                    ""
                } else {
                    " (500)"
                };
                format!(
                    "{}/{}{port}×{weight}{broken}",
                    s(b, "namespace"),
                    s(b, "name")
                )
            })
            .collect();
        format!("→ {}", backends.join(", "))
    };
    format!("{route}{outcome}")
}

/// Requests that exercise every match of a model: for each Gateway port,
/// virtual host and route entry, one request that satisfies the match (a
/// prefix also with a sub-path), plus one that no rule is likely to match.
pub fn samples(model: &ir::Model) -> Vec<RequestSpec> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |s: RequestSpec, out: &mut Vec<RequestSpec>| {
        if seen.insert(serde_json::to_string(&s).unwrap_or_default()) {
            out.push(s);
        }
    };
    for (key, gw) in &model.gateways {
        let gateway = Some(format!("{}/{}", key.namespace, key.name));
        for l in &gw.listeners {
            for ch in &l.chains {
                let tls = !matches!(ch.tls, ir::ChainTls::None);
                let sni = ch.server_names.first().map(|n| sample_host(n));
                let rc = match &ch.app {
                    ir::App::Http(rc) => rc,
                    ir::App::Tcp(_) | ir::App::Udp(_) => {
                        let scheme = match (l.transport, tls || !ch.server_names.is_empty()) {
                            (ir::Transport::Udp, _) => "udp",
                            (_, true) => "tls",
                            _ => "tcp",
                        };
                        let host = sni.clone().unwrap_or_else(|| l.address.clone());
                        push(
                            RequestSpec {
                                url: format!("{scheme}://{host}:{}", l.port),
                                gateway: gateway.clone(),
                                ..RequestSpec::default()
                            },
                            &mut out,
                        );
                        continue;
                    }
                };
                let scheme = if tls { "https" } else { "http" };
                for vh in &rc.virtual_hosts {
                    let host = vh
                        .domains
                        .first()
                        .map_or("any.test".into(), |d| sample_host(d));
                    let spec =
                        |method: &str, path: &str, headers: Vec<(String, String)>| RequestSpec {
                            method: Some(method.to_string()),
                            url: format!("{scheme}://{host}:{}{path}", l.port),
                            headers,
                            gateway: gateway.clone(),
                            sni: sni.clone().filter(|_| tls),
                            ..RequestSpec::default()
                        };
                    push(
                        spec("GET", "/switchyard-explain-probe", Vec::new()),
                        &mut out,
                    );
                    for r in &vh.routes {
                        for (method, path, headers) in route_samples(&r.matcher) {
                            push(spec(&method, &path, headers), &mut out);
                        }
                    }
                }
            }
        }
    }
    out
}

/// A host a virtual host domain accepts.
fn sample_host(domain: &str) -> String {
    match domain {
        "*" => "any.test".into(),
        d if d.starts_with("*.") => format!("sample{}", &d[1..]),
        d => d.to_string(),
    }
}

/// Method, path with query, and headers of a sample request.
type Sample = (String, String, Vec<(String, String)>);

/// Requests that satisfy a match (none when a regex has no literal form).
fn route_samples(m: &ir::RouteMatch) -> Vec<Sample> {
    let literal =
        |r: &str| (!r.chars().any(|c| "\\.+*?()|[]{}^$".contains(c))).then(|| r.to_string());
    let paths: Vec<String> = match &m.path {
        ir::PathMatch::Exact(p) => vec![p.clone()],
        ir::PathMatch::Prefix(p) if p == "/" => vec!["/".into(), "/sample".into()],
        ir::PathMatch::Prefix(p) => vec![p.clone(), format!("{p}/sample")],
        ir::PathMatch::Regex(r) => literal(r).into_iter().collect(),
    };
    let mut headers = Vec::new();
    for h in &m.headers {
        match &h.value {
            ir::StringMatch::Exact(v) => headers.push((h.name.clone(), v.clone())),
            ir::StringMatch::Regex(r) => match literal(r) {
                Some(v) => headers.push((h.name.clone(), v)),
                None => return Vec::new(),
            },
        }
    }
    let mut query = Vec::new();
    for q in &m.query_params {
        match &q.value {
            ir::StringMatch::Exact(v) => query.push(format!("{}={}", q.name, v)),
            ir::StringMatch::Regex(r) => match literal(r) {
                Some(v) => query.push(format!("{}={v}", q.name)),
                None => return Vec::new(),
            },
        }
    }
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    };
    let method = m.method.clone().unwrap_or_else(|| "GET".into());
    paths
        .into_iter()
        .map(|p| (method.clone(), format!("{p}{query}"), headers.clone()))
        .collect()
}

/// One request whose destination differs between two configurations.
#[derive(Debug, PartialEq, Serialize)]
pub struct Change {
    pub request: RequestSpec,
    pub before: String,
    pub after: String,
}

/// The requests (given, or sampled from both models) whose destination
/// changes from `old` to `new`.
pub fn diff(old: &ir::Model, new: &ir::Model, given: Option<Vec<RequestSpec>>) -> Vec<Change> {
    let specs = given.unwrap_or_else(|| {
        let mut all = samples(old);
        let known: BTreeSet<String> = all
            .iter()
            .map(|s| serde_json::to_string(s).unwrap_or_default())
            .collect();
        all.extend(
            samples(new)
                .into_iter()
                .filter(|s| !known.contains(&serde_json::to_string(s).unwrap_or_default())),
        );
        all
    });
    let before = batch(old, &specs);
    let after = batch(new, &specs);
    specs
        .into_iter()
        .zip(before.iter().zip(&after))
        .filter_map(|(request, (b, a))| {
            let (before, after) = (destination(b), destination(a));
            (before != after).then_some(Change {
                request,
                before,
                after,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
