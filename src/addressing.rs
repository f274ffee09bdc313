//! Gateway address modes, chosen per GatewayClass (docs/networking.md).
//!
//! * `LoadBalancer`: a `type: LoadBalancer` Service per Gateway in front of
//!   the Envoy pods; Envoy binds `0.0.0.0:<port from a range>`; the Gateway's
//!   addresses are the Service's load-balancer ingress.
//! * `NodeAddresses`: Envoy binds `0.0.0.0:<listener port>` on every node;
//!   the Gateway's addresses are those of the Ready Nodes.
//! * `VirtualIP`: one address per Gateway from a pool (what MetalLB,
//!   kube-vip or keepalived move between nodes); Envoy binds it with
//!   `freebind` so the listener exists before the address arrives.
//!
//! A GatewayClass selects a mode with `parametersRef` to a
//! [`GatewayClassConfig`]; without one the controller's defaults
//! ([`AddressDefaults`]) apply. Everything here is pure: the translator and
//! the provider's allocator both call [`resolve`].

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::inputs::{Inputs, Kind, ObjKey};

/// API group of Switchyard's own kinds.
pub const CONFIG_GROUP: &str = "gateway.switchyard.dev";
pub const CONFIG_KIND: &str = "GatewayClassConfig";
/// Address types of a Node that `nodeAddresses.addressTypes` may name.
pub const NODE_ADDRESS_TYPES: [&str; 2] = ["ExternalIP", "InternalIP"];
/// At most this many Node addresses are reported in a Gateway's status
/// (the API allows 16 entries in `status.addresses`).
pub const MAX_NODE_ADDRESSES: usize = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum AddressMode {
    #[default]
    VirtualIP,
    LoadBalancer,
    NodeAddresses,
}

impl fmt::Display for AddressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressMode::VirtualIP => "VirtualIP",
            AddressMode::LoadBalancer => "LoadBalancer",
            AddressMode::NodeAddresses => "NodeAddresses",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("address mode {0:?} is not one of LoadBalancer, NodeAddresses, VirtualIP")]
    Mode(String),
    #[error("port range {0:?} is not FROM-TO with 1 <= FROM <= TO <= 65535")]
    PortRange(String),
    #[error("pod selector {0:?} is not key=value[,key=value...]")]
    Selector(String),
}

impl std::str::FromStr for AddressMode {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s {
            "VirtualIP" => Ok(AddressMode::VirtualIP),
            "LoadBalancer" => Ok(AddressMode::LoadBalancer),
            "NodeAddresses" => Ok(AddressMode::NodeAddresses),
            _ => Err(ParseError::Mode(s.to_string())),
        }
    }
}

/// Ports Envoy may listen on in LoadBalancer mode (inclusive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PortRange {
    pub from: u16,
    pub to: u16,
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange {
            from: 20000,
            to: 29999,
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.from, self.to)
    }
}

impl std::str::FromStr for PortRange {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let bad = || ParseError::PortRange(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let from: u16 = a.trim().parse().map_err(|_| bad())?;
        let to: u16 = b.trim().parse().map_err(|_| bad())?;
        if from == 0 || from > to {
            return Err(bad());
        }
        Ok(PortRange { from, to })
    }
}

/// `key=value,key=value` (the Envoy pods' labels).
pub fn parse_selector(s: &str) -> Result<BTreeMap<String, String>, ParseError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| ParseError::Selector(s.to_string()))?;
        if k.trim().is_empty() {
            return Err(ParseError::Selector(s.to_string()));
        }
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        return Err(ParseError::Selector(s.to_string()));
    }
    Ok(out)
}

pub const DEFAULT_ENVOY_POD_SELECTOR: &str = "app.kubernetes.io/name=switchyard-envoy";

/// The controller's defaults, for GatewayClasses without `parametersRef`.
#[derive(Clone, Debug, PartialEq)]
pub struct AddressDefaults {
    pub mode: AddressMode,
    /// VirtualIP pool (`--address-pool`); `None`: not configured.
    pub pool: Option<IpNet>,
    pub lb_ports: PortRange,
    /// Labels of the Envoy pods (the Services' selector in LoadBalancer and
    /// NodeAddresses modes).
    pub envoy_pod_selector: BTreeMap<String, String>,
    /// Standalone mode: no Kubernetes, so no LoadBalancer Services.
    pub standalone: bool,
}

impl Default for AddressDefaults {
    fn default() -> Self {
        AddressDefaults {
            mode: AddressMode::VirtualIP,
            pool: None,
            lb_ports: PortRange::default(),
            envoy_pod_selector: parse_selector(DEFAULT_ENVOY_POD_SELECTOR).unwrap_or_default(),
            standalone: false,
        }
    }
}

/// One class's address mode, resolved and validated.
#[derive(Clone, Debug, PartialEq)]
pub enum Mode {
    LoadBalancer {
        ports: PortRange,
        load_balancer_class: Option<String>,
        external_traffic_policy: Option<String>,
    },
    NodeAddresses {
        /// Preference order.
        address_types: Vec<String>,
    },
    VirtualIP {
        pool: Option<IpNet>,
    },
}

impl Mode {
    pub fn kind(&self) -> AddressMode {
        match self {
            Mode::LoadBalancer { .. } => AddressMode::LoadBalancer,
            Mode::NodeAddresses { .. } => AddressMode::NodeAddresses,
            Mode::VirtualIP { .. } => AddressMode::VirtualIP,
        }
    }
}

/// `gateway.switchyard.dev/v1alpha1` GatewayClassConfig (cluster-scoped).
/// Enums are strings so a bad value reaches [`resolve`], which names it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GatewayClassConfig {
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
    #[serde(default)]
    pub spec: GatewayClassConfigSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassConfigSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancerSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_addresses: Option<NodeAddressesSpec>,
    #[serde(rename = "virtualIP", default, skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<VirtualIpSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRangeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PortRangeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAddressesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_types: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VirtualIpSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

/// The address mode of GatewayClass `class` (`Err`: why its parameters
/// are invalid, naming the object and field; the class is then
/// `Accepted=False/InvalidParameters`).
pub fn resolve(inputs: &Inputs, class: &str) -> Result<Mode, String> {
    let d = &inputs.addressing;
    let Some(gc) = inputs.gateway_classes.get(class) else {
        return Err(format!("GatewayClass {class} not found"));
    };
    let Some(p) = &gc.spec.parameters_ref else {
        return match d.mode {
            AddressMode::LoadBalancer if d.standalone => Err(
                "address mode LoadBalancer (--address-mode) needs Kubernetes; standalone mode \
                 supports VirtualIP and NodeAddresses"
                    .into(),
            ),
            AddressMode::LoadBalancer => Ok(Mode::LoadBalancer {
                ports: d.lb_ports,
                load_balancer_class: None,
                external_traffic_policy: None,
            }),
            AddressMode::NodeAddresses => Ok(Mode::NodeAddresses {
                address_types: NODE_ADDRESS_TYPES.iter().map(|s| s.to_string()).collect(),
            }),
            AddressMode::VirtualIP => Ok(Mode::VirtualIP { pool: d.pool }),
        };
    };
    if p.group != CONFIG_GROUP || p.kind != CONFIG_KIND {
        let group = if p.group.is_empty() { "core" } else { &p.group };
        return Err(format!(
            "spec.parametersRef: {group}/{} {:?} is not a parameters kind Switchyard supports \
             (only {CONFIG_GROUP}/{CONFIG_KIND})",
            p.kind, p.name
        ));
    }
    if p.namespace.as_deref().is_some_and(|n| !n.is_empty()) {
        return Err(format!(
            "spec.parametersRef.namespace: {CONFIG_KIND} is cluster-scoped; remove the namespace"
        ));
    }
    let Some(cfg) = inputs.gateway_class_configs.get(&p.name) else {
        return Err(format!(
            "spec.parametersRef: {CONFIG_KIND} {:?} not found",
            p.name
        ));
    };
    let obj = format!("{CONFIG_KIND} {}", p.name);
    let unknown = inputs.unknown(Kind::GatewayClassConfig, &ObjKey::cluster(&p.name));
    if !unknown.is_empty() {
        return Err(format!(
            "{obj}: fields not supported by this Switchyard: {}",
            unknown.join(", ")
        ));
    }
    config_mode(&cfg.spec, d).map_err(|e| format!("{obj}: {e}"))
}

/// Validates one config's spec.
fn config_mode(spec: &GatewayClassConfigSpec, d: &AddressDefaults) -> Result<Mode, String> {
    let mode: AddressMode = match spec.address_mode.as_deref() {
        None | Some("") => {
            return Err(
                "spec.addressMode is required (LoadBalancer, NodeAddresses or VirtualIP)".into(),
            )
        }
        Some(m) => m.parse().map_err(|_| {
            format!("spec.addressMode: {m:?} is not one of LoadBalancer, NodeAddresses, VirtualIP")
        })?,
    };
    for (present, field, owner) in [
        (
            spec.load_balancer.is_some(),
            "loadBalancer",
            AddressMode::LoadBalancer,
        ),
        (
            spec.node_addresses.is_some(),
            "nodeAddresses",
            AddressMode::NodeAddresses,
        ),
        (
            spec.virtual_ip.is_some(),
            "virtualIP",
            AddressMode::VirtualIP,
        ),
    ] {
        if present && owner != mode {
            return Err(format!(
                "spec.{field} is only for addressMode {owner} (addressMode is {mode})"
            ));
        }
    }
    match mode {
        AddressMode::LoadBalancer => {
            if d.standalone {
                return Err(
                    "spec.addressMode: LoadBalancer needs Kubernetes; standalone mode supports \
                     VirtualIP and NodeAddresses"
                        .into(),
                );
            }
            let lb = spec.load_balancer.clone().unwrap_or_default();
            let ports = match &lb.port_range {
                None => d.lb_ports,
                Some(r) => {
                    let port = |v: Option<i64>, f: &str| -> Result<u16, String> {
                        let v = v.ok_or_else(|| {
                            format!("spec.loadBalancer.portRange.{f} is required")
                        })?;
                        u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
                            format!("spec.loadBalancer.portRange.{f}: {v} is not a port (1-65535)")
                        })
                    };
                    let from = port(r.from, "from")?;
                    let to = port(r.to, "to")?;
                    if from > to {
                        return Err(format!(
                            "spec.loadBalancer.portRange: from ({from}) is greater than to ({to})"
                        ));
                    }
                    PortRange { from, to }
                }
            };
            if let Some(p) = lb
                .external_traffic_policy
                .as_deref()
                .filter(|p| !matches!(*p, "Cluster" | "Local"))
            {
                return Err(format!(
                    "spec.loadBalancer.externalTrafficPolicy: {p:?} is not Cluster or Local"
                ));
            }
            Ok(Mode::LoadBalancer {
                ports,
                load_balancer_class: lb.load_balancer_class.filter(|c| !c.is_empty()),
                external_traffic_policy: lb.external_traffic_policy,
            })
        }
        AddressMode::NodeAddresses => {
            let types = spec
                .node_addresses
                .as_ref()
                .and_then(|n| n.address_types.clone())
                .unwrap_or_else(|| NODE_ADDRESS_TYPES.iter().map(|s| s.to_string()).collect());
            if types.is_empty() {
                return Err("spec.nodeAddresses.addressTypes: must not be empty".into());
            }
            for (i, t) in types.iter().enumerate() {
                if !NODE_ADDRESS_TYPES.contains(&t.as_str()) {
                    return Err(format!(
                        "spec.nodeAddresses.addressTypes[{i}]: {t:?} is not ExternalIP or InternalIP"
                    ));
                }
                if types[..i].contains(t) {
                    return Err(format!(
                        "spec.nodeAddresses.addressTypes[{i}]: {t} is listed twice"
                    ));
                }
            }
            Ok(Mode::NodeAddresses {
                address_types: types,
            })
        }
        AddressMode::VirtualIP => {
            let Some(pool) = spec
                .virtual_ip
                .as_ref()
                .and_then(|v| v.pool.as_deref())
                .filter(|p| !p.is_empty())
            else {
                return Err(
                    "spec.virtualIP.pool is required for addressMode VirtualIP (a CIDR or one IP)"
                        .into(),
                );
            };
            let net = parse_pool(pool).ok_or_else(|| {
                format!("spec.virtualIP.pool: {pool:?} is not a CIDR or an IP address")
            })?;
            Ok(Mode::VirtualIP { pool: Some(net) })
        }
    }
}

/// `10.0.0.0/24` or a bare IP (a /32 or /128).
pub fn parse_pool(spec: &str) -> Option<IpNet> {
    spec.parse::<IpNet>()
        .ok()
        .or_else(|| spec.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// The Service name for a Gateway: a DNS-1035 label (starts with a letter,
/// no dots, at most 63 characters; a hash keeps long names unique).
pub fn service_name(gateway: &str) -> String {
    let base = format!("switchyard-{}", gateway.replace('.', "-"));
    if base.len() <= 63 {
        return base;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(gateway.as_bytes());
    let suffix = format!("-{}", &hex::encode(digest)[..8]);
    let keep = base[..63 - suffix.len()].trim_end_matches('-');
    format!("{keep}{suffix}")
}

/// Addresses of the Ready Nodes, by preference of `types` per Node (its
/// first type that it has), deduplicated, sorted, at most
/// [`MAX_NODE_ADDRESSES`].
pub fn node_addresses(inputs: &Inputs, types: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for node in inputs.nodes.values() {
        let Some(st) = node.status.as_ref() else {
            continue;
        };
        let ready = st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if !ready {
            continue;
        }
        let addrs = st.addresses.as_deref().unwrap_or_default();
        for t in types {
            let of_type: Vec<&str> = addrs
                .iter()
                .filter(|a| &a.type_ == t)
                .map(|a| a.address.as_str())
                .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
                .collect();
            if !of_type.is_empty() {
                out.extend(of_type.into_iter().map(str::to_string));
                break;
            }
        }
    }
    out.sort();
    out.dedup();
    out.truncate(MAX_NODE_ADDRESSES);
    out
}

#[cfg(test)]
mod tests;
