//! Client certificate validation at the Gateway: `spec.tls.frontend`
//! (Gateway API v1.6.1, GEP-91).
//!
//! - Which listeners: every HTTPS listener of the Gateway (its own and
//!   those its ListenerSets add), by port: a `perPort` entry for the
//!   listener's port, else `default`. An entry without `validation` asks for
//!   none. TLS listeners (TLSRoute) are not targeted: the spec speaks of
//!   "Listeners handling HTTPS traffic" only.
//! - CA references: core ConfigMaps (Core) and Secrets (ours), key `ca.crt`,
//!   resolved and checked by the code BackendTLSPolicy uses; another
//!   namespace needs a ReferenceGrant from the Gateway. The valid ones'
//!   bundles are concatenated into one SDS validation-context secret per
//!   entry (`<ns>/<gateway>/client-ca/<default|port>`).
//! - Status on each targeted listener: `ResolvedRefs=False`
//!   (`InvalidCACertificateKind`, `RefNotPermitted` or
//!   `InvalidCACertificateRef`, in that precedence) when any reference is
//!   invalid; when none is valid, also `Accepted=False`
//!   (`NoValidCACertificate`) and the listener is not served, so it never
//!   falls back to accepting clients unchecked. Some valid: served with
//!   those (a narrower trust set than written, never a wider one).
//! - `AllowInsecureFallback` anywhere: the Gateway's
//!   `InsecureFrontendValidationMode=True` (`ConfigurationChanged`).

use std::collections::BTreeMap;

use super::backend_tls::{ca_bundle, CaError};
use super::conditions::reasons;
use super::listener::ListenerState;
use super::refgrant::{self, Ref};
use crate::inputs::{Inputs, ObjKey, GATEWAY_GROUP};
use crate::ir;

use gateway_api::experimental::gateways::{
    Gateway, GatewayTlsFrontendDefaultValidationMode as DefaultMode,
    GatewayTlsFrontendPerPortTlsValidationMode as PortMode,
};

/// What one listener gets from `spec.tls.frontend`.
#[derive(Clone, Debug, PartialEq)]
pub struct ListenerValidation {
    /// The entry it comes from (`spec.tls.frontend.default`, `...perPort[i]`).
    pub source: String,
    /// What Envoy enforces; `None` when no reference is valid (the listener
    /// is then not accepted).
    pub ir: Option<ir::ClientValidation>,
    /// `ResolvedRefs`: reason and message when some reference is invalid.
    pub refs: Result<(), (&'static str, String)>,
}

/// One `caCertificateRefs` entry, whichever generated type it came from.
struct CaRef<'a> {
    group: &'a str,
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

/// One resolved entry of `spec.tls.frontend` (with `validation` set).
struct Entry {
    source: String,
    ca: Option<ir::ClientCa>,
    insecure_fallback: bool,
    refs: Result<(), (&'static str, String)>,
}

fn resolve(
    inputs: &Inputs,
    gw_key: &ObjKey,
    source: String,
    secret: String,
    refs: &[CaRef<'_>],
    insecure_fallback: bool,
) -> Entry {
    let (mut bad_kind, mut not_permitted, mut bad_ref) = (Vec::new(), Vec::new(), Vec::new());
    let mut bundle = String::new();
    let mut valid = 0;
    for (i, r) in refs.iter().enumerate() {
        let at = format!("{source}.validation.caCertificateRefs[{i}]");
        let ns = r
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or(&gw_key.namespace);
        let object = ObjKey::new(ns, r.name);
        let kind_ok =
            super::backend_tls::is_core(r.group) && matches!(r.kind, "ConfigMap" | "Secret");
        if kind_ok {
            let from = Ref {
                group: GATEWAY_GROUP,
                kind: "Gateway",
                namespace: &gw_key.namespace,
            };
            let to = Ref {
                group: "",
                kind: r.kind,
                namespace: ns,
            };
            if !refgrant::permits(inputs, &from, &to, r.name) {
                not_permitted.push(format!(
                    "{at}: {} {object} is in another namespace and no ReferenceGrant in {ns} allows Gateways from {}",
                    r.kind, gw_key.namespace
                ));
                continue;
            }
        }
        match ca_bundle(inputs, r.group, r.kind, &object) {
            Ok(pem) => {
                bundle.push_str(pem.trim_end());
                bundle.push('\n');
                valid += 1;
            }
            Err(CaError::Kind(m)) => bad_kind.push(format!("{at}: {m}")),
            Err(CaError::Ref(m)) => bad_ref.push(format!("{at}: {m}")),
        }
    }
    let reason = if !bad_kind.is_empty() {
        Some(reasons::INVALID_CA_CERTIFICATE_KIND)
    } else if !not_permitted.is_empty() {
        Some(reasons::REF_NOT_PERMITTED)
    } else if !bad_ref.is_empty() {
        Some(reasons::INVALID_CA_CERTIFICATE_REF)
    } else {
        None
    };
    let refs_result = match reason {
        None => Ok(()),
        Some(r) => {
            let mut all = bad_kind;
            all.append(&mut not_permitted);
            all.append(&mut bad_ref);
            let used = if valid > 0 {
                "; client certificates are checked against the valid references only"
            } else {
                ""
            };
            Err((r, format!("{}{used}", all.join("; "))))
        }
    };
    Entry {
        source,
        ca: (valid > 0).then_some(ir::ClientCa {
            name: secret,
            pem: bundle,
        }),
        insecure_fallback,
        refs: refs_result,
    }
}

/// The resolved `default` entry and `perPort` entries (by port) of `gw`;
/// `None` where an entry asks for no validation.
type Entries = (Option<Entry>, BTreeMap<i32, Option<Entry>>);

/// The default entry and the perPort ones (see [`Entries`]).
fn entries(inputs: &Inputs, gw_key: &ObjKey, gw: &Gateway) -> Option<Entries> {
    let fe = gw.spec.tls.as_ref()?.frontend.as_ref()?;
    let default = fe.default.validation.as_ref().map(|v| {
        let refs: Vec<CaRef<'_>> = v
            .ca_certificate_refs
            .iter()
            .map(|r| CaRef {
                group: &r.group,
                kind: &r.kind,
                name: &r.name,
                namespace: r.namespace.as_deref(),
            })
            .collect();
        resolve(
            inputs,
            gw_key,
            "spec.tls.frontend.default".into(),
            ir::names::client_ca(gw_key, "default"),
            &refs,
            matches!(v.mode, Some(DefaultMode::AllowInsecureFallback)),
        )
    });
    let mut per_port = BTreeMap::new();
    for (i, p) in fe.per_port.iter().flatten().enumerate() {
        // Ports are unique (CRD validation); the first entry wins otherwise.
        if per_port.contains_key(&p.port) {
            continue;
        }
        let entry = p.tls.validation.as_ref().map(|v| {
            let refs: Vec<CaRef<'_>> = v
                .ca_certificate_refs
                .iter()
                .map(|r| CaRef {
                    group: &r.group,
                    kind: &r.kind,
                    name: &r.name,
                    namespace: r.namespace.as_deref(),
                })
                .collect();
            resolve(
                inputs,
                gw_key,
                format!("spec.tls.frontend.perPort[{i}].tls"),
                ir::names::client_ca(gw_key, &p.port.to_string()),
                &refs,
                matches!(v.mode, Some(PortMode::AllowInsecureFallback)),
            )
        });
        per_port.insert(p.port, entry);
    }
    Some((default, per_port))
}

/// Applies `spec.tls.frontend` to the Gateway's HTTPS listeners; the CA
/// bundles they use go to `cas`.
pub fn apply(
    inputs: &Inputs,
    gw_key: &ObjKey,
    gw: &Gateway,
    listeners: &mut [ListenerState],
    cas: &mut BTreeMap<String, ir::ClientCa>,
) {
    let Some((default, per_port)) = entries(inputs, gw_key, gw) else {
        return;
    };
    for l in listeners.iter_mut().filter(|l| l.protocol == "HTTPS") {
        let entry = match per_port.get(&i32::from(l.port)) {
            Some(e) => e.as_ref(),
            None => default.as_ref(),
        };
        let Some(e) = entry else {
            continue;
        };
        if let Some(ca) = &e.ca {
            cas.insert(ca.name.clone(), ca.clone());
        } else if l.accepted.is_ok() {
            let why = e.refs.as_ref().err().map(|(_, m)| m.as_str()).unwrap_or("");
            l.accepted = Err((
                reasons::NO_VALID_CA_CERTIFICATE,
                format!(
                    "no CA certificate reference of {} is valid, so client certificates \
                     cannot be checked and the listener is not served: {why}",
                    e.source
                ),
            ));
        }
        l.client_validation = Some(ListenerValidation {
            source: e.source.clone(),
            ir: e.ca.as_ref().map(|ca| ir::ClientValidation {
                ca: ca.name.clone(),
                insecure_fallback: e.insecure_fallback,
            }),
            refs: e.refs.clone(),
        });
    }
}

/// The message of the Gateway's `InsecureFrontendValidationMode` condition:
/// which entries of `spec.tls.frontend` accept clients without a valid
/// certificate (`None`: none does).
pub fn insecure_fallback(gw: &Gateway) -> Option<String> {
    let fe = gw.spec.tls.as_ref()?.frontend.as_ref()?;
    let mut which = Vec::new();
    if fe
        .default
        .validation
        .as_ref()
        .is_some_and(|v| matches!(v.mode, Some(DefaultMode::AllowInsecureFallback)))
    {
        which.push("default".to_string());
    }
    for p in fe.per_port.iter().flatten() {
        if p.tls
            .validation
            .as_ref()
            .is_some_and(|v| matches!(v.mode, Some(PortMode::AllowInsecureFallback)))
        {
            which.push(format!("port {}", p.port));
        }
    }
    (!which.is_empty()).then(|| {
        format!(
            "spec.tls.frontend uses AllowInsecureFallback ({}): HTTPS connections without a \
             client certificate, or with one that fails validation, are accepted",
            which.join(", ")
        )
    })
}

#[cfg(test)]
#[path = "frontend_tls_tests.rs"]
mod tests;
