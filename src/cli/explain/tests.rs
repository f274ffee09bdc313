use super::*;

fn model(text: &str) -> ir::Model {
    crate::testing::model(text, "127.0.0.1/32")
}

fn config(api_backend: &str, extra_rule: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: switchyard}}
spec: {{controllerName: switchyard.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: switchyard
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec: {{ports: [{{port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: site, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    backendRefs: [{{name: {api_backend}, port: 80}}]
{extra_rule}  - backendRefs: [{{name: web, port: 80}}]
"#
    )
}

#[test]
fn request_lines_are_json_or_method_and_url() {
    let s = RequestSpec::parse_line(r#"{"id": 7, "url": "http://a/b", "headers": [["x", "1"]]}"#)
        .expect("parses")
        .expect("a request");
    assert_eq!(s.id, Some(serde_json::json!(7)));
    assert_eq!(s.headers, vec![("x".to_string(), "1".to_string())]);
    let s = RequestSpec::parse_line("POST https://a/b")
        .expect("parses")
        .expect("a request");
    assert_eq!(
        (s.method.as_deref(), s.url.as_str()),
        (Some("POST"), "https://a/b")
    );
    assert_eq!(
        RequestSpec::parse_line("  # comment").expect("parses"),
        None
    );
    assert!(
        RequestSpec::parse_line(r#"{"url": "http://a", "bogus": 1}"#).is_err(),
        "unknown fields are refused"
    );
}

#[test]
fn batch_answers_in_order_with_ids_and_errors() {
    let m = model(&config("api", ""));
    let specs = vec![
        RequestSpec {
            id: Some(serde_json::json!("a")),
            url: "http://shop.example.com/api/x".into(),
            ..Default::default()
        },
        RequestSpec {
            id: Some(serde_json::json!("b")),
            url: "nonsense".into(),
            ..Default::default()
        },
    ];
    let out = batch(&m, &specs);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["id"], "a");
    assert_eq!(out[0]["backends"][0]["name"], "api");
    assert_eq!(out[1]["id"], "b");
    assert!(
        out[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("expected")),
        "{}",
        out[1]
    );
    let text = render_text(&out[0]);
    for needle in [
        "Gateway   default/gw",
        "Route     HTTPRoute default/site rule 0",
        "Backend   Service default/api:80 weight 1",
        "Lost      HTTPRoute default/site rule 1",
    ] {
        assert!(text.contains(needle), "{needle:?} not in\n{text}");
    }
    assert!(render_text(&out[1]).starts_with("error:"));
}

#[test]
fn diff_finds_the_requests_a_change_moves() {
    let before = model(&config("api", ""));
    // The /api rule now goes to web, and a new exact rule takes /api/admin.
    let after = model(&config(
        "web",
        "  - matches: [{path: {type: Exact, value: /api/admin}}]\n    filters: [{type: RequestRedirect, requestRedirect: {statusCode: 302, hostname: admin.example.com}}]\n",
    ));
    let changes = diff(&before, &after, None);
    let urls: Vec<&str> = changes.iter().map(|c| c.request.url.as_str()).collect();
    assert!(
        urls.contains(&"http://shop.example.com:80/api"),
        "{changes:#?}"
    );
    assert!(
        urls.contains(&"http://shop.example.com:80/api/admin"),
        "{changes:#?}"
    );
    assert!(
        !urls
            .iter()
            .any(|u| u.ends_with("/sample") && !u.contains("/api")),
        "the catch-all did not move: {changes:#?}"
    );
    let admin = changes
        .iter()
        .find(|c| c.request.url.ends_with("/api/admin"))
        .expect("admin moved");
    assert!(
        admin
            .after
            .contains("302 → http://admin.example.com/api/admin"),
        "{admin:?}"
    );
    assert!(admin.before.contains("default/api:80×1"), "{admin:?}");
    assert!(diff(&before, &before, None).is_empty());
    let given = vec![RequestSpec {
        url: "http://shop.example.com/other".into(),
        ..Default::default()
    }];
    assert!(diff(&before, &after, Some(given)).is_empty());
}
