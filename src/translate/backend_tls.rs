//! BackendTLSPolicy (Gateway API v1.6.1) and the Gateway's client
//! certificate to backends (`spec.tls.backend.clientCertificateRef`).
//!
//! - Which policy applies to a Service port ([`for_port`]): the policies
//!   targeting that port by `sectionName` (the Service port's name), else
//!   those targeting the whole Service; among several, the oldest (creation
//!   time), then the first by namespace/name. The others are `Conflicted`.
//! - A policy that applies but cannot be honoured (a CA reference that does
//!   not resolve, an unknown SAN type, an option we do not implement, ...)
//!   fails closed: the backendRef does not resolve (its share of requests
//!   gets 500) and never reaches the backend in plaintext.
//! - Status per ancestor: every Gateway whose routes name the targeted
//!   Service (and port), with `Accepted` and `ResolvedRefs`.

use std::collections::{BTreeMap, BTreeSet};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::backend::RefError;
use super::conditions::{reasons, types};
use super::refgrant::{self, Ref};
use crate::inputs::{policy::BackendTlsPolicy, Inputs, Kind, ObjKey, GATEWAY_GROUP};
use crate::ir;
use crate::status::{Condition, ObjectStatus, ParentRef, PolicyAncestorStatus};

/// The CA bundle `wellKnownCACertificates: System` stands for: a path on
/// the Envoy host (Debian/Ubuntu, and the `envoyproxy/envoy` image).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// At most this many ancestors are written (`maxItems` in v1.6.1).
const MAX_ANCESTORS: usize = 16;

/// Reasons spelled as Gateway API v1.6.1 names them (policy and Gateway),
/// plus the one Switchyard uses on a route whose backend's policy does not
/// resolve (the spec names none for that case).
pub mod reason {
    pub const CONFLICTED: &str = "Conflicted";
    pub const TARGET_NOT_FOUND: &str = "TargetNotFound";
    pub use crate::translate::conditions::reasons::{
        INVALID_CA_CERTIFICATE_REF, NO_VALID_CA_CERTIFICATE,
    };
    pub const INVALID_CLIENT_CERTIFICATE_REF: &str = "InvalidClientCertificateRef";
    /// Route `ResolvedRefs=False`: the backend's BackendTLSPolicy cannot be honoured.
    pub const INVALID_BACKEND_TLS_POLICY: &str = "InvalidBackendTLSPolicy";
}

/// What a policy says once checked against the inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `Accepted` (ignoring conflicts): reason and message when false.
    pub accepted: Result<(), (&'static str, String)>,
    /// `ResolvedRefs`: reason and message when false.
    pub refs: Result<(), (&'static str, String)>,
    /// What Envoy does, when both hold.
    pub tls: Option<ir::UpstreamTls>,
}

/// The Service targets of a policy: (Service name, `sectionName`).
fn service_targets(p: &BackendTlsPolicy) -> impl Iterator<Item = (&str, Option<&str>)> {
    p.spec
        .target_refs
        .iter()
        .filter(|t| is_core(&t.group) && t.kind == "Service")
        .map(|t| {
            (
                t.name.as_str(),
                t.section_name.as_deref().filter(|s| !s.is_empty()),
            )
        })
}

pub(super) fn is_core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

/// Precedence among policies of one target: older first, then namespace/name.
fn rank<'a>(key: &'a ObjKey, p: &BackendTlsPolicy) -> (String, &'a ObjKey) {
    let ts = p
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    (ts, key)
}

fn policies_in<'i>(
    inputs: &'i Inputs,
    ns: &str,
) -> impl Iterator<Item = (&'i ObjKey, &'i BackendTlsPolicy)> {
    let ns = ns.to_string();
    inputs
        .backend_tls_policies
        .range(ObjKey::new(ns.clone(), "")..)
        .take_while(move |(k, _)| k.namespace == ns)
}

/// The policy that wins `(service, section)` (`section` `None`: the whole Service).
fn winner<'i>(
    inputs: &'i Inputs,
    service: &ObjKey,
    section: Option<&str>,
) -> Option<(&'i ObjKey, &'i BackendTlsPolicy)> {
    policies_in(inputs, &service.namespace)
        .filter(|(_, p)| service_targets(p).any(|t| t == (service.name.as_str(), section)))
        .min_by(|a, b| rank(a.0, a.1).cmp(&rank(b.0, b.1)))
}

/// The TLS a route's traffic to Service `service` port `port_name` must use:
/// `None` when no policy applies (plaintext), an error when the policy that
/// applies cannot be honoured (fail closed).
pub fn for_port(
    inputs: &Inputs,
    service: &ObjKey,
    port_name: &str,
) -> Option<Result<ir::UpstreamTls, RefError>> {
    if inputs.backend_tls_policies.is_empty() {
        return None;
    }
    let by_section = (!port_name.is_empty())
        .then(|| winner(inputs, service, Some(port_name)))
        .flatten();
    let (key, p) = by_section.or_else(|| winner(inputs, service, None))?;
    let ev = evaluate(inputs, key, p);
    Some(ev.tls.ok_or_else(|| {
        let why = match (&ev.accepted, &ev.refs) {
            (Err((_, m)), _) | (Ok(()), Err((_, m))) => m.clone(),
            (Ok(()), Ok(())) => "it cannot be applied".into(),
        };
        RefError {
            reason: reason::INVALID_BACKEND_TLS_POLICY,
            message: format!(
                "Service {service} port {port_name:?} must be reached over TLS (BackendTLSPolicy \
                 {key}), but the policy cannot be honoured, so the backend is not used: {why}"
            ),
        }
    }))
}

/// Checks a policy against the inputs (conflicts aside).
pub fn evaluate(inputs: &Inputs, key: &ObjKey, p: &BackendTlsPolicy) -> Evaluation {
    let mut invalid: Vec<String> = Vec::new();
    for f in inputs.unknown(Kind::BackendTLSPolicy, key) {
        invalid.push(format!("{f}: not a field of BackendTLSPolicy v1.6.1"));
    }
    for v in super::validate::stored(inputs, Kind::BackendTLSPolicy, key) {
        invalid.push(v.to_string());
    }
    for k in p.spec.options.iter().flat_map(|o| o.keys()) {
        invalid.push(format!(
            "spec.options[{k:?}]: option not supported by Switchyard (no option is)"
        ));
    }
    let v = &p.spec.validation;
    if v.hostname.is_empty() {
        invalid.push("spec.validation.hostname: required".into());
    }
    let mut sans = Vec::new();
    for (i, s) in v.subject_alt_names.iter().flatten().enumerate() {
        let at = format!("spec.validation.subjectAltNames[{i}]");
        let value = |x: &Option<String>| x.clone().filter(|x| !x.is_empty());
        match (s.type_.as_str(), value(&s.hostname), value(&s.uri)) {
            ("Hostname", Some(h), None) => sans.push(ir::SubjectAltName::Dns(h)),
            ("URI", None, Some(u)) => sans.push(ir::SubjectAltName::Uri(u)),
            ("Hostname", _, _) => invalid.push(format!(
                "{at}: type Hostname needs `hostname` (and no `uri`)"
            )),
            ("URI", _, _) => {
                invalid.push(format!("{at}: type URI needs `uri` (and no `hostname`)"))
            }
            (other, _, _) => invalid.push(format!(
                "{at}.type: {other:?} is not a SAN type of Gateway API v1.6.1 (Hostname, URI)"
            )),
        }
    }
    if sans.is_empty() && !v.hostname.is_empty() {
        sans.push(ir::SubjectAltName::Dns(v.hostname.clone()));
    }
    let refs = v.ca_certificate_refs.as_deref().unwrap_or_default();
    let well_known = v.well_known_ca_certificates.as_deref().unwrap_or("");
    let mut trusted = None;
    match (refs.is_empty(), well_known) {
        (false, "") => {}
        (true, "System") => trusted = Some(ir::TrustedCa::File(SYSTEM_CA_BUNDLE.into())),
        (true, "") => invalid
            .push("spec.validation: needs caCertificateRefs or wellKnownCACertificates".into()),
        (false, _) => invalid.push(
            "spec.validation: caCertificateRefs and wellKnownCACertificates are exclusive".into(),
        ),
        (true, other) => invalid.push(format!(
            "spec.validation.wellKnownCACertificates: {other:?} is not supported (only System)"
        )),
    }
    // CA references: each one resolved, the valid ones' PEM concatenated.
    let mut bad_kind = Vec::new();
    let mut bad_ref = Vec::new();
    let mut bundle = String::new();
    for (i, r) in refs.iter().enumerate() {
        let at = format!("spec.validation.caCertificateRefs[{i}]");
        let object = ObjKey::new(key.namespace.clone(), r.name.clone());
        match ca_bundle(inputs, &r.group, &r.kind, &object) {
            Ok(pem) => {
                bundle.push_str(pem.trim_end());
                bundle.push('\n');
            }
            Err(CaError::Kind(m)) => bad_kind.push(format!("{at}: {m}")),
            Err(CaError::Ref(m)) => bad_ref.push(format!("{at}: {m}")),
        }
    }
    let all_refs_bad = !refs.is_empty() && bad_kind.len() + bad_ref.len() == refs.len();
    let refs_result = if !bad_kind.is_empty() {
        let mut all = bad_kind;
        all.extend(bad_ref);
        Err((reasons::INVALID_KIND, all.join("; ")))
    } else if !bad_ref.is_empty() {
        Err((reason::INVALID_CA_CERTIFICATE_REF, bad_ref.join("; ")))
    } else {
        Ok(())
    };
    if !refs.is_empty() && refs_result.is_ok() {
        trusted = Some(ir::TrustedCa::Pem(bundle));
    }
    let accepted = if !invalid.is_empty() {
        Err((reasons::INVALID, invalid.join("; ")))
    } else if all_refs_bad {
        let why = refs_result
            .as_ref()
            .err()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        Err((
            reason::NO_VALID_CA_CERTIFICATE,
            format!("no CA certificate reference is valid: {why}"),
        ))
    } else {
        Ok(())
    };
    // Any invalid reference fails closed, even when others resolve: the
    // user's trust set is not what they wrote.
    let tls = match (&accepted, &refs_result, trusted) {
        (Ok(()), Ok(()), Some(ca)) => Some(ir::UpstreamTls {
            policy: key.clone(),
            sni: v.hostname.clone(),
            trusted_ca: ca,
            subject_alt_names: sans,
            client_certificate: None,
        }),
        _ => None,
    };
    Evaluation {
        accepted,
        refs: refs_result,
        tls,
    }
}

/// Why a `caCertificateRefs` entry gives no CA bundle.
pub(super) enum CaError {
    /// Not a kind that can hold one.
    Kind(String),
    /// The object is missing, has no `ca.crt`, or that is not a bundle.
    Ref(String),
}

/// The PEM bundle behind one `caCertificateRefs` entry (`group`/`kind`
/// object `key`: a core ConfigMap or Secret, key `ca.crt`), checked to hold
/// certificates Envoy can use as trust anchors. Shared by BackendTLSPolicy
/// and the Gateway's client certificate validation (`spec.tls.frontend`);
/// ReferenceGrants are the caller's business.
pub(super) fn ca_bundle(
    inputs: &Inputs,
    group: &str,
    kind: &str,
    key: &ObjKey,
) -> Result<String, CaError> {
    let key = key.clone();
    let text = match (is_core(group), kind) {
        (true, "ConfigMap") => {
            let Some(cm) = inputs.config_maps.get(&key) else {
                return Err(CaError::Ref(format!("ConfigMap {key} not found")));
            };
            let data = cm.data.as_ref().and_then(|d| d.get("ca.crt")).cloned();
            let binary = || {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            };
            data.or_else(binary)
                .ok_or_else(|| CaError::Ref(format!("ConfigMap {key} has no key ca.crt")))?
        }
        (true, "Secret") => {
            let Some(s) = inputs.secrets.get(&key) else {
                return Err(CaError::Ref(format!("Secret {key} not found")));
            };
            let data = s
                .data
                .as_ref()
                .and_then(|d| d.get("ca.crt"))
                .map(|b| String::from_utf8_lossy(&b.0).into_owned());
            let string = || {
                s.string_data
                    .as_ref()
                    .and_then(|d| d.get("ca.crt"))
                    .cloned()
            };
            data.or_else(string)
                .ok_or_else(|| CaError::Ref(format!("Secret {key} has no key ca.crt")))?
        }
        (_, kind) => {
            let group = if group.is_empty() { "core" } else { group };
            return Err(CaError::Kind(format!(
                "{group}/{kind} {}: only core ConfigMaps and Secrets can hold CA certificates",
                key.name
            )));
        }
    };
    check_ca_pem(&text)
        .map(|()| text)
        .map_err(|m| CaError::Ref(format!("{kind} {key} key ca.crt: {m}")))
}

/// Whether `pem` holds at least one certificate, and only certificates
/// usable as trust anchors.
pub fn check_ca_pem(pem: &str) -> Result<(), String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate bundle: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate".into());
    }
    let mut store = rustls::RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        store
            .add(c)
            .map_err(|e| format!("certificate {i} does not parse: {e}"))?;
    }
    Ok(())
}

/// Every policy's status, with the Gateways whose routes (in `model`) name
/// its targets as ancestors.
pub fn statuses(inputs: &Inputs, model: &ir::Model) -> BTreeMap<(Kind, ObjKey), ObjectStatus> {
    let mut out = BTreeMap::new();
    if inputs.backend_tls_policies.is_empty() {
        return out;
    }
    let users = service_users(model);
    for (key, p) in &inputs.backend_tls_policies {
        let gen = super::generation(&p.metadata);
        let ev = evaluate(inputs, key, p);
        let (accepted, resolved) = conditions(inputs, key, p, &ev, gen);
        let mut gateways: BTreeSet<&ObjKey> = BTreeSet::new();
        for (svc, section) in service_targets(p) {
            let svc = ObjKey::new(key.namespace.clone(), svc);
            let port = section.and_then(|s| port_number(inputs, &svc, s));
            for (gw, ports) in users.get(&svc).into_iter().flatten() {
                let uses = match (section, port) {
                    (None, _) => true,
                    (Some(_), Some(n)) => ports.contains(&Some(n)),
                    (Some(_), None) => false,
                };
                if uses {
                    gateways.insert(gw);
                }
            }
        }
        let ancestors = gateways
            .into_iter()
            .take(MAX_ANCESTORS)
            .map(|gw| PolicyAncestorStatus {
                ancestor_ref: ParentRef {
                    group: GATEWAY_GROUP.into(),
                    kind: "Gateway".into(),
                    namespace: Some(gw.namespace.clone()),
                    name: gw.name.clone(),
                    section_name: None,
                    port: None,
                },
                controller_name: inputs.controller_name.clone(),
                conditions: vec![accepted.clone(), resolved.clone()],
            })
            .collect();
        out.insert(
            (Kind::BackendTLSPolicy, key.clone()),
            ObjectStatus::Policy { ancestors },
        );
    }
    out
}

/// `Accepted` and `ResolvedRefs` of a policy.
fn conditions(
    inputs: &Inputs,
    key: &ObjKey,
    p: &BackendTlsPolicy,
    ev: &Evaluation,
    gen: i64,
) -> (Condition, Condition) {
    let resolved = match &ev.refs {
        Ok(()) => Condition::new(
            types::RESOLVED_REFS,
            true,
            reasons::RESOLVED_REFS,
            "all CA certificate references resolve",
            gen,
        ),
        Err((r, m)) => Condition::new(types::RESOLVED_REFS, false, r, m.clone(), gen),
    };
    let accepted = if let Some(m) = conflict(inputs, key, p) {
        Condition::new(types::ACCEPTED, false, reason::CONFLICTED, m, gen)
    } else if let Err((r, m)) = &ev.accepted {
        Condition::new(types::ACCEPTED, false, r, m.clone(), gen)
    } else if let Some(m) = missing_target(inputs, key, p) {
        Condition::new(types::ACCEPTED, false, reason::TARGET_NOT_FOUND, m, gen)
    } else {
        Condition::new(
            types::ACCEPTED,
            true,
            reasons::ACCEPTED,
            format!(
                "TLS to the backend with SNI {:?}",
                p.spec.validation.hostname
            ),
            gen,
        )
    };
    (accepted, resolved)
}

/// Why the policy loses one of its targets to another policy, if it does.
fn conflict(inputs: &Inputs, key: &ObjKey, p: &BackendTlsPolicy) -> Option<String> {
    service_targets(p).find_map(|(svc, section)| {
        let service = ObjKey::new(key.namespace.clone(), svc);
        let (wk, _) = winner(inputs, &service, section)?;
        (wk != key).then(|| {
            let on = section.map(|s| format!(" port {s:?}")).unwrap_or_default();
            format!(
                "BackendTLSPolicy {wk} targets Service {service}{on} too and takes precedence \
                 (older, or first by name): this policy is not applied there"
            )
        })
    })
}

/// Why no target of the policy exists, if none does.
fn missing_target(inputs: &Inputs, key: &ObjKey, p: &BackendTlsPolicy) -> Option<String> {
    let mut why = Vec::new();
    for (i, t) in p.spec.target_refs.iter().enumerate() {
        let at = format!("spec.targetRefs[{i}]");
        if !(is_core(&t.group) && t.kind == "Service") {
            why.push(format!(
                "{at}: {}/{} is not supported (only core Services)",
                t.group, t.kind
            ));
            continue;
        }
        let svc = ObjKey::new(key.namespace.clone(), t.name.clone());
        if !inputs.services.contains_key(&svc) {
            why.push(format!("{at}: Service {svc} not found"));
            continue;
        }
        match t.section_name.as_deref().filter(|s| !s.is_empty()) {
            Some(s) if port_number(inputs, &svc, s).is_none() => why.push(format!(
                "{at}.sectionName: Service {svc} has no port named {s:?}"
            )),
            _ => return None,
        }
    }
    (!why.is_empty()).then(|| why.join("; "))
}

fn port_number(inputs: &Inputs, svc: &ObjKey, port_name: &str) -> Option<i32> {
    inputs
        .services
        .get(svc)?
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some(port_name))
        .map(|p| p.port)
}

/// For each Service, the Gateways whose routes name it, with the ports named.
type Users<'m> = BTreeMap<ObjKey, BTreeMap<&'m ObjKey, BTreeSet<Option<i32>>>>;

fn service_users(model: &ir::Model) -> Users<'_> {
    let mut out: Users<'_> = BTreeMap::new();
    for (gw_key, gw) in &model.gateways {
        let mut note = |b: &ir::WeightedBackend| {
            if let Some(o) = b.origin.as_deref().filter(|o| o.kind == "Service") {
                out.entry(ObjKey::new(o.namespace.clone(), o.name.clone()))
                    .or_default()
                    .entry(gw_key)
                    .or_default()
                    .insert(o.port);
            }
        };
        for chain in gw.listeners.iter().flat_map(|l| l.chains.iter()) {
            match &chain.app {
                ir::App::Http(rc) => {
                    for r in rc.virtual_hosts.iter().flat_map(|vh| vh.routes.iter()) {
                        if let ir::RouteAction::Forward(f) = &*r.action {
                            f.backends.iter().for_each(&mut note);
                        }
                    }
                }
                ir::App::Tcp(l4) | ir::App::Udp(l4) => l4.backends.iter().for_each(&mut note),
            }
        }
    }
    out
}

/// The Gateway's client certificate to TLS backends
/// (`spec.tls.backend.clientCertificateRef`): `None` when not set.
pub fn client_certificate(
    inputs: &Inputs,
    gw_key: &ObjKey,
) -> Option<Result<ir::TlsCertificate, (&'static str, String)>> {
    let gw = inputs.gateways.get(gw_key)?;
    let r = gw
        .spec
        .tls
        .as_ref()?
        .backend
        .as_ref()?
        .client_certificate_ref
        .as_ref()?;
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    let ns = r
        .namespace
        .as_deref()
        .filter(|n| !n.is_empty())
        .unwrap_or(&gw_key.namespace);
    let at = "spec.tls.backend.clientCertificateRef";
    let secret = ObjKey::new(ns, r.name.clone());
    if !is_core(group) || kind != "Secret" {
        return Some(Err((
            reason::INVALID_CLIENT_CERTIFICATE_REF,
            format!("{at}: {kind} {secret}: only core Secrets are supported"),
        )));
    }
    let from = Ref {
        group: GATEWAY_GROUP,
        kind: "Gateway",
        namespace: &gw_key.namespace,
    };
    let to = Ref {
        group: "",
        kind: "Secret",
        namespace: ns,
    };
    if !refgrant::permits(inputs, &from, &to, &r.name) {
        return Some(Err((
            reasons::REF_NOT_PERMITTED,
            format!("{at}: Secret {secret} is in another namespace and no ReferenceGrant in {ns} allows Gateways from {}", gw_key.namespace),
        )));
    }
    if !inputs.secrets.contains_key(&secret) {
        return Some(Err((
            reason::INVALID_CLIENT_CERTIFICATE_REF,
            format!("{at}: Secret {secret} not found"),
        )));
    }
    Some(match crate::certs::usable(inputs, &secret) {
        crate::certs::Usable::Good { crt, key, .. }
        | crate::certs::Usable::Degraded { crt, key, .. } => Ok(ir::TlsCertificate {
            name: ir::names::secret(&secret),
            certificate_chain: crt,
            private_key: key,
        }),
        crate::certs::Usable::Refused(why) => Err((
            reason::INVALID_CLIENT_CERTIFICATE_REF,
            format!("{at}: Secret {secret}: {why}"),
        )),
    })
}

/// Presents the Gateway's client certificate on every TLS cluster of `gw`.
pub fn apply_client_certificate(gw: &mut ir::Gateway, cert: &ir::TlsCertificate) {
    let mut used = false;
    for c in gw.clusters.values_mut() {
        if let Some(t) = c.tls.as_mut() {
            t.client_certificate = Some(cert.name.clone());
            used = true;
        }
    }
    if used {
        gw.secrets.insert(cert.name.clone(), cert.clone());
    }
}

/// The Gateway's `ResolvedRefs` condition for its client certificate
/// (`None` when it names none).
pub fn gateway_condition(inputs: &Inputs, gw_key: &ObjKey, gen: i64) -> Option<Condition> {
    Some(match client_certificate(inputs, gw_key)? {
        Ok(cert) => match client_certificate_problem(inputs, &cert.name) {
            Some(problem) => Condition::new(
                types::RESOLVED_REFS,
                false,
                reason::INVALID_CLIENT_CERTIFICATE_REF,
                format!("spec.tls.backend.clientCertificateRef: {problem}"),
                gen,
            ),
            None => Condition::new(
                types::RESOLVED_REFS,
                true,
                reasons::RESOLVED_REFS,
                "all references resolve",
                gen,
            ),
        },
        Err((r, m)) => Condition::new(
            types::RESOLVED_REFS,
            false,
            r,
            format!("{m}; TLS backends get no client certificate"),
            gen,
        ),
    })
}

/// Why the served client certificate (SDS name `ns/name`) is not the
/// Secret's valid content (last good served, or expired while served).
fn client_certificate_problem(inputs: &Inputs, sds_name: &str) -> Option<String> {
    let (ns, name) = sds_name.split_once('/')?;
    match crate::certs::usable(inputs, &ObjKey::new(ns, name)) {
        crate::certs::Usable::Degraded { problem, .. } => Some(problem),
        _ => None,
    }
}

#[cfg(test)]
#[path = "backend_tls_tests.rs"]
mod tests;
