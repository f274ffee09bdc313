//! Unit tests of certificate checks, the last-good rule, expiry warnings
//! in listener status and the certificate metrics.

use super::*;
use crate::inputs::Kind;
use crate::status::ObjectStatus;

const DAY: i64 = 86_400;

/// A self-signed pair for `cn`, valid until `not_after` (unix seconds).
fn pair_until(cn: &str, not_after: i64) -> (String, String) {
    let kp = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(vec![cn.to_string()]).expect("params");
    params.not_before =
        time::OffsetDateTime::from_unix_timestamp(not_after - 400 * DAY).expect("t");
    params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("t");
    let cert = params.self_signed(&kp).expect("cert");
    (cert.pem(), kp.serialize_pem())
}

fn pair(cn: &str) -> (String, String) {
    pair_until(cn, wall_clock() + 365 * DAY)
}

fn secret(ns: &str, name: &str, crt: &str, key: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "type": "kubernetes.io/tls",
        "stringData": {"tls.crt": crt, "tls.key": key},
    })
}

fn served_crt(inputs: &Inputs, key: &ObjKey) -> String {
    tls_pair(&inputs.secrets[key]).expect("served pair").0
}

fn rejected(key: &ObjKey) -> f64 {
    crate::metrics::catalogue::CERTIFICATE_ROTATIONS_REJECTED.get([&key.namespace, &key.name])
}

#[test]
fn a_bad_rotation_keeps_the_last_good_certificate() {
    // A namespace of its own: the metrics registry is global.
    let key = ObjKey::new("certs-rotation", "tls");
    let mut inputs = Inputs::new("c");
    let good_until = wall_clock() + 100 * DAY;
    let (crt1, key1) = pair_until("a.example.com", good_until);
    let (crt2, key2) = pair("b.example.com");
    let (old_crt, old_key) = pair_until("old.example.com", wall_clock() - DAY);
    inputs
        .insert_value(secret(&key.namespace, &key.name, &crt1, &key1))
        .expect("decodes");
    assert!(inputs.certificate_rejections.is_empty());

    let bad = [
        (crt2.clone(), key1.clone(), "does not belong"),
        ("not a pem".to_string(), key1.clone(), "tls.crt"),
        (old_crt.clone(), old_key.clone(), "expired at"),
    ];
    for (n, (c, k, why)) in bad.iter().enumerate() {
        inputs
            .insert_value(secret(&key.namespace, &key.name, c, k))
            .expect("decodes");
        let r = &inputs.certificate_rejections[&key];
        assert!(r.why.contains(why), "{}", r.why);
        assert_eq!(r.last_good_not_after, Some(good_until));
        assert_eq!(served_crt(&inputs, &key), crt1, "the last good stays");
        assert_eq!(rejected(&key), (n + 1) as f64);
    }
    // The same refused content again (a relist) is not another rotation.
    inputs
        .insert_value(secret(&key.namespace, &key.name, &old_crt, &old_key))
        .expect("decodes");
    assert_eq!(rejected(&key), 3.0);
    assert_eq!(served_crt(&inputs, &key), crt1);
    assert!(
        matches!(usable(&inputs, &key), Usable::Degraded { ref problem, .. }
        if problem.contains("expired at") && problem.contains(&rfc3339(good_until)))
    );

    // A good rotation replaces it and clears the refusal.
    inputs
        .insert_value(secret(&key.namespace, &key.name, &crt2, &key2))
        .expect("decodes");
    assert!(inputs.certificate_rejections.is_empty());
    assert_eq!(served_crt(&inputs, &key), crt2);
    assert!(matches!(usable(&inputs, &key), Usable::Good { .. }));

    // Deleting the Secret forgets everything about it.
    inputs
        .insert_value(secret(&key.namespace, &key.name, "junk", &key2))
        .expect("decodes");
    inputs.remove(Kind::Secret, &key);
    assert!(inputs.certificate_rejections.is_empty());
}

#[test]
fn without_a_last_good_a_bad_secret_is_refused() {
    let key = ObjKey::new("certs-first", "tls");
    let mut inputs = Inputs::new("c");
    let (crt, k) = pair_until("x.example.com", wall_clock() - 3 * DAY);
    inputs
        .insert_value(secret(&key.namespace, &key.name, &crt, &k))
        .expect("decodes");
    let r = &inputs.certificate_rejections[&key];
    assert_eq!(r.last_good_not_after, None);
    match usable(&inputs, &key) {
        Usable::Refused(why) => assert!(why.starts_with("its certificate expired at")),
        other => panic!("{other:?}"),
    }
    assert_eq!(rejected(&key), 0.0, "not a rotation");
    // Broken after refused: still nothing to fall back on.
    let (good, _) = pair("y.example.com");
    inputs
        .insert_value(secret(&key.namespace, &key.name, &good, &k))
        .expect("decodes");
    assert!(
        matches!(usable(&inputs, &key), Usable::Refused(ref w) if w.contains("does not belong"))
    );
}

#[test]
fn a_served_certificate_that_expired_since_is_still_served() {
    let key = ObjKey::new("certs-aged", "tls");
    let mut inputs = Inputs::new("c");
    let until = wall_clock() + 10 * DAY;
    let (crt, k) = pair_until("x.example.com", until);
    inputs
        .insert_value(secret(&key.namespace, &key.name, &crt, &k))
        .expect("decodes");
    // Delivered again, unchanged (a relist): no verdict change.
    inputs
        .insert_value(secret(&key.namespace, &key.name, &crt, &k))
        .expect("decodes");
    assert!(inputs.certificate_rejections.is_empty());
    inputs.now = Some(until + DAY);
    match usable(&inputs, &key) {
        Usable::Degraded {
            problem,
            crt: served,
            ..
        } => {
            assert_eq!(served, crt);
            assert!(
                problem.contains("expired at") && problem.contains("still served"),
                "{problem}"
            );
        }
        other => panic!("{other:?}"),
    }
    // 13 days before: a warning with the days left; 15 days before: none.
    inputs.now = Some(until - 13 * DAY - 60);
    match usable(&inputs, &key) {
        Usable::Good {
            warning: Some(w), ..
        } => {
            assert!(
                w.contains("13 days left") && w.contains(&rfc3339(until)),
                "{w}"
            );
        }
        other => panic!("{other:?}"),
    }
    inputs.now = Some(until - 15 * DAY);
    assert!(matches!(
        usable(&inputs, &key),
        Usable::Good { warning: None, .. }
    ));
    inputs.now = None;
    assert!(matches!(
        usable(&inputs, &key),
        Usable::Good { warning: None, .. }
    ));
}

#[test]
fn rfc3339_is_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(rfc3339(1_767_225_600), "2026-01-01T00:00:00Z");
}

/// A Gateway `gw` in `ns` with HTTPS listener `https` on Secret `cert`.
fn gateway(ns: &str) -> Inputs {
    crate::testing::inputs(&format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sy}}
spec: {{controllerName: switchyard.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: {ns}}}
spec:
  gatewayClassName: sy
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
"#
    ))
}

/// (status, reason, message) of the listener's condition `t`.
fn listener_condition(out: &crate::translate::Output, ns: &str, t: &str) -> (bool, String, String) {
    let Some(ObjectStatus::Gateway { listeners, .. }) =
        out.status.get(Kind::Gateway, &ObjKey::new(ns, "gw"))
    else {
        panic!("no Gateway status");
    };
    let c = listeners[0]
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .expect("condition");
    (c.is_true(), c.reason.to_string(), c.message.to_string())
}

fn served_chain(out: &crate::translate::Output, ns: &str) -> Option<String> {
    let gw = out.model.gateways.get(&ObjKey::new(ns, "gw"))?;
    gw.secrets
        .get(&format!("{ns}/cert"))
        .map(|s| s.certificate_chain.clone())
}

#[test]
fn listener_status_tells_expiry_and_last_good() {
    let ns = "certs-listener";
    let mut inputs = gateway(ns);
    let until = wall_clock() + 30 * DAY;
    let (crt, k) = pair_until("a.example.com", until);
    inputs
        .insert_value(secret(ns, "cert", &crt, &k))
        .expect("decodes");
    inputs.now = Some(until - 10 * DAY);
    let out = crate::translate::translate(&inputs);
    let (ok, reason, msg) = listener_condition(&out, ns, "ResolvedRefs");
    assert!(ok, "{msg}");
    assert_eq!(reason, "ResolvedRefs");
    assert!(
        msg.contains(&format!("Secret {ns}/cert")) && msg.contains("10 days left"),
        "{msg}"
    );

    // Rotated to an expired certificate: the last good is served.
    let (bad, bad_key) = pair_until("b.example.com", wall_clock() - DAY);
    inputs
        .insert_value(secret(ns, "cert", &bad, &bad_key))
        .expect("decodes");
    let out = crate::translate::translate(&inputs);
    let (ok, reason, msg) = listener_condition(&out, ns, "ResolvedRefs");
    assert!(!ok);
    assert_eq!(reason, "InvalidCertificateRef");
    assert!(
        msg.contains("expired at") && msg.contains("last good certificate"),
        "{msg}"
    );
    assert!(
        listener_condition(&out, ns, "Programmed").0,
        "traffic is served"
    );
    assert_eq!(served_chain(&out, ns).as_deref(), Some(crt.as_str()));

    // Mismatched key on a fresh controller (no last good): refused.
    let mut fresh = gateway(ns);
    fresh
        .insert_value(secret(ns, "cert", &crt, &bad_key))
        .expect("decodes");
    let out = crate::translate::translate(&fresh);
    let (ok, reason, msg) = listener_condition(&out, ns, "ResolvedRefs");
    assert!(
        !ok && reason == "InvalidCertificateRef" && msg.contains("does not belong"),
        "{msg}"
    );
    assert!(!listener_condition(&out, ns, "Programmed").0);
    assert_eq!(served_chain(&out, ns), None);
}

#[test]
fn metrics_follow_what_is_served() {
    let ns = "certs-metrics";
    let mut inputs = gateway(ns);
    let until = wall_clock() + 30 * DAY;
    let (crt, k) = pair_until("a.example.com", until);
    inputs
        .insert_value(secret(ns, "cert", &crt, &k))
        .expect("decodes");
    let mut t = crate::translate::Translator::default();
    let up = t.update(&inputs, &crate::inputs::Changes::everything());
    let served = t.served_certificates(&up.model);
    assert_eq!(
        served,
        [Served {
            secret: ObjKey::new(ns, "cert"),
            gateway: ObjKey::new(ns, "gw"),
            listener: "https".into(),
            not_after: until,
        }]
    );
    let mut m = Metrics::default();
    m.publish(&served, &inputs);
    let labels = [ns, "cert", "certs-metrics/gw", "https"];
    let expiry = &crate::metrics::catalogue::CERTIFICATE_EXPIRY;
    let last_good = &crate::metrics::catalogue::CERTIFICATE_LAST_GOOD_SERVED;
    assert_eq!(expiry.get(labels), Some(until as f64));
    let lg = [ns, "cert"];
    assert_eq!(last_good.get(lg), None);

    // A bad rotation: 1; a good one: 0; the Secret gone: no series.
    inputs
        .insert_value(secret(ns, "cert", "junk", &k))
        .expect("decodes");
    m.publish(&served, &inputs);
    assert_eq!(last_good.get(lg), Some(1.0));
    let (crt2, k2) = pair("b.example.com");
    inputs
        .insert_value(secret(ns, "cert", &crt2, &k2))
        .expect("decodes");
    m.publish(&served, &inputs);
    assert_eq!(last_good.get(lg), Some(0.0));
    inputs.remove(Kind::Secret, &ObjKey::new(ns, "cert"));
    m.publish(&[], &inputs);
    assert_eq!(last_good.get(lg), None);
    assert_eq!(expiry.get(labels), None, "no longer served");
}

#[test]
fn expiry_messages_are_refreshed_daily_only_near_expiry() {
    let day0 = 20_000 * DAY;
    let near = Served {
        secret: ObjKey::new("ns", "s"),
        gateway: ObjKey::new("ns", "gw"),
        listener: "https".into(),
        not_after: day0 + 10 * DAY,
    };
    let far = Served {
        not_after: day0 + 90 * DAY,
        ..near.clone()
    };
    assert!(expiry_refresh_due(
        std::slice::from_ref(&near),
        Some(day0 + 5),
        day0 + DAY + 5
    ));
    assert!(!expiry_refresh_due(
        std::slice::from_ref(&near),
        Some(day0 + 5),
        day0 + 3600
    ));
    assert!(!expiry_refresh_due(
        std::slice::from_ref(&far),
        Some(day0 + 5),
        day0 + DAY + 5
    ));
    assert!(!expiry_refresh_due(
        std::slice::from_ref(&near),
        None,
        day0 + DAY + 5
    ));
}
