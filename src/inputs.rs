//! The immutable input snapshot the translator reads.
//!
//! Providers (the YAML directory, Kubernetes reflectors) only build
//! [`Inputs`]; they never decide routing. Every object is decoded into its
//! typed form and any field the typed form would drop is recorded in
//! [`Inputs::unknown_fields`], so the translator can report it instead of
//! silently ignoring it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use gateway_api::experimental::{
    gatewayclasses::GatewayClass, gateways::Gateway, grpcroutes::GrpcRoute, httproutes::HttpRoute,
    listenersets::ListenerSet, referencegrants::ReferenceGrant, tcproutes::TcpRoute,
    tlsroutes::TlsRoute, udproutes::UdpRoute,
};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use self::policy::BackendTlsPolicy;
pub use self::stored::Stored;

mod stored;

use crate::kinds::Retranslate;
pub use crate::kinds::{Kind, GATEWAY_GROUP};

pub const DEFAULT_CONTROLLER_NAME: &str = "switchyard.dev/gateway-controller";

/// `namespace/name` of a namespaced object (`namespace` empty for
/// cluster-scoped ones).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl ObjKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjKey {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    pub fn cluster(name: impl Into<String>) -> Self {
        ObjKey {
            namespace: String::new(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// What changed in the [`Inputs`] since the last translation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Anything may have changed (first run, or a change without names).
    pub all: bool,
    /// Objects added, changed or removed.
    pub objects: BTreeSet<(Kind, ObjKey)>,
}

impl Changes {
    pub fn everything() -> Self {
        Changes {
            all: true,
            objects: BTreeSet::new(),
        }
    }
    pub fn record(&mut self, kind: Kind, key: &ObjKey) {
        if !self.all {
            self.objects.insert((kind, key.clone()));
        }
    }
    pub fn record_all(&mut self) {
        self.all = true;
        self.objects.clear();
    }
    pub fn is_empty(&self) -> bool {
        !self.all && self.objects.is_empty()
    }
    /// Whether only objects of these kinds changed.
    pub fn only(&self, kinds: &[Kind]) -> bool {
        !self.all && self.objects.iter().all(|(k, _)| kinds.contains(k))
    }
    /// How much of the translation these changes redo: the most expensive
    /// [`Retranslate`] of the changed kinds (`Everything` for `all`).
    pub fn scope(&self) -> Retranslate {
        if self.all {
            return Retranslate::Everything;
        }
        self.objects
            .iter()
            .map(|(k, _)| k.info().retranslate)
            .max()
            .unwrap_or(Retranslate::Endpoints)
    }
    /// Whether these changes redo at most `scope` (false when empty).
    pub fn within(&self, scope: Retranslate) -> bool {
        !self.is_empty() && self.scope() <= scope
    }
}

/// Why an object could not be added to the snapshot.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("object has no apiVersion/kind")]
    MissingTypeMeta,
    #[error("unsupported object kind {kind} ({api_version})")]
    UnsupportedKind { api_version: String, kind: String },
    #[error("{kind} has no metadata.name")]
    MissingName { kind: &'static str },
    #[error("{kind} {key}: field `{path}`: {message}")]
    Decode {
        kind: &'static str,
        key: ObjKey,
        path: String,
        message: String,
    },
}

/// Everything the translator may read, indexed by kind and `namespace/name`.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    /// The `controllerName` whose GatewayClasses we serve.
    pub controller_name: String,
    pub gateway_classes: BTreeMap<String, GatewayClass>,
    pub gateways: BTreeMap<ObjKey, Gateway>,
    pub http_routes: BTreeMap<ObjKey, Stored<HttpRoute>>,
    pub grpc_routes: BTreeMap<ObjKey, Stored<GrpcRoute>>,
    pub tls_routes: BTreeMap<ObjKey, Stored<TlsRoute>>,
    pub tcp_routes: BTreeMap<ObjKey, Stored<TcpRoute>>,
    pub udp_routes: BTreeMap<ObjKey, Stored<UdpRoute>>,
    pub reference_grants: BTreeMap<ObjKey, ReferenceGrant>,
    pub backend_tls_policies: BTreeMap<ObjKey, BackendTlsPolicy>,
    pub listener_sets: BTreeMap<ObjKey, ListenerSet>,
    pub namespaces: BTreeMap<String, Namespace>,
    pub services: BTreeMap<ObjKey, Service>,
    /// EndpointSlices by the Service they belong to (label
    /// `kubernetes.io/service-name`), then by slice name.
    pub endpoint_slices: BTreeMap<ObjKey, BTreeMap<String, EndpointSlice>>,
    pub secrets: BTreeMap<ObjKey, Secret>,
    pub config_maps: BTreeMap<ObjKey, ConfigMap>,
    /// Addresses the provider assigned to Gateways that did not ask for
    /// static ones (`spec.addresses`).
    pub assigned_addresses: BTreeMap<ObjKey, Vec<String>>,
    /// LoadBalancer mode: the port Envoy listens on for each (listener
    /// port, UDP?) of a Gateway, allocated by the provider from the class's
    /// port range. A listener port without one: the range is exhausted.
    pub assigned_ports: BTreeMap<ObjKey, BTreeMap<(u16, bool), u16>>,
    /// The controller's address defaults (mode, `--address-pool`, ...), set
    /// by the provider with `assigned_addresses`. A static VirtualIP
    /// address outside the class's pool is not usable; without a pool
    /// static addresses are taken as given.
    pub addressing: crate::addressing::AddressDefaults,
    /// `GatewayClassConfig`s (Switchyard's GatewayClass parameters), by name.
    pub gateway_class_configs: BTreeMap<String, crate::addressing::GatewayClassConfig>,
    /// Nodes (their addresses and readiness: NodeAddresses mode).
    pub nodes: BTreeMap<String, Node>,
    /// Kinds whose CRDs are not installed (Kubernetes mode).
    pub missing_kinds: Vec<String>,
    /// `gateway.networking.k8s.io/bundle-version` of the installed CRDs
    /// (Kubernetes mode; `None` in standalone mode).
    pub crd_bundle_version: Option<String>,
    /// Fields present in the manifest that the typed model does not know,
    /// as JSON paths (`spec.rules[0].foo`).
    pub unknown_fields: BTreeMap<(Kind, ObjKey), Vec<String>>,
    /// TLS Secrets whose latest version was refused (its certificate does
    /// not parse, its key does not match, or it expired): when an earlier
    /// version was served, `secrets` keeps that one (the last good). See
    /// [`crate::certs`].
    pub certificate_rejections: BTreeMap<ObjKey, crate::certs::Rejection>,
    /// The time (unix seconds) this snapshot is translated at, set by the
    /// provider before each translation: the translator never reads a
    /// clock. `None`: certificate expiry is not checked.
    pub now: Option<i64>,
}

impl Inputs {
    pub fn new(controller_name: impl Into<String>) -> Self {
        Inputs {
            controller_name: controller_name.into(),
            ..Default::default()
        }
    }

    /// Decodes one manifest and adds it. Returns the kind and key it was
    /// stored under.
    pub fn insert_value(&mut self, value: serde_json::Value) -> Result<(Kind, ObjKey), InputError> {
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let kind_str = value.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if api_version.is_empty() || kind_str.is_empty() {
            return Err(InputError::MissingTypeMeta);
        }
        let kind = Kind::from_type_meta(api_version, kind_str).ok_or_else(|| {
            InputError::UnsupportedKind {
                api_version: api_version.to_string(),
                kind: kind_str.to_string(),
            }
        })?;
        let meta = value.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        if name.is_empty() {
            return Err(InputError::MissingName {
                kind: kind.as_str(),
            });
        }
        let namespace = if kind.namespaced() {
            meta.and_then(|m| m.get("namespace"))
                .and_then(|v| v.as_str())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let key = ObjKey::new(namespace.clone(), name);
        let mut value = value;
        // Defaulting the namespace keeps typed metadata consistent with the key.
        if kind.namespaced() {
            if let Some(m) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                m.entry("namespace")
                    .or_insert_with(|| serde_json::Value::String(namespace.clone()));
            }
        }
        let previous = match kind {
            Kind::Secret => self.secrets.get(&key).cloned(),
            _ => None,
        };
        let unknown = (kind.info().store.insert)(self, kind, &key, value)?;
        self.note_unknown(kind, &key, unknown);
        if kind == Kind::Secret {
            crate::certs::on_secret_update(self, &key, previous, crate::certs::wall_clock());
        }
        Ok((kind, key))
    }

    /// Removes an object (a no-op if absent).
    pub fn remove(&mut self, kind: Kind, key: &ObjKey) {
        self.unknown_fields.remove(&(kind, key.clone()));
        if kind == Kind::Secret {
            self.certificate_rejections.remove(key);
        }
        (kind.info().store.remove)(self, key);
    }

    /// Keys of every object of `kind` (cluster-scoped: empty namespace).
    pub fn keys_of(&self, kind: Kind) -> Vec<ObjKey> {
        (kind.info().store.keys)(self)
    }

    /// Number of objects of `kind`.
    pub fn count_of(&self, kind: Kind) -> usize {
        (kind.info().store.len)(self)
    }

    /// Moves every object of `from` into this snapshot (`from`'s version of
    /// an object present in both wins), with its unknown fields.
    pub fn merge(&mut self, mut from: Inputs) {
        for k in crate::kinds::all() {
            (k.store.merge)(self, &mut from);
        }
        self.unknown_fields.append(&mut from.unknown_fields);
        self.certificate_rejections
            .append(&mut from.certificate_rejections);
    }

    /// Removes the EndpointSlice `key` (namespace/slice name) from the
    /// index by Service.
    pub(crate) fn remove_endpoint_slice(&mut self, key: &ObjKey) {
        let mut empty = None;
        for (svc, slices) in self
            .endpoint_slices
            .range_mut(ObjKey::new(key.namespace.clone(), "")..)
        {
            if svc.namespace != key.namespace {
                break;
            }
            if slices.remove(&key.name).is_some() {
                if slices.is_empty() {
                    empty = Some(svc.clone());
                }
                break;
            }
        }
        if let Some(svc) = empty {
            self.endpoint_slices.remove(&svc);
        }
    }

    /// Adds an EndpointSlice under the Service it names.
    pub fn insert_endpoint_slice(&mut self, slice: EndpointSlice) {
        let ns = slice
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = slice.metadata.name.clone().unwrap_or_default();
        let svc = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
            .unwrap_or_default();
        self.endpoint_slices
            .entry(ObjKey::new(ns, svc))
            .or_default()
            .insert(name, slice);
    }

    fn note_unknown(&mut self, kind: Kind, key: &ObjKey, unknown: Vec<String>) {
        if unknown.is_empty() {
            self.unknown_fields.remove(&(kind, key.clone()));
        } else {
            self.unknown_fields.insert((kind, key.clone()), unknown);
        }
    }

    /// Unknown fields of one object (empty if none).
    pub fn unknown(&self, kind: Kind, key: &ObjKey) -> &[String] {
        if self.unknown_fields.is_empty() {
            return &[];
        }
        self.unknown_fields
            .get(&(kind, key.clone()))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    /// Labels of a namespace (empty if the namespace is unknown).
    pub fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(ns)
            .and_then(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        // Kubernetes sets this label on every namespace; standalone YAML may omit it.
        labels
            .entry("kubernetes.io/metadata.name".into())
            .or_insert_with(|| ns.to_string());
        labels
    }

    /// Number of objects of every kind (for logs and metrics).
    pub fn object_count(&self) -> usize {
        crate::kinds::all().map(|k| (k.store.len)(self)).sum()
    }
}

/// BackendTLSPolicy (`gateway.networking.k8s.io/v1`, Gateway API v1.6.1), as
/// our own typed model: every field of the v1.6.1 CRD, with the enums as
/// strings so a value this version does not know (a new SAN type) reaches
/// the translator, which reports it on the policy and fails closed, instead
/// of failing to decode (which would leave the backend without a policy,
/// that is, in plaintext).
pub mod policy {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct BackendTlsPolicy {
        #[serde(
            rename = "apiVersion",
            default,
            skip_serializing_if = "String::is_empty"
        )]
        pub api_version: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        pub kind: String,
        #[serde(default)]
        pub metadata: ObjectMeta,
        pub spec: BackendTlsPolicySpec,
        /// Written by controllers, never read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub status: Option<serde_json::Value>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct BackendTlsPolicySpec {
        #[serde(default)]
        pub target_refs: Vec<TargetRef>,
        #[serde(default)]
        pub validation: Validation,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub options: Option<BTreeMap<String, String>>,
    }

    /// `LocalPolicyTargetReferenceWithSectionName`.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct TargetRef {
        #[serde(default)]
        pub group: String,
        #[serde(default)]
        pub kind: String,
        #[serde(default)]
        pub name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub section_name: Option<String>,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Validation {
        #[serde(
            rename = "caCertificateRefs",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub ca_certificate_refs: Option<Vec<LocalObjectRef>>,
        #[serde(
            rename = "wellKnownCACertificates",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        pub well_known_ca_certificates: Option<String>,
        #[serde(default)]
        pub hostname: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub subject_alt_names: Option<Vec<SubjectAltName>>,
    }

    /// `LocalObjectReference`.
    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct LocalObjectRef {
        #[serde(default)]
        pub group: String,
        #[serde(default)]
        pub kind: String,
        #[serde(default)]
        pub name: String,
    }

    #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
    pub struct SubjectAltName {
        /// `Hostname` or `URI` in v1.6.1.
        #[serde(rename = "type", default)]
        pub type_: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub hostname: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub uri: Option<String>,
    }
}

/// Decodes `value` into `T` and returns the JSON paths of every field the
/// typed model dropped.
pub fn decode<T: DeserializeOwned + Serialize>(
    kind: Kind,
    key: &ObjKey,
    value: serde_json::Value,
) -> Result<(T, Vec<String>), InputError> {
    decode_typed(kind, key, value).map(|(obj, unknown, _)| (obj, unknown))
}

/// [`decode`], and the CRD validation of the object's `spec` (see
/// [`crate::translate::validate::spec`]) on the typed value decoding
/// serializes anyway: what [`crate::translate::validate::typed_spec`] would
/// find, without serializing the object a second time.
pub fn decode_validated<T: DeserializeOwned + Serialize>(
    kind: Kind,
    key: &ObjKey,
    value: serde_json::Value,
) -> Result<(T, Vec<String>, Vec<crate::translate::validate::Violation>), InputError> {
    let (obj, unknown, back) = decode_typed(kind, key, value)?;
    let spec = back.get("spec").unwrap_or(&serde_json::Value::Null);
    let violations = crate::translate::validate::spec(kind, spec);
    Ok((obj, unknown, violations))
}

/// [`decode`], with the typed object serialized back. The typed object is
/// decoded from a borrow of `value` (no copy of the whole manifest), which
/// is dropped once the unknown-field walk compared it with the typed one.
fn decode_typed<T: DeserializeOwned + Serialize>(
    kind: Kind,
    key: &ObjKey,
    value: serde_json::Value,
) -> Result<(T, Vec<String>, serde_json::Value), InputError> {
    let obj: T = serde_path_to_error::deserialize(&value).map_err(|e| InputError::Decode {
        kind: kind.as_str(),
        key: key.clone(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    let back = serde_json::to_value(&obj).map_err(|e| InputError::Decode {
        kind: kind.as_str(),
        key: key.clone(),
        path: ".".into(),
        message: e.to_string(),
    })?;
    let mut unknown = Vec::new();
    dropped_fields(&value, &back, String::new(), &mut unknown);
    // Status is written by controllers, not read by us.
    unknown.retain(|p| !p.starts_with("status"));
    Ok((obj, unknown, back))
}

/// Walks `input` and records every object key that is missing in `typed`.
fn dropped_fields(
    input: &serde_json::Value,
    typed: &serde_json::Value,
    path: String,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(bv) => dropped_fields(v, bv, p, out),
                    // Explicit nulls and empty values carry no information.
                    None if is_empty_value(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (av, bv)) in a.iter().zip(b.iter()).enumerate() {
                dropped_fields(av, bv, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn is_empty_value(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Null => true,
        serde_json::Value::Object(m) => m.is_empty(),
        serde_json::Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

pub use crate::certs::tls_pair;

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

    #[test]
    fn unknown_fields_are_reported_with_their_path() {
        let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
        let (kind, key) = inputs
            .insert_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": "r", "namespace": "apps"},
                "spec": {
                    "rules": [{"matches": [{"path": {"type": "Exact", "value": "/", "frobnicate": 1}}]}],
                    "mystery": {"a": 1},
                    "hostnames": null
                }
            }))
            .expect("decodes");
        assert_eq!(kind, Kind::HTTPRoute);
        assert_eq!(key, ObjKey::new("apps", "r"));
        assert_eq!(
            inputs.unknown(Kind::HTTPRoute, &key),
            [
                "spec.mystery".to_string(),
                "spec.rules[0].matches[0].path.frobnicate".to_string()
            ]
        );
    }

    #[test]
    fn namespace_defaults_and_errors_name_the_object() {
        let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
        let (_, key) = inputs
            .insert_value(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}))
            .expect("decodes");
        assert_eq!(key.to_string(), "default/s");
        let err = inputs
            .insert_value(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "g", "namespace": "x"},
                "spec": {"gatewayClassName": 5, "listeners": []}
            }))
            .expect_err("bad type");
        let msg = err.to_string();
        assert!(
            msg.starts_with("Gateway x/g: field `spec.gatewayClassName`"),
            "{msg}"
        );
        let err = inputs
            .insert_value(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}))
            .expect_err("unsupported");
        assert!(err.to_string().contains("Widget"));
    }

    /// A minimal manifest of `kind` named `name` (in namespace `n` when namespaced).
    fn minimal(kind: Kind, name: &str) -> serde_json::Value {
        let gw = json!({"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "s", "port": 80}]}]});
        let spec = match kind {
            Kind::GatewayClass => json!({"spec": {"controllerName": "x/y"}}),
            Kind::Gateway => json!({"spec": {"gatewayClassName": "c", "listeners": []}}),
            Kind::HTTPRoute | Kind::GRPCRoute | Kind::TCPRoute | Kind::UDPRoute => {
                json!({ "spec": gw })
            }
            Kind::TLSRoute => {
                let mut spec = gw;
                spec["hostnames"] = json!(["a.example"]);
                json!({ "spec": spec })
            }
            Kind::ReferenceGrant => json!({"spec": {
                "from": [{"group": GATEWAY_GROUP, "kind": "HTTPRoute", "namespace": "o"}],
                "to": [{"group": "", "kind": "Service"}]}}),
            Kind::BackendTLSPolicy => json!({"spec": {
                "targetRefs": [{"group": "", "kind": "Service", "name": "s"}],
                "validation": {"hostname": "s.example", "wellKnownCACertificates": "System"}}}),
            Kind::ListenerSet => json!({"spec": {"parentRef": {"name": "gw"}, "listeners": []}}),
            Kind::EndpointSlice => json!({"addressType": "IPv4", "endpoints": [],
                "metadata": {"labels": {"kubernetes.io/service-name": "s"}}}),
            Kind::Namespace | Kind::Service | Kind::Secret | Kind::ConfigMap | Kind::Node => {
                json!({})
            }
            Kind::GatewayClassConfig => json!({"spec": {"addressMode": "NodeAddresses"}}),
        };
        let info = kind.info();
        let mut v = json!({"apiVersion": info.api_version(), "kind": info.name, "metadata": {"name": name}});
        if let (Some(m), Some(extra)) = (v.as_object_mut(), spec.as_object()) {
            for (k, x) in extra {
                if k == "metadata" {
                    if let Some(labels) = x.get("labels") {
                        m["metadata"]["labels"] = labels.clone();
                    }
                } else {
                    m.insert(k.clone(), x.clone());
                }
            }
        }
        if kind.namespaced() {
            v["metadata"]["namespace"] = json!("n");
        }
        v
    }

    #[test]
    fn every_kind_is_stored_listed_counted_merged_and_removed_through_the_table() {
        let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
        let mut other = Inputs::new(DEFAULT_CONTROLLER_NAME);
        for info in crate::kinds::all() {
            let kind = info.kind;
            let (k, key) = inputs
                .insert_value(minimal(kind, "a"))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(k, kind);
            let ns = if info.namespaced { "n" } else { "" };
            assert_eq!(key, ObjKey::new(ns, "a"));
            assert_eq!(inputs.keys_of(kind), std::slice::from_ref(&key), "{kind}");
            assert_eq!(inputs.count_of(kind), 1, "{kind}");
            other
                .insert_value(minimal(kind, "b"))
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        let n = crate::kinds::KINDS.len();
        assert_eq!(inputs.object_count(), n);
        inputs.merge(other);
        assert_eq!(inputs.object_count(), 2 * n);
        for info in crate::kinds::all() {
            let ns = if info.namespaced { "n" } else { "" };
            assert_eq!(
                inputs.keys_of(info.kind),
                [ObjKey::new(ns, "a"), ObjKey::new(ns, "b")],
                "{}",
                info.name
            );
            inputs.remove(info.kind, &ObjKey::new(ns, "a"));
            assert_eq!(inputs.keys_of(info.kind), [ObjKey::new(ns, "b")]);
        }
        assert_eq!(inputs.object_count(), n);
    }

    #[test]
    fn changes_know_how_much_they_redo() {
        let mut c = Changes::default();
        assert!(!c.within(Retranslate::Everything), "nothing changed");
        c.record(Kind::EndpointSlice, &ObjKey::new("n", "s-1"));
        assert_eq!(c.scope(), Retranslate::Endpoints);
        c.record(Kind::TLSRoute, &ObjKey::new("n", "r"));
        assert!(c.within(Retranslate::Routes) && !c.within(Retranslate::Endpoints));
        c.record(Kind::Service, &ObjKey::new("n", "s"));
        assert_eq!(c.scope(), Retranslate::Everything);
        assert_eq!(Changes::everything().scope(), Retranslate::Everything);
    }

    #[test]
    fn endpoint_slices_are_indexed_by_service() {
        let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
        inputs
            .insert_value(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "s-abc", "namespace": "n", "labels": {"kubernetes.io/service-name": "s"}},
                "addressType": "IPv4", "endpoints": [{"addresses": ["10.0.0.1"]}], "ports": [{"port": 80}]
            }))
            .expect("decodes");
        assert!(inputs.endpoint_slices[&ObjKey::new("n", "s")].contains_key("s-abc"));
        inputs.remove(Kind::EndpointSlice, &ObjKey::new("n", "s-abc"));
        assert!(inputs.endpoint_slices.is_empty());
    }
}
