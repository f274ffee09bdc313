//! The one table of the kinds Switchyard reads.
//!
//! Everything that depends on "which kinds are there" reads [`KINDS`]:
//! decoding a manifest (`apiVersion` + `kind`, aliases), where an object is
//! stored in [`Inputs`] (insert, remove, list, count, merge), what the
//! Kubernetes provider watches (group, version, field selector), whose status
//! is written and how, and how much a change makes the translator redo.
//!
//! Adding a kind: a [`Kind`] variant, its typed map in [`Inputs`], and one
//! row here (in the order of the enum; the compiler checks the order, the
//! unit tests check the row against the CRDs in `deploy/crds/`).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::inputs::{decode, InputError, Inputs, ObjKey};

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The kinds Switchyard reads. The order (and so `Ord`) is the order of
/// [`KINDS`]; status documents and change sets are sorted by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Kind {
    GatewayClass,
    Gateway,
    HTTPRoute,
    GRPCRoute,
    TLSRoute,
    TCPRoute,
    UDPRoute,
    ReferenceGrant,
    BackendTLSPolicy,
    ListenerSet,
    Namespace,
    Service,
    EndpointSlice,
    Secret,
    ConfigMap,
    Node,
    GatewayClassConfig,
}

/// Whether and how Switchyard writes an object's `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusWrite {
    /// Never.
    No,
    /// The whole `status`, for the objects the translator reports on
    /// (GatewayClasses with our `controllerName`, their Gateways); objects
    /// it says nothing about are left alone.
    Whole,
    /// `status.parents`, shared with other controllers: only the entries
    /// whose `controllerName` is ours (see `provider::kube::status`).
    RouteParents,
    /// `status.ancestors` of a policy, shared with other controllers: only
    /// the entries whose `controllerName` is ours (see `status::policy_ancestors`).
    PolicyAncestors,
}

/// How much of the translation a change to an object of the kind redoes.
/// Ordered: a set of changes costs its most expensive member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Retranslate {
    /// Only endpoints are re-read (EDS update, no route re-translation).
    Endpoints,
    /// The changed routes are re-translated (incremental update).
    Routes,
    /// Everything is translated again.
    Everything,
}

/// One row of [`KINDS`].
#[derive(Debug)]
pub struct KindInfo {
    pub kind: Kind,
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// The version Switchyard watches when the API server serves it (else
    /// the server's preferred version of the group).
    pub version: &'static str,
    /// `kind` as written in manifests.
    pub name: &'static str,
    /// Resource name in API paths (the CRD's `spec.names.plural`).
    pub plural: &'static str,
    pub namespaced: bool,
    /// A route: attaches to Gateways through `spec.parentRefs`.
    pub route: bool,
    pub status: StatusWrite,
    pub retranslate: Retranslate,
    /// Older (group, kind) spellings still accepted in manifests.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Field selector of the Kubernetes watch (`None`: every object).
    pub watch_fields: Option<&'static str>,
    /// Where objects of the kind live in [`Inputs`].
    pub(crate) store: Store,
}

/// Decodes `value` and stores it under `key`; returns the JSON paths of the
/// fields the typed model dropped.
pub(crate) type InsertFn = fn(&mut Inputs, Kind, &ObjKey, Value) -> Result<Vec<String>, InputError>;

/// Access to the typed map of one kind in [`Inputs`].
pub(crate) struct Store {
    pub insert: InsertFn,
    pub remove: fn(&mut Inputs, &ObjKey),
    pub keys: fn(&Inputs) -> Vec<ObjKey>,
    pub len: fn(&Inputs) -> usize,
    /// Moves every object of the second snapshot into the first (the
    /// second one's version wins).
    pub merge: fn(&mut Inputs, &mut Inputs),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

/// A namespaced kind kept in `BTreeMap<ObjKey, T>`.
macro_rules! keyed {
    ($field:ident) => {
        Store {
            insert: |inputs, kind, key, value| {
                let (obj, unknown) = decode(kind, key, value)?;
                inputs.$field.insert(key.clone(), obj);
                Ok(unknown)
            },
            remove: |inputs, key| drop(inputs.$field.remove(key)),
            keys: |inputs| inputs.$field.keys().cloned().collect(),
            len: |inputs| inputs.$field.len(),
            merge: |into, from| into.$field.append(&mut from.$field),
        }
    };
}

/// A namespaced kind kept in `BTreeMap<ObjKey, Stored<T>>`: validated once,
/// when decoded (see [`crate::inputs::Stored`]).
macro_rules! validated {
    ($field:ident) => {
        Store {
            insert: |inputs, kind, key, value| {
                let (obj, unknown, violations) = crate::inputs::decode_validated(kind, key, value)?;
                inputs.$field.insert(
                    key.clone(),
                    crate::inputs::Stored::validated(obj, violations),
                );
                Ok(unknown)
            },
            remove: |inputs, key| drop(inputs.$field.remove(key)),
            keys: |inputs| inputs.$field.keys().cloned().collect(),
            len: |inputs| inputs.$field.len(),
            merge: |into, from| into.$field.append(&mut from.$field),
        }
    };
}

/// A cluster-scoped kind kept in `BTreeMap<String, T>` (by name).
macro_rules! named {
    ($field:ident) => {
        Store {
            insert: |inputs, kind, key, value| {
                let (obj, unknown) = decode(kind, key, value)?;
                inputs.$field.insert(key.name.clone(), obj);
                Ok(unknown)
            },
            remove: |inputs, key| drop(inputs.$field.remove(&key.name)),
            keys: |inputs| inputs.$field.keys().map(ObjKey::cluster).collect(),
            len: |inputs| inputs.$field.len(),
            merge: |into, from| into.$field.append(&mut from.$field),
        }
    };
}

/// EndpointSlices are indexed by the Service they belong to.
const ENDPOINT_SLICES: Store = Store {
    insert: |inputs, kind, key, value| {
        let (obj, unknown) = decode(kind, key, value)?;
        // Its Service label may have changed: drop the old index entry first.
        inputs.remove_endpoint_slice(key);
        inputs.insert_endpoint_slice(obj);
        Ok(unknown)
    },
    remove: |inputs, key| inputs.remove_endpoint_slice(key),
    keys: |inputs| {
        inputs
            .endpoint_slices
            .iter()
            .flat_map(|(svc, slices)| {
                slices
                    .keys()
                    .map(move |n| ObjKey::new(svc.namespace.clone(), n.clone()))
            })
            .collect()
    },
    len: |inputs| inputs.endpoint_slices.values().map(BTreeMap::len).sum(),
    merge: |into, from| {
        for (svc, slices) in std::mem::take(&mut from.endpoint_slices) {
            into.endpoint_slices.entry(svc).or_default().extend(slices);
        }
    },
};

/// The store of a row that forgot its own: decodes nothing (the round-trip
/// unit test fails on it).
const NO_STORE: Store = Store {
    insert: |_, kind, _, _| {
        Err(InputError::UnsupportedKind {
            api_version: kind.info().api_version(),
            kind: kind.as_str().to_string(),
        })
    },
    remove: |_, _| {},
    keys: |_| Vec::new(),
    len: |_| 0,
    merge: |_, _| {},
};

/// Defaults of a row; every row spells out what differs.
const ROW: KindInfo = KindInfo {
    kind: Kind::Gateway,
    group: GATEWAY_GROUP,
    version: "v1",
    name: "",
    plural: "",
    namespaced: true,
    route: false,
    status: StatusWrite::No,
    retranslate: Retranslate::Everything,
    aliases: &[],
    watch_fields: None,
    store: NO_STORE,
};

const ROUTE: KindInfo = KindInfo {
    route: true,
    status: StatusWrite::RouteParents,
    retranslate: Retranslate::Routes,
    ..ROW
};

const TABLE: [KindInfo; 17] = [
    KindInfo {
        kind: Kind::GatewayClass,
        name: "GatewayClass",
        plural: "gatewayclasses",
        namespaced: false,
        status: StatusWrite::Whole,
        store: named!(gateway_classes),
        ..ROW
    },
    KindInfo {
        kind: Kind::Gateway,
        name: "Gateway",
        plural: "gateways",
        status: StatusWrite::Whole,
        store: keyed!(gateways),
        ..ROW
    },
    KindInfo {
        kind: Kind::HTTPRoute,
        name: "HTTPRoute",
        plural: "httproutes",
        store: validated!(http_routes),
        ..ROUTE
    },
    KindInfo {
        kind: Kind::GRPCRoute,
        name: "GRPCRoute",
        plural: "grpcroutes",
        store: validated!(grpc_routes),
        ..ROUTE
    },
    KindInfo {
        kind: Kind::TLSRoute,
        name: "TLSRoute",
        plural: "tlsroutes",
        store: validated!(tls_routes),
        ..ROUTE
    },
    KindInfo {
        kind: Kind::TCPRoute,
        name: "TCPRoute",
        plural: "tcproutes",
        store: validated!(tcp_routes),
        ..ROUTE
    },
    KindInfo {
        kind: Kind::UDPRoute,
        name: "UDPRoute",
        plural: "udproutes",
        store: validated!(udp_routes),
        ..ROUTE
    },
    KindInfo {
        kind: Kind::ReferenceGrant,
        name: "ReferenceGrant",
        plural: "referencegrants",
        store: keyed!(reference_grants),
        ..ROW
    },
    KindInfo {
        kind: Kind::BackendTLSPolicy,
        name: "BackendTLSPolicy",
        plural: "backendtlspolicies",
        status: StatusWrite::PolicyAncestors,
        store: keyed!(backend_tls_policies),
        ..ROW
    },
    KindInfo {
        kind: Kind::ListenerSet,
        name: "ListenerSet",
        plural: "listenersets",
        // Its name while it was experimental (`gateway.networking.x-k8s.io/v1alpha1`).
        aliases: &[("gateway.networking.x-k8s.io", "XListenerSet")],
        store: keyed!(listener_sets),
        status: StatusWrite::Whole,
        ..ROW
    },
    KindInfo {
        kind: Kind::Namespace,
        group: "",
        name: "Namespace",
        plural: "namespaces",
        namespaced: false,
        store: named!(namespaces),
        ..ROW
    },
    KindInfo {
        kind: Kind::Service,
        group: "",
        name: "Service",
        plural: "services",
        store: keyed!(services),
        ..ROW
    },
    KindInfo {
        kind: Kind::EndpointSlice,
        group: "discovery.k8s.io",
        name: "EndpointSlice",
        plural: "endpointslices",
        retranslate: Retranslate::Endpoints,
        store: ENDPOINT_SLICES,
        ..ROW
    },
    KindInfo {
        kind: Kind::Secret,
        group: "",
        name: "Secret",
        plural: "secrets",
        // Only TLS Secrets can be certificates; do not hold every Secret of the cluster.
        watch_fields: Some("type=kubernetes.io/tls"),
        store: keyed!(secrets),
        ..ROW
    },
    KindInfo {
        kind: Kind::ConfigMap,
        group: "",
        name: "ConfigMap",
        plural: "configmaps",
        store: keyed!(config_maps),
        ..ROW
    },
    KindInfo {
        kind: Kind::Node,
        group: "",
        name: "Node",
        plural: "nodes",
        namespaced: false,
        store: named!(nodes),
        ..ROW
    },
    KindInfo {
        kind: Kind::GatewayClassConfig,
        group: crate::addressing::CONFIG_GROUP,
        version: "v1alpha1",
        name: "GatewayClassConfig",
        plural: "gatewayclassconfigs",
        namespaced: false,
        store: named!(gateway_class_configs),
        ..ROW
    },
];

// Row i describes the variant with discriminant i, so `Kind::info` is an
// index. (That every variant has a row is checked by the unit tests.)
const _: () = {
    let mut i = 0;
    while i < TABLE.len() {
        assert!(
            TABLE[i].kind as usize == i,
            "KINDS rows must follow the order of enum Kind"
        );
        i += 1;
    }
};

/// Every kind Switchyard reads, in the order of [`Kind`].
pub static KINDS: [KindInfo; TABLE.len()] = TABLE;

/// Every row of [`KINDS`].
pub fn all() -> impl Iterator<Item = &'static KindInfo> {
    KINDS.iter()
}

/// The route kinds.
pub fn routes() -> impl Iterator<Item = Kind> {
    all().filter(|k| k.route).map(|k| k.kind)
}

/// The API groups of every kind (each once, in table order).
pub fn groups() -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for k in all() {
        if !out.contains(&k.group) {
            out.push(k.group);
        }
    }
    out
}

impl KindInfo {
    /// `apiVersion` of the watched version (`v1`, `group/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Whether a manifest's (group, kind) names this kind, by its name or an alias.
    pub fn matches(&self, group: &str, kind: &str) -> bool {
        (self.group == group && self.name == kind)
            || self.aliases.iter().any(|&(g, k)| g == group && k == kind)
    }
}

impl Kind {
    /// The kind's row of [`KINDS`].
    pub fn info(self) -> &'static KindInfo {
        &KINDS[self as usize]
    }

    pub fn as_str(self) -> &'static str {
        self.info().name
    }

    pub fn namespaced(self) -> bool {
        self.info().namespaced
    }

    pub fn is_route(self) -> bool {
        self.info().route
    }

    /// Resolves `apiVersion` + `kind` as written in a manifest (any version
    /// of the group; aliases included).
    pub fn from_type_meta(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("");
        all().find(|k| k.matches(group, kind)).map(|k| k.kind)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::Path;

    /// Exhaustive on purpose: a new variant does not compile here until it
    /// is listed, and then fails until it has a row.
    fn variant_name(k: Kind) -> &'static str {
        match k {
            Kind::GatewayClass => "GatewayClass",
            Kind::Gateway => "Gateway",
            Kind::HTTPRoute => "HTTPRoute",
            Kind::GRPCRoute => "GRPCRoute",
            Kind::TLSRoute => "TLSRoute",
            Kind::TCPRoute => "TCPRoute",
            Kind::UDPRoute => "UDPRoute",
            Kind::ReferenceGrant => "ReferenceGrant",
            Kind::BackendTLSPolicy => "BackendTLSPolicy",
            Kind::ListenerSet => "ListenerSet",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Node => "Node",
            Kind::GatewayClassConfig => "GatewayClassConfig",
        }
    }

    const VARIANTS: [Kind; 17] = [
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
        Kind::Namespace,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::Node,
        Kind::GatewayClassConfig,
    ];

    #[test]
    fn every_variant_has_exactly_one_row() {
        assert_eq!(KINDS.len(), VARIANTS.len(), "one row per variant");
        for v in VARIANTS {
            let rows: Vec<&KindInfo> = all().filter(|k| k.kind == v).collect();
            assert_eq!(rows.len(), 1, "{v:?} has {} rows", rows.len());
            assert_eq!(v.info().kind, v);
            assert_eq!(v.as_str(), variant_name(v), "name of {v:?}");
            assert_eq!(
                Kind::from_type_meta(&v.info().api_version(), v.as_str()),
                Some(v)
            );
        }
        let names: BTreeSet<(&str, &str)> = all().map(|k| (k.group, k.name)).collect();
        assert_eq!(names.len(), KINDS.len(), "(group, kind) pairs are unique");
        let plurals: BTreeSet<(&str, &str)> = all().map(|k| (k.group, k.plural)).collect();
        assert_eq!(
            plurals.len(),
            KINDS.len(),
            "(group, plural) pairs are unique"
        );
        for k in all() {
            assert!(
                !k.plural.is_empty() && k.plural == k.plural.to_ascii_lowercase(),
                "{}",
                k.name
            );
            // Routes are namespaced and share their parents' status; nothing
            // else has `status.parents`.
            assert_eq!(k.route, k.status == StatusWrite::RouteParents, "{}", k.name);
            assert!(!k.route || k.namespaced, "{}", k.name);
            assert_eq!(
                k.retranslate == Retranslate::Routes,
                k.route,
                "only routes are translated incrementally: {}",
                k.name
            );
            for (g, a) in k.aliases {
                assert_eq!(
                    Kind::from_type_meta(&format!("{g}/v1alpha1"), a),
                    Some(k.kind)
                );
            }
        }
        assert_eq!(
            Kind::from_type_meta("gateway.networking.x-k8s.io/v1alpha1", "XListenerSet"),
            Some(Kind::ListenerSet)
        );
        assert_eq!(
            Kind::from_type_meta("gateway.networking.k8s.io/v1alpha2", "TLSRoute"),
            Some(Kind::TLSRoute),
            "older served versions of a kind still decode"
        );
        assert_eq!(Kind::from_type_meta("v1", "Gateway"), None, "group matters");
        assert_eq!(
            routes().collect::<Vec<_>>(),
            [
                Kind::HTTPRoute,
                Kind::GRPCRoute,
                Kind::TLSRoute,
                Kind::TCPRoute,
                Kind::UDPRoute
            ]
        );
        assert_eq!(
            groups(),
            [
                "gateway.networking.k8s.io",
                "",
                "discovery.k8s.io",
                "gateway.switchyard.dev"
            ]
        );
    }

    /// (group, kind) → (plural, namespaced, served versions) of every CRD in a directory.
    fn crds(dir: &Path) -> BTreeMap<(String, String), (String, bool, Vec<String>)> {
        let mut out = BTreeMap::new();
        let entries = std::fs::read_dir(dir).expect("CRD directory");
        for e in entries {
            let path = e.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("CRD file");
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("yaml");
                if v["kind"].as_str() != Some("CustomResourceDefinition") {
                    continue;
                }
                let spec = &v["spec"];
                let s = |v: &serde_yaml::Value| v.as_str().unwrap_or_default().to_string();
                let served = spec["versions"]
                    .as_sequence()
                    .map(|vs| {
                        vs.iter()
                            .filter(|v| v["served"].as_bool() == Some(true))
                            .map(|v| s(&v["name"]))
                            .collect()
                    })
                    .unwrap_or_default();
                out.insert(
                    (s(&spec["group"]), s(&spec["names"]["kind"])),
                    (
                        s(&spec["names"]["plural"]),
                        s(&spec["scope"]) == "Namespaced",
                        served,
                    ),
                );
            }
        }
        out
    }

    #[test]
    fn gateway_api_rows_match_the_v1_6_1_crds() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/crds");
        for channel in ["standard", "experimental"] {
            let crds = crds(&root.join(channel));
            for k in all().filter(|k| k.group == GATEWAY_GROUP) {
                let Some((plural, namespaced, served)) =
                    crds.get(&(k.group.to_string(), k.name.to_string()))
                else {
                    panic!("{channel}: no CRD for {}/{}", k.group, k.name);
                };
                assert_eq!(plural, k.plural, "{channel}: plural of {}", k.name);
                assert_eq!(*namespaced, k.namespaced, "{channel}: scope of {}", k.name);
                assert!(
                    served.iter().any(|v| v == k.version),
                    "{channel}: {} {} is not served ({served:?})",
                    k.name,
                    k.version
                );
            }
            // Every Gateway API kind of the bundle is read (the x-k8s.io
            // experimental kinds are not).
            for (group, kind) in crds.keys() {
                if group == GATEWAY_GROUP {
                    assert!(
                        Kind::from_type_meta(&format!("{group}/v1"), kind).is_some(),
                        "{channel}: {kind} has no row"
                    );
                }
            }
        }
    }

    /// Every (apiGroup, resource, verb) a ClusterRole in `text` grants
    /// (Helm's control lines such as `{{- if ... }}` dropped, i.e. every
    /// optional rule counted, and other `{{ ... }}` replaced by a
    /// placeholder first).
    fn cluster_role_grants(text: &str) -> BTreeSet<(String, String, String)> {
        let text: String = text
            .lines()
            .filter(|l| {
                let t = l.trim();
                !(t.starts_with("{{") && t.ends_with("}}"))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let mut plain = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("{{") {
            plain.push_str(&rest[..i]);
            plain.push_str("tpl");
            rest = rest[i..].find("}}").map_or("", |j| &rest[i + j + 2..]);
        }
        plain.push_str(rest);
        let mut out = BTreeSet::new();
        for doc in serde_yaml::Deserializer::from_str(&plain) {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).expect("yaml");
            if v["kind"].as_str() != Some("ClusterRole") {
                continue;
            }
            let strs = |v: &serde_yaml::Value| -> Vec<String> {
                v.as_sequence()
                    .map(|s| {
                        s.iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for rule in v["rules"].as_sequence().into_iter().flatten() {
                for g in strs(&rule["apiGroups"]) {
                    for r in strs(&rule["resources"]) {
                        for verb in strs(&rule["verbs"]) {
                            out.insert((g.clone(), r.clone(), verb));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn deploy_rbac_covers_every_kind() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
        for file in [
            "kustomize/base/rbac.yaml",
            "helm/switchyard/templates/rbac.yaml",
        ] {
            let text = std::fs::read_to_string(root.join(file)).expect("rbac file");
            let grants = cluster_role_grants(&text);
            let has = |g: &str, r: &str, verb: &str| {
                grants.contains(&(g.to_string(), r.to_string(), verb.to_string()))
            };
            for k in all() {
                for verb in ["list", "watch"] {
                    assert!(has(k.group, k.plural, verb), "{file}: {verb} {}", k.plural);
                }
                if k.status != StatusWrite::No {
                    let sub = format!("{}/status", k.plural);
                    assert!(has(k.group, &sub, "patch"), "{file}: patch {sub}");
                }
            }
        }
    }

    #[test]
    fn core_rows_match_k8s_openapi() {
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Secret, Service};
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use k8s_openapi::Resource;
        fn check<R: Resource>(k: Kind, namespaced: bool) {
            let i = k.info();
            assert_eq!(
                (i.group, i.version, i.name, i.plural, i.namespaced),
                (
                    R::GROUP,
                    R::VERSION,
                    R::KIND,
                    R::URL_PATH_SEGMENT,
                    namespaced
                ),
            );
        }
        check::<Namespace>(Kind::Namespace, false);
        check::<Service>(Kind::Service, true);
        check::<EndpointSlice>(Kind::EndpointSlice, true);
        check::<Secret>(Kind::Secret, true);
        check::<ConfigMap>(Kind::ConfigMap, true);
        check::<Node>(Kind::Node, false);
    }
}
