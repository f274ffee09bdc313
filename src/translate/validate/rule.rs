//! Envoy-side checks of one HTTPRoute rule (a GRPCRoute rule is checked as
//! the HTTPRoute rule it becomes): values the CRD schema lets through but
//! Envoy refuses. Each error names the field.
//!
//! The checks read the typed rule: serializing it to JSON first cost a
//! third of a route's compilation (a full translation compiles every route).

use std::fmt::Display;

use gateway_api::experimental::httproutes::{
    HttpRouteRules, HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HType,
    HttpRouteRulesMatchesPathType as PType, HttpRouteRulesMatchesQueryParamsType as QType,
};

use super::{envoy, re2};

/// Checks a header modifier's `add`, `set` and `remove`.
macro_rules! header_mods {
    ($m:expr, $field:expr, $fp:expr) => {{
        let (m, field) = ($m, $field);
        for (n, h) in m.add.iter().flatten().enumerate() {
            modifier(&$fp, field, "add", n, &h.name, &h.value)?;
        }
        for (n, h) in m.set.iter().flatten().enumerate() {
            modifier(&$fp, field, "set", n, &h.name, &h.value)?;
        }
        for (n, h) in m.remove.iter().flatten().enumerate() {
            envoy::modifiable_header(h).map_err(|e| format!("{}.{field}.remove[{n}]: {e}", $fp))?;
        }
    }};
}
/// Checks a list of filters (rule-level or backendRef-level: the generated
/// types differ, the fields are the same); returns early with the error.
macro_rules! filters {
    ($list:expr, $path:expr, $prefixes:expr) => {{
        let path: &dyn Display = $path;
        for (k, f) in $list.iter().enumerate() {
            let fp = format_args!("{path}[{k}]");
            if let Some(m) = &f.request_header_modifier {
                header_mods!(m, "requestHeaderModifier", fp);
            }
            if let Some(m) = &f.response_header_modifier {
                header_mods!(m, "responseHeaderModifier", fp);
            }
            if let Some(r) = &f.request_redirect {
                let p = r.path.as_ref();
                rewrite(
                    &fp,
                    "requestRedirect",
                    r.hostname.as_deref(),
                    p.and_then(|p| p.replace_full_path.as_deref()),
                    p.and_then(|p| p.replace_prefix_match.as_deref()),
                    $prefixes,
                )?;
            }
            if let Some(r) = &f.url_rewrite {
                let p = r.path.as_ref();
                rewrite(
                    &fp,
                    "urlRewrite",
                    r.hostname.as_deref(),
                    p.and_then(|p| p.replace_full_path.as_deref()),
                    p.and_then(|p| p.replace_prefix_match.as_deref()),
                    $prefixes,
                )?;
            }
        }
    }};
}
/// Checks rule `i`; the first problem, with its field path. Paths are
/// formatted only for the error (most rules are fine).
pub fn check_http(i: usize, rule: &HttpRouteRules) -> Result<(), String> {
    let rp = format_args!("spec.rules[{i}]");
    let default_match = [HttpRouteRulesMatches::default()];
    let matches = match rule.matches.as_deref() {
        None | Some([]) => &default_match[..],
        Some(m) => m,
    };
    let mut prefixes: Vec<&str> = Vec::new();
    for (j, m) in matches.iter().enumerate() {
        let value = m
            .path
            .as_ref()
            .and_then(|p| p.value.as_deref())
            .unwrap_or("/");
        match m.path.as_ref().and_then(|p| p.r#type.as_ref()) {
            Some(PType::RegularExpression) => {
                re2::check(value).map_err(|e| format!("{rp}.matches[{j}].path.value: {e}"))?
            }
            Some(PType::PathPrefix) | None => prefixes.push(value),
            Some(PType::Exact) => {}
        }
        for (k, h) in m.headers.iter().flatten().enumerate() {
            let hp = format_args!("{rp}.matches[{j}].headers[{k}]");
            envoy::header_name(&h.name).map_err(|e| format!("{hp}.name: {e}"))?;
            if matches!(h.r#type, Some(HType::RegularExpression)) {
                re2::check(&h.value).map_err(|e| format!("{hp}.value: {e}"))?;
            } else {
                envoy::header_value(&h.value).map_err(|e| format!("{hp}.value: {e}"))?;
            }
        }
        for (k, q) in m.query_params.iter().flatten().enumerate() {
            let qp = format_args!("{rp}.matches[{j}].queryParams[{k}]");
            if q.name.is_empty() {
                return Err(format!("{qp}.name: must not be empty"));
            }
            if matches!(q.r#type, Some(QType::RegularExpression)) {
                re2::check(&q.value).map_err(|e| format!("{qp}.value: {e}"))?;
            }
        }
    }
    filters!(
        rule.filters.as_deref().unwrap_or(&[]),
        &format_args!("{rp}.filters"),
        &prefixes
    );
    let mut total: u64 = 0;
    for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
        let bp = format_args!("{rp}.backendRefs[{j}]");
        let w = i64::from(b.weight.unwrap_or(1));
        if !(0..=i64::from(u32::MAX)).contains(&w) {
            return Err(format!("{bp}.weight: {w} is out of range"));
        }
        total += w.unsigned_abs();
        filters!(
            b.filters.as_deref().unwrap_or(&[]),
            &format_args!("{bp}.filters"),
            &prefixes
        );
    }
    if total > u64::from(u32::MAX) {
        return Err(format!(
            "{rp}.backendRefs: weights sum to {total}, more than Envoy's 4294967295"
        ));
    }
    Ok(())
}

/// One `add`/`set` entry of a header modifier.
fn modifier(
    fp: &dyn Display,
    field: &str,
    op: &str,
    n: usize,
    name: &str,
    value: &str,
) -> Result<(), String> {
    envoy::modifiable_header(name).map_err(|e| format!("{fp}.{field}.{op}[{n}].name: {e}"))?;
    envoy::header_value(value).map_err(|e| format!("{fp}.{field}.{op}[{n}].value: {e}"))
}

/// A `requestRedirect` or `urlRewrite`: its hostname and path values, and
/// whether the matched prefixes fit Envoy's prefix rewrite.
fn rewrite(
    fp: &dyn Display,
    field: &str,
    hostname: Option<&str>,
    full: Option<&str>,
    prefix: Option<&str>,
    prefixes: &[&str],
) -> Result<(), String> {
    if let Some(h) = hostname {
        envoy::header_value(h).map_err(|e| format!("{fp}.{field}.hostname: {e}"))?;
    }
    for (part, v) in [("replaceFullPath", full), ("replacePrefixMatch", prefix)] {
        if let Some(v) = v {
            envoy::header_value(v).map_err(|e| format!("{fp}.{field}.path.{part}: {e}"))?;
        }
    }
    if prefix.is_some() {
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
    Ok(())
}
