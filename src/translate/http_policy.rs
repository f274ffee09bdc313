//! HTTPRoute rule policies beyond matching and forwarding: `retry`, the
//! RequestMirror filter and the CORS filter (Gateway API v1.6.1). Each
//! value Envoy cannot honour is refused with the field that holds it.

use gateway_api::experimental::httproutes::{
    HttpRouteRules, HttpRouteRulesFiltersCors, HttpRouteRulesFiltersRequestMirror,
};

use super::attach::note_ref_error;
use super::backend::{self, BackendRef, RefError};
use super::conditions::reasons;
use super::index::RuleError;
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir;

fn unsupported(msg: String) -> RuleError {
    (reasons::UNSUPPORTED_VALUE, msg)
}

/// A Gateway API Duration (GEP-2257).
pub(super) fn duration(field: &str, s: &str) -> Result<std::time::Duration, RuleError> {
    s.parse::<gateway_api::Duration>()
        .map(|d| std::time::Duration::from_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
        .map_err(|e| unsupported(format!("{field} {s:?}: {e}")))
}

/// `rules[].retry`.
pub(super) fn retry(rule: &HttpRouteRules) -> Result<Option<ir::Retry>, RuleError> {
    let Some(r) = &rule.retry else {
        return Ok(None);
    };
    let mut codes = Vec::new();
    for (k, &c) in r.codes.iter().flatten().enumerate() {
        if !(400..=599).contains(&c) {
            return Err(unsupported(format!(
                "retry.codes[{k}]: {c} is not an HTTP error status (400-599)"
            )));
        }
        let c = c as u32;
        if !codes.contains(&c) {
            codes.push(c);
        }
    }
    let attempts = match r.attempts {
        None => None,
        Some(a) if a < 1 => {
            return Err(unsupported(format!(
                "retry.attempts: {a} must be at least 1"
            )))
        }
        Some(a) => Some(u32::try_from(a).map_err(|_| {
            unsupported(format!(
                "retry.attempts: {a} is more than Envoy's maximum ({})",
                u32::MAX
            ))
        })?),
    };
    let backoff = match r.backoff.as_deref() {
        None => None,
        // No minimum wait: Envoy's own backoff (25 ms, exponential) applies.
        Some(s) => Some(duration("retry.backoff", s)?).filter(|d| !d.is_zero()),
    };
    Ok(Some(ir::Retry {
        codes,
        attempts,
        backoff,
    }))
}

/// One RequestMirror filter. A backendRef that does not resolve is noted
/// (ResolvedRefs=False) and mirrors nothing; the rule itself still works.
pub(super) fn mirror(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    m: &HttpRouteRulesFiltersRequestMirror,
    backends: &mut backend::Backends,
    ref_error: &mut Option<RefError>,
) -> Result<ir::Mirror, RuleError> {
    let (numerator, denominator) = match (m.percent, &m.fraction) {
        (Some(_), Some(_)) => {
            return Err(unsupported(
                "requestMirror: only one of percent and fraction may be set".into(),
            ))
        }
        (Some(p), None) => {
            let p = u32::try_from(p).ok().filter(|p| *p <= 100).ok_or_else(|| {
                unsupported(format!(
                    "requestMirror.percent: {p} is not between 0 and 100"
                ))
            })?;
            (p, 100)
        }
        (None, Some(f)) => {
            let d = f.denominator.unwrap_or(100);
            match (u32::try_from(f.numerator), u32::try_from(d)) {
                (Ok(n), Ok(d)) if d >= 1 && n <= d => (n, d),
                _ => {
                    return Err(unsupported(format!(
                        "requestMirror.fraction: {}/{d} is not a fraction between 0 and 1 (denominator at least 1)",
                        f.numerator
                    )))
                }
            }
        }
        (None, None) => (100, 100),
    };
    let b = &m.backend_ref;
    let r = BackendRef {
        group: b.group.as_deref(),
        kind: b.kind.as_deref(),
        name: &b.name,
        namespace: b.namespace.as_deref(),
        port: b.port,
    };
    let (resolved, origin) =
        backends.resolve_with_origin(inputs, kind.as_str(), &key.namespace, &r);
    let cluster = match resolved {
        Ok(c) => Some(c),
        Err(mut e) => {
            e.message = format!("requestMirror: {}", e.message);
            note_ref_error(ref_error, e);
            None
        }
    };
    Ok(ir::Mirror {
        cluster,
        numerator,
        denominator,
        origin,
    })
}

const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// The CORS filter.
pub(super) fn cors(c: &HttpRouteRulesFiltersCors) -> Result<ir::Cors, RuleError> {
    let mut allow_origins = Vec::new();
    let origins = c.allow_origins.as_deref().unwrap_or_default();
    for (k, o) in origins.iter().enumerate() {
        let parsed = origin(o).map_err(|e| {
            unsupported(format!(
                "cors.allowOrigins[{k}]: {o:?} is not an origin: {e}"
            ))
        })?;
        if parsed == ir::CorsOrigin::Any && origins.len() > 1 {
            return Err(unsupported(
                "cors.allowOrigins: '*' cannot be listed alongside other origins".into(),
            ));
        }
        allow_origins.push(parsed);
    }
    let allow_methods = c.allow_methods.clone().unwrap_or_default();
    for (k, m) in allow_methods.iter().enumerate() {
        if m == "*" && allow_methods.len() > 1 {
            return Err(unsupported(
                "cors.allowMethods: '*' cannot be listed alongside other methods".into(),
            ));
        }
        if m != "*" && !METHODS.contains(&m.as_str()) {
            return Err(unsupported(format!(
                "cors.allowMethods[{k}]: {m:?} is not an HTTP method ({} or *)",
                METHODS.join(", ")
            )));
        }
    }
    let allow_headers = header_list("allowHeaders", c.allow_headers.as_deref())?;
    let expose_headers = header_list("exposeHeaders", c.expose_headers.as_deref())?;
    let allow_credentials = c.allow_credentials.unwrap_or(false);
    if allow_credentials && expose_headers.iter().any(|h| h == "*") {
        // With credentials a browser reads `*` as a header named `*`; the
        // spec forbids sending it, and Envoy cannot expand it.
        return Err(unsupported(
            "cors.exposeHeaders: '*' cannot be honoured with allowCredentials: true (name the headers)"
                .into(),
        ));
    }
    let max_age = match c.max_age {
        None => 5,
        Some(a) => u32::try_from(a)
            .ok()
            .filter(|a| *a >= 1)
            .ok_or_else(|| unsupported(format!("cors.maxAge: {a} must be at least 1")))?,
    };
    Ok(ir::Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        max_age,
        allow_credentials,
    })
}

fn header_list(field: &str, list: Option<&[String]>) -> Result<Vec<String>, RuleError> {
    let list = list.unwrap_or_default();
    let mut out = Vec::new();
    for (k, h) in list.iter().enumerate() {
        if h == "*" {
            if list.len() > 1 && field == "allowHeaders" {
                return Err(unsupported(format!(
                    "cors.{field}: '*' cannot be listed alongside other headers"
                )));
            }
        } else if h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err(unsupported(format!(
                "cors.{field}[{k}]: {h:?} is not an HTTP header name"
            )));
        }
        let h = h.to_ascii_lowercase();
        if !out.contains(&h) {
            out.push(h);
        }
    }
    Ok(out)
}

/// Parses a CORS origin: `*`, or `http(s)://host[:port]` where the host is
/// DNS labels (or an IP address), optionally starting with `*.`, or `*`.
pub(super) fn origin(o: &str) -> Result<ir::CorsOrigin, String> {
    if o == "*" {
        return Ok(ir::CorsOrigin::Any);
    }
    let lower = o.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .ok_or("expected scheme://host[:port]")?;
    if scheme != "http" && scheme != "https" {
        return Err(format!("the scheme must be http or https, not {scheme:?}"));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = (!p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|p| *p >= 1)
                .ok_or_else(|| format!("port {p:?} is not between 1 and 65535"))?;
            (h, Some(port))
        }
        None => (rest, None),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port.filter(|p| *p != default_port);
    let (wildcard, name) = if host == "*" {
        (true, "")
    } else if let Some(n) = host.strip_prefix("*.") {
        (true, n)
    } else {
        (false, host)
    };
    if !name.is_empty() || !wildcard {
        let labels_ok = name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
        if !labels_ok {
            return Err(format!(
                "the host {host:?} must be DNS labels (letters, digits, '-'), optionally after '*.'"
            ));
        }
    }
    Ok(ir::CorsOrigin::Origin {
        scheme: scheme.to_string(),
        host: if wildcard && !name.is_empty() {
            format!(".{name}")
        } else {
            name.to_string()
        },
        wildcard,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(scheme: &str, host: &str, wildcard: bool, port: Option<u16>) -> ir::CorsOrigin {
        ir::CorsOrigin::Origin {
            scheme: scheme.into(),
            host: host.into(),
            wildcard,
            port,
        }
    }

    #[test]
    fn origins_parse_as_the_spec_writes_them() {
        assert_eq!(origin("*"), Ok(ir::CorsOrigin::Any));
        assert_eq!(
            origin("https://www.foo.com"),
            Ok(o("https", "www.foo.com", false, None))
        );
        assert_eq!(
            origin("https://*.Bar.com"),
            Ok(o("https", ".bar.com", true, None))
        );
        assert_eq!(origin("http://*"), Ok(o("http", "", true, None)));
        assert_eq!(
            origin("http://a.test:8080"),
            Ok(o("http", "a.test", false, Some(8080)))
        );
        // The default port is the same origin as no port.
        assert_eq!(
            origin("https://a.test:443"),
            Ok(o("https", "a.test", false, None))
        );
        for bad in [
            "www.foo.com",
            "ftp://a.test",
            "https://a.*.test",
            "https://a.test:0",
            "https://a.test:99999",
            "https://a.test:",
            "https://a..test",
            "https://a.test/path",
            "https://",
        ] {
            assert!(origin(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn cors_refusals_name_the_field() {
        let cors_of = |v: serde_json::Value| -> Result<ir::Cors, RuleError> {
            let c: HttpRouteRulesFiltersCors = serde_json::from_value(v).expect("cors");
            cors(&c)
        };
        let err = |v| cors_of(v).expect_err("refused").1;
        assert!(
            err(serde_json::json!({"allowOrigins": ["https://ok.test", "htp:/bad"]}))
                .starts_with("cors.allowOrigins[1]: \"htp:/bad\" is not an origin")
        );
        assert!(err(serde_json::json!({"allowMethods": ["GET", "FETCH"]}))
            .starts_with("cors.allowMethods[1]"));
        assert!(
            err(serde_json::json!({"allowHeaders": ["x ok"]})).starts_with("cors.allowHeaders[0]")
        );
        assert!(err(serde_json::json!({"maxAge": 0})).starts_with("cors.maxAge"));
        assert!(
            err(serde_json::json!({"exposeHeaders": ["*"], "allowCredentials": true}))
                .starts_with("cors.exposeHeaders")
        );
        let c = cors_of(serde_json::json!({"allowOrigins": ["*"], "allowHeaders": ["X-A", "x-a"]}))
            .expect("valid");
        assert_eq!(c.max_age, 5);
        assert_eq!(c.allow_headers, vec!["x-a".to_string()]);
        assert!(!c.allow_credentials);
    }

    #[test]
    fn retry_refusals_name_the_field() {
        let retry_of = |v: serde_json::Value| {
            let rule: HttpRouteRules =
                serde_json::from_value(serde_json::json!({ "retry": v })).expect("rule");
            retry(&rule)
        };
        let err = |v| retry_of(v).expect_err("refused").1;
        assert!(err(serde_json::json!({"attempts": 0})).starts_with("retry.attempts: 0"));
        assert!(err(serde_json::json!({"attempts": 5_000_000_000_i64}))
            .starts_with("retry.attempts: 5000000000"));
        assert!(err(serde_json::json!({"codes": [500, 200]})).starts_with("retry.codes[1]: 200"));
        assert!(err(serde_json::json!({"backoff": "soon"})).starts_with("retry.backoff"));
        let r = retry_of(
            serde_json::json!({"codes": [503, 500, 503], "attempts": 3, "backoff": "100ms"}),
        )
        .expect("valid")
        .expect("some");
        assert_eq!(r.codes, vec![503, 500]);
        assert_eq!(r.attempts, Some(3));
        assert_eq!(r.backoff, Some(std::time::Duration::from_millis(100)));
        let r = retry_of(serde_json::json!({"backoff": "0s"}))
            .expect("valid")
            .expect("some");
        assert_eq!(r.backoff, None);
    }
}
