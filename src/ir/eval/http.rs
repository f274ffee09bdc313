//! An HTTP request through one route configuration: the virtual host the
//! Host selects, the first route that matches, what it does, and the
//! matches that lost.

use std::collections::BTreeSet;

use super::decision::{backends, Decision, FilterStep, Lost, RouteRef, RuleRef};
use super::matching::{self, route_holds, Seen};
use super::request::{Protocol, Request};
use super::RegexCache;
use crate::ir;

pub(super) fn evaluate(
    gw: Option<&ir::Gateway>,
    rc: &ir::RouteConfig,
    req: &Request,
    re: &RegexCache,
    d: &mut Decision,
) {
    let host = matching::host_for_matching(&req.host);
    let Some(vh) = matching::select_vhost(rc, &host) else {
        d.status = Some(404);
        d.notes.push(format!(
            "no listener or route hostname on this port matches Host {host}"
        ));
        return;
    };
    d.virtual_host = vh.domains.first().cloned();
    if vh.misdirected {
        misdirected(vh, &host, d);
        return;
    }
    if let (Some(l), Some((name, hostname))) = (d.listener.as_mut(), &vh.listener) {
        l.name = Some(name.clone());
        l.hostname = hostname.clone();
        if l.tls.is_none() {
            l.why = match hostname {
                Some(h) => format!(
                    "Host {host} matches listener hostname {h}, the most specific on port {}",
                    l.port
                ),
                None => format!(
                    "no listener on port {} has a hostname matching Host {host}; this one (no hostname) takes it",
                    l.port
                ),
            };
        }
    }
    let (path, query) = matching::split_path(&req.path);
    let sent = req.path.split(['?', '#']).next().unwrap_or("");
    if path != sent {
        d.notes.push(format!(
            "Envoy normalizes the path {sent} to {path} before routing"
        ));
    }
    let seen = Seen {
        method: &req.method,
        path: &path,
        query: query.as_deref(),
        headers: &req.headers,
    };
    let holds = |r: &ir::Route, d: &mut Decision| match route_holds(&r.matcher, &seen, re) {
        Ok(held) => held,
        Err(e) => {
            d.notes.push(format!("{}: {e}", entry_name(r)));
            None
        }
    };
    let mut winner: Option<(usize, &ir::Route)> = None;
    let mut losers = Vec::new();
    for (i, r) in vh.routes.iter().enumerate() {
        let Some(held) = holds(r, d) else {
            continue;
        };
        if winner.is_none() {
            winner = Some((i, r));
            d.matched = held;
        } else {
            losers.push((i, &**r));
        }
    }
    let Some((wi, w)) = winner else {
        d.status = Some(404);
        d.notes.push(format!(
            "no rule matches among the {} route entries for {}",
            vh.routes.len(),
            d.virtual_host.as_deref().unwrap_or("")
        ));
        lost_elsewhere(rc, vh, &host, None, holds, d);
        return;
    };
    d.route = Some(RouteRef::of(w.source.kind, &w.source.route));
    d.rule = Some(RuleRef {
        index: w.source.rule,
        name: w.source.rule_name.as_deref().map(str::to_string),
        match_index: w.source.match_index,
    });
    let mut seen_rules = BTreeSet::from([rule_key(w)]);
    for (li, l) in losers {
        if seen_rules.insert(rule_key(l)) {
            d.lost.push(lost(l, lost_reason(vh, (wi, w), (li, l))));
        }
    }
    lost_elsewhere(rc, vh, &host, Some(&mut seen_rules), holds, d);
    act(gw, w, req, &path, query.as_deref(), d);
}

/// The Host belongs to another HTTPS listener of the port than the one the
/// connection's SNI chose: Envoy answers 421 Misdirected Request.
fn misdirected(vh: &ir::VirtualHost, host: &str, d: &mut Decision) {
    d.status = Some(421);
    let owner = match &vh.listener {
        Some((name, Some(h))) => format!("listener {name} (hostname {h})"),
        Some((name, None)) => format!("listener {name} (no hostname)"),
        None => "another listener".to_string(),
    };
    let chosen = d
        .listener
        .as_ref()
        .map(|l| match (&l.name, &l.hostname) {
            (Some(n), Some(h)) => format!("listener {n} (hostname {h})"),
            (Some(n), None) => format!("listener {n} (no hostname)"),
            _ => "another listener".to_string(),
        })
        .unwrap_or_else(|| "another listener".to_string());
    d.notes.push(format!(
        "misdirected: Host {host} belongs to {owner}, but the TLS server name (SNI) chose {chosen}; the Gateway answers 421 so the client retries on a connection of its own"
    ));
}

fn rule_key(r: &ir::Route) -> (&'static str, &crate::inputs::ObjKey, usize) {
    (r.source.kind, &r.source.route, r.source.rule)
}

fn entry_name(r: &ir::Route) -> String {
    format!(
        "{} {}/{} rule {} match {}",
        r.source.kind,
        r.source.route.namespace,
        r.source.route.name,
        r.source.rule,
        r.source.match_index
    )
}

fn lost(r: &ir::Route, reason: String) -> Lost {
    Lost {
        route: RouteRef::of(r.source.kind, &r.source.route),
        rule: r.source.rule,
        rule_name: r.source.rule_name.as_deref().map(str::to_string),
        match_index: r.source.match_index,
        reason,
    }
}

/// Rules of other listeners' virtual hosts that match the request but can
/// never see it: the Host belongs to the chosen virtual host's listener.
fn lost_elsewhere<'a>(
    rc: &'a ir::RouteConfig,
    chosen: &'a ir::VirtualHost,
    host: &str,
    seen_rules: Option<&mut BTreeSet<(&'static str, &'a crate::inputs::ObjKey, usize)>>,
    mut holds: impl FnMut(&ir::Route, &mut Decision) -> Option<Vec<String>>,
    d: &mut Decision,
) {
    let mut local = BTreeSet::new();
    let seen_rules = seen_rules.unwrap_or(&mut local);
    for r in &chosen.routes {
        seen_rules.insert(rule_key(r));
    }
    let owner = |vh: &ir::VirtualHost| match &vh.listener {
        Some((name, Some(h))) => format!("listener {name} ({h})"),
        Some((name, None)) => format!("listener {name} (any hostname)"),
        None => format!("virtual host {}", vh.name),
    };
    for vh in &rc.virtual_hosts {
        if std::ptr::eq(&**vh, chosen)
            || !vh
                .domains
                .iter()
                .any(|dm| matching::domain_rank(dm, host).is_some())
        {
            continue;
        }
        for r in &vh.routes {
            if seen_rules.contains(&rule_key(r)) || holds(r, d).is_none() {
                continue;
            }
            seen_rules.insert(rule_key(r));
            let reason = format!(
                "hostname: Host {host} is served by {} (its most specific matching hostname); this rule is attached for {} of {}",
                chosen.domains.first().map_or("", |s| s.as_str()),
                vh.domains.first().map_or("", |s| s.as_str()),
                owner(vh)
            );
            d.lost.push(lost(r, reason));
        }
    }
}

/// The hostname each route of a virtual host was attached under.
fn domain_at(vh: &ir::VirtualHost, i: usize) -> &str {
    let mut end = 0;
    for (domain, n) in &vh.route_domains {
        end += n;
        if i < end {
            return domain;
        }
    }
    vh.domains.first().map_or("", |s| s.as_str())
}

/// The precedence criterion that ranked `l` after `w` in one virtual host.
pub(super) fn lost_reason(
    vh: &ir::VirtualHost,
    (wi, w): (usize, &ir::Route),
    (li, l): (usize, &ir::Route),
) -> String {
    let (dw, dl) = (domain_at(vh, wi), domain_at(vh, li));
    if dw != dl {
        return format!(
            "hostname: the winner is attached under {dw}, more specific than {dl} (hostname precedes every other criterion)"
        );
    }
    let (pw, pl) = (w.matcher.precedence(), l.matcher.precedence());
    let kind = |k: u8| match k {
        0 => "an Exact path",
        1 => "a RegularExpression path",
        _ => "a PathPrefix",
    };
    if pw.0 != pl.0 {
        return format!("path: {} ranks before {}", kind(pw.0), kind(pl.0));
    }
    if pw.1 != pl.1 {
        return format!(
            "path: the longer path wins ({} characters against {})",
            pw.1 .0, pl.1 .0
        );
    }
    if pw.2 != pl.2 {
        return "method: a match on the method ranks before one without".into();
    }
    if pw.3 != pl.3 {
        return format!(
            "headers: more header matches win ({} against {})",
            pw.3 .0, pl.3 .0
        );
    }
    if pw.4 != pl.4 {
        return format!(
            "query parameters: more query parameter matches win ({} against {})",
            pw.4 .0, pl.4 .0
        );
    }
    let (aw, al) = (&w.source.age, &l.source.age);
    if w.source.route != l.source.route || w.source.kind != l.source.kind {
        let name = |r: &ir::Route| {
            format!(
                "{} {}/{}",
                r.source.kind, r.source.route.namespace, r.source.route.name
            )
        };
        return if aw.0 != al.0 && !aw.0.is_empty() {
            format!(
                "age: equally specific; {} is older (created {} against {})",
                name(w),
                aw.0,
                if al.0.is_empty() { "unset" } else { &al.0 }
            )
        } else {
            format!(
                "name: equally specific and created at the same time; {} sorts first by namespace/name",
                name(w)
            )
        };
    }
    format!(
        "rule order: equally specific; rule {} comes before rule {} in the same route",
        w.source.rule, l.source.rule
    )
}

/// What the winning rule does.
fn act(
    gw: Option<&ir::Gateway>,
    w: &ir::Route,
    req: &Request,
    path: &str,
    query: Option<&str>,
    d: &mut Decision,
) {
    header_steps("RequestHeaderModifier", &w.request_headers, &mut d.filters);
    match &*w.action {
        ir::RouteAction::Forward(f) => {
            if let Some(rw) = &f.rewrite {
                if let Some(h) = &rw.hostname {
                    d.filters
                        .push(step("URLRewrite", format!("hostname → {h}")));
                }
                if let Some(p) = &rw.path {
                    d.filters.push(step(
                        "URLRewrite",
                        format!("path {path} → {}", rewritten(p, path)),
                    ));
                }
            }
            d.backends = backends(gw, &f.backends);
            for (b, state) in f.backends.iter().zip(&d.backends) {
                let who = format!("backend {}/{}", state.namespace, state.name);
                if !b.request_headers.is_empty() {
                    header_steps(
                        &format!("RequestHeaderModifier ({who})"),
                        &b.request_headers,
                        &mut d.filters,
                    );
                }
                if !b.response_headers.is_empty() {
                    header_steps(
                        &format!("ResponseHeaderModifier ({who})"),
                        &b.response_headers,
                        &mut d.filters,
                    );
                }
            }
            let total: u64 = f.backends.iter().map(|b| u64::from(b.weight)).sum();
            let broken: u64 = f
                .backends
                .iter()
                .filter(|b| b.cluster.is_none())
                .map(|b| u64::from(b.weight))
                .sum();
            if f.backends.is_empty() {
                d.status = Some(500);
                d.notes.push(
                    "the rule has no backend with a weight above 0: the Gateway answers 500".into(),
                );
            } else if broken == total {
                d.status = Some(500);
                d.notes
                    .push("no backend of the rule resolves: the Gateway answers 500".into());
            } else if broken > 0 {
                d.notes.push(format!(
                    "{broken} of {total} weight units go to unresolved backends: that share is answered 500"
                ));
            }
            for s in d.backends.iter().filter(|s| s.resolved && s.endpoints == 0) {
                d.notes.push(format!(
                    "backend {}/{} has no ready endpoints: its share gets 503 from Envoy",
                    s.namespace, s.name
                ));
            }
            for s in &d.backends {
                if let Some(t) = &s.tls {
                    d.notes
                        .push(format!("backend {}/{}: {t}", s.namespace, s.name));
                }
            }
            if let Some(t) = f.timeouts.request.filter(|t| !t.is_zero()) {
                d.filters
                    .push(step("Timeouts", format!("request {}s", t.as_secs_f64())));
            }
            if let Some(t) = f.timeouts.backend_request.filter(|t| !t.is_zero()) {
                d.filters.push(step(
                    "Timeouts",
                    format!("backendRequest {}s", t.as_secs_f64()),
                ));
            }
            policy_steps(f, &mut d.filters);
        }
        ir::RouteAction::Redirect(r) => {
            // Envoy's RedirectAction: a hostname replaces the Host (port
            // included); without one the Host keeps its port unless a port is
            // set, or the scheme changes from one whose default port it is.
            let from = if req.protocol == Protocol::Https {
                "https"
            } else {
                "http"
            };
            let scheme = r.scheme.clone().unwrap_or_else(|| from.to_string());
            let host = match (&r.hostname, super::request::split_host_port(&req.host)) {
                (Some(h), _) => h.clone(),
                (None, (h, Some(p)))
                    if r.port.is_some()
                        || (scheme != from
                            && ((from, p) == ("http", "80") || (from, p) == ("https", "443"))) =>
                {
                    h.to_string()
                }
                (None, _) => req.host.clone(),
            };
            let port = r.port.map(|p| format!(":{p}")).unwrap_or_default();
            let new_path = r
                .path
                .as_ref()
                .map_or(path.to_string(), |p| rewritten(p, path));
            let query = query.map(|q| format!("?{q}")).unwrap_or_default();
            let location = format!("{scheme}://{host}{port}{new_path}{query}");
            d.filters.push(step(
                "RequestRedirect",
                format!("{} → {location}", r.status_code),
            ));
            d.status = Some(r.status_code);
            d.location = Some(location);
        }
        ir::RouteAction::Direct { status, body } => {
            d.status = Some(*status);
            if !body.is_empty() {
                d.notes
                    .push(format!("the Gateway answers {status}: {body}"));
            }
        }
    }
    header_steps(
        "ResponseHeaderModifier",
        &w.response_headers,
        &mut d.filters,
    );
}

/// Retry, RequestMirror, CORS and SessionPersistence of a forwarding rule.
fn policy_steps(f: &ir::Forward, out: &mut Vec<FilterStep>) {
    if let Some(r) = &f.retry {
        let codes = if r.codes.is_empty() {
            "connection errors only".to_string()
        } else {
            let c: Vec<String> = r.codes.iter().map(u32::to_string).collect();
            format!("on {} and connection errors", c.join(","))
        };
        let attempts = r
            .attempts
            .map_or("1 (default)".to_string(), |a| a.to_string());
        let backoff = r.backoff.map_or("Envoy's 25ms".to_string(), |b| {
            format!("{}ms", b.as_millis())
        });
        out.push(step(
            "Retry",
            format!("attempts {attempts} {codes}, backoff {backoff}"),
        ));
    }
    for m in &f.mirrors {
        let o = &m.origin;
        let port = o.port.map(|p| format!(":{p}")).unwrap_or_default();
        let share = if m.denominator == 100 {
            format!("{}%", m.numerator)
        } else {
            format!("{}/{}", m.numerator, m.denominator)
        };
        let detail = match (&m.cluster, &o.problem) {
            (Some(_), _) => format!("→ {}/{}{port} {share}", o.namespace, o.name),
            (None, Some((reason, msg))) => format!(
                "→ {}/{}{port}: not mirrored, {reason}: {msg}",
                o.namespace, o.name
            ),
            (None, None) => format!("→ {}/{}{port}: not mirrored", o.namespace, o.name),
        };
        out.push(step("RequestMirror", detail));
    }
    if let Some(c) = &f.cors {
        let origins: Vec<String> = c
            .allow_origins
            .iter()
            .map(|o| match o {
                ir::CorsOrigin::Any => "*".to_string(),
                ir::CorsOrigin::Origin {
                    scheme,
                    host,
                    wildcard,
                    port,
                } => format!(
                    "{scheme}://{}{host}{}",
                    if *wildcard { "*" } else { "" },
                    port.map(|p| format!(":{p}")).unwrap_or_default()
                ),
            })
            .collect();
        let mut detail = format!("allowOrigins {}", origins.join(","));
        for (name, v) in [
            ("allowMethods", &c.allow_methods),
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            if !v.is_empty() {
                detail.push_str(&format!(" {name} {}", v.join(",")));
            }
        }
        detail.push_str(&format!(
            " maxAge {} allowCredentials {}",
            c.max_age, c.allow_credentials
        ));
        out.push(step("CORS", detail));
    }
    if let Some(s) = &f.session {
        let detail = match &s.kind {
            ir::SessionKind::Cookie { max_age: None } => {
                format!("cookie {} (session cookie, no expiry)", s.name)
            }
            ir::SessionKind::Cookie { max_age: Some(d) } => {
                format!("cookie {} (permanent, Max-Age {}s)", s.name, d.as_secs())
            }
            ir::SessionKind::Header => format!("header {}", s.name),
        };
        let split = s
            .cluster
            .as_ref()
            .map(|c| format!("; the split is one cluster {c} (a locality per backend, same weights), so a session holds across it"))
            .unwrap_or_default();
        out.push(step(
            "SessionPersistence",
            format!(
                "{detail}: a request carrying it goes to the endpoint that set it, \
                 or to another (with a new one) when that endpoint is gone{split}"
            ),
        ));
    }
}

fn step(kind: &str, detail: String) -> FilterStep {
    FilterStep {
        kind: kind.to_string(),
        detail,
    }
}

fn header_steps(kind: &str, mods: &ir::HeaderMods, out: &mut Vec<FilterStep>) {
    for (k, v) in &mods.set {
        out.push(step(kind, format!("set {k}: {v}")));
    }
    for (k, v) in &mods.add {
        out.push(step(kind, format!("add {k}: {v}")));
    }
    for k in &mods.remove {
        out.push(step(kind, format!("remove {k}")));
    }
}

/// The path after a rewrite (the same result as the regex `xds::build` sends).
pub(super) fn rewritten(p: &ir::PathRewrite, path: &str) -> String {
    match p {
        ir::PathRewrite::Full(full) => full.clone(),
        ir::PathRewrite::Prefix {
            matched,
            replacement,
        } => {
            let rest = path
                .strip_prefix(matched.trim_end_matches('/'))
                .unwrap_or(path);
            if replacement.ends_with('/') {
                format!("{replacement}{}", rest.trim_start_matches('/'))
            } else {
                format!("{replacement}{rest}")
            }
        }
    }
}
