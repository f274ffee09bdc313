//! GRPCRoute as the HTTPRoute it is on the wire.
//!
//! A gRPC call is an HTTP/2 POST to `/{service}/{method}`; GRPCRoute's
//! fields are a subset of HTTPRoute's with a method match instead of a path
//! match. Rewriting a GRPCRoute into an HTTPRoute (same parentRefs,
//! hostnames, filters, backendRefs, rule names) lets both kinds share one
//! attachment, precedence and compilation path, so they cannot drift apart.
//! Backends speak HTTP/2 when their Service port says so
//! (`appProtocol: kubernetes.io/h2c`).

use gateway_api::experimental::grpcroutes::GrpcRoute;
use gateway_api::experimental::httproutes::HttpRoute;
use serde_json::{json, Map, Value};

/// The HTTPRoute path match for one GRPCRoute method match.
fn path_match(method: &Value) -> Result<Option<Value>, String> {
    let kind = method
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Exact");
    let service = method
        .get("service")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let name = method
        .get("method")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    Ok(Some(match (kind, service, name) {
        (_, None, None) => return Ok(None),
        ("Exact", Some(s), Some(m)) => json!({"type": "Exact", "value": format!("/{s}/{m}")}),
        ("Exact", Some(s), None) => json!({"type": "PathPrefix", "value": format!("/{s}")}),
        ("Exact", None, Some(m)) => {
            json!({"type": "RegularExpression", "value": format!("/[^/]+/{}", regex::escape(m))})
        }
        // Each part is grouped: an alternation (`a|b`) stays inside its part.
        ("RegularExpression", s, m) => json!({
            "type": "RegularExpression",
            "value": format!("/(?:{})/(?:{})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        }),
        (other, _, _) => return Err(format!("method match type {other:?} is not supported")),
    }))
}

/// The equivalent HTTPRoute. Errors name the field that has no equivalent.
pub fn as_http_route(route: &GrpcRoute) -> Result<HttpRoute, String> {
    let mut v = serde_json::to_value(route).map_err(|e| e.to_string())?;
    if let Some(o) = v.as_object_mut() {
        o.insert("kind".into(), "HTTPRoute".into());
    }
    let rules = v.pointer_mut("/spec/rules").and_then(Value::as_array_mut);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let Some(matches) = rule.get_mut("matches").and_then(Value::as_array_mut) else {
            continue;
        };
        for (j, m) in matches.iter_mut().enumerate() {
            let Some(obj) = m.as_object_mut() else {
                continue;
            };
            let mut out = Map::new();
            if let Some(method) = obj.remove("method") {
                if let Some(path) = path_match(&method)
                    .map_err(|e| format!("spec.rules[{i}].matches[{j}].method: {e}"))?
                {
                    out.insert("path".into(), path);
                }
            }
            if let Some(headers) = obj.remove("headers") {
                out.insert("headers".into(), headers);
            }
            if let Some((k, _)) = obj.iter().next() {
                return Err(format!(
                    "spec.rules[{i}].matches[{j}].{k} has no HTTP equivalent"
                ));
            }
            *m = Value::Object(out);
        }
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
}

/// A route with only the GRPCRoute's metadata and parentRefs: enough to
/// report on each parent why the route is not accepted.
pub fn parents_only(route: &GrpcRoute) -> HttpRoute {
    let v = json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": serde_json::to_value(&route.metadata).unwrap_or(Value::Null),
        "spec": {"parentRefs": serde_json::to_value(&route.spec.parent_refs).unwrap_or(Value::Null)},
    });
    serde_json::from_value(v).unwrap_or_else(|_| HttpRoute {
        metadata: route.metadata.clone(),
        spec: Default::default(),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(rules: &str) -> GrpcRoute {
        serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: g, namespace: ns}}\n\
             spec:\n  parentRefs: [{{name: gw}}]\n  hostnames: [grpc.example.com]\n  rules:\n{rules}"
        ))
        .expect("valid GRPCRoute")
    }

    fn paths(h: &HttpRoute) -> Vec<(String, String)> {
        let v = serde_json::to_value(h).expect("json");
        v.pointer("/spec/rules/0/matches")
            .and_then(Value::as_array)
            .expect("matches")
            .iter()
            .map(|m| {
                let p = m.get("path").cloned().unwrap_or(Value::Null);
                (
                    p.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_string(),
                    p.get("value")
                        .and_then(Value::as_str)
                        .unwrap_or("-")
                        .to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn method_matches_become_path_matches() {
        let h = as_http_route(&grpc(
            "  - matches:\n\
             \x20   - method: {service: svc.Echo, method: Say}\n\
             \x20   - method: {service: svc.Echo}\n\
             \x20   - method: {method: Say.v2}\n\
             \x20   - method: {type: RegularExpression, service: 'svc\\..*', method: 'Say.*'}\n\
             \x20   - method: {type: RegularExpression, method: 'Say'}\n\
             \x20   - headers: [{name: x-version, value: one}]\n\
             \x20   backendRefs: [{name: s, port: 8080}]\n",
        ))
        .expect("converts");
        assert_eq!(
            paths(&h),
            vec![
                ("Exact".into(), "/svc.Echo/Say".into()),
                ("PathPrefix".into(), "/svc.Echo".into()),
                ("RegularExpression".into(), "/[^/]+/Say\\.v2".into()),
                ("RegularExpression".into(), "/(?:svc\\..*)/(?:Say.*)".into()),
                ("RegularExpression".into(), "/(?:[^/]+)/(?:Say)".into()),
                ("-".into(), "-".into()),
            ]
        );
        // An alternation stays inside its part (Envoy matches the whole path).
        let alt = as_http_route(&grpc(
            "  - matches:\n\
             \x20   - method: {type: RegularExpression, service: 'a|b', method: 'X'}\n\
             \x20   backendRefs: [{name: s, port: 8080}]\n",
        ))
        .expect("converts");
        let re = regex::Regex::new(&format!("^(?:{})$", paths(&alt)[0].1)).expect("regex");
        assert!(re.is_match("/a/X") && re.is_match("/b/X"));
        assert!(!re.is_match("/a") && !re.is_match("b/X") && !re.is_match("/a/Y"));
        let v = serde_json::to_value(&h).expect("json");
        assert_eq!(v["kind"], "HTTPRoute");
        assert_eq!(v["spec"]["hostnames"][0], "grpc.example.com");
        assert_eq!(
            v["spec"]["rules"][0]["matches"][5]["headers"][0]["value"],
            "one"
        );
        assert_eq!(v["spec"]["rules"][0]["backendRefs"][0]["port"], 8080);
    }

    #[test]
    fn filters_and_backend_filters_carry_over() {
        let h = as_http_route(&grpc(
            "  - filters:\n\
             \x20   - type: RequestHeaderModifier\n\
             \x20     requestHeaderModifier: {set: [{name: x-a, value: b}]}\n\
             \x20   backendRefs:\n\
             \x20   - name: s\n\
             \x20     port: 8080\n\
             \x20     weight: 3\n\
             \x20     filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [x-c]}}]\n",
        ))
        .expect("converts");
        let v = serde_json::to_value(&h).expect("json");
        assert_eq!(
            v["spec"]["rules"][0]["filters"][0]["requestHeaderModifier"]["set"][0]["name"],
            "x-a"
        );
        assert_eq!(v["spec"]["rules"][0]["backendRefs"][0]["weight"], 3);
        assert_eq!(
            v["spec"]["rules"][0]["backendRefs"][0]["filters"][0]["responseHeaderModifier"]
                ["remove"][0],
            "x-c"
        );
    }
}
