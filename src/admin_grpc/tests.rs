//! The admin service over a real tonic connection on a loopback port,
//! answering from an in-process cache fed by a real translation.

use std::sync::Arc;

use super::pb::admin_service_client::AdminServiceClient;
use super::*;
use crate::xds::cache::{Protocol, Selection};
use crate::xds::type_url;

const KEY_MARKER: &str = "PRIVATE KEY";

fn manifests() -> String {
    let kp = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["shop.example.com".to_string()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    let indent = |s: String| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sy}}
spec: {{controllerName: switchyard.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: apps}}
spec:
  gatewayClassName: sy
  listeners:
  - {{name: http, port: 8080, protocol: HTTP}}
  - {{name: https, port: 8443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cert, namespace: apps}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{}  tls.key: |
{}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop, namespace: apps}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  hostnames: [shop.example.com]
  rules: [{{matches: [{{path: {{type: PathPrefix, value: /cart}}}}], backendRefs: [{{name: missing, port: 80}}]}}]
"#,
        indent(cert.pem()),
        indent(kp.serialize_pem())
    )
}

struct Fixture {
    cache: Arc<Cache>,
    _node: crate::xds::cache::NodeHandle,
    client: AdminServiceClient<tonic::transport::Channel>,
    yaml: String,
}

async fn fixture() -> Fixture {
    let yaml = manifests();
    let mut inputs = crate::testing::inputs(&yaml);
    crate::provider::addresses::AddressPool::parse("127.0.0.1/32")
        .expect("pool")
        .assign(&mut inputs);
    let (out, snap) = crate::pipeline::run(&inputs);
    let cache = Cache::new();
    let version = cache.set_snapshot(snap);
    let node = cache.register("envoy-1", "edge", Protocol::Delta, &Selection::default());
    node.acked(type_url::LISTENER, version, "n1");
    node.acked(type_url::CLUSTER, version - 1, "n0");
    node.nacked(
        type_url::CLUSTER,
        crate::xds::cache::Nack {
            version,
            nonce: "n2".into(),
            error: "bad cluster".into(),
            resource_names: vec!["c1".into()],
            at_unix_ms: 7,
        },
    );
    let model = ModelHandle::default();
    model.set(Arc::new(out.model.clone()));
    let status = StatusHandle::default();
    status.set(out.status.clone());
    let state = AdminState {
        cache: cache.clone(),
        model,
        status,
        controller_name: crate::inputs::DEFAULT_CONTROLLER_NAME.into(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, state, std::future::pending()));
    let client = AdminServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    Fixture {
        cache,
        _node: node,
        client,
        yaml,
    }
}

#[tokio::test]
async fn list_nodes_reports_acks_and_nacks() {
    let mut f = fixture().await;
    let version = f.cache.current().version;
    let resp = f
        .client
        .list_nodes(pb::ListNodesRequest {})
        .await
        .expect("ListNodes")
        .into_inner();
    assert_eq!(resp.snapshot_version, version);
    let [n] = resp.nodes.as_slice() else {
        panic!("one node expected: {resp:?}")
    };
    assert_eq!(
        (n.node_id.as_str(), n.cluster.as_str()),
        ("envoy-1", "edge")
    );
    assert_eq!(n.protocol, pb::Protocol::Delta as i32);
    assert_eq!(n.gateways, vec!["apps/gw".to_string()]);
    // Push order: CDS before LDS.
    let names: Vec<&str> = n.types.iter().map(|t| t.short_name.as_str()).collect();
    assert_eq!(names, ["cds", "lds"]);
    let cds = &n.types[0];
    assert_eq!(cds.acked_version, version - 1);
    assert!(!cds.current);
    let nack = cds.last_nack.as_ref().expect("nack");
    assert_eq!(
        (nack.error.as_str(), nack.resource_names.clone()),
        ("bad cluster", vec!["c1".to_string()])
    );
    assert!(n.types[1].current);
}

#[tokio::test]
async fn node_config_shows_the_route_and_never_a_private_key() {
    let mut f = fixture().await;
    let resp = f
        .client
        .get_node_config(pb::GetNodeConfigRequest {
            node_id: "envoy-1".into(),
            types: vec![],
        })
        .await
        .expect("GetNodeConfig")
        .into_inner();
    assert_eq!(resp.version, f.cache.current().version);
    let all: String = resp
        .types
        .iter()
        .flat_map(|t| t.resources.iter().map(|r| r.json.clone()))
        .collect();
    assert!(all.contains("/cart"), "the route's match is pushed: {all}");
    let sds = resp
        .types
        .iter()
        .find(|t| t.short_name == "sds")
        .expect("sds");
    assert!(
        !sds.resources.is_empty(),
        "the certificate is pushed over SDS"
    );
    assert!(all.contains("[redacted]"));
    assert!(!all.contains(KEY_MARKER), "a private key leaked: {all}");

    let only = f
        .client
        .get_node_config(pb::GetNodeConfigRequest {
            node_id: "envoy-1".into(),
            types: vec!["rds".into()],
        })
        .await
        .expect("GetNodeConfig rds")
        .into_inner();
    assert_eq!(only.types.len(), 1);
    assert_eq!(only.types[0].type_url, type_url::ROUTE);

    let unknown = f
        .client
        .get_node_config(pb::GetNodeConfigRequest {
            node_id: "nobody".into(),
            types: vec![],
        })
        .await
        .expect_err("unknown node");
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let bad_type = f
        .client
        .get_node_config(pb::GetNodeConfigRequest {
            node_id: "envoy-1".into(),
            types: vec!["xds".into()],
        })
        .await
        .expect_err("unknown type");
    assert_eq!(bad_type.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn status_is_flattened_per_parent() {
    let mut f = fixture().await;
    let resp = f
        .client
        .get_status(pb::GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    let route = resp
        .objects
        .iter()
        .find(|o| o.kind == "HTTPRoute" && o.name == "shop")
        .expect("route status");
    let resolved = route
        .conditions
        .iter()
        .find(|c| c.r#type == "ResolvedRefs")
        .expect("ResolvedRefs");
    assert_eq!(resolved.parent, "apps/gw/http");
    assert_eq!(
        (resolved.status.as_str(), resolved.reason.as_str()),
        ("False", "BackendNotFound")
    );
    let gw = resp
        .objects
        .iter()
        .find(|o| o.kind == "Gateway")
        .expect("gateway status");
    assert!(gw
        .conditions
        .iter()
        .any(|c| c.parent == "https" && c.r#type == "Accepted" && c.status == "True"));
    assert!(gw.status_json.contains("\"listeners\""));
}

#[tokio::test]
async fn translate_and_explain() {
    let mut f = fixture().await;
    let t = f
        .client
        .translate(pb::TranslateRequest {
            yaml: f.yaml.clone(),
            ..Default::default()
        })
        .await
        .expect("Translate")
        .into_inner();
    assert!(t.xds_json.contains("/cart"));
    assert!(!t.xds_json.contains(KEY_MARKER));
    assert!(t.status_json.contains("BackendNotFound"));
    let bad = f
        .client
        .translate(pb::TranslateRequest {
            yaml: "kind: [".into(),
            ..Default::default()
        })
        .await
        .expect_err("malformed YAML");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let e = f
        .client
        .explain(pb::ExplainRequest {
            requests_json: vec![r#"{"url": "http://shop.example.com:8080/cart"}"#.into()],
        })
        .await
        .expect("Explain")
        .into_inner();
    assert_eq!(e.answers_json.len(), 1);
    let bad = f
        .client
        .explain(pb::ExplainRequest {
            requests_json: vec!["{\"nope\": 1}".into()],
        })
        .await
        .expect_err("bad spec");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

#[test]
fn redaction_replaces_every_private_key() {
    let mut v = serde_json::json!({
        "name": "s",
        "tlsCertificate": {"certificateChain": {"inlineString": "CERT"},
                           "privateKey": {"inlineString": "-----BEGIN PRIVATE KEY-----x"}},
        "nested": [{"privateKey": {"inlineBytes": "AAAA"}}],
    });
    crate::pipeline::redact(&mut v);
    let text = v.to_string();
    assert!(
        !text.contains(KEY_MARKER) && !text.contains("AAAA"),
        "{text}"
    );
    assert_eq!(
        v["tlsCertificate"]["certificateChain"]["inlineString"],
        "CERT"
    );
    assert_eq!(v["nested"][0]["privateKey"]["inlineString"], "[redacted]");
}
