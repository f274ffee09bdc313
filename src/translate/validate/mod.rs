//! The one validation layer: everything the API server would refuse (the
//! v1.6.1 CRD schemas, [`schema`], and their CEL rules, [`cel`]) and
//! everything Envoy would refuse in what we generate ([`envoy`], [`re2`],
//! [`rule`]). See docs/validation.md.
//!
//! Who reports what:
//! - Routes: a schema or CEL violation rejects the route (`Accepted=False`,
//!   `UnsupportedValue`, the message names the field), as the API server
//!   would have refused the whole object. A value only Envoy would refuse
//!   (a regex RE2 rejects, `host` in a header modifier, ...) drops its rule
//!   (`PartiallyInvalid`, "Dropped Rule"); with no rule left the route is
//!   not accepted.
//! - Gateways and ListenerSets: a violation inside `spec.listeners[i]`
//!   makes that listener not accepted (`UnsupportedValue`); any other one
//!   makes the Gateway (ListenerSet) not accepted.
//! - A ReferenceGrant that violates its schema grants nothing; a
//!   BackendTLSPolicy that does is reported `Accepted=False Invalid` and the
//!   backends it targets fail closed (see translate::backend_tls).

use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::inputs::{Inputs, Kind, ObjKey};

pub mod cel;
pub mod envoy;
pub mod re2;
pub mod rule;
pub mod schema;

/// Kinds whose CRD rules are applied.
pub const VALIDATED_KINDS: [Kind; 10] = [
    Kind::GatewayClass,
    Kind::Gateway,
    Kind::HTTPRoute,
    Kind::GRPCRoute,
    Kind::TLSRoute,
    Kind::TCPRoute,
    Kind::UDPRoute,
    Kind::ReferenceGrant,
    Kind::BackendTLSPolicy,
    Kind::ListenerSet,
];

/// One refused value: the field path and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub path: String,
    pub message: String,
}

impl Violation {
    pub fn new(path: &str, message: String) -> Self {
        Violation {
            path: path.to_string(),
            message,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Checks the `spec` of an object of `kind` against its CRD schema and CEL rules.
pub fn spec(kind: Kind, spec: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    schema::check_spec(kind, spec, &mut out);
    cel::check(kind, spec, &mut out);
    out
}

/// [`spec`] of a typed object (serialized as the API server would see it).
pub fn object<T: Serialize>(kind: Kind, obj: &T) -> Vec<Violation> {
    match serde_json::to_value(obj) {
        Ok(v) => spec(kind, v.get("spec").unwrap_or(&Value::Null)),
        Err(e) => vec![Violation::new("spec", e.to_string())],
    }
}

/// [`spec`] of a typed `spec` (only the spec is serialized: metadata, which
/// can be large in Kubernetes mode, is not needed).
pub fn typed_spec<T: Serialize>(kind: Kind, spec_value: &T) -> Vec<Violation> {
    match serde_json::to_value(spec_value) {
        Ok(v) => spec(kind, &v),
        Err(e) => vec![Violation::new("spec", e.to_string())],
    }
}

/// [`typed_spec`] of the stored object `kind`/`key` (empty if there is none).
pub fn stored(inputs: &Inputs, kind: Kind, key: &ObjKey) -> Vec<Violation> {
    macro_rules! of {
        ($map:expr, $key:expr) => {
            $map.get($key)
                .map(|o| typed_spec(kind, &o.spec))
                .unwrap_or_default()
        };
    }
    // Routes were validated when decoded (see crate::inputs::Stored).
    macro_rules! stored {
        ($map:expr, $key:expr) => {
            $map.get($key)
                .map(|o| o.violations().to_vec())
                .unwrap_or_default()
        };
    }
    match kind {
        Kind::GatewayClass => of!(inputs.gateway_classes, &key.name),
        Kind::Gateway => of!(inputs.gateways, key),
        Kind::HTTPRoute => stored!(inputs.http_routes, key),
        Kind::GRPCRoute => stored!(inputs.grpc_routes, key),
        Kind::TLSRoute => stored!(inputs.tls_routes, key),
        Kind::TCPRoute => stored!(inputs.tcp_routes, key),
        Kind::UDPRoute => stored!(inputs.udp_routes, key),
        Kind::ReferenceGrant => of!(inputs.reference_grants, key),
        Kind::BackendTLSPolicy => of!(inputs.backend_tls_policies, key),
        Kind::ListenerSet => of!(inputs.listener_sets, key),
        _ => Vec::new(),
    }
}

/// Splits violations into those inside `spec.listeners[i]` (by `i`) and the others.
pub fn by_listener(
    v: Vec<Violation>,
) -> (
    std::collections::BTreeMap<usize, Vec<Violation>>,
    Vec<Violation>,
) {
    let mut listeners: std::collections::BTreeMap<usize, Vec<Violation>> = Default::default();
    let mut rest = Vec::new();
    for x in v {
        let index = x
            .path
            .strip_prefix("spec.listeners[")
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        match index {
            Some(i) => listeners.entry(i).or_default().push(x),
            None => rest.push(x),
        }
    }
    (listeners, rest)
}

/// One message for a status condition: the first few violations.
pub fn summary(v: &[Violation]) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = v.iter().take(SHOWN).map(ToString::to_string).collect();
    if v.len() > SHOWN {
        parts.push(format!("and {} more", v.len() - SHOWN));
    }
    format!("invalid value: {}", parts.join("; "))
}

#[cfg(test)]
mod tests;
