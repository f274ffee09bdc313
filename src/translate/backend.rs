//! backendRefs → clusters: kind checks, ReferenceGrants, Service ports,
//! endpoints from EndpointSlices.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::conditions::reasons;
use super::refgrant::{self, Ref};
use crate::inputs::{Inputs, ObjKey, GATEWAY_GROUP};
use crate::ir::{self, names};

/// A backendRef as written, whatever route kind it came from.
pub struct BackendRef<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
    pub port: Option<i32>,
}

/// Why a backendRef cannot be used (reason for ResolvedRefs=False).
#[derive(Clone, Debug, PartialEq)]
pub struct RefError {
    pub reason: &'static str,
    pub message: String,
}

/// What a route kind sends to a backend: HTTP (checked against the port's
/// `appProtocol`), or TCP/UDP bytes (checked against the port's protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Carrier {
    Http,
    Tcp,
    Udp,
}

impl Carrier {
    pub fn of(route_kind: &str) -> Carrier {
        match route_kind {
            "TLSRoute" | "TCPRoute" => Carrier::Tcp,
            "UDPRoute" => Carrier::Udp,
            _ => Carrier::Http,
        }
    }
}

/// Clusters resolved during one translation, shared by every route that
/// names the same Service port (resolution runs once per Service port).
#[derive(Default)]
pub struct Backends {
    /// Successfully resolved clusters by name.
    pub clusters: BTreeMap<String, ir::Cluster>,
    lookups: HashMap<(ObjKey, i32, Carrier), Result<String, RefError>>,
}

impl Backends {
    /// Takes in what another resolver (of the same inputs) found.
    pub fn merge(&mut self, other: Backends) {
        self.clusters.extend(other.clusters);
        self.lookups.extend(other.lookups);
    }

    /// [`Backends::resolve`], and what the backendRef named (for explain).
    pub fn resolve_with_origin(
        &mut self,
        inputs: &Inputs,
        route_kind: &str,
        route_ns: &str,
        r: &BackendRef<'_>,
    ) -> (Result<String, RefError>, std::sync::Arc<ir::BackendOrigin>) {
        let resolved = self.resolve(inputs, route_kind, route_ns, r);
        let origin = origin(inputs, route_kind, route_ns, r, resolved.as_ref().err());
        (resolved, origin)
    }

    /// Resolves a backendRef of a route in `route_ns` (of kind `route_kind`)
    /// to a cluster name; the cluster itself is in `self.clusters`.
    pub fn resolve(
        &mut self,
        inputs: &Inputs,
        route_kind: &str,
        route_ns: &str,
        r: &BackendRef<'_>,
    ) -> Result<String, RefError> {
        let group = r.group.unwrap_or("");
        let kind = r.kind.unwrap_or("Service");
        let ns = r.namespace.unwrap_or(route_ns);
        // Kind and trust depend on the referrer: checked every time (cheap).
        if !(group.is_empty() || group == "core") || kind != "Service" {
            return Err(RefError {
                reason: reasons::INVALID_KIND,
                message: format!(
                    "backendRef {group}/{kind} {ns}/{}: only core Services are supported",
                    r.name
                ),
            });
        }
        let from = Ref {
            group: GATEWAY_GROUP,
            kind: route_kind,
            namespace: route_ns,
        };
        let to = Ref {
            group: "",
            kind: "Service",
            namespace: ns,
        };
        if !refgrant::permits(inputs, &from, &to, r.name) {
            return Err(RefError {
                reason: reasons::REF_NOT_PERMITTED,
                message: format!("backendRef Service {ns}/{} is in another namespace and no ReferenceGrant in {ns} allows {route_kind}s from {route_ns}", r.name),
            });
        }
        let key = ObjKey::new(ns, r.name);
        let port = r.port.unwrap_or(-1);
        let carrier = Carrier::of(route_kind);
        if let Some(res) = self.lookups.get(&(key.clone(), port, carrier)) {
            return res.clone();
        }
        let res = service_cluster(inputs, &key, r.port, carrier).map(|c| {
            let name = c.name.clone();
            self.clusters.insert(name.clone(), c);
            name
        });
        self.lookups.insert((key, port, carrier), res.clone());
        res
    }
}

/// The cluster for Service `key` port `port` (kind and trust already checked).
fn service_cluster(
    inputs: &Inputs,
    key: &ObjKey,
    port: Option<i32>,
    carrier: Carrier,
) -> Result<ir::Cluster, RefError> {
    let key = key.clone();
    let Some(svc) = inputs.services.get(&key) else {
        return Err(RefError {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("Service {key} not found"),
        });
    };
    let Some(port) = port else {
        return Err(RefError {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("backendRef Service {key} needs a port"),
        });
    };
    let spec = svc.spec.as_ref();
    let wanted = if carrier == Carrier::Udp {
        "UDP"
    } else {
        "TCP"
    };
    // One port number may be served on both TCP and UDP (DNS): take the
    // one the route kind speaks, else any (reported below).
    let ports = spec.and_then(|s| s.ports.as_ref());
    let Some(sp) = ports.and_then(|ps| {
        ps.iter()
            .find(|p| p.port == port && p.protocol.as_deref().unwrap_or("TCP") == wanted)
            .or_else(|| ps.iter().find(|p| p.port == port))
    }) else {
        return Err(RefError {
            reason: reasons::BACKEND_NOT_FOUND,
            message: format!("Service {key} has no port {port}"),
        });
    };
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return Err(RefError {
            reason: reasons::UNSUPPORTED_PROTOCOL,
            message: format!(
                "Service {key} is of type ExternalName, which Switchyard does not route to"
            ),
        });
    }
    let port_protocol = sp.protocol.as_deref().unwrap_or("TCP");
    let wanted = if carrier == Carrier::Udp {
        "UDP"
    } else {
        "TCP"
    };
    if port_protocol != wanted {
        return Err(RefError {
            reason: reasons::UNSUPPORTED_PROTOCOL,
            message: format!("Service {key} port {port} is {port_protocol}, not {wanted}"),
        });
    }
    // A BackendTLSPolicy that applies but cannot be honoured fails closed.
    let tls = match super::backend_tls::for_port(inputs, &key, sp.name.as_deref().unwrap_or("")) {
        Some(Err(e)) => return Err(e),
        Some(Ok(_)) if carrier == Carrier::Udp => {
            return Err(RefError {
                reason: super::backend_tls::reason::INVALID_BACKEND_TLS_POLICY,
                message: format!("Service {key} port {port} has a BackendTLSPolicy, and TLS cannot be originated over UDP: the backend is not used"),
            })
        }
        Some(Ok(t)) => Some(t),
        None => None,
    };
    let protocol = match sp.app_protocol.as_deref() {
        Some("kubernetes.io/h2c") | Some("h2c") => ir::UpstreamProtocol::H2c,
        // HTTP/1.1 over the policy's TLS.
        Some(p) if tls.is_some() && (p.eq_ignore_ascii_case("https") || p == "kubernetes.io/https") => {
            ir::UpstreamProtocol::Http1
        }
        None | Some("http") | Some("kubernetes.io/ws") => ir::UpstreamProtocol::Http1,
        // TCP and UDP bytes go through whatever the application speaks.
        Some(_) if carrier != Carrier::Http => ir::UpstreamProtocol::Http1,
        Some(other) => {
            return Err(RefError {
                reason: reasons::UNSUPPORTED_PROTOCOL,
                message: format!("Service {key} port {port} has appProtocol {other:?}, which Switchyard does not support"),
            })
        }
    };
    let port_u16 = u16::try_from(port).unwrap_or(0);
    Ok(ir::Cluster {
        // A UDP port has its own cluster: the same number may be a TCP port too.
        // A TLS cluster has its own name (`.../tls`): adding or removing a
        // policy switches routes to another cluster (make-before-break),
        // never rewrites a live cluster in place.
        name: match (carrier, &tls) {
            (Carrier::Udp, _) => names::udp_cluster(&key, port_u16),
            (_, Some(_)) => format!("{}/tls", names::cluster(&key, port_u16)),
            (_, None) => names::cluster(&key, port_u16),
        },
        service: key.clone(),
        port: port_u16,
        port_name: sp.name.clone().unwrap_or_default(),
        protocol,
        endpoints: endpoints(inputs, &key, sp.name.as_deref().unwrap_or("")),
        split: Vec::new(),
        tls,
    })
}

/// Ready endpoints of a Service port, from its EndpointSlices, sorted.
pub fn endpoints(inputs: &Inputs, service: &ObjKey, port_name: &str) -> Vec<ir::Endpoint> {
    let mut out = BTreeSet::new();
    let Some(slices) = inputs.endpoint_slices.get(service) else {
        return Vec::new();
    };
    for slice in slices.values() {
        let Some(port) = slice
            .ports
            .as_ref()
            .and_then(|ps| {
                ps.iter()
                    .find(|p| p.name.as_deref().unwrap_or("") == port_name)
            })
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for a in &ep.addresses {
                out.insert(ir::Endpoint {
                    address: a.clone(),
                    port,
                });
            }
        }
    }
    out.into_iter().collect()
}

/// What a backendRef of a `route_kind` in `route_ns` named, the grant that
/// let it cross namespaces, and why it did not resolve (for `explain`).
pub fn origin(
    inputs: &Inputs,
    route_kind: &str,
    route_ns: &str,
    r: &BackendRef<'_>,
    error: Option<&RefError>,
) -> std::sync::Arc<ir::BackendOrigin> {
    let group = r.group.unwrap_or("");
    let kind = r.kind.unwrap_or("Service");
    let namespace = r.namespace.unwrap_or(route_ns);
    let grant = (namespace != route_ns && error.is_none())
        .then(|| {
            let from = Ref {
                group: GATEWAY_GROUP,
                kind: route_kind,
                namespace: route_ns,
            };
            let to = Ref {
                group,
                kind,
                namespace,
            };
            refgrant::granting(inputs, &from, &to, r.name).cloned()
        })
        .flatten();
    std::sync::Arc::new(ir::BackendOrigin {
        kind: if group.is_empty() || group == "core" {
            kind.to_string()
        } else {
            format!("{group}/{kind}")
        },
        namespace: namespace.to_string(),
        name: r.name.to_string(),
        port: r.port,
        grant,
        problem: error.map(|e| (e.reason.to_string(), e.message.clone())),
    })
}
