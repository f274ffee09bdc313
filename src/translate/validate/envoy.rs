//! What Envoy 1.40 refuses in the configuration we generate, checked on the
//! values before they reach it ([`header_name`], [`header_value`], ...) and
//! on the generated resources themselves ([`check_resources`], which tests
//! use as an oracle over everything `xds::build` emits).

use serde_json::Value;

use super::re2;

/// Envoy's bound on a header value (`HeaderValue.value`, max_bytes).
pub const MAX_HEADER_VALUE: usize = 16384;

/// A header name Envoy accepts in a matcher or a modifier: an RFC 9110
/// token (which excludes CR, LF, NUL, spaces and `:`).
pub fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name must not be empty".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c)))
    {
        return Err(format!(
            "header name {name:?} contains {c:?}, which is not allowed in a header name"
        ));
    }
    Ok(())
}

/// Checks that `--unsafe-skip-validation` may turn off (diagnostics only).
pub const SKIPPABLE: &[&str] = &[MODIFIABLE_HEADER];

/// The check of [`modifiable_header`].
pub const MODIFIABLE_HEADER: &str = "modifiable-header";

static SKIPPED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

/// Turns a check off for the rest of the process (`--unsafe-skip-validation`,
/// set once at start-up): Envoy then rejects such input itself, which is how
/// the NACK isolation is exercised end to end. Never for production.
pub fn skip_check(name: &str) -> Result<(), String> {
    let Some(known) = SKIPPABLE.iter().find(|c| **c == name) else {
        return Err(format!(
            "--unsafe-skip-validation: unknown check {name:?} (known: {})",
            SKIPPABLE.join(", ")
        ));
    };
    SKIPPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(known);
    Ok(())
}

fn skipped(name: &str) -> bool {
    SKIPPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&name)
}

/// A header Envoy lets a route add, set or remove: not a pseudo-header
/// (`:path`, `:status`, ...) and not `host` (Envoy refuses both; the host is
/// changed with URLRewrite's hostname).
pub fn modifiable_header(name: &str) -> Result<(), String> {
    if skipped(MODIFIABLE_HEADER) {
        return header_name(name);
    }
    if name.starts_with(':') {
        return Err(format!("pseudo-header {name:?} cannot be modified"));
    }
    if name.eq_ignore_ascii_case("host") {
        return Err("header \"host\" cannot be modified by a header modifier (Envoy refuses it; use URLRewrite hostname)".into());
    }
    header_name(name)
}

/// A value Envoy puts in a header (header values, redirect and rewrite
/// targets): no NUL, CR or LF, at most 16384 bytes.
pub fn header_value(v: &str) -> Result<(), String> {
    if let Some(c) = v.chars().find(|c| matches!(c, '\0' | '\r' | '\n')) {
        return Err(format!(
            "value {} contains {c:?}",
            super::schema::shown(&Value::String(v.into()))
        ));
    }
    if v.len() > MAX_HEADER_VALUE {
        return Err(format!("value is longer than {MAX_HEADER_VALUE} bytes"));
    }
    Ok(())
}

/// Checks the Envoy resources of an xDS document (as `switchyard translate
/// -o json` prints them) for everything Envoy would refuse that our
/// translation can produce. Returns one message per problem, with its JSON
/// path.
pub fn check_resources(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

fn snake(k: &str) -> String {
    let mut s = String::with_capacity(k.len() + 4);
    for c in k.chars() {
        if c.is_ascii_uppercase() {
            s.push('_');
            s.push(c.to_ascii_lowercase());
        } else {
            s.push(c);
        }
    }
    s
}

fn walk(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                let p = format!("{path}.{k}");
                // Resources render in proto JSON (camelCase) or proto field names.
                match (snake(k).as_str(), child) {
                    // RegexMatcher { regex }.
                    ("regex", Value::String(r)) => {
                        if let Err(e) = re2::check(r) {
                            out.push(format!("{p}: {e}"));
                        }
                    }
                    ("request_headers_to_add" | "response_headers_to_add", Value::Array(opts)) => {
                        for (i, o) in opts.iter().enumerate() {
                            let h = o.get("header").unwrap_or(&Value::Null);
                            let key = h.get("key").and_then(Value::as_str).unwrap_or("");
                            let val = h.get("value").and_then(Value::as_str).unwrap_or("");
                            if let Err(e) = modifiable_header(key).and_then(|()| header_value(val))
                            {
                                out.push(format!("{p}[{i}]: {e}"));
                            }
                        }
                    }
                    (
                        "request_headers_to_remove" | "response_headers_to_remove",
                        Value::Array(names),
                    ) => {
                        for (i, n) in names.iter().enumerate() {
                            if let Err(e) = modifiable_header(n.as_str().unwrap_or("")) {
                                out.push(format!("{p}[{i}]: {e}"));
                            }
                        }
                    }
                    (
                        "host_redirect"
                        | "path_redirect"
                        | "host_rewrite_literal"
                        | "substitution"
                        | "prefix_rewrite",
                        Value::String(s),
                    ) => {
                        if let Err(e) = header_value(s) {
                            out.push(format!("{p}: {e}"));
                        }
                    }
                    ("port_redirect" | "port_value", n)
                        if n.as_u64().is_some_and(|n| n > 65535) =>
                    {
                        out.push(format!("{p}: port {n} is out of range"));
                    }
                    ("weighted_clusters", w) => {
                        let total: u64 = w
                            .get("clusters")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.get("weight").and_then(Value::as_u64))
                            .sum();
                        if total == 0 || total > u64::from(u32::MAX) {
                            out.push(format!(
                                "{p}: total weight {total} is not in 1..=4294967295"
                            ));
                        }
                    }
                    ("headers", Value::Array(hs)) if path.ends_with(".match") => {
                        for (i, h) in hs.iter().enumerate() {
                            if let Err(e) =
                                header_name(h.get("name").and_then(Value::as_str).unwrap_or(""))
                            {
                                out.push(format!("{p}[{i}]: {e}"));
                            }
                        }
                    }
                    ("domains", Value::Array(ds)) => {
                        for (i, d) in ds.iter().enumerate() {
                            let d = d.as_str().unwrap_or("");
                            let bad = d.is_empty()
                                || d.chars().any(|c| c.is_ascii_control() || c == ' ')
                                || (d.len() > 1 && d[1..d.len() - 1].contains('*'));
                            if bad {
                                out.push(format!("{p}[{i}]: domain {d:?} is not valid"));
                            }
                        }
                    }
                    _ => {}
                }
                walk(child, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                walk(c, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rules() {
        assert!(header_name("x-foo").is_ok());
        assert!(header_name("").is_err());
        assert!(header_name("a b").is_err());
        assert!(header_name("a\nb").is_err());
        assert!(header_name(":path").is_err());
        assert!(modifiable_header(":status").is_err());
        assert!(modifiable_header("Host").is_err());
        assert!(modifiable_header("x-host").is_ok());
        assert!(header_value("ok value").is_ok());
        assert!(header_value("a\r\nb").is_err());
        assert!(header_value("a\0").is_err());
        assert!(header_value(&"a".repeat(MAX_HEADER_VALUE + 1)).is_err());
    }

    #[test]
    fn resources_are_checked_where_envoy_checks_them() {
        let doc = serde_json::json!({"routes": [{"virtual_hosts": [{"domains": ["a.*.com"], "routes": [{
            "match": {"safe_regex": {"regex": "a{1001}"}, "headers": [{"name": ""}]},
            "requestHeadersToAdd": [{"header": {"key": "host", "value": "x"}}],
            "request_headers_to_remove": [":path"],
            "route": {"weighted_clusters": {"clusters": [{"weight": 4294967295u64}, {"weight": 1}]}},
        }]}]}]});
        let errs = check_resources(&doc);
        assert_eq!(errs.len(), 6, "{errs:#?}");
    }
}
