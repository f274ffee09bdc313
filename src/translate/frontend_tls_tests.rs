//! Unit tests of `spec.tls.frontend`: which listeners, CA resolution,
//! listener and Gateway status, the IR and the Envoy TLS context.

use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir;
use crate::status::{Condition, ObjectStatus};

fn ca_pem() -> String {
    let kp = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&kp).expect("ca").pem()
}

fn server_pair() -> (String, String) {
    let kp = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["example.com".to_string()])
        .expect("params")
        .self_signed(&kp)
        .expect("cert");
    (cert.pem(), kp.serialize_pem())
}

/// A Gateway `gw` in `apps` with HTTPS listeners on 443 and 8443, an HTTP
/// listener on 80 and a TLS (terminate) listener on 9443, `tls` as its
/// `spec.tls`, and ConfigMaps `ca`, `ca2` (valid), `bad` (not PEM).
fn inputs(tls: &str, extra: &str) -> Inputs {
    let text = format!(
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
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  tls: {tls}
  listeners:
  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: https-alt, port: 8443, protocol: HTTPS, hostname: alt.example.com, tls: {{certificateRefs: [{{name: cert}}]}}}}
  - {{name: http, port: 80, protocol: HTTP}}
  - {{name: tls, port: 9443, protocol: TLS, tls: {{mode: Terminate, certificateRefs: [{{name: cert}}]}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: bad, namespace: apps}}
data: {{ca.crt: "not a certificate"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {{name: term, namespace: apps}}
spec:
  parentRefs: [{{name: gw, sectionName: tls}}]
  hostnames: [tls.example.com]
  rules: [{{backendRefs: [{{name: plain, port: 9000}}]}}]
---
{extra}
"#
    );
    let mut inputs = crate::testing::inputs(&text);
    let (crt, key) = server_pair();
    let docs = [
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ca", "namespace": "apps"}, "data": {"ca.crt": ca_pem()}}),
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ca2", "namespace": "apps"}, "data": {"ca.crt": ca_pem()}}),
        serde_json::json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "cert", "namespace": "apps"},
            "stringData": {"tls.crt": crt, "tls.key": key}}),
    ];
    for d in docs {
        inputs.insert_value(d).expect("decodes");
    }
    inputs
}

fn translate(inputs: &Inputs) -> crate::translate::Output {
    crate::translate::translate(inputs)
}

fn gateway_status(
    out: &crate::translate::Output,
) -> (Vec<Condition>, Vec<crate::status::ListenerStatus>) {
    match out.status.get(Kind::Gateway, &ObjKey::new("apps", "gw")) {
        Some(ObjectStatus::Gateway {
            conditions,
            listeners,
            ..
        }) => (conditions.clone(), listeners.clone()),
        other => panic!("Gateway status: {other:?}"),
    }
}

/// (type, status, reason, message) of listener `name`'s conditions.
fn listener(out: &crate::translate::Output, name: &str) -> Vec<(String, bool, String, String)> {
    let (_, ls) = gateway_status(out);
    let l = ls.iter().find(|l| l.name == name).expect("listener status");
    l.conditions
        .iter()
        .map(|c| {
            (
                c.type_.to_string(),
                c.is_true(),
                c.reason.to_string(),
                c.message.to_string(),
            )
        })
        .collect()
}

fn cond<'a>(
    conds: &'a [(String, bool, String, String)],
    t: &str,
) -> &'a (String, bool, String, String) {
    conds.iter().find(|c| c.0 == t).expect("condition")
}

/// Client validation of the chain serving Gateway listener `section` on `port`.
fn chain_validation(
    out: &crate::translate::Output,
    port: u16,
    section: &str,
) -> Option<Option<ir::ClientValidation>> {
    let gw = out.model.gateways.get(&ObjKey::new("apps", "gw"))?;
    let l = gw.listeners.iter().find(|l| l.port == port)?;
    let c = l.chains.iter().find(|c| c.name == section)?;
    match &c.tls {
        ir::ChainTls::Terminate {
            client_validation, ..
        } => Some(client_validation.clone()),
        _ => Some(None),
    }
}

fn client_cas(out: &crate::translate::Output) -> std::collections::BTreeMap<String, ir::ClientCa> {
    out.model.gateways[&ObjKey::new("apps", "gw")]
        .client_cas
        .clone()
}

const DEFAULT_AND_PER_PORT: &str = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}, \
     perPort: [{port: 8443, tls: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca2}]}}}]}}";

#[test]
fn default_applies_to_https_listeners_and_per_port_overrides_it() {
    let inputs = inputs(DEFAULT_AND_PER_PORT, "");
    let out = translate(&inputs);
    assert_eq!(
        chain_validation(&out, 443, "https"),
        Some(Some(ir::ClientValidation {
            ca: "apps/gw/client-ca/default".into(),
            insecure_fallback: false,
        }))
    );
    assert_eq!(
        chain_validation(&out, 8443, "https-alt"),
        Some(Some(ir::ClientValidation {
            ca: "apps/gw/client-ca/8443".into(),
            insecure_fallback: false,
        })),
        "the perPort entry of 8443 replaces the default there"
    );
    let gw = &out.model.gateways[&ObjKey::new("apps", "gw")];
    let tls_chains = &gw
        .listeners
        .iter()
        .find(|l| l.port == 9443)
        .expect("TLS listener")
        .chains;
    assert!(!tls_chains.is_empty());
    for c in tls_chains {
        assert!(
            matches!(
                c.tls,
                ir::ChainTls::Terminate {
                    client_validation: None,
                    ..
                }
            ),
            "a TLS listener is not an HTTPS listener: no client validation ({c:?})"
        );
    }
    let cas = client_cas(&out);
    let ca = |name: &str| {
        inputs.config_maps[&ObjKey::new("apps", name)]
            .data
            .as_ref()
            .expect("data")["ca.crt"]
            .clone()
    };
    assert_eq!(cas.len(), 2);
    assert_eq!(cas["apps/gw/client-ca/default"].pem.trim(), ca("ca").trim());
    assert_eq!(cas["apps/gw/client-ca/8443"].pem.trim(), ca("ca2").trim());
    for name in ["https", "https-alt", "http", "tls"] {
        let c = listener(&out, name);
        for t in ["Accepted", "ResolvedRefs", "Programmed"] {
            assert!(cond(&c, t).1, "{name} {t}: {:?}", cond(&c, t));
        }
    }
    let (gw, _) = gateway_status(&out);
    assert!(gw
        .iter()
        .all(|c| c.type_ != "InsecureFrontendValidationMode"));
    assert!(gw
        .iter()
        .find(|c| c.type_ == "Accepted")
        .expect("Accepted")
        .is_true());
}

#[test]
fn a_per_port_entry_without_validation_turns_it_off_on_that_port() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}, \
               perPort: [{port: 8443, tls: {}}]}}";
    let out = translate(&inputs(tls, ""));
    assert!(matches!(
        chain_validation(&out, 443, "https"),
        Some(Some(_))
    ));
    assert_eq!(chain_validation(&out, 8443, "https-alt"), Some(None));
    assert_eq!(client_cas(&out).len(), 1);
}

#[test]
fn insecure_fallback_is_in_the_ir_and_on_the_gateway() {
    let tls = "{frontend: {default: {validation: {mode: AllowValidOnly, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}, \
               perPort: [{port: 8443, tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}}]}}";
    let out = translate(&inputs(tls, ""));
    let v = |port, s| {
        chain_validation(&out, port, s)
            .flatten()
            .expect("validation")
    };
    assert!(!v(443, "https").insecure_fallback);
    assert!(v(8443, "https-alt").insecure_fallback);
    let (gw, _) = gateway_status(&out);
    let c = gw
        .iter()
        .find(|c| c.type_ == "InsecureFrontendValidationMode")
        .expect("InsecureFrontendValidationMode");
    assert!(c.is_true());
    assert_eq!(c.reason, "ConfigurationChanged");
    assert!(c.message.contains("port 8443"), "{}", c.message);
    assert!(!c.message.contains("default"), "{}", c.message);
}

#[test]
fn a_missing_config_map_takes_the_listener_out_and_leaves_the_others() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: nope}]}}, \
               perPort: [{port: 8443, tls: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}}]}}";
    let out = translate(&inputs(tls, ""));
    let c = listener(&out, "https");
    let rr = cond(&c, "ResolvedRefs");
    assert_eq!((rr.1, rr.2.as_str()), (false, "InvalidCACertificateRef"));
    assert!(
        rr.3.contains("spec.tls.frontend.default.validation.caCertificateRefs[0]")
            && rr.3.contains("ConfigMap apps/nope not found"),
        "{}",
        rr.3
    );
    let acc = cond(&c, "Accepted");
    assert_eq!((acc.1, acc.2.as_str()), (false, "NoValidCACertificate"));
    assert!(!cond(&c, "Programmed").1);
    assert_eq!(
        chain_validation(&out, 443, "https"),
        None,
        "not served: never without the client check"
    );
    // The listener on the port with a good entry, and the others, serve.
    for name in ["https-alt", "http", "tls"] {
        let c = listener(&out, name);
        assert!(cond(&c, "Accepted").1 && cond(&c, "Programmed").1, "{name}");
    }
    assert!(matches!(
        chain_validation(&out, 8443, "https-alt"),
        Some(Some(_))
    ));
    let (gw, _) = gateway_status(&out);
    let acc = gw.iter().find(|c| c.type_ == "Accepted").expect("Accepted");
    assert_eq!(acc.reason, "ListenersNotValid");
    assert!(acc.is_true(), "some listeners are valid");
}

#[test]
fn an_unparsable_ca_names_the_object_and_the_field() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: bad}]}}}}";
    let out = translate(&inputs(tls, ""));
    let c = listener(&out, "https");
    let rr = cond(&c, "ResolvedRefs");
    assert_eq!(rr.2, "InvalidCACertificateRef");
    assert!(
        rr.3.starts_with("spec.tls.frontend.default.validation.caCertificateRefs[0]: ConfigMap apps/bad key ca.crt"),
        "{}",
        rr.3
    );
    assert_eq!(cond(&c, "Accepted").2, "NoValidCACertificate");
    let acc = cond(&listener(&out, "https-alt"), "Accepted").clone();
    assert_eq!(
        acc.2, "NoValidCACertificate",
        "the default targets 8443 too"
    );
}

#[test]
fn a_wrong_kind_is_invalid_ca_certificate_kind() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: Service, name: ca}]}}}}";
    let out = translate(&inputs(tls, ""));
    let c = listener(&out, "https");
    let rr = cond(&c, "ResolvedRefs");
    assert_eq!((rr.1, rr.2.as_str()), (false, "InvalidCACertificateKind"));
    assert!(rr.3.contains("core/Service ca"), "{}", rr.3);
    assert_eq!(cond(&c, "Accepted").2, "NoValidCACertificate");
}

#[test]
fn another_namespace_needs_a_reference_grant() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca, namespace: other}]}}}}";
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ca, namespace: other}\ndata: {ca.crt: x}\n";
    let out = translate(&inputs(tls, cm));
    let c = listener(&out, "https");
    assert_eq!(cond(&c, "ResolvedRefs").2, "RefNotPermitted");
    assert_eq!(cond(&c, "Accepted").2, "NoValidCACertificate");

    let grant = "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\n\
                 metadata: {name: g, namespace: other}\n\
                 spec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: apps}]\n  to: [{group: '', kind: ConfigMap}]\n";
    let mut inputs = inputs(tls, &format!("{grant}---\n"));
    inputs
        .insert_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "ca", "namespace": "other"}, "data": {"ca.crt": ca_pem()}}))
        .expect("decodes");
    let out = translate(&inputs);
    let c = listener(&out, "https");
    assert!(cond(&c, "ResolvedRefs").1, "{:?}", cond(&c, "ResolvedRefs"));
    assert!(matches!(
        chain_validation(&out, 443, "https"),
        Some(Some(_))
    ));
}

#[test]
fn some_valid_references_serve_with_those_and_report_the_others() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}, {group: '', kind: ConfigMap, name: nope}]}}}}";
    let inputs = inputs(tls, "");
    let out = translate(&inputs);
    let c = listener(&out, "https");
    let rr = cond(&c, "ResolvedRefs");
    assert_eq!((rr.1, rr.2.as_str()), (false, "InvalidCACertificateRef"));
    assert!(rr.3.contains("caCertificateRefs[1]"), "{}", rr.3);
    assert!(cond(&c, "Accepted").1);
    assert!(cond(&c, "Programmed").1, "served with the valid CA");
    let cas = client_cas(&out);
    let want = inputs.config_maps[&ObjKey::new("apps", "ca")]
        .data
        .as_ref()
        .expect("data")["ca.crt"]
        .clone();
    assert_eq!(cas["apps/gw/client-ca/default"].pem.trim(), want.trim());
}

#[test]
fn a_secret_can_hold_the_ca() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: Secret, name: ca-secret}]}}}}";
    let mut inputs = inputs(tls, "");
    inputs
        .insert_value(serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "ca-secret", "namespace": "apps"}, "stringData": {"ca.crt": ca_pem()}}))
        .expect("decodes");
    let out = translate(&inputs);
    assert!(cond(&listener(&out, "https"), "ResolvedRefs").1);
    assert!(matches!(
        chain_validation(&out, 443, "https"),
        Some(Some(_))
    ));
}

#[test]
fn envoy_requires_a_trusted_certificate_or_accepts_any_on_fallback() {
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;
    use tls::common_tls_context::ValidationContextType;
    let strict = crate::xds::build::downstream_tls_context(
        &["apps/cert".into()],
        &[],
        Some(&ir::ClientValidation {
            ca: "apps/gw/client-ca/default".into(),
            insecure_fallback: false,
        }),
    );
    assert_eq!(
        strict.require_client_certificate.map(|b| b.value),
        Some(true)
    );
    let common = strict.common_tls_context.expect("common");
    assert!(matches!(
        common.validation_context_type,
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) if s.name == "apps/gw/client-ca/default"
    ));

    let fallback = crate::xds::build::downstream_tls_context(
        &["apps/cert".into()],
        &[],
        Some(&ir::ClientValidation {
            ca: "apps/gw/client-ca/443".into(),
            insecure_fallback: true,
        }),
    );
    assert_eq!(
        fallback.require_client_certificate.map(|b| b.value),
        Some(false)
    );
    let Some(ValidationContextType::CombinedValidationContext(c)) = fallback
        .common_tls_context
        .expect("common")
        .validation_context_type
    else {
        panic!("a combined validation context");
    };
    assert_eq!(
        c.default_validation_context
            .expect("default")
            .trust_chain_verification,
        tls::certificate_validation_context::TrustChainVerification::AcceptUntrusted as i32
    );
    assert_eq!(
        c.validation_context_sds_secret_config.expect("sds").name,
        "apps/gw/client-ca/443"
    );

    let plain = crate::xds::build::downstream_tls_context(&["apps/cert".into()], &[], None);
    assert!(plain.require_client_certificate.is_none());
    assert!(plain
        .common_tls_context
        .expect("common")
        .validation_context_type
        .is_none());
}

#[test]
fn the_ca_is_an_sds_validation_context_secret() {
    let out = translate(&inputs(DEFAULT_AND_PER_PORT, ""));
    let snap = crate::xds::build::build(&out.model);
    let doc = crate::pipeline::xds_document(&snap).expect("render");
    let secrets = doc["gateways"]["apps/gw"]["secrets"]
        .as_array()
        .expect("secrets");
    let ca = secrets
        .iter()
        .find(|s| s["name"] == "apps/gw/client-ca/default")
        .expect("CA secret");
    assert!(ca["validationContext"]["trustedCa"]["inlineString"]
        .as_str()
        .is_some_and(|p| p.contains("BEGIN CERTIFICATE")));
}

#[test]
fn explain_notes_the_client_certificate_the_listener_wants() {
    let tls = "{frontend: {default: {validation: {caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}, \
               perPort: [{port: 8443, tls: {validation: {mode: AllowInsecureFallback, caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]}}}]}}";
    let out = translate(&inputs(tls, ""));
    let ask = |line: &str| {
        let r = crate::ir::eval::Request::parse(line).expect("request");
        crate::ir::eval::evaluate(&out.model, &r).expect("evaluates")
    };
    let strict = ask("https://app.example.com:443/");
    assert!(
        strict
            .notes
            .iter()
            .any(|n| n.contains("requires a client certificate")
                && n.contains("apps/gw/client-ca/default")),
        "{:?}",
        strict.notes
    );
    let fallback = ask("https://alt.example.com:8443/");
    assert!(
        fallback
            .notes
            .iter()
            .any(|n| n.contains("AllowInsecureFallback")),
        "{:?}",
        fallback.notes
    );
    let plain = ask("http://app.example.com:80/");
    assert!(plain
        .notes
        .iter()
        .all(|n| !n.contains("client certificate")));
}
