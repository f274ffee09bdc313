//! What the provider assigns to Gateways before translation, per their
//! class's address mode ([`crate::addressing`]):
//!
//! * VirtualIP: an address from the class's pool, sticky per Gateway
//!   (restored from the address it reports after a restart), released when
//!   it goes away;
//! * LoadBalancer: an Envoy port from the class's port range per (Gateway,
//!   listener port, protocol), sticky (restored from the targetPorts of the
//!   Gateway's existing Service after a restart), released when the
//!   listener or the Gateway goes away;
//! * NodeAddresses: nothing (the translator reads the Nodes).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::addressing::{self, AddressDefaults, AddressMode, Mode, PortRange};
use crate::inputs::{Inputs, ObjKey};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("address pool {0:?} is not a CIDR (e.g. 127.0.0.0/24) or an IP address")]
    Parse(String),
}

/// The assignable addresses of a pool: `127.0.0.1/32`, `127.0.0.0/24`
/// (network address skipped), or a bare IP.
fn pool_addresses(net: &IpNet) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = if net.prefix_len() + 1 >= net.max_prefix_len() {
        net.hosts()
            .collect::<Vec<_>>()
            .into_iter()
            .chain(std::iter::once(net.addr()))
            .take(2)
            .collect()
    } else {
        // Cap the pool: nobody runs more Gateways than this.
        net.hosts().take(65_536).collect()
    };
    addresses.dedup();
    addresses
}

/// (listener port, UDP?) → Envoy port.
pub type PortMap = BTreeMap<(u16, bool), u16>;

/// Sticky assignments of addresses and LoadBalancer ports.
#[derive(Clone, Debug)]
pub struct AddressPool {
    defaults: AddressDefaults,
    assigned: BTreeMap<ObjKey, IpAddr>,
    ports: BTreeMap<ObjKey, PortMap>,
    /// Assignable addresses per pool (computed once per pool).
    pools: BTreeMap<IpNet, Vec<IpAddr>>,
}

impl AddressPool {
    /// VirtualIP with this pool by default (standalone, tests).
    pub fn parse(spec: &str) -> Result<Self, PoolError> {
        let net = addressing::parse_pool(spec).ok_or_else(|| PoolError::Parse(spec.to_string()))?;
        Ok(Self::new(AddressDefaults {
            pool: Some(net),
            ..AddressDefaults::default()
        }))
    }

    pub fn new(defaults: AddressDefaults) -> Self {
        AddressPool {
            defaults,
            assigned: BTreeMap::new(),
            ports: BTreeMap::new(),
            pools: BTreeMap::new(),
        }
    }

    pub fn defaults(&self) -> &AddressDefaults {
        &self.defaults
    }

    #[cfg(test)]
    fn addresses(&mut self, net: IpNet) -> &[IpAddr] {
        self.pools
            .entry(net)
            .or_insert_with(|| pool_addresses(&net))
    }

    /// Assigns addresses (VirtualIP) and Envoy ports (LoadBalancer) to our
    /// Gateways, keeping earlier assignments, and publishes the defaults
    /// the translator reads with them.
    pub fn assign(&mut self, inputs: &mut Inputs) {
        inputs.addressing = self.defaults.clone();
        let mut modes: BTreeMap<String, Option<Mode>> = BTreeMap::new();
        let mut ours: Vec<(ObjKey, Mode)> = Vec::new();
        for (k, gw) in &inputs.gateways {
            let class = &gw.spec.gateway_class_name;
            let mine = inputs
                .gateway_classes
                .get(class)
                .is_some_and(|gc| gc.spec.controller_name == inputs.controller_name);
            if !mine {
                continue;
            }
            let mode = modes
                .entry(class.clone())
                .or_insert_with(|| addressing::resolve(inputs, class).ok());
            if let Some(m) = mode {
                ours.push((k.clone(), m.clone()));
            }
        }
        self.assign_addresses(inputs, &ours);
        self.assign_ports(inputs, &ours);
    }

    fn assign_addresses(&mut self, inputs: &mut Inputs, ours: &[(ObjKey, Mode)]) {
        // Gateways that want a pool address: VirtualIP without static ones
        // (or with an empty value, which asks for one).
        let wanting: Vec<(ObjKey, IpNet)> = ours
            .iter()
            .filter_map(|(k, m)| match m {
                Mode::VirtualIP { pool: Some(net) } => Some((k.clone(), *net)),
                _ => None,
            })
            .filter(|(k, _)| {
                inputs.gateways.get(k).is_some_and(|gw| {
                    gw.spec.addresses.as_ref().is_none_or(|a| {
                        a.is_empty()
                            || a.iter()
                                .any(|x| x.value.as_deref().unwrap_or("").is_empty())
                    })
                })
            })
            .collect();
        // Keep an assignment only while it is still in the Gateway's pool.
        self.assigned
            .retain(|k, ip| wanting.iter().any(|(w, net)| w == k && net.contains(&*ip)));
        // First the address a Gateway already reports in its status (a
        // restarted controller must not hand the pool out in another order:
        // Envoy would see two Gateways move, or one take another's address).
        for (k, net) in &wanting {
            if self.assigned.contains_key(k) {
                continue;
            }
            let pool = self
                .pools
                .entry(*net)
                .or_insert_with(|| pool_addresses(net));
            let reported = inputs
                .gateways
                .get(k)
                .and_then(|gw| gw.status.as_ref())
                .and_then(|st| st.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.r#type.as_deref().is_none_or(|t| t == "IPAddress"))
                .filter_map(|a| a.value.parse::<IpAddr>().ok())
                .find(|ip| pool.contains(ip) && !self.assigned.values().any(|u| u == ip));
            if let Some(ip) = reported {
                self.assigned.insert(k.clone(), ip);
            }
        }
        for (k, net) in &wanting {
            if self.assigned.contains_key(k) {
                continue;
            }
            let used: BTreeSet<IpAddr> = self.assigned.values().copied().collect();
            let pool = self
                .pools
                .entry(*net)
                .or_insert_with(|| pool_addresses(net));
            if let Some(a) = pool.iter().find(|a| !used.contains(a)) {
                self.assigned.insert(k.clone(), *a);
            }
        }
        inputs.assigned_addresses = self
            .assigned
            .iter()
            .map(|(k, a)| (k.clone(), vec![a.to_string()]))
            .collect();
    }

    fn assign_ports(&mut self, inputs: &mut Inputs, ours: &[(ObjKey, Mode)]) {
        // What each LoadBalancer Gateway needs: its listeners' (port, UDP?).
        let mut wanted: BTreeMap<ObjKey, (PortRange, BTreeSet<(u16, bool)>)> = BTreeMap::new();
        for (k, m) in ours {
            let Mode::LoadBalancer { ports: range, .. } = m else {
                continue;
            };
            let Some(gw) = inputs.gateways.get(k) else {
                continue;
            };
            let need: BTreeSet<(u16, bool)> = gw
                .spec
                .listeners
                .iter()
                .filter_map(|l| u16::try_from(l.port).ok().map(|p| (p, l.protocol == "UDP")))
                .collect();
            wanted.insert(k.clone(), (*range, need));
        }
        // Release what is no longer wanted (or out of the class's range now).
        self.ports.retain(|k, map| {
            let Some((range, need)) = wanted.get(k) else {
                return false;
            };
            map.retain(|lp, ep| need.contains(lp) && (range.from..=range.to).contains(ep));
            !map.is_empty()
        });
        let mut used: BTreeSet<(u16, bool)> = self
            .ports
            .values()
            .flat_map(|m| m.iter().map(|((_, udp), ep)| (*ep, *udp)))
            .collect();
        // Restore from the Gateway's existing Service (a restarted controller
        // keeps every Envoy port, so the load balancer never moves).
        for (k, (range, need)) in &wanted {
            let svc = inputs.services.get(&ObjKey::new(
                &k.namespace,
                addressing::service_name(&k.name),
            ));
            let Some(ports) = svc
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.ports.as_ref())
            else {
                continue;
            };
            for p in ports {
                let Ok(lp) = u16::try_from(p.port) else {
                    continue;
                };
                let udp = p.protocol.as_deref() == Some("UDP");
                let target = match &p.target_port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => {
                        u16::try_from(*t).ok()
                    }
                    _ => None,
                };
                let Some(ep) = target.filter(|t| (range.from..=range.to).contains(t)) else {
                    continue;
                };
                let map = self.ports.entry(k.clone()).or_default();
                if need.contains(&(lp, udp))
                    && !map.contains_key(&(lp, udp))
                    && used.insert((ep, udp))
                {
                    map.insert((lp, udp), ep);
                }
            }
        }
        // Then the lowest free port of the range for what is left.
        for (k, (range, need)) in &wanted {
            for &(lp, udp) in need {
                if self
                    .ports
                    .get(k)
                    .is_some_and(|m| m.contains_key(&(lp, udp)))
                {
                    continue;
                }
                let free = (range.from..=range.to).find(|p| !used.contains(&(*p, udp)));
                if let Some(ep) = free {
                    used.insert((ep, udp));
                    self.ports
                        .entry(k.clone())
                        .or_default()
                        .insert((lp, udp), ep);
                }
            }
        }
        self.ports.retain(|_, m| !m.is_empty());
        inputs.assigned_ports = self.ports.clone();
    }

    /// The mode the defaults choose (for logs).
    pub fn default_mode(&self) -> AddressMode {
        self.defaults.mode
    }
}

#[cfg(test)]
mod tests;
