//! Route-level policies in Envoy's terms: timeouts with retries
//! (`RetryPolicy`), request mirrors (`RequestMirrorPolicy`), CORS (the
//! per-route `CorsPolicy` of `envoy.filters.http.cors`) and session
//! persistence (the per-route `StatefulSessionPerRoute` of
//! `envoy.filters.http.stateful_session`). Pure.

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::extensions::filters::http::cors::v3 as cors;
use envoy_types::pb::envoy::extensions::filters::http::stateful_session::v3 as stateful;
use envoy_types::pb::envoy::extensions::http::stateful_session::cookie::v3::CookieBasedSessionState;
use envoy_types::pb::envoy::extensions::http::stateful_session::header::v3::HeaderBasedSessionState;
use envoy_types::pb::envoy::r#type::http::v3 as http_type;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3::{fractional_percent::DenominatorType, FractionalPercent};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Duration, UInt32Value};

use super::any;
use crate::ir;

/// The HTTP filter that applies the per-route CORS policies; every HTTP
/// connection manager has it (see listener.rs), so adding CORS to a route
/// changes only RDS.
pub const CORS_FILTER: &str = "envoy.filters.http.cors";

/// The HTTP filter that keeps sessions on one endpoint. Every HTTP connection
/// manager has it with no session state (it does nothing); a route with
/// session persistence enables it with [`stateful_session`], so adding or
/// removing persistence changes only RDS.
pub const STATEFUL_SESSION_FILTER: &str = "envoy.filters.http.stateful_session";

/// Connection-level failures a retry policy always retries (the spec:
/// implementations SHOULD retry on disconnect, reset, timeout and TCP
/// failure): no connection, a reset or no answer (`reset` includes the
/// per-try timeout), a stream the backend refused.
const RETRY_ON_CONNECTION_ERRORS: &str = "connect-failure,refused-stream,reset";

fn dur(d: std::time::Duration) -> Duration {
    Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Sets the route timeout and retry policy of a forwarding action.
///
/// Without `retry`: `timeouts.request` (or, alone, `timeouts.backendRequest`)
/// is the route timeout; with both, the backend request is the one try's
/// timeout (`num_retries: 0`). With `retry`: `timeouts.request` bounds the
/// request and every retry; `timeouts.backendRequest` is the per-try
/// timeout (a try that reaches it is retried). When only the backend
/// request timeout is set, the route timeout is disabled: each try is
/// bounded and so is their number.
pub(super) fn timeouts_and_retry(f: &ir::Forward, action: &mut route::RouteAction) {
    let (request, backend) = (f.timeouts.request, f.timeouts.backend_request);
    let Some(r) = &f.retry else {
        match (request, backend) {
            (Some(r), Some(b)) => {
                action.timeout = Some(dur(r));
                action.retry_policy = Some(route::RetryPolicy {
                    num_retries: Some(UInt32Value { value: 0 }),
                    per_try_timeout: Some(dur(b)),
                    ..Default::default()
                });
            }
            (Some(t), None) | (None, Some(t)) => action.timeout = Some(dur(t)),
            (None, None) => {}
        }
        return;
    };
    action.timeout = match (request, backend) {
        (Some(t), _) => Some(dur(t)),
        (None, Some(_)) => Some(dur(std::time::Duration::ZERO)),
        (None, None) => None,
    };
    let mut retry_on = RETRY_ON_CONNECTION_ERRORS.to_string();
    if !r.codes.is_empty() {
        retry_on.push_str(",retriable-status-codes");
    }
    action.retry_policy = Some(route::RetryPolicy {
        retry_on,
        retriable_status_codes: r.codes.clone(),
        // Unset: Envoy's default, one retry.
        num_retries: Some(UInt32Value {
            value: r.attempts.unwrap_or(1),
        }),
        per_try_timeout: backend.map(dur),
        // Envoy's fully jittered exponential backoff from this base (capped
        // at ten times it): retry N waits a random time below (2^N-1)·base,
        // so a first retry can come sooner than `backoff` (docs/http-extended.md).
        retry_back_off: r.backoff.map(|b| route::retry_policy::RetryBackOff {
            base_interval: Some(dur(b)),
            max_interval: None,
        }),
        ..Default::default()
    });
}

/// A fraction `n/d` as Envoy's FractionalPercent: exact over 100, 10 000 or
/// 1 000 000 when one of them is a multiple of `d`, else rounded to the
/// nearest millionth.
fn fractional(n: u32, d: u32) -> FractionalPercent {
    for (den, t) in [
        (100u64, DenominatorType::Hundred),
        (10_000, DenominatorType::TenThousand),
        (1_000_000, DenominatorType::Million),
    ] {
        if den % u64::from(d) == 0 {
            let value = u64::from(n) * (den / u64::from(d));
            return FractionalPercent {
                numerator: u32::try_from(value).unwrap_or(u32::MAX),
                denominator: t as i32,
            };
        }
    }
    let value = (u64::from(n) * 1_000_000 + u64::from(d) / 2) / u64::from(d);
    FractionalPercent {
        numerator: u32::try_from(value).unwrap_or(u32::MAX),
        denominator: DenominatorType::Million as i32,
    }
}

/// One mirror policy per resolved mirror that mirrors anything. The copy
/// keeps the request's Host (no `-shadow` suffix): the mirror sees what the
/// backend sees.
pub(super) fn mirror_policies(f: &ir::Forward) -> Vec<route::route_action::RequestMirrorPolicy> {
    f.mirrors
        .iter()
        .filter(|m| m.numerator > 0)
        .filter_map(|m| {
            let cluster = m.cluster.clone()?;
            let runtime_fraction =
                (m.numerator < m.denominator).then(|| core::RuntimeFractionalPercent {
                    default_value: Some(fractional(m.numerator, m.denominator)),
                    runtime_key: String::new(),
                });
            Some(route::route_action::RequestMirrorPolicy {
                cluster,
                runtime_fraction,
                disable_shadow_host_suffix_append: true,
                ..Default::default()
            })
        })
        .collect()
}

/// How an allowed origin is matched against the request's `Origin`
/// (scheme and host compare case-insensitively; an origin without a port
/// also matches its scheme's default port spelled out).
fn origin_matchers(o: &ir::CorsOrigin) -> Vec<matcher::StringMatcher> {
    use matcher::string_matcher::MatchPattern;
    let regex = |r: String| matcher::StringMatcher {
        match_pattern: Some(MatchPattern::SafeRegex(matcher::RegexMatcher {
            regex: r,
            ..Default::default()
        })),
        ignore_case: false,
    };
    let exact = |s: String| matcher::StringMatcher {
        match_pattern: Some(MatchPattern::Exact(s)),
        ignore_case: true,
    };
    match o {
        ir::CorsOrigin::Any => vec![regex(".*".into())],
        ir::CorsOrigin::Origin {
            scheme,
            host,
            wildcard,
            port,
        } => {
            let default_port = if scheme == "https" { 443 } else { 80 };
            if !wildcard {
                return match port {
                    Some(p) => vec![exact(format!("{scheme}://{host}:{p}"))],
                    None => vec![
                        exact(format!("{scheme}://{host}")),
                        exact(format!("{scheme}://{host}:{default_port}")),
                    ],
                };
            }
            let port = match port {
                Some(p) => format!(":{p}"),
                None => format!("(:{default_port})?"),
            };
            vec![regex(format!(
                "(?i)^{scheme}://[^/:?#@]+{}{port}$",
                regex::escape(host)
            ))]
        }
    }
}

/// A route's configuration of an HTTP filter that every connection manager
/// carries disabled ([`CORS_FILTER`], [`STATEFUL_SESSION_FILTER`]): wrapped in
/// a `FilterConfig` that enables it for this route. Requests on other routes
/// never instantiate the filter, and a route gaining or losing it is still an
/// RDS-only change.
pub(super) fn enabled(config: Any) -> Any {
    any(&route::FilterConfig {
        config: Some(config),
        is_optional: false,
        disabled: false,
    })
}

/// The per-route CORS policy (`typed_per_filter_config` of [`CORS_FILTER`]).
/// A preflight from an origin that is not allowed is answered by Envoy
/// without CORS headers, never forwarded.
pub(super) fn cors_policy(c: &ir::Cors) -> Any {
    let list = |v: &[String]| v.join(", ");
    any(&cors::CorsPolicy {
        allow_origin_string_match: c.allow_origins.iter().flat_map(origin_matchers).collect(),
        allow_methods: list(&c.allow_methods),
        allow_headers: list(&c.allow_headers),
        expose_headers: list(&c.expose_headers),
        max_age: c.max_age.to_string(),
        allow_credentials: Some(BoolValue {
            value: c.allow_credentials,
        }),
        forward_not_matching_preflights: Some(BoolValue { value: false }),
        ..Default::default()
    })
}

/// The per-route stateful session (`typed_per_filter_config` of
/// [`STATEFUL_SESSION_FILTER`]) for one route entry: its cookie's `Path`
/// comes from the entry's path match. Never `strict`: when the pinned
/// endpoint is gone (or unhealthy) the request goes to another endpoint and
/// the response carries a new token.
pub(super) fn stateful_session(s: &ir::SessionPersistence, path: &ir::PathMatch) -> Any {
    let state = match &s.kind {
        ir::SessionKind::Cookie { max_age } => core::TypedExtensionConfig {
            name: "envoy.http.stateful_session.cookie".into(),
            typed_config: Some(any(&CookieBasedSessionState {
                cookie: Some(http_type::Cookie {
                    name: s.name.clone(),
                    // Zero: a session cookie (no Max-Age, no expiry).
                    ttl: Some(dur(max_age.unwrap_or_default())),
                    path: crate::translate::session::cookie_path(path),
                    // Envoy always adds HttpOnly; `Secure` is left out (the
                    // same route may serve plain HTTP listeners).
                    attributes: vec![http_type::CookieAttribute {
                        name: "SameSite".into(),
                        value: "Strict".into(),
                    }],
                }),
            })),
        },
        ir::SessionKind::Header => core::TypedExtensionConfig {
            name: "envoy.http.stateful_session.header".into(),
            typed_config: Some(any(&HeaderBasedSessionState {
                name: s.name.clone(),
            })),
        },
    };
    any(&stateful::StatefulSessionPerRoute {
        r#override: Some(
            stateful::stateful_session_per_route::Override::StatefulSession(
                stateful::StatefulSession {
                    session_state: Some(state),
                    strict: false,
                    ..Default::default()
                },
            ),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fractions_are_exact_when_envoy_can_say_them() {
        let f = |n, d| {
            let p = fractional(n, d);
            (p.numerator, p.denominator)
        };
        assert_eq!(f(20, 100), (20, DenominatorType::Hundred as i32));
        assert_eq!(f(25, 50), (50, DenominatorType::Hundred as i32));
        assert_eq!(f(1, 3), (333_333, DenominatorType::Million as i32));
        assert_eq!(f(7, 10_000), (7, DenominatorType::TenThousand as i32));
        assert_eq!(f(1, 8), (1250, DenominatorType::TenThousand as i32));
    }

    #[test]
    fn wildcard_origins_match_any_labels_to_the_left() {
        let o = ir::CorsOrigin::Origin {
            scheme: "https".into(),
            host: ".bar.com".into(),
            wildcard: true,
            port: None,
        };
        let m = origin_matchers(&o);
        let Some(matcher::string_matcher::MatchPattern::SafeRegex(r)) = &m[0].match_pattern else {
            panic!("a regex");
        };
        let re = regex::Regex::new(&r.regex).expect("valid");
        for ok in [
            "https://www.bar.com",
            "https://xpto.www.bar.com",
            "HTTPS://WWW.BAR.COM",
            "https://www.bar.com:443",
        ] {
            assert!(re.is_match(ok), "{ok}");
        }
        for no in [
            "https://bar.com",
            "http://www.bar.com",
            "https://www.bar.com:8443",
            "https://www.foobar.com",
            "https://www.bar.com.evil.test",
        ] {
            assert!(!re.is_match(no), "{no}");
        }
        crate::translate::validate::re2::check(&r.regex).expect("RE2 accepts it");
    }
}
