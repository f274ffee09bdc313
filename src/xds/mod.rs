//! Envoy side of the pipeline: `build` (pure IR → Envoy protos), `cache`
//! (versioned per-Gateway resource sets), `server` (ADS over gRPC).
//!
//! The types in this file are the narrow interface between the three.

use std::collections::BTreeMap;
use std::sync::Arc;

pub mod authz;
pub mod build;
pub mod cache;
pub mod render;
pub mod server;
pub mod tls;

/// Type URLs of the resources Switchyard serves.
pub mod type_url {
    pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
    pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
    /// The scopes of a sharded route table (`build::shard`).
    pub const SCOPED_ROUTE: &str =
        "type.googleapis.com/envoy.config.route.v3.ScopedRouteConfiguration";
    pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
    pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

    /// Make-before-break push order: clusters, then their endpoints, then
    /// secrets, then listeners, then the scopes of sharded route tables,
    /// then the routes listeners (or scopes) point at.
    pub const PUSH_ORDER: [&str; 6] = [CLUSTER, ENDPOINT, SECRET, LISTENER, SCOPED_ROUTE, ROUTE];
}

/// One named xDS resource, already encoded.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub name: String,
    /// The encoded Envoy message (`type_url` is one of [`type_url`]);
    /// shared, since every stream and every view holds the same bytes.
    pub any: Arc<prost_types::Any>,
    /// Content hash of `any.value` (hex). Equal content ⇒ equal version, so a
    /// rebuild that changes nothing pushes nothing.
    pub version: String,
}

impl Resource {
    pub fn new<M: prost::Name>(name: impl Into<String>, msg: &M) -> Self {
        let any = prost_types::Any {
            type_url: M::type_url(),
            value: prost::Message::encode_to_vec(msg),
        };
        let version = content_version(&any.value);
        Resource {
            name: name.into(),
            any: Arc::new(any),
            version,
        }
    }
}

/// Short, stable content hash used as a per-resource version.
pub fn content_version(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    hex::encode(&d[..8])
}

/// All resources of one Gateway, by type URL then by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResourceSet {
    pub by_type: BTreeMap<&'static str, BTreeMap<String, Resource>>,
}

impl ResourceSet {
    pub fn insert(&mut self, type_url: &'static str, r: Resource) {
        self.by_type
            .entry(type_url)
            .or_default()
            .insert(r.name.clone(), r);
    }
    pub fn get(&self, type_url: &str) -> Option<&BTreeMap<String, Resource>> {
        self.by_type.get(type_url)
    }
    pub fn len(&self) -> usize {
        self.by_type.values().map(|m| m.len()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Everything the control plane serves, keyed by Gateway (`namespace/name`).
/// Cluster and endpoint names are global (`<ns>/<svc>/<port>`), so the same
/// cluster used by two Gateways is one resource with one content.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub gateways: BTreeMap<String, ResourceSet>,
}
