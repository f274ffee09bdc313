//! A Gateway's addresses and where Envoy binds its listeners, per the
//! address mode of its class (see [`crate::addressing`] and
//! docs/networking.md).

use std::collections::BTreeMap;
use std::net::IpAddr;

use gateway_api::experimental::gateways::Gateway;
use ipnet::IpNet;

use super::conditions::reasons;
use super::gateway::{AddressError, Bind};
use crate::addressing::{self, AddressMode, Mode};
use crate::inputs::{Inputs, ObjKey};
use crate::status::GatewayAddress;

type Outcome = (Result<Vec<GatewayAddress>, AddressError>, Option<Bind>);

fn addr(type_: &str, value: &str) -> GatewayAddress {
    GatewayAddress {
        type_: type_.into(),
        value: value.to_string(),
    }
}

fn not_assigned(msg: String) -> AddressError {
    (
        reasons::ADDRESS_NOT_ASSIGNED,
        reasons::ADDRESS_NOT_ASSIGNED,
        msg,
    )
}

fn not_usable(msg: String) -> AddressError {
    (
        reasons::ADDRESS_NOT_USABLE,
        reasons::ADDRESS_NOT_USABLE,
        msg,
    )
}

/// `spec.addresses` entries with a value (an empty value asks the
/// implementation to choose), with their index.
fn static_addresses(gw: &Gateway) -> Vec<(usize, String, String)> {
    gw.spec
        .addresses
        .iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, a)| {
            let v = a.value.as_deref().unwrap_or("");
            (!v.is_empty()).then(|| {
                (
                    i,
                    a.r#type.clone().unwrap_or_else(|| "IPAddress".into()),
                    v.to_string(),
                )
            })
        })
        .collect()
}

/// Address types other than IPAddress are not supported (any mode).
fn unsupported_type(gw: &Gateway) -> Option<AddressError> {
    gw.spec
        .addresses
        .iter()
        .flatten()
        .enumerate()
        .find_map(|(i, a)| {
            let ty = a.r#type.as_deref().unwrap_or("IPAddress");
            (ty != "IPAddress").then(|| {
                (
                    reasons::UNSUPPORTED_ADDRESS,
                    reasons::ADDRESS_NOT_ASSIGNED,
                    format!(
                        "spec.addresses[{i}]: address type {ty} is not supported (only IPAddress)"
                    ),
                )
            })
        })
}

pub fn gateway_address(inputs: &Inputs, key: &ObjKey, gw: &Gateway, mode: &Mode) -> Outcome {
    match mode {
        Mode::VirtualIP { pool } => virtual_ip(inputs, key, gw, *pool),
        Mode::NodeAddresses { address_types } => node_addresses(inputs, gw, address_types),
        Mode::LoadBalancer { ports, .. } => load_balancer(inputs, key, gw, *ports),
    }
}

fn wildcard(mode: AddressMode, ports: BTreeMap<(u16, bool), u16>) -> Bind {
    Bind {
        address: "0.0.0.0".into(),
        freebind: false,
        ports,
        mode,
    }
}

fn virtual_ip(inputs: &Inputs, key: &ObjKey, gw: &Gateway, pool: Option<IpNet>) -> Outcome {
    if let Some(e) = unsupported_type(gw) {
        return (Err(e), None);
    }
    let no_pool = || {
        not_assigned(match pool {
            Some(p) => format!("no address assigned: the address pool {p} is exhausted"),
            None => "no address assigned: VirtualIP mode needs an address pool and none is \
                     configured (--address-pool, or spec.virtualIP.pool of a GatewayClassConfig)"
                .into(),
        })
    };
    let requested = gw.spec.addresses.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    if requested.is_empty() {
        match inputs.assigned_addresses.get(key) {
            Some(v) if !v.is_empty() => out.clone_from(v),
            _ => return (Err(no_pool()), None),
        }
    }
    for (i, a) in requested.iter().enumerate() {
        let value = a.value.as_deref().unwrap_or("");
        if value.is_empty() {
            // An empty value asks the implementation to assign one.
            match inputs.assigned_addresses.get(key).and_then(|v| v.first()) {
                Some(v) => out.push(v.clone()),
                None => return (Err(no_pool()), None),
            }
            continue;
        }
        let Ok(ip) = value.parse::<IpAddr>() else {
            return (
                Err((
                    reasons::UNSUPPORTED_ADDRESS,
                    reasons::ADDRESS_NOT_USABLE,
                    format!("spec.addresses[{i}]: {value:?} is not an IP address"),
                )),
                None,
            );
        };
        // Usable: what Envoy on every node can bind, i.e. the pool, and
        // loopback addresses (Linux binds all of 127.0.0.0/8 and ::1 on
        // every node; node-local by nature).
        if let Some(pool) = pool.filter(|p| !p.contains(&ip) && !ip.is_loopback()) {
            // Accepted (the request is valid) but not programmed: no Envoy
            // of the fleet can bind it.
            return (
                Err(not_usable(format!(
                    "spec.addresses[{i}]: {value} is outside the address pool {pool} that the \
                     Envoy fleet can bind (--address-pool or spec.virtualIP.pool) and not a \
                     loopback address"
                ))),
                None,
            );
        }
        out.push(value.to_string());
    }
    let Some(first) = out.first().cloned() else {
        return (Err(no_pool()), None);
    };
    let freebind = first.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback());
    let bind = Bind {
        address: first,
        freebind,
        ports: BTreeMap::new(),
        mode: AddressMode::VirtualIP,
    };
    (
        Ok(out.iter().map(|v| addr("IPAddress", v)).collect()),
        Some(bind),
    )
}

fn node_addresses(inputs: &Inputs, gw: &Gateway, types: &[String]) -> Outcome {
    if let Some(e) = unsupported_type(gw) {
        return (Err(e), None);
    }
    let bind = wildcard(AddressMode::NodeAddresses, BTreeMap::new());
    let nodes = addressing::node_addresses(inputs, types);
    if nodes.is_empty() {
        return (
            Err(not_assigned(format!(
                "no Ready Node has an address of type {} (NodeAddresses mode)",
                types.join(" or ")
            ))),
            Some(bind),
        );
    }
    // A static address must be one of the nodes' (Envoy listens on all).
    let wanted = static_addresses(gw);
    if let Some((i, _, v)) = wanted.iter().find(|(_, _, v)| !nodes.contains(v)) {
        return (
            Err(not_usable(format!(
                "spec.addresses[{i}]: {v} is not an address of a Ready Node (NodeAddresses mode: \
                 the Gateway is reachable on its nodes' addresses: {})",
                nodes.join(", ")
            ))),
            None,
        );
    }
    let report: Vec<String> = if wanted.is_empty() {
        nodes
    } else {
        wanted.into_iter().map(|(_, _, v)| v).collect()
    };
    (
        Ok(report.iter().map(|v| addr("IPAddress", v)).collect()),
        Some(bind),
    )
}

fn load_balancer(
    inputs: &Inputs,
    key: &ObjKey,
    gw: &Gateway,
    range: addressing::PortRange,
) -> Outcome {
    // One static IPAddress becomes the Service's spec.loadBalancerIP.
    let wanted = static_addresses(gw);
    if let Some((i, ty, _)) = wanted.iter().find(|(_, ty, _)| ty != "IPAddress") {
        return (
            Err(not_usable(format!(
                "spec.addresses[{i}]: address type {ty} cannot be requested from a load balancer \
                 (LoadBalancer mode takes one IPAddress, passed as the Service's loadBalancerIP)"
            ))),
            None,
        );
    }
    if wanted.len() > 1 {
        return (
            Err(not_usable(format!(
                "spec.addresses[{}]: LoadBalancer mode takes one static address (the Service's \
                 loadBalancerIP), not {}",
                wanted[1].0,
                wanted.len()
            ))),
            None,
        );
    }
    if let Some((i, _, v)) = wanted.iter().find(|(_, _, v)| v.parse::<IpAddr>().is_err()) {
        return (
            Err((
                reasons::UNSUPPORTED_ADDRESS,
                reasons::ADDRESS_NOT_USABLE,
                format!("spec.addresses[{i}]: {v:?} is not an IP address"),
            )),
            None,
        );
    }
    let assigned = inputs.assigned_ports.get(key);
    let mut ports = BTreeMap::new();
    let mut missing = Vec::new();
    for l in &gw.spec.listeners {
        let Ok(p) = u16::try_from(l.port) else {
            continue;
        };
        let udp = l.protocol == "UDP";
        match assigned.and_then(|m| m.get(&(p, udp))) {
            Some(ep) => {
                ports.insert((p, udp), *ep);
            }
            None => missing.push(format!("{p}/{}", if udp { "UDP" } else { "TCP" })),
        }
    }
    if !missing.is_empty() {
        missing.dedup();
        return (
            Err(not_assigned(format!(
                "no free port in the load balancer port range {range} for listener ports {} \
                 (every port of the range is used by other Gateways; widen portRange or \
                 --lb-port-range)",
                missing.join(", ")
            ))),
            None,
        );
    }
    let bind = wildcard(AddressMode::LoadBalancer, ports);
    let svc_key = ObjKey::new(&key.namespace, addressing::service_name(&key.name));
    let ingress: Vec<GatewayAddress> = inputs
        .services
        .get(&svc_key)
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| match (&i.ip, &i.hostname) {
            (Some(ip), _) if !ip.is_empty() => Some(addr("IPAddress", ip)),
            (_, Some(h)) if !h.is_empty() => Some(addr("Hostname", h)),
            _ => None,
        })
        .collect();
    if ingress.is_empty() {
        return (
            Err(not_assigned(format!(
                "waiting for a load balancer address for Service {svc_key}"
            ))),
            Some(bind),
        );
    }
    (Ok(ingress), Some(bind))
}
