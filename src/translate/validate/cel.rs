//! The `x-kubernetes-validations` (CEL) rules of the Gateway API v1.6.1
//! CRDs, written out in Rust. Each check names the rule's message as the CRD
//! spells it. The API server applies defaults before these rules run, so
//! the defaults they depend on are applied here too (a backendRef's kind is
//! `Service`, a path match is `PathPrefix` `/`, a gRPC method match is
//! `Exact`, ...).

use serde_json::Value;

use super::Violation;
use crate::inputs::Kind;

fn has(v: &Value, k: &str) -> bool {
    v.get(k).is_some_and(|x| !x.is_null())
}

fn st<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn int(v: &Value, k: &str) -> i64 {
    v.get(k).and_then(Value::as_i64).unwrap_or(0)
}

struct Out<'a>(&'a mut Vec<Violation>);

/// `check!(o, ok, path, msg)`: records a violation when `ok` is false. The
/// path and message expressions are evaluated only then (most objects are
/// valid, and formatting them for every check was most of the cost).
macro_rules! check {
    ($o:expr, $ok:expr, $path:expr, $msg:expr $(,)?) => {{
        let ok: bool = $ok;
        if !ok {
            $o.fail($path, $msg);
        }
    }};
}

impl Out<'_> {
    fn fail(&mut self, path: &str, msg: &str) {
        self.0.push(Violation::new(path, msg.to_string()));
    }
}

/// Applies the CEL rules of `kind` to its `spec`.
pub fn check(kind: Kind, spec: &Value, out: &mut Vec<Violation>) {
    let mut o = Out(out);
    match kind {
        Kind::HTTPRoute => http_route(spec, &mut o),
        Kind::GRPCRoute => grpc_route(spec, &mut o),
        Kind::TLSRoute => {
            tls_hostnames(spec, &mut o);
            parent_refs(spec, &mut o);
            l4_backends(spec, &mut o);
        }
        Kind::TCPRoute | Kind::UDPRoute => {
            parent_refs(spec, &mut o);
            l4_backends(spec, &mut o);
        }
        Kind::Gateway => gateway(spec, &mut o),
        Kind::ListenerSet => listeners(spec, "spec.listeners", true, &mut o),
        Kind::BackendTLSPolicy => backend_tls_policy(spec, &mut o),
        _ => {}
    }
}

/// The two parentRefs rules every route kind shares.
fn parent_refs(spec: &Value, o: &mut Out<'_>) {
    let refs = arr(spec, "parentRefs");
    let parent = |p: &Value| {
        (
            p.get("group")
                .and_then(Value::as_str)
                .unwrap_or("gateway.networking.k8s.io")
                .to_string(),
            p.get("kind")
                .and_then(Value::as_str)
                .unwrap_or("Gateway")
                .to_string(),
            st(p, "name").to_string(),
            st(p, "namespace").to_string(),
        )
    };
    let section = |p: &Value| st(p, "sectionName").to_string();
    let port = |p: &Value| int(p, "port");
    for (i, p1) in refs.iter().enumerate() {
        for p2 in &refs[..i] {
            if parent(p1) != parent(p2) {
                continue;
            }
            let path = format!("spec.parentRefs[{i}]");
            if section(p1).is_empty() != section(p2).is_empty()
                || (port(p1) == 0) != (port(p2) == 0)
            {
                o.fail(&path, "sectionName or port must be specified when parentRefs includes 2 or more references to the same parent");
            } else if section(p1) == section(p2) && port(p1) == port(p2) {
                o.fail(&path, "sectionName or port must be unique when parentRefs includes 2 or more references to the same parent");
            }
        }
    }
}

/// `(size(self.group) == 0 && self.kind == 'Service') ? has(self.port) : true`
fn backend_port(b: &Value, path: &str, o: &mut Out<'_>) {
    let service = st(b, "group").is_empty()
        && b.get("kind").and_then(Value::as_str).unwrap_or("Service") == "Service";
    check!(
        o,
        !service || has(b, "port"),
        path,
        "Must have port for Service reference",
    );
}

fn l4_backends(spec: &Value, o: &mut Out<'_>) {
    for (i, r) in arr(spec, "rules").iter().enumerate() {
        for (j, b) in arr(r, "backendRefs").iter().enumerate() {
            backend_port(b, &format!("spec.rules[{i}].backendRefs[{j}]"), o);
        }
    }
}

fn rules_common(spec: &Value, o: &mut Out<'_>) {
    let rules = arr(spec, "rules");
    let total: usize = rules.iter().map(|r| arr(r, "matches").len()).sum();
    check!(o, total <= 128, "spec.rules", "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be less than 128");
    for (i, r) in rules.iter().enumerate() {
        if has(r, "name") && rules[..i].iter().any(|x| x.get("name") == r.get("name")) {
            o.fail(
                &format!("spec.rules[{i}].name"),
                "Rule name must be unique within the route",
            );
        }
        if let Some(sp) = r.get("sessionPersistence").filter(|s| !s.is_null()) {
            let path = format!("spec.rules[{i}].sessionPersistence");
            let cookie = sp.get("cookieConfig").filter(|c| !c.is_null());
            check!(
                o,
                cookie.is_none_or(|c| st(c, "lifetimeType") != "Permanent")
                    || has(sp, "absoluteTimeout"),
                &path,
                "AbsoluteTimeout must be specified when cookie lifetimeType is Permanent",
            );
            check!(
                o,
                cookie.is_none()
                    || sp.get("type").and_then(Value::as_str).unwrap_or("Cookie") == "Cookie",
                &path,
                "cookieConfig can only be set with type Cookie",
            );
        }
    }
}

/// Filter type → the field that holds its configuration.
const FILTER_FIELDS: [(&str, &str); 8] = [
    ("RequestHeaderModifier", "requestHeaderModifier"),
    ("ResponseHeaderModifier", "responseHeaderModifier"),
    ("RequestMirror", "requestMirror"),
    ("RequestRedirect", "requestRedirect"),
    ("URLRewrite", "urlRewrite"),
    ("ExtensionRef", "extensionRef"),
    ("CORS", "cors"),
    ("ExternalAuth", "externalAuth"),
];

/// The rules on a list of filters (route rule or backendRef level).
fn filters(list: &[Value], path: &str, o: &mut Out<'_>) {
    for t in [
        "CORS",
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestRedirect",
        "URLRewrite",
    ] {
        let n = list.iter().filter(|f| st(f, "type") == t).count();
        check!(o, n <= 1, path, &format!("{t} filter cannot be repeated"));
    }
    check!(o,
        !(list.iter().any(|f| st(f, "type") == "RequestRedirect") && list.iter().any(|f| st(f, "type") == "URLRewrite")),
        path,
        "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both",
    );
    for (k, f) in list.iter().enumerate() {
        let fp = format!("{path}[{k}]");
        let ty = st(f, "type");
        for (t, field) in FILTER_FIELDS {
            if has(f, field) && ty != t {
                o.fail(
                    &fp,
                    &format!("filter.{field} must be nil if the filter.type is not {t}"),
                );
            }
            if !has(f, field) && ty == t {
                o.fail(
                    &fp,
                    &format!("filter.{field} must be specified for {t} filter.type"),
                );
            }
        }
        if let Some(m) = f.get("requestMirror").filter(|m| !m.is_null()) {
            let mp = format!("{fp}.requestMirror");
            check!(
                o,
                !(has(m, "percent") && has(m, "fraction")),
                &mp,
                "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
            );
            if let Some(fr) = m.get("fraction").filter(|x| !x.is_null()) {
                let den = fr.get("denominator").and_then(Value::as_i64).unwrap_or(100);
                check!(
                    o,
                    int(fr, "numerator") <= den,
                    &format!("{mp}.fraction"),
                    "numerator must be less than or equal to denominator",
                );
            }
            if let Some(b) = m.get("backendRef") {
                backend_port(b, &format!("{mp}.backendRef"), o);
            }
        }
        for field in ["requestRedirect", "urlRewrite"] {
            if let Some(p) = f
                .get(field)
                .and_then(|x| x.get("path"))
                .filter(|x| !x.is_null())
            {
                let pp = format!("{fp}.{field}.path");
                for (value, member) in [
                    ("ReplaceFullPath", "replaceFullPath"),
                    ("ReplacePrefixMatch", "replacePrefixMatch"),
                ] {
                    union_member(p, "type", value, member, &pp, o);
                }
            }
        }
        if let Some(c) = f.get("cors").filter(|x| !x.is_null()) {
            for (field, what) in [
                ("allowHeaders", "methods"),
                ("allowMethods", "methods"),
                ("allowOrigins", "origins"),
            ] {
                let l = arr(c, field);
                let star = l.iter().any(|x| x.as_str() == Some("*"));
                let cap = format!("{}{}", field[..1].to_ascii_uppercase(), &field[1..]);
                check!(
                    o,
                    !(star && l.len() > 1),
                    &format!("{fp}.cors.{field}"),
                    &format!("{cap} cannot contain '*' alongside other {what}"),
                );
            }
        }
        if let Some(a) = f.get("externalAuth").filter(|x| !x.is_null()) {
            let ap = format!("{fp}.externalAuth");
            for (value, member) in [("GRPC", "grpc"), ("HTTP", "http")] {
                union_member(a, "protocol", value, member, &ap, o);
            }
            if let Some(b) = a.get("backendRef") {
                backend_port(b, &format!("{ap}.backendRef"), o);
            }
        }
    }
}

/// A discriminated union's CEL pair: `member` is set exactly when
/// `discriminator` is `value` (the CRDs' messages).
fn union_member(
    obj: &Value,
    discriminator: &str,
    value: &str,
    member: &str,
    path: &str,
    o: &mut Out<'_>,
) {
    let is_value = st(obj, discriminator) == value;
    let set = has(obj, member);
    if is_value && !set {
        o.fail(
            path,
            &format!("{member} must be specified when {discriminator} is set to '{value}'"),
        );
    }
    if set && !is_value {
        o.fail(
            path,
            &format!("{discriminator} must be '{value}' when {member} is set"),
        );
    }
}

fn uses_prefix_replace(list: &[Value]) -> bool {
    list.iter().any(|f| {
        ["requestRedirect", "urlRewrite"].iter().any(|field| {
            f.get(field).and_then(|x| x.get("path")).is_some_and(|p| {
                st(p, "type") == "ReplacePrefixMatch" && has(p, "replacePrefixMatch")
            })
        })
    })
}

fn http_route(spec: &Value, o: &mut Out<'_>) {
    parent_refs(spec, o);
    rules_common(spec, o);
    for (i, r) in arr(spec, "rules").iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        let rule_filters = arr(r, "filters");
        let backends = arr(r, "backendRefs");
        check!(
            o,
            backends.is_empty() || !rule_filters.iter().any(|f| has(f, "requestRedirect")),
            &rp,
            "RequestRedirect filter must not be used together with backendRefs",
        );
        // Matches default to one PathPrefix "/" match.
        let matches = r.get("matches").and_then(Value::as_array);
        let one_prefix = match matches {
            None => true,
            Some(m) => {
                m.len() == 1
                    && m[0].get("path").is_none_or(|p| {
                        p.get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("PathPrefix")
                            == "PathPrefix"
                    })
            }
        };
        if (uses_prefix_replace(rule_filters)
            || backends
                .iter()
                .any(|b| uses_prefix_replace(arr(b, "filters"))))
            && !one_prefix
        {
            o.fail(&rp, "When using URLRewrite or RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified");
        }
        filters(rule_filters, &format!("{rp}.filters"), o);
        for (j, b) in backends.iter().enumerate() {
            let bp = format!("{rp}.backendRefs[{j}]");
            backend_port(b, &bp, o);
            filters(arr(b, "filters"), &format!("{bp}.filters"), o);
        }
        for (j, m) in matches.into_iter().flatten().enumerate() {
            if let Some(p) = m.get("path").filter(|p| !p.is_null()) {
                path_match(p, &format!("{rp}.matches[{j}].path"), o);
            }
        }
        if let Some(t) = r.get("timeouts").filter(|t| !t.is_null()) {
            let d = |k: &str| {
                t.get(k)
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<gateway_api::Duration>().ok())
                    .map(|d| d.as_nanos())
            };
            if let (Some(req), Some(back)) = (d("request"), d("backendRequest")) {
                check!(
                    o,
                    req == 0 || back <= req,
                    &format!("{rp}.timeouts"),
                    "backendRequest timeout cannot be longer than request timeout",
                );
            }
        }
    }
}

fn path_match(p: &Value, path: &str, o: &mut Out<'_>) {
    let t = p
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("PathPrefix");
    let v = p.get("value").and_then(Value::as_str).unwrap_or("/");
    if !matches!(t, "Exact" | "PathPrefix") {
        check!(
            o,
            t == "RegularExpression",
            path,
            "type must be one of ['Exact', 'PathPrefix', 'RegularExpression']",
        );
        return;
    }
    let which = "when type one of ['Exact', 'PathPrefix']";
    check!(
        o,
        v.starts_with('/'),
        path,
        &format!("value must be an absolute path and start with '/' {which}"),
    );
    for bad in ["//", "/./", "/../", "%2f", "%2F", "#"] {
        check!(
            o,
            !v.contains(bad),
            path,
            &format!("must not contain '{bad}' {which}"),
        );
    }
    for bad in ["/..", "/."] {
        check!(
            o,
            !v.ends_with(bad),
            path,
            &format!("must not end with '{bad}' {which}"),
        );
    }
    let valid = {
        let b = v.as_bytes();
        let mut i = 0;
        let mut ok = !b.is_empty();
        while ok && i < b.len() {
            let c = b[i];
            if c == b'%' {
                ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
                i += 3;
            } else {
                ok = c.is_ascii_alphanumeric() || b"-/._~!$&'()*+,;=:@".contains(&c);
                i += 1;
            }
        }
        ok
    };
    check!(o, valid, path, "must only contain valid characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$) for types ['Exact', 'PathPrefix']");
}

fn grpc_route(spec: &Value, o: &mut Out<'_>) {
    parent_refs(spec, o);
    rules_common(spec, o);
    for (i, r) in arr(spec, "rules").iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        filters(arr(r, "filters"), &format!("{rp}.filters"), o);
        for (j, b) in arr(r, "backendRefs").iter().enumerate() {
            let bp = format!("{rp}.backendRefs[{j}]");
            backend_port(b, &bp, o);
            filters(arr(b, "filters"), &format!("{bp}.filters"), o);
        }
        for (j, m) in arr(r, "matches").iter().enumerate() {
            let Some(method) = m.get("method").filter(|x| !x.is_null()) else {
                continue;
            };
            let mp = format!("{rp}.matches[{j}].method");
            // `type` defaults to Exact, so has(self.type) always holds.
            check!(
                o,
                has(method, "service") || has(method, "method"),
                &mp,
                "One or both of 'service' or 'method' must be specified",
            );
            if method
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("Exact")
                == "Exact"
            {
                if let Some(s) = method.get("service").and_then(Value::as_str) {
                    check!(o, grpc_service_ok(s), &mp, "service must only contain valid characters (matching ^(?i)\\.?[a-z_][a-z_0-9]*(\\.[a-z_][a-z_0-9]*)*$)");
                }
                if let Some(m) = method.get("method").and_then(Value::as_str) {
                    check!(o, ident(m), &mp, "method must only contain valid characters (matching ^[A-Za-z_][A-Za-z_0-9]*$)");
                }
            }
        }
    }
}

fn ident(s: &str) -> bool {
    let mut b = s.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn grpc_service_ok(s: &str) -> bool {
    let s = s.strip_prefix('.').unwrap_or(s);
    s.split('.').all(ident)
}

fn tls_hostnames(spec: &Value, o: &mut Out<'_>) {
    for (i, h) in arr(spec, "hostnames").iter().enumerate() {
        let h = h.as_str().unwrap_or("");
        let path = format!("spec.hostnames[{i}]");
        check!(
            o,
            h.parse::<std::net::IpAddr>().is_err(),
            &path,
            "Hostnames cannot contain an IP",
        );
        if h.contains('*') {
            check!(o,
                h.strip_prefix("*.").is_some_and(rfc1123),
                &path,
                "Wildcards on hostnames must be the first label, and the rest of hostname must be valid based on RFC-1123",
            );
        } else {
            check!(
                o,
                rfc1123(h),
                &path,
                "Hostnames must be valid based on RFC-1123",
            );
        }
    }
}

/// `^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$`
fn rfc1123(h: &str) -> bool {
    h.split('.').all(|l| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    })
}

/// A label or annotation key: optional DNS subdomain prefix, name ≤ 63.
fn label_key(k: &str) -> bool {
    let (prefix, name) = match k.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(|p| rfc1123(p) && p.len() < 253)
}

fn gateway(spec: &Value, o: &mut Out<'_>) {
    let addrs = arr(spec, "addresses");
    for (i, a) in addrs.iter().enumerate() {
        let t = a.get("type").and_then(Value::as_str).unwrap_or("IPAddress");
        let path = format!("spec.addresses[{i}]");
        if matches!(t, "IPAddress" | "Hostname") && has(a, "value") {
            let dup = addrs[..i].iter().any(|b| {
                b.get("type").and_then(Value::as_str).unwrap_or("IPAddress") == t
                    && b.get("value") == a.get("value")
            });
            check!(o, !dup, &path, &format!("{t} values must be unique"));
        }
        if t == "Hostname" {
            let v = st(a, "value");
            check!(o,
                v.is_empty() || rfc1123(v.strip_prefix("*.").unwrap_or(v)),
                &path,
                "Hostname value must be empty or contain only valid characters (matching ^(\\*\\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$)",
            );
        }
    }
    if let Some(infra) = spec.get("infrastructure").filter(|x| !x.is_null()) {
        for (field, what) in [("labels", "Label"), ("annotations", "Annotation")] {
            for k in infra
                .get(field)
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|m| m.keys())
            {
                check!(o, label_key(k), &format!("spec.infrastructure.{field}[{k:?}]"), &format!("{what} keys must be in the form of an optional DNS subdomain prefix followed by a required name segment of up to 63 characters."));
            }
        }
    }
    listeners(spec, "spec.listeners", false, o);
    if let Some(per_port) = spec
        .pointer("/tls/frontend/perPort")
        .and_then(Value::as_array)
    {
        for (i, p) in per_port.iter().enumerate() {
            if per_port[..i].iter().any(|q| q.get("port") == p.get("port")) {
                o.fail(
                    &format!("spec.tls.frontend.perPort[{i}]"),
                    "Port for TLS configuration must be unique within the Gateway",
                );
            }
        }
    }
}

/// The listener rules of Gateways and ListenerSets (`optional_port`: a
/// ListenerSet listener may leave its port to the Gateway).
fn listeners(spec: &Value, path: &str, optional_port: bool, o: &mut Out<'_>) {
    let ls = arr(spec, "listeners");
    for (i, l) in ls.iter().enumerate() {
        let lp = format!("{path}[{i}]");
        let proto = st(l, "protocol");
        let tls = l.get("tls").filter(|t| !t.is_null());
        let mode = tls.map(|t| t.get("mode").and_then(Value::as_str).unwrap_or("Terminate"));
        if matches!(proto, "HTTP" | "TCP" | "UDP") {
            check!(
                o,
                tls.is_none(),
                &lp,
                "tls must not be specified for protocols ['HTTP', 'TCP', 'UDP']",
            );
        }
        if proto == "HTTPS" {
            check!(
                o,
                mode.is_none_or(|m| m == "Terminate"),
                &lp,
                "tls mode must be Terminate for protocol HTTPS",
            );
        }
        if proto == "TLS" {
            check!(
                o,
                mode.is_some(),
                &lp,
                "tls mode must be set for protocol TLS"
            );
        }
        if matches!(proto, "TCP" | "UDP") {
            check!(
                o,
                st(l, "hostname").is_empty(),
                &lp,
                "hostname must not be specified for protocols ['TCP', 'UDP']",
            );
        }
        if let (Some(t), Some("Terminate")) = (tls, mode) {
            let certs = arr(t, "certificateRefs").len();
            let opts = t
                .get("options")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            check!(
                o,
                certs > 0 || opts > 0,
                &format!("{lp}.tls"),
                "certificateRefs or options must be specified when mode is Terminate",
            );
        }
        if ls[..i].iter().any(|m| m.get("name") == l.get("name")) {
            o.fail(&lp, "Listener name must be unique within the Gateway");
        }
        let combo = |m: &Value| {
            (
                m.get("port").cloned(),
                st(m, "protocol").to_string(),
                m.get("hostname").cloned().filter(|h| !h.is_null()),
            )
        };
        if (has(l, "port") || !optional_port) && ls[..i].iter().any(|m| combo(m) == combo(l)) {
            o.fail(
                &lp,
                "Combination of port, protocol and hostname must be unique for each listener",
            );
        }
    }
}

fn backend_tls_policy(spec: &Value, o: &mut Out<'_>) {
    let refs = arr(spec, "targetRefs");
    let target = |p: &Value| {
        (
            st(p, "group").to_string(),
            st(p, "kind").to_string(),
            st(p, "name").to_string(),
        )
    };
    for (i, p1) in refs.iter().enumerate() {
        for p2 in &refs[..i] {
            if target(p1) != target(p2) {
                continue;
            }
            let (s1, s2) = (st(p1, "sectionName"), st(p2, "sectionName"));
            let path = format!("spec.targetRefs[{i}]");
            if s1.is_empty() != s2.is_empty() {
                o.fail(&path, "sectionName must be specified when targetRefs includes 2 or more references to the same target");
            } else if s1 == s2 {
                o.fail(&path, "sectionName must be unique when targetRefs includes 2 or more references to the same target");
            }
        }
    }
    if let Some(v) = spec.get("validation").filter(|x| !x.is_null()) {
        let cas = !arr(v, "caCertificateRefs").is_empty();
        let wk = !st(v, "wellKnownCACertificates").is_empty();
        check!(
            o,
            !(cas && wk),
            "spec.validation",
            "must not contain both CACertificateRefs and WellKnownCACertificates",
        );
        check!(
            o,
            cas || wk,
            "spec.validation",
            "must specify either CACertificateRefs or WellKnownCACertificates",
        );
        for (i, s) in arr(v, "subjectAltNames").iter().enumerate() {
            let p = format!("spec.validation.subjectAltNames[{i}]");
            let t = st(s, "type");
            for (want, field, name) in [("Hostname", "hostname", "Hostname"), ("URI", "uri", "URI")]
            {
                let set = !st(s, field).is_empty();
                check!(
                    o,
                    t != want || set,
                    &p,
                    &format!(
                        "SubjectAltName element must contain {name}, if Type is set to {name}"
                    ),
                );
                check!(o, !(t != want && set), &p, &format!("SubjectAltName element must not contain {name}, if Type is not set to {name}"));
            }
        }
    }
}
