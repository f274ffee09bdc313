//! HTTPRoute (and GRPCRoute, rewritten as the HTTPRoute it is on the wire,
//! see grpc.rs) rule compilation: matches, filters, backends, timeouts and
//! the precedence key of each match. Attachment and route tables are in
//! index.rs and tables.rs.

use std::collections::BTreeSet;
use std::sync::Arc;

use gateway_api::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefsFilters,
    HttpRouteRulesBackendRefsFiltersType as BfType, HttpRouteRulesFilters,
    HttpRouteRulesFiltersRequestRedirectPathType as RedirectPathType,
    HttpRouteRulesFiltersType as FType, HttpRouteRulesFiltersUrlRewritePathType as RewritePathType,
    HttpRouteRulesMatches, HttpRouteRulesMatchesHeadersType as HType,
    HttpRouteRulesMatchesPathType as PType, HttpRouteRulesMatchesQueryParamsType as QType,
};

use super::attach::note_ref_error;
use super::backend::{self, BackendRef, RefError};
use super::conditions::reasons;
use super::index::{age, compile_rules, route_level_error, Body, RouteCompile, RuleError};
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir;

/// One compiled HTTP rule (a route's rules are compiled once and shared by
/// all its parents).
pub(super) struct CompiledRule {
    pub index: usize,
    /// `rules[].name`, when set.
    pub name: Option<Arc<str>>,
    pub matches: Vec<ir::RouteMatch>,
    pub action: ir::RouteAction,
    /// `action` as every entry of the rule uses it, whatever listener the
    /// route attached through, when that is so (not a redirect, whose port
    /// depends on the listener, nor a prefix rewrite, filled per match):
    /// the entries then share this value instead of copying it.
    pub shared_action: Option<Arc<ir::RouteAction>>,
    pub request_headers: ir::HeaderMods,
    pub response_headers: ir::HeaderMods,
}

/// Compiles an HTTPRoute (or a GRPCRoute as its HTTPRoute; `forced_error`
/// when it could not be rewritten).
pub(super) fn compile_route(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    route: &HttpRoute,
    forced_error: Option<&str>,
    backends: &mut backend::Backends,
) -> RouteCompile {
    if let Some(e) = forced_error {
        return RouteCompile::rejected((reasons::UNSUPPORTED_VALUE, e.to_string()));
    }
    if let Some(e) = route_level_error(inputs, kind, key, route.spec.use_default_gateways.is_some())
    {
        return RouteCompile::rejected(e);
    }
    let unknown = inputs.unknown(kind, key);
    let mut ref_error = None;
    let empty_rule = [HttpRouteRules::default()];
    let spec_rules = route
        .spec
        .rules
        .as_deref()
        .filter(|r| !r.is_empty())
        .unwrap_or(&empty_rule);
    let (rules, dropped) = compile_rules(unknown, spec_rules.len(), |i| {
        compile_rule(
            inputs,
            kind,
            key,
            i,
            &spec_rules[i],
            backends,
            &mut ref_error,
        )
    });
    let clusters: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| match &r.action {
            ir::RouteAction::Forward(f) => Some(
                f.backends
                    .iter()
                    .map(|b| &b.cluster)
                    .chain(f.mirrors.iter().map(|m| &m.cluster))
                    .chain(f.session.iter().map(|s| &s.cluster)),
            ),
            _ => None,
        })
        .flatten()
        .flatten()
        .cloned()
        .collect();
    RouteCompile::assemble(
        age(&route.metadata, kind, key),
        (!rules.is_empty()).then_some(Body::Http(rules)),
        clusters,
        dropped,
        ref_error,
    )
}

fn compile_rule(
    inputs: &Inputs,
    kind: Kind,
    key: &ObjKey,
    index: usize,
    rule: &HttpRouteRules,
    backends_cache: &mut backend::Backends,
    ref_error: &mut Option<RefError>,
) -> Result<CompiledRule, RuleError> {
    // Values the schema accepts but Envoy would refuse drop the rule.
    super::validate::rule::check_http(index, rule).map_err(|e| (reasons::UNSUPPORTED_VALUE, e))?;
    let timeouts = compile_timeouts(rule)?;
    let retry = super::http_policy::retry(rule)?;
    // Matches.
    let default_match = [HttpRouteRulesMatches::default()];
    let spec_matches = rule
        .matches
        .as_deref()
        .filter(|m| !m.is_empty())
        .unwrap_or(&default_match);
    let mut matches = Vec::with_capacity(spec_matches.len());
    for (j, m) in spec_matches.iter().enumerate() {
        matches.push(
            compile_match(m)
                .map_err(|e| (reasons::UNSUPPORTED_VALUE, format!("matches[{j}]: {e}")))?,
        );
    }
    // Filters.
    let mut request_headers = ir::HeaderMods::default();
    let mut response_headers = ir::HeaderMods::default();
    let mut redirect = None;
    let mut rewrite: Option<ir::Rewrite> = None;
    let mut mirrors = Vec::new();
    let mut cors = None;
    for (j, f) in rule.filters.iter().flatten().enumerate() {
        let at = |(r, e): RuleError| (r, format!("filters[{j}]: {e}"));
        match (&f.r#type, &f.request_mirror, &f.cors) {
            (FType::RequestMirror, Some(m), _) => mirrors.push(
                super::http_policy::mirror(inputs, kind, key, m, backends_cache, ref_error)
                    .map_err(at)?,
            ),
            (FType::Cors, _, Some(c)) if cors.is_none() => {
                cors = Some(Box::new(super::http_policy::cors(c).map_err(at)?))
            }
            (FType::Cors, _, Some(_)) => {
                return Err(at((
                    reasons::UNSUPPORTED_VALUE,
                    "only one CORS filter may be used in a rule".into(),
                )))
            }
            _ => apply_filter(
                f,
                &mut request_headers,
                &mut response_headers,
                &mut redirect,
                &mut rewrite,
                &matches,
            )
            .map_err(at)?,
        }
    }
    if redirect.is_some() && rewrite.is_some() {
        return Err((
            reasons::INCOMPATIBLE_FILTERS,
            "RequestRedirect and URLRewrite cannot be combined".into(),
        ));
    }
    let action = if let Some(r) = redirect {
        if rule.backend_refs.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err((
                reasons::INCOMPATIBLE_FILTERS,
                "RequestRedirect cannot be combined with backendRefs".into(),
            ));
        }
        if !mirrors.is_empty() || cors.is_some() {
            return Err((
                reasons::UNSUPPORTED_VALUE,
                "RequestMirror and CORS filters are not supported on a RequestRedirect rule".into(),
            ));
        }
        if rule.session_persistence.is_some() {
            return Err((
                reasons::UNSUPPORTED_VALUE,
                "sessionPersistence: a RequestRedirect rule sends no request to a backend, so \
                 there is no session to keep"
                    .into(),
            ));
        }
        ir::RouteAction::Redirect(r)
    } else {
        let mut backends = Vec::new();
        for (j, b) in rule.backend_refs.iter().flatten().enumerate() {
            let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
            let mut breq = ir::HeaderMods::default();
            let mut bresp = ir::HeaderMods::default();
            for (k, f) in b.filters.iter().flatten().enumerate() {
                backend_filter(f, &mut breq, &mut bresp).map_err(|e| {
                    (
                        reasons::UNSUPPORTED_VALUE,
                        format!("backendRefs[{j}].filters[{k}]: {e}"),
                    )
                })?;
            }
            let r = BackendRef {
                group: b.group.as_deref(),
                kind: b.kind.as_deref(),
                name: &b.name,
                namespace: b.namespace.as_deref(),
                port: b.port,
            };
            let (resolved, origin) =
                backends_cache.resolve_with_origin(inputs, kind.as_str(), &key.namespace, &r);
            let cluster = match resolved {
                Ok(name) => Some(name),
                Err(e) => {
                    note_ref_error(ref_error, e);
                    None
                }
            };
            if weight > 0 {
                backends.push(ir::WeightedBackend {
                    cluster,
                    weight,
                    request_headers: breq,
                    response_headers: bresp,
                    origin: Some(origin),
                });
            }
        }
        let mut session = super::session::session_persistence(kind, key, index, rule)?;
        if let Some(s) = &mut session {
            s.cluster = super::session::merge_split(
                kind,
                key,
                index,
                &backends,
                &mut backends_cache.clusters,
            )?;
        }
        ir::RouteAction::Forward(ir::Forward {
            backends,
            rewrite,
            timeouts,
            retry,
            mirrors,
            cors,
            session,
        })
    };
    let shared_action = (!matches!(action, ir::RouteAction::Redirect(_))
        && !uses_matched_prefix(&action))
    .then(|| Arc::new(action.clone()));
    Ok(CompiledRule {
        index,
        name: rule.name.as_deref().map(Arc::from),
        matches,
        action,
        shared_action,
        request_headers,
        response_headers,
    })
}

fn compile_timeouts(rule: &HttpRouteRules) -> Result<ir::Timeouts, RuleError> {
    let Some(t) = &rule.timeouts else {
        return Ok(ir::Timeouts::default());
    };
    let parse =
        |field: &str, v: &Option<String>| -> Result<Option<std::time::Duration>, RuleError> {
            match v.as_deref() {
                None => Ok(None),
                Some(s) => s
                    .parse::<gateway_api::Duration>()
                    .map(|d| {
                        Some(std::time::Duration::from_nanos(
                            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                        ))
                    })
                    .map_err(|e| {
                        (
                            reasons::UNSUPPORTED_VALUE,
                            format!("timeouts.{field} {s:?}: {e}"),
                        )
                    }),
            }
        };
    let request = parse("request", &t.request)?;
    let backend_request = parse("backendRequest", &t.backend_request)?;
    if let (Some(r), Some(b)) = (request, backend_request) {
        if !r.is_zero() && (b.is_zero() || b > r) {
            return Err((
                reasons::UNSUPPORTED_VALUE,
                "timeouts.backendRequest must not be longer than timeouts.request".into(),
            ));
        }
    }
    Ok(ir::Timeouts {
        request,
        backend_request,
    })
}

fn compile_match(m: &HttpRouteRulesMatches) -> Result<ir::RouteMatch, String> {
    let path = match &m.path {
        None => ir::PathMatch::Prefix("/".into()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            match p.r#type.clone().unwrap_or(PType::PathPrefix) {
                PType::Exact => {
                    check_path(&value)?;
                    ir::PathMatch::Exact(value)
                }
                PType::PathPrefix => {
                    check_path(&value)?;
                    let trimmed = value.trim_end_matches('/');
                    ir::PathMatch::Prefix(if trimmed.is_empty() {
                        "/".into()
                    } else {
                        trimmed.to_string()
                    })
                }
                PType::RegularExpression => {
                    check_regex(&value)?;
                    ir::PathMatch::Regex(value)
                }
            }
        }
    };
    let mut headers = Vec::new();
    for h in m.headers.iter().flatten() {
        let name = h.name.to_ascii_lowercase();
        if headers.iter().any(|x: &ir::HeaderMatch| x.name == name) {
            // The spec: only the first match for a header name counts.
            continue;
        }
        let value = match h.r#type.clone().unwrap_or(HType::Exact) {
            HType::Exact => ir::StringMatch::Exact(h.value.clone()),
            HType::RegularExpression => {
                check_regex(&h.value)?;
                ir::StringMatch::Regex(h.value.clone())
            }
        };
        headers.push(ir::HeaderMatch { name, value });
    }
    let mut query_params = Vec::new();
    for q in m.query_params.iter().flatten() {
        if query_params
            .iter()
            .any(|x: &ir::HeaderMatch| x.name == q.name)
        {
            continue;
        }
        let value = match q.r#type.clone().unwrap_or(QType::Exact) {
            QType::Exact => ir::StringMatch::Exact(q.value.clone()),
            QType::RegularExpression => {
                check_regex(&q.value)?;
                ir::StringMatch::Regex(q.value.clone())
            }
        };
        query_params.push(ir::HeaderMatch {
            name: q.name.clone(),
            value,
        });
    }
    let method = m.method.as_ref().map(|mm| {
        serde_json::to_value(mm)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    });
    Ok(ir::RouteMatch {
        path,
        headers,
        query_params,
        method,
    })
}

fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path {p:?} must start with '/'"));
    }
    if p.contains("//")
        || p.contains("/./")
        || p.contains("/../")
        || p.ends_with("/..")
        || p.ends_with("/.")
    {
        return Err(format!("path {p:?} is not normalized"));
    }
    if p.contains('?') || p.contains('#') {
        return Err(format!("path {p:?} must not contain '?' or '#'"));
    }
    Ok(())
}

/// RE2 as Envoy runs it (see validate::re2).
fn check_regex(r: &str) -> Result<(), String> {
    super::validate::re2::check(r)
}

/// Copies a header modifier into the IR. The generated API types have one
/// struct per filter location (route, backendRef) with the same fields.
macro_rules! header_mods {
    ($m:expr, $into:expr) => {{
        let m = $m;
        let into: &mut ir::HeaderMods = $into;
        into.add.extend(
            m.add
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone())),
        );
        into.set.extend(
            m.set
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone())),
        );
        into.remove
            .extend(m.remove.iter().flatten().map(|s| s.to_ascii_lowercase()));
    }};
}

fn apply_filter(
    f: &HttpRouteRulesFilters,
    req: &mut ir::HeaderMods,
    resp: &mut ir::HeaderMods,
    redirect: &mut Option<ir::Redirect>,
    rewrite: &mut Option<ir::Rewrite>,
    matches: &[ir::RouteMatch],
) -> Result<(), RuleError> {
    let unsupported = |what: &str| {
        Err((
            reasons::UNSUPPORTED_VALUE,
            format!("filter type {what} is not supported yet"),
        ))
    };
    let missing = |what: &str| {
        Err((
            reasons::UNSUPPORTED_VALUE,
            format!("filter type {what} needs its {what} field"),
        ))
    };
    match f.r#type {
        FType::RequestHeaderModifier => {
            let Some(m) = &f.request_header_modifier else {
                return missing("requestHeaderModifier");
            };
            header_mods!(m, req);
        }
        FType::ResponseHeaderModifier => {
            let Some(m) = &f.response_header_modifier else {
                return missing("responseHeaderModifier");
            };
            header_mods!(m, resp);
        }
        FType::RequestRedirect => {
            let Some(r) = &f.request_redirect else {
                return missing("requestRedirect");
            };
            let path = match &r.path {
                None => None,
                Some(p) => Some(path_rewrite(
                    matches!(p.r#type, RedirectPathType::ReplaceFullPath),
                    p.replace_full_path.as_deref(),
                    p.replace_prefix_match.as_deref(),
                    matches,
                )?),
            };
            let status_code = r.status_code.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status_code) {
                return Err((
                    reasons::UNSUPPORTED_VALUE,
                    format!("redirect statusCode {status_code} is not supported"),
                ));
            }
            let scheme = r
                .scheme
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok())
                .and_then(|v| v.as_str().map(str::to_string));
            *redirect = Some(ir::Redirect {
                scheme,
                hostname: r.hostname.clone(),
                port: r.port.and_then(|p| u16::try_from(p).ok()),
                path,
                status_code: status_code as u32,
            });
        }
        FType::UrlRewrite => {
            let Some(r) = &f.url_rewrite else {
                return missing("urlRewrite");
            };
            let path = match &r.path {
                None => None,
                Some(p) => Some(path_rewrite(
                    matches!(p.r#type, RewritePathType::ReplaceFullPath),
                    p.replace_full_path.as_deref(),
                    p.replace_prefix_match.as_deref(),
                    matches,
                )?),
            };
            *rewrite = Some(ir::Rewrite {
                hostname: r.hostname.clone(),
                path,
            });
        }
        // Compiled by http_policy (compile_rule) when their field is set.
        FType::RequestMirror => return missing("requestMirror"),
        FType::Cors => return missing("cors"),
        FType::ExtensionRef => return unsupported("ExtensionRef"),
        FType::ExternalAuth => return unsupported("ExternalAuth"),
    }
    Ok(())
}

/// `full`: ReplaceFullPath (else ReplacePrefixMatch, which needs PathPrefix matches).
fn path_rewrite(
    full: bool,
    full_path: Option<&str>,
    prefix: Option<&str>,
    matches: &[ir::RouteMatch],
) -> Result<ir::PathRewrite, RuleError> {
    if full {
        let p = full_path.ok_or((
            reasons::UNSUPPORTED_VALUE,
            "ReplaceFullPath needs replaceFullPath".to_string(),
        ))?;
        return Ok(ir::PathRewrite::Full(p.to_string()));
    }
    let replacement = prefix.ok_or((
        reasons::UNSUPPORTED_VALUE,
        "ReplacePrefixMatch needs replacePrefixMatch".to_string(),
    ))?;
    // Every match must be a PathPrefix; the matched prefix is per route entry,
    // so the IR records a placeholder that xds::build fills per match.
    if !matches
        .iter()
        .all(|m| matches!(m.path, ir::PathMatch::Prefix(_)))
    {
        return Err((
            reasons::UNSUPPORTED_VALUE,
            "ReplacePrefixMatch requires every match of the rule to be a PathPrefix match".into(),
        ));
    }
    Ok(ir::PathRewrite::Prefix {
        matched: String::new(),
        replacement: replacement.to_string(),
    })
}

fn backend_filter(
    f: &HttpRouteRulesBackendRefsFilters,
    req: &mut ir::HeaderMods,
    resp: &mut ir::HeaderMods,
) -> Result<(), String> {
    match f.r#type {
        BfType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or("requestHeaderModifier missing")?;
            header_mods!(m, req);
            Ok(())
        }
        BfType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or("responseHeaderModifier missing")?;
            header_mods!(m, resp);
            Ok(())
        }
        ref other => Err(format!("backendRef filter type {other:?} is not supported")),
    }
}

/// Fills the matched prefix into a ReplacePrefixMatch rewrite/redirect.
/// The spec's redirect port rules: an explicit port is used (omitted when it
/// is the scheme's well-known port); without one, a redirect that changes the
/// scheme uses the new scheme's well-known port, and otherwise the listener's
/// port. Envoy sees the request's Host without its port (ports are ignored
/// for matching), so the port must be spelled out here.
pub(super) fn with_redirect_port(
    action: ir::RouteAction,
    listener_port: u16,
    listener_https: bool,
) -> ir::RouteAction {
    let ir::RouteAction::Redirect(mut r) = action else {
        return action;
    };
    let well_known = |scheme: &str| if scheme == "https" { 443 } else { 80 };
    let listener_scheme = if listener_https { "https" } else { "http" };
    let scheme = r
        .scheme
        .clone()
        .unwrap_or_else(|| listener_scheme.to_string());
    let port = match (r.port, &r.scheme) {
        (Some(p), _) => p,
        (None, Some(s)) => well_known(s),
        (None, None) => listener_port,
    };
    r.port = (port != well_known(&scheme)).then_some(port);
    ir::RouteAction::Redirect(r)
}

/// Whether the action has a ReplacePrefixMatch (filled per match).
pub(super) fn uses_matched_prefix(action: &ir::RouteAction) -> bool {
    let prefix = |p: &Option<ir::PathRewrite>| matches!(p, Some(ir::PathRewrite::Prefix { .. }));
    match action {
        ir::RouteAction::Forward(f) => f.rewrite.as_ref().is_some_and(|r| prefix(&r.path)),
        ir::RouteAction::Redirect(r) => prefix(&r.path),
        ir::RouteAction::Direct { .. } => false,
    }
}

pub(super) fn with_matched_prefix(action: &ir::RouteAction, m: &ir::RouteMatch) -> ir::RouteAction {
    let matched = match &m.path {
        ir::PathMatch::Prefix(p) => p.clone(),
        _ => return action.clone(),
    };
    let fix = |p: &Option<ir::PathRewrite>| match p {
        Some(ir::PathRewrite::Prefix { replacement, .. }) => Some(ir::PathRewrite::Prefix {
            matched: matched.clone(),
            replacement: replacement.clone(),
        }),
        other => other.clone(),
    };
    match action {
        ir::RouteAction::Forward(f) => ir::RouteAction::Forward(ir::Forward {
            rewrite: f.rewrite.as_ref().map(|r| ir::Rewrite {
                hostname: r.hostname.clone(),
                path: fix(&r.path),
            }),
            ..f.clone()
        }),
        ir::RouteAction::Redirect(r) => ir::RouteAction::Redirect(ir::Redirect {
            path: fix(&r.path),
            ..r.clone()
        }),
        other => other.clone(),
    }
}
