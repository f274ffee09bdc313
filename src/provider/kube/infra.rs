//! The Kubernetes objects Switchyard creates for each of its Gateways: a
//! Service in the Gateway's namespace (`switchyard-<gateway>`) with one port
//! per listener port, shaped by the class's address mode
//! ([`crate::addressing`], docs/networking.md):
//!
//! * VirtualIP: ClusterIP, no selector, and an EndpointSlice per address
//!   family whose endpoints are the Gateway's addresses (kube-proxy forwards
//!   to the address Envoy listens on);
//! * LoadBalancer: `type: LoadBalancer` selecting the Envoy pods, `port` =
//!   listener port, `targetPort` = the Envoy port allocated from the range;
//!   `loadBalancerClass`, `externalTrafficPolicy`, and a static address as
//!   `loadBalancerIP`;
//! * NodeAddresses: ClusterIP selecting the Envoy pods, `targetPort` =
//!   listener port.
//!
//! In-cluster clients reach a Gateway by
//! `switchyard-<gateway>.<namespace>.svc` in every mode.
//!
//! Both carry `spec.infrastructure.labels`/`annotations` (the spec's
//! infrastructure propagation), `gateway.networking.k8s.io/gateway-name`, and
//! an owner reference to the Gateway (deleted with it by the garbage
//! collector). Addresses the API server would refuse as endpoints (loopback,
//! link-local, unspecified, multicast: e.g. the default pool 127.0.0.1/32)
//! leave the Service without endpoints. A Service of that name that
//! Switchyard did not create is never touched (logged once). See
//! docs/gateway-infrastructure.md.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::addressing::Mode;
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::status::{ObjectStatus, StatusSet};

/// `app.kubernetes.io/managed-by` value on what Switchyard creates.
pub const MANAGER: &str = "switchyard";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";
const GATEWAY_NAMESPACE: &str = "gateway.networking.k8s.io/gateway-namespace";
/// `endpointslice.kubernetes.io/managed-by` (a label value: no `/`).
const SLICE_MANAGER: &str = "switchyard.dev";
/// Which Switchyard controller (controllerName) owns the object: several
/// may share a cluster, each minding only its own.
const CONTROLLER: &str = "switchyard.dev/controller-name";

/// What one Gateway should have: its Service and EndpointSlices (by name).
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub service: Value,
    pub slices: BTreeMap<String, Value>,
}

pub use crate::addressing::service_name;

/// Addresses the API server accepts as endpoints.
fn endpoint_address(ip: &IpAddr) -> bool {
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || match ip {
            IpAddr::V4(v4) => v4.is_link_local() || v4.is_broadcast(),
            IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        })
}

/// The objects every Gateway of our classes should have (pure).
pub fn desired(inputs: &Inputs, status: &StatusSet) -> BTreeMap<ObjKey, Desired> {
    let mut out = BTreeMap::new();
    for (key, gw) in &inputs.gateways {
        let ours = inputs
            .gateway_classes
            .get(&gw.spec.gateway_class_name)
            .is_some_and(|gc| gc.spec.controller_name == inputs.controller_name);
        let Some(uid) = gw.metadata.uid.as_deref().filter(|_| ours) else {
            continue;
        };
        // A class whose parameters are invalid serves nothing.
        let Ok(mode) = crate::addressing::resolve(inputs, &gw.spec.gateway_class_name) else {
            continue;
        };
        let infra = gw.spec.infrastructure.as_ref();
        let mut labels: BTreeMap<String, String> = infra
            .and_then(|i| i.labels.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        labels.insert(GATEWAY_NAME.into(), key.name.clone());
        labels.insert(MANAGED_BY.into(), MANAGER.into());
        let annotations: BTreeMap<String, String> = infra
            .and_then(|i| i.annotations.clone())
            .unwrap_or_default()
            .into_iter()
            .collect();
        // The gateway-name label alone cannot tell two namespaces apart.
        let mut annotations = annotations;
        annotations.insert(GATEWAY_NAMESPACE.into(), key.namespace.clone());
        annotations.insert(CONTROLLER.into(), inputs.controller_name.clone());
        let mut ports = BTreeSet::new();
        for l in &gw.spec.listeners {
            let proto = if l.protocol == "UDP" { "UDP" } else { "TCP" };
            ports.insert((l.port, proto));
        }
        let envoy_ports = inputs.assigned_ports.get(key);
        let service_ports: Vec<Value> = ports
            .iter()
            .filter_map(|&(port, proto)| {
                let name = format!("{}-{port}", proto.to_ascii_lowercase());
                match &mode {
                    Mode::VirtualIP { .. } => {
                        Some(json!({"name": name, "port": port, "protocol": proto}))
                    }
                    Mode::NodeAddresses { .. } => Some(
                        json!({"name": name, "port": port, "protocol": proto, "targetPort": port}),
                    ),
                    // A port without an Envoy port (the range is exhausted)
                    // is left out: the Gateway reports it.
                    Mode::LoadBalancer { .. } => {
                        let lp = u16::try_from(port).ok()?;
                        let ep = envoy_ports?.get(&(lp, proto == "UDP"))?;
                        Some(json!({"name": name, "port": port, "protocol": proto,
                                    "targetPort": ep}))
                    }
                }
            })
            .collect();
        let ports: Vec<Value> = ports
            .into_iter()
            .map(|(port, proto)| {
                json!({"name": format!("{}-{port}", proto.to_ascii_lowercase()), "port": port,
                       "protocol": proto})
            })
            .collect();
        let name = service_name(&key.name);
        let owner = json!([{
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "name": key.name, "uid": uid, "controller": true,
        }]);
        let selector = &inputs.addressing.envoy_pod_selector;
        let spec = match &mode {
            Mode::VirtualIP { .. } => json!({"type": "ClusterIP", "ports": service_ports}),
            Mode::NodeAddresses { .. } => {
                json!({"type": "ClusterIP", "ports": service_ports, "selector": selector})
            }
            Mode::LoadBalancer {
                load_balancer_class,
                external_traffic_policy,
                ..
            } => {
                let mut spec =
                    json!({"type": "LoadBalancer", "ports": service_ports, "selector": selector});
                if let Some(c) = load_balancer_class {
                    spec["loadBalancerClass"] = json!(c);
                }
                if let Some(p) = external_traffic_policy {
                    spec["externalTrafficPolicy"] = json!(p);
                }
                // One static IPAddress (more, or another type, is
                // AddressNotUsable and requests nothing).
                let wanted: Vec<&str> = gw
                    .spec
                    .addresses
                    .iter()
                    .flatten()
                    .filter_map(|a| a.value.as_deref().filter(|v| !v.is_empty()))
                    .collect();
                if let [ip] = wanted.as_slice() {
                    if ip.parse::<IpAddr>().is_ok() {
                        spec["loadBalancerIP"] = json!(ip);
                    }
                }
                spec
            }
        };
        let service = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": key.namespace, "labels": labels,
                         "annotations": annotations, "ownerReferences": owner},
            "spec": spec,
        });
        // Endpoints are the Gateway's addresses only in VirtualIP mode (the
        // others select the Envoy pods).
        let addresses: Vec<IpAddr> = match status.get(Kind::Gateway, key) {
            Some(ObjectStatus::Gateway { addresses, .. })
                if matches!(mode, Mode::VirtualIP { .. }) =>
            {
                addresses
                    .iter()
                    .filter_map(|a| a.value.parse::<IpAddr>().ok())
                    .filter(endpoint_address)
                    .collect()
            }
            _ => Vec::new(),
        };
        let mut slices = BTreeMap::new();
        for (family, v6) in [("IPv4", false), ("IPv6", true)] {
            let ips: Vec<String> = addresses
                .iter()
                .filter(|ip| ip.is_ipv6() == v6)
                .map(IpAddr::to_string)
                .collect();
            if ips.is_empty() {
                continue;
            }
            let slice_name = format!("{name}-{}", family.to_ascii_lowercase());
            let mut slice_labels = labels.clone();
            slice_labels.insert("kubernetes.io/service-name".into(), name.clone());
            slice_labels.insert(
                "endpointslice.kubernetes.io/managed-by".into(),
                SLICE_MANAGER.into(),
            );
            let endpoints: Vec<Value> = ips
                .iter()
                .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
                .collect();
            slices.insert(
                slice_name.clone(),
                json!({
                    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": slice_name, "namespace": key.namespace,
                                 "labels": slice_labels, "annotations": annotations,
                                 "ownerReferences": owner},
                    "addressType": family, "endpoints": endpoints, "ports": ports,
                }),
            );
        }
        out.insert(
            ObjKey::new(key.namespace.clone(), name),
            Desired { service, slices },
        );
    }
    out
}

/// Applies [`desired`] (server-side apply, field manager `switchyard`),
/// only what changed since the last write, and deletes what Switchyard
/// created for Gateways that are gone or no longer ours. Call only while
/// holding the lease.
pub struct InfraWriter {
    client: Client,
    controller_name: String,
    /// Services written (or found at start-up) → what was applied.
    applied: BTreeMap<ObjKey, Option<Desired>>,
    listed: bool,
    /// Names held by Services Switchyard did not create (reported once).
    foreign: BTreeSet<ObjKey>,
    /// The last write error per Service (logged when it changes; retried
    /// every second, which must not flood the log).
    errors: BTreeMap<ObjKey, String>,
}

impl InfraWriter {
    pub fn new(client: Client, controller_name: String) -> Self {
        InfraWriter {
            client,
            controller_name,
            applied: BTreeMap::new(),
            listed: false,
            foreign: BTreeSet::new(),
            errors: BTreeMap::new(),
        }
    }

    /// Returns whether a write failed (retry later).
    pub async fn sync(&mut self, desired: &BTreeMap<ObjKey, Desired>) -> bool {
        let mut failed = false;
        if !self.listed {
            let selector = format!("{MANAGED_BY}={MANAGER},{GATEWAY_NAME}");
            match Api::<Service>::all(self.client.clone())
                .list(&ListParams::default().labels(&selector))
                .await
            {
                Ok(list) => {
                    let mine: Vec<Service> =
                        list.items.into_iter().filter(|s| self.mine(s)).collect();
                    for s in mine {
                        let key = ObjKey::new(
                            s.metadata.namespace.unwrap_or_default(),
                            s.metadata.name.unwrap_or_default(),
                        );
                        self.applied.entry(key).or_insert(None);
                    }
                    self.listed = true;
                }
                Err(e) => {
                    warn!("listing Gateway Services failed: {e}");
                    return true;
                }
            }
        }
        let stale: Vec<ObjKey> = self
            .applied
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in stale {
            match self.delete(&key).await {
                Ok(()) => {
                    info!(service = %key, "deleted the Service of a Gateway that is gone");
                    self.applied.remove(&key);
                }
                Err(e) => {
                    warn!(service = %key, "deleting a Gateway Service failed: {e}");
                    failed = true;
                }
            }
        }
        self.foreign.retain(|k| desired.contains_key(k));
        self.errors.retain(|k, _| desired.contains_key(k));
        for (key, want) in desired {
            if self.applied.get(key).and_then(Option::as_ref) == Some(want) {
                continue;
            }
            if !self.applied.contains_key(key) {
                match self.foreign_owner(key).await {
                    Ok(false) => {}
                    Ok(true) => {
                        if self.foreign.insert(key.clone()) {
                            warn!(service = %key, "a Service of this name exists and was not created by \
                                  Switchyard: the Gateway gets no Service (rename that Service to get one)");
                        }
                        continue;
                    }
                    Err(e) => {
                        warn!(service = %key, "reading a Gateway Service failed: {e}");
                        failed = true;
                        continue;
                    }
                }
            }
            let before = self.applied.get(key).cloned().flatten();
            match self.apply(key, want, before.as_ref()).await {
                Ok(()) => {
                    self.applied.insert(key.clone(), Some(want.clone()));
                    self.errors.remove(key);
                }
                Err(e) => {
                    let e = e.to_string();
                    if self.errors.get(key) != Some(&e) {
                        warn!(service = %key, "writing a Gateway Service failed (retried every second): {e}");
                        self.errors.insert(key.clone(), e);
                    }
                    failed = true;
                }
            }
        }
        failed
    }

    /// Created by this controller (label and controller annotation).
    fn mine(&self, s: &Service) -> bool {
        let label = s.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY));
        let controller = s
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONTROLLER));
        label.is_some_and(|v| v == MANAGER) && controller == Some(&self.controller_name)
    }

    async fn foreign_owner(&self, key: &ObjKey) -> Result<bool, kube::Error> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        Ok(api
            .get_opt(&key.name)
            .await?
            .is_some_and(|s| !self.mine(&s)))
    }

    async fn apply(
        &self,
        key: &ObjKey,
        want: &Desired,
        before: Option<&Desired>,
    ) -> Result<(), kube::Error> {
        let pp = PatchParams::apply(MANAGER).force();
        let services: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        // The class changed address mode and with it the Service's type:
        // start from a new Service rather than patch one type into the
        // other (node ports, load-balancer class and ingress go with it).
        let ty = |d: &Desired| d.service["spec"]["type"].as_str().map(str::to_string);
        if let Some(b) = before.filter(|b| ty(b) != ty(want)) {
            info!(service = %key, from = ?ty(b), to = ?ty(want),
                  "address mode changed: recreating the Gateway Service");
            ignore_not_found(
                services
                    .delete(&key.name, &DeleteParams::default())
                    .await
                    .map(|_| ()),
            )?;
        }
        services
            .patch(&key.name, &pp, &Patch::Apply(&want.service))
            .await?;
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        for (name, slice) in &want.slices {
            slices.patch(name, &pp, &Patch::Apply(slice)).await?;
        }
        // A family that no longer has addresses (or every slice, at
        // start-up when what was applied before is unknown).
        let gone: Vec<String> = match before {
            Some(b) => b
                .slices
                .keys()
                .filter(|n| !want.slices.contains_key(*n))
                .cloned()
                .collect(),
            None => ["ipv4", "ipv6"]
                .iter()
                .map(|f| format!("{}-{f}", key.name))
                .filter(|n| !want.slices.contains_key(n))
                .collect(),
        };
        for name in gone {
            delete_slice(&slices, &name).await?;
        }
        Ok(())
    }

    async fn delete(&self, key: &ObjKey) -> Result<(), kube::Error> {
        let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &key.namespace);
        for f in ["ipv4", "ipv6"] {
            delete_slice(&slices, &format!("{}-{f}", key.name)).await?;
        }
        let services: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        ignore_not_found(
            services
                .delete(&key.name, &DeleteParams::default())
                .await
                .map(|_| ()),
        )
    }
}

/// Deletes an EndpointSlice; one already gone is fine.
async fn delete_slice(api: &Api<EndpointSlice>, name: &str) -> Result<(), kube::Error> {
    ignore_not_found(api.delete(name, &DeleteParams::default()).await.map(|_| ()))
}

fn ignore_not_found(r: Result<(), kube::Error>) -> Result<(), kube::Error> {
    match r {
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests;
