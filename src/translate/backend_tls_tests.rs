//! Unit tests of BackendTLSPolicy resolution, status and fail-closed routing.

use super::*;
use crate::status::RouteParentStatus;

fn ca_pem() -> String {
    let kp = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&kp).expect("ca").pem()
}

fn client_pair() -> (String, String) {
    let kp = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["gw.example.com".to_string()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    (cert.pem(), kp.serialize_pem())
}

const BASE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sy}
spec: {controllerName: switchyard.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: apps}
spec:
  gatewayClassName: sy
  addresses: [{type: IPAddress, value: 127.0.0.1}]
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: apps}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: api, port: 443}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: apps}
spec: {ports: [{name: https, port: 443, appProtocol: HTTPS}]}
"#;

fn inputs(extra: &str, ca: &str) -> Inputs {
    let mut inputs = Inputs::new(crate::inputs::DEFAULT_CONTROLLER_NAME);
    let text = format!("{BASE}\n---\n{extra}");
    let docs = crate::provider::file::parse_documents(&text).expect("yaml");
    for d in docs {
        inputs.insert_value(d).expect("decodes");
    }
    inputs
        .insert_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ca", "namespace": "apps"},
            "data": {"ca.crt": ca},
        }))
        .expect("configmap");
    inputs
}

fn policy(name: &str, validation: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\nmetadata: {{name: {name}, namespace: apps}}\n\
         spec:\n  targetRefs: [{{group: '', kind: Service, name: api}}]\n  validation: {validation}\n"
    )
}

const GOOD: &str =
    "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: api.example.com}";

fn route_resolved_refs(out: &super::super::Output) -> (String, String, String) {
    let Some(ObjectStatus::Route { parents }) =
        out.status.get(Kind::HTTPRoute, &ObjKey::new("apps", "r"))
    else {
        panic!("route status");
    };
    let p: &RouteParentStatus = &parents[0];
    let c = p
        .conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .expect("ResolvedRefs");
    (
        c.status.to_string(),
        c.reason.to_string(),
        c.message.to_string(),
    )
}

fn policy_conditions(out: &super::super::Output, name: &str) -> Vec<(String, String, String)> {
    let Some(ObjectStatus::Policy { ancestors }) = out
        .status
        .get(Kind::BackendTLSPolicy, &ObjKey::new("apps", name))
    else {
        panic!("policy status");
    };
    assert_eq!(ancestors.len(), 1, "the Gateway is the ancestor");
    assert_eq!(ancestors[0].ancestor_ref.name, "gw");
    ancestors[0]
        .conditions
        .iter()
        .map(|c| {
            (
                c.type_.to_string(),
                c.reason.to_string(),
                c.message.to_string(),
            )
        })
        .collect()
}

fn cluster(out: &super::super::Output) -> Option<&ir::Cluster> {
    out.model
        .gateways
        .get(&ObjKey::new("apps", "gw"))
        .and_then(|g| g.clusters.get("apps/api/443/tls"))
}

/// No cluster at all reaches Service apps/api (TLS or not).
fn no_cluster(out: &super::super::Output) -> bool {
    out.model
        .gateways
        .values()
        .flat_map(|g| g.clusters.values())
        .all(|c| c.service != ObjKey::new("apps", "api"))
}

#[test]
fn a_good_policy_puts_tls_on_the_cluster() {
    let ca = ca_pem();
    let out = super::super::translate(&inputs(&policy("p", GOOD), &ca));
    let t = cluster(&out).and_then(|c| c.tls.clone()).expect("TLS");
    assert_eq!(t.sni, "api.example.com");
    assert_eq!(
        t.subject_alt_names,
        [ir::SubjectAltName::Dns("api.example.com".into())]
    );
    assert!(matches!(&t.trusted_ca, ir::TrustedCa::Pem(p) if p.contains("BEGIN CERTIFICATE")));
    assert_eq!(route_resolved_refs(&out).0, "True");
    let conds = policy_conditions(&out, "p");
    assert_eq!(conds[0].0, "Accepted");
    assert_eq!(conds[0].1, "Accepted");
    assert_eq!(conds[1].1, "ResolvedRefs");
}

/// Bad input: the policy's condition names the field, the route's backend
/// is unresolved (never plaintext), and nothing panics.
fn fails_closed(validation: &str, ca: &str, accepted: &str, resolved: &str, needle: &str) {
    let out = super::super::translate(&inputs(&policy("p", validation), ca));
    assert!(no_cluster(&out), "no cluster: never plaintext");
    let (st, reason, msg) = route_resolved_refs(&out);
    assert_eq!(
        (st.as_str(), reason.as_str()),
        ("False", "InvalidBackendTLSPolicy")
    );
    assert!(msg.contains(needle), "{msg}");
    let conds = policy_conditions(&out, "p");
    assert_eq!(conds[0].1, accepted, "{conds:?}");
    assert_eq!(conds[1].1, resolved, "{conds:?}");
    assert!(
        conds.iter().any(|c| c.2.contains(needle)),
        "{needle}: {conds:?}"
    );
}

#[test]
fn an_unparsable_ca_fails_closed() {
    fails_closed(
        GOOD,
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        "NoValidCACertificate",
        "InvalidCACertificateRef",
        "caCertificateRefs[0]",
    );
    fails_closed(
        GOOD,
        "hello",
        "NoValidCACertificate",
        "InvalidCACertificateRef",
        "no PEM",
    );
}

#[test]
fn a_missing_configmap_or_key_fails_closed() {
    let ca = ca_pem();
    let v =
        "{caCertificateRefs: [{group: '', kind: ConfigMap, name: nope}], hostname: a.example.com}";
    fails_closed(
        v,
        &ca,
        "NoValidCACertificate",
        "InvalidCACertificateRef",
        "ConfigMap apps/nope not found",
    );
    let mut i = inputs(&policy("p", GOOD), &ca);
    i.insert_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "ca", "namespace": "apps"}, "data": {"other": "x"},
    }))
    .expect("configmap");
    let out = super::super::translate(&i);
    assert!(no_cluster(&out));
    assert!(route_resolved_refs(&out).2.contains("has no key ca.crt"));
}

#[test]
fn an_unsupported_kind_is_invalid_kind() {
    let v = "{caCertificateRefs: [{group: example.com, kind: Vault, name: v}], hostname: a.example.com}";
    fails_closed(
        v,
        &ca_pem(),
        "NoValidCACertificate",
        "InvalidKind",
        "example.com/Vault",
    );
}

#[test]
fn an_unknown_san_type_or_option_is_invalid() {
    let ca = ca_pem();
    let v =
        "{caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}], hostname: a.example.com, \
             subjectAltNames: [{type: IPAddress, hostname: 10.0.0.1}]}";
    fails_closed(v, &ca, "Invalid", "ResolvedRefs", "subjectAltNames[0]");
    let text = policy("p", GOOD) + "  options: {example.com/min-tls: '1.3'}\n";
    let out = super::super::translate(&inputs(&text, &ca));
    assert!(no_cluster(&out));
    let conds = policy_conditions(&out, "p");
    assert_eq!(conds[0].1, "Invalid");
    assert!(
        conds[0].2.contains("spec.options[\"example.com/min-tls\"]"),
        "{conds:?}"
    );
}

#[test]
fn system_ca_and_sans() {
    let v = "{wellKnownCACertificates: System, hostname: a.example.com, subjectAltNames: \
             [{type: Hostname, hostname: b.example.com}, {type: URI, uri: 'spiffe://td/ns/apps/sa/api'}]}";
    let out = super::super::translate(&inputs(&policy("p", v), &ca_pem()));
    let t = cluster(&out).and_then(|c| c.tls.clone()).expect("TLS");
    assert_eq!(t.trusted_ca, ir::TrustedCa::File(SYSTEM_CA_BUNDLE.into()));
    assert_eq!(t.sni, "a.example.com");
    assert_eq!(
        t.subject_alt_names,
        [
            ir::SubjectAltName::Dns("b.example.com".into()),
            ir::SubjectAltName::Uri("spiffe://td/ns/apps/sa/api".into())
        ],
        "hostname is not used for authentication once SANs are given"
    );
    let v = "{wellKnownCACertificates: Mozilla, hostname: a.example.com}";
    fails_closed(
        v,
        &ca_pem(),
        "Invalid",
        "ResolvedRefs",
        "wellKnownCACertificates",
    );
}

#[test]
fn conflicts_the_older_then_the_first_by_name_wins() {
    let ca = ca_pem();
    let older = policy("b-older", GOOD).replace(
        "namespace: apps}",
        "namespace: apps, creationTimestamp: '2024-01-01T00:00:00Z'}",
    );
    let newer = policy(
        "a-newer",
        "{wellKnownCACertificates: System, hostname: x.example.com}",
    )
    .replace(
        "namespace: apps}",
        "namespace: apps, creationTimestamp: '2025-01-01T00:00:00Z'}",
    );
    let out = super::super::translate(&inputs(&format!("{older}---\n{newer}"), &ca));
    let t = cluster(&out).and_then(|c| c.tls.clone()).expect("TLS");
    assert_eq!(t.policy, ObjKey::new("apps", "b-older"));
    assert_eq!(policy_conditions(&out, "b-older")[0].1, "Accepted");
    let lost = &policy_conditions(&out, "a-newer")[0];
    assert_eq!(lost.1, "Conflicted");
    assert!(lost.2.contains("apps/b-older"), "{lost:?}");
    // Same age: by name. A sectionName policy is more specific: no conflict.
    let by_name = format!("{}---\n{}", policy("b", GOOD), policy("a", GOOD));
    let out = super::super::translate(&inputs(&by_name, &ca));
    assert_eq!(policy_conditions(&out, "b")[0].1, "Conflicted");
    let section = policy("s", GOOD).replace("name: api}", "name: api, sectionName: https}");
    let out = super::super::translate(&inputs(
        &format!("{}---\n{section}", policy("a", GOOD)),
        &ca,
    ));
    assert_eq!(policy_conditions(&out, "a")[0].1, "Accepted");
    assert_eq!(policy_conditions(&out, "s")[0].1, "Accepted");
    let t = cluster(&out).and_then(|c| c.tls.clone()).expect("TLS");
    assert_eq!(t.policy, ObjKey::new("apps", "s"));
}

#[test]
fn without_a_policy_an_https_port_is_not_routed_in_plaintext() {
    let out = super::super::translate(&inputs("", &ca_pem()));
    assert!(no_cluster(&out));
    assert_eq!(route_resolved_refs(&out).1, "UnsupportedProtocol");
}

fn gateway_resolved_refs(out: &super::super::Output) -> Option<(String, String, String)> {
    let Some(ObjectStatus::Gateway { conditions, .. }) =
        out.status.get(Kind::Gateway, &ObjKey::new("apps", "gw"))
    else {
        panic!("gateway status");
    };
    assert!(conditions[0].is_true(), "still accepted: {conditions:?}");
    conditions
        .iter()
        .find(|c| c.type_ == "ResolvedRefs")
        .map(|c| {
            (
                c.status.to_string(),
                c.reason.to_string(),
                c.message.to_string(),
            )
        })
}

#[test]
fn the_gateway_client_certificate() {
    let ca = ca_pem();
    let (crt, key) = client_pair();
    let with_ref = |r: &str| {
        BASE.replace(
            "  listeners: [{name: http, port: 80, protocol: HTTP}]",
            &format!("  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n  tls: {{backend: {{clientCertificateRef: {r}}}}}"),
        )
    };
    let build = |r: &str, extra: serde_json::Value| {
        let mut i = inputs(&policy("p", GOOD), &ca);
        for d in crate::provider::file::parse_documents(&with_ref(r)).expect("yaml") {
            i.insert_value(d).expect("decodes");
        }
        if !extra.is_null() {
            i.insert_value(extra).expect("secret");
        }
        super::super::translate(&i)
    };
    let secret = |ns: &str| {
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "client", "namespace": ns},
            "stringData": {"tls.crt": crt, "tls.key": key}})
    };
    // Good: presented on TLS clusters, as an SDS secret; no unsupported field.
    let out = build("{name: client}", secret("apps"));
    let (st, reason, _) = gateway_resolved_refs(&out).expect("ResolvedRefs");
    assert_eq!((st.as_str(), reason.as_str()), ("True", "ResolvedRefs"));
    let t = cluster(&out).and_then(|c| c.tls.clone()).expect("TLS");
    assert_eq!(t.client_certificate.as_deref(), Some("apps/client"));
    assert!(out.model.gateways[&ObjKey::new("apps", "gw")]
        .secrets
        .contains_key("apps/client"));
    // Missing, and in another namespace without a ReferenceGrant.
    let out = build("{name: client}", serde_json::Value::Null);
    let (_, reason, msg) = gateway_resolved_refs(&out).expect("ResolvedRefs");
    assert_eq!(reason, "InvalidClientCertificateRef");
    assert!(
        msg.contains("spec.tls.backend.clientCertificateRef"),
        "{msg}"
    );
    assert!(cluster(&out)
        .and_then(|c| c.tls.as_ref())
        .is_some_and(|t| t.client_certificate.is_none()));
    let out = build("{name: client, namespace: infra}", secret("infra"));
    assert_eq!(
        gateway_resolved_refs(&out).expect("ResolvedRefs").1,
        "RefNotPermitted"
    );
}
