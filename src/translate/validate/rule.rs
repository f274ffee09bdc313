//! Envoy-side checks of one HTTPRoute rule (a GRPCRoute rule is checked as
//! the HTTPRoute rule it becomes): values the CRD schema lets through but
//! Envoy refuses. Each error names the field.

use std::fmt::Display;

use serde_json::Value;

use super::{envoy, re2};

fn arr<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn st<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// Checks rule `i` (its JSON form); the first problem, with its field path.
/// Paths are formatted only for the error (most rules are fine).
pub fn check_http(i: usize, rule: &Value) -> Result<(), String> {
    let rp = format_args!("spec.rules[{i}]");
    let default_match = [Value::Null];
    let matches = match arr(rule, "matches") {
        [] => &default_match[..],
        m => m,
    };
    let mut prefixes = Vec::new();
    for (j, m) in matches.iter().enumerate() {
        let path = m.get("path").unwrap_or(&Value::Null);
        let value = st(path, "value").unwrap_or("/");
        match st(path, "type").unwrap_or("PathPrefix") {
            "RegularExpression" => {
                re2::check(value).map_err(|e| format!("{rp}.matches[{j}].path.value: {e}"))?
            }
            "PathPrefix" => prefixes.push(value.to_string()),
            _ => {}
        }
        for (k, h) in arr(m, "headers").iter().enumerate() {
            let hp = format_args!("{rp}.matches[{j}].headers[{k}]");
            envoy::header_name(st(h, "name").unwrap_or(""))
                .map_err(|e| format!("{hp}.name: {e}"))?;
            let v = st(h, "value").unwrap_or("");
            if st(h, "type") == Some("RegularExpression") {
                re2::check(v).map_err(|e| format!("{hp}.value: {e}"))?;
            } else {
                envoy::header_value(v).map_err(|e| format!("{hp}.value: {e}"))?;
            }
        }
        for (k, q) in arr(m, "queryParams").iter().enumerate() {
            let qp = format_args!("{rp}.matches[{j}].queryParams[{k}]");
            if st(q, "name").unwrap_or("").is_empty() {
                return Err(format!("{qp}.name: must not be empty"));
            }
            if st(q, "type") == Some("RegularExpression") {
                re2::check(st(q, "value").unwrap_or("")).map_err(|e| format!("{qp}.value: {e}"))?;
            }
        }
    }
    filters(
        arr(rule, "filters"),
        &format_args!("{rp}.filters"),
        &prefixes,
    )?;
    let mut total: u64 = 0;
    for (j, b) in arr(rule, "backendRefs").iter().enumerate() {
        let bp = format_args!("{rp}.backendRefs[{j}]");
        let w = b.get("weight").and_then(Value::as_i64).unwrap_or(1);
        if !(0..=i64::from(u32::MAX)).contains(&w) {
            return Err(format!("{bp}.weight: {w} is out of range"));
        }
        total += w as u64;
        filters(arr(b, "filters"), &format_args!("{bp}.filters"), &prefixes)?;
    }
    if total > u64::from(u32::MAX) {
        return Err(format!(
            "{rp}.backendRefs: weights sum to {total}, more than Envoy's 4294967295"
        ));
    }
    Ok(())
}

fn filters(list: &[Value], path: &dyn Display, prefixes: &[String]) -> Result<(), String> {
    for (k, f) in list.iter().enumerate() {
        let fp = format_args!("{path}[{k}]");
        for field in ["requestHeaderModifier", "responseHeaderModifier"] {
            let Some(m) = f.get(field).filter(|m| !m.is_null()) else {
                continue;
            };
            for op in ["add", "set"] {
                for (n, h) in arr(m, op).iter().enumerate() {
                    let hp = format_args!("{fp}.{field}.{op}[{n}]");
                    envoy::modifiable_header(st(h, "name").unwrap_or(""))
                        .map_err(|e| format!("{hp}.name: {e}"))?;
                    envoy::header_value(st(h, "value").unwrap_or(""))
                        .map_err(|e| format!("{hp}.value: {e}"))?;
                }
            }
            for (n, h) in arr(m, "remove").iter().enumerate() {
                envoy::modifiable_header(h.as_str().unwrap_or(""))
                    .map_err(|e| format!("{fp}.{field}.remove[{n}]: {e}"))?;
            }
        }
        for field in ["requestRedirect", "urlRewrite"] {
            let Some(r) = f.get(field).filter(|m| !m.is_null()) else {
                continue;
            };
            if let Some(h) = st(r, "hostname") {
                envoy::header_value(h).map_err(|e| format!("{fp}.{field}.hostname: {e}"))?;
            }
            let p = r.get("path").unwrap_or(&Value::Null);
            for part in ["replaceFullPath", "replacePrefixMatch"] {
                if let Some(v) = st(p, part) {
                    envoy::header_value(v).map_err(|e| format!("{fp}.{field}.path.{part}: {e}"))?;
                }
            }
            if st(p, "replacePrefixMatch").is_some() {
                // xds::build rewrites a prefix with the regex `^<prefix>(/|$)`.
                for prefix in prefixes {
                    let trimmed = prefix.trim_end_matches('/');
                    let pattern = format!("^{}(/|$)", regex::escape(trimmed));
                    re2::check(&pattern).map_err(|_| {
                        format!(
                            "{fp}.{field}.path.replacePrefixMatch: the matched prefix {prefix:?} is too long for Envoy's prefix rewrite (a regex of at most {} RE2 instructions)",
                            re2::MAX_PROGRAM_SIZE
                        )
                    })?;
                }
            }
        }
    }
    Ok(())
}
