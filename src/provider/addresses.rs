//! Gateway address assignment from a configured pool (standalone and
//! bare-metal Kubernetes): sticky per Gateway, released when it goes away.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::inputs::{Inputs, ObjKey};

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("address pool {0:?} is not a CIDR (e.g. 127.0.0.0/24) or an IP address")]
    Parse(String),
}

#[derive(Clone, Debug)]
pub struct AddressPool {
    net: IpNet,
    addresses: Vec<IpAddr>,
    assigned: BTreeMap<ObjKey, IpAddr>,
}

impl AddressPool {
    /// `127.0.0.1/32`, `127.0.0.0/24` (network address skipped), or a bare IP.
    pub fn parse(spec: &str) -> Result<Self, PoolError> {
        let net: IpNet = match spec.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => spec
                .parse::<IpAddr>()
                .map(IpNet::from)
                .map_err(|_| PoolError::Parse(spec.to_string()))?,
        };
        let addresses: Vec<IpAddr> = if net.prefix_len() + 1 >= net.max_prefix_len() {
            net.hosts()
                .collect::<Vec<_>>()
                .into_iter()
                .chain(std::iter::once(net.addr()))
                .take(2)
                .collect()
        } else {
            // Cap the pool: nobody runs more Gateways than this on one node.
            net.hosts().take(65_536).collect()
        };
        let mut addresses = addresses;
        addresses.dedup();
        Ok(AddressPool {
            net,
            addresses,
            assigned: BTreeMap::new(),
        })
    }

    /// Assigns addresses to our Gateways that did not ask for static ones
    /// (or asked for an empty value), keeping earlier assignments, and
    /// tells the translator which addresses the fleet can bind (the pool):
    /// a static `spec.addresses` value outside it is `AddressNotUsable`.
    pub fn assign(&mut self, inputs: &mut Inputs) {
        inputs.address_pool = Some(self.net);
        let ours: Vec<ObjKey> = inputs
            .gateways
            .iter()
            .filter(|(_, gw)| {
                inputs
                    .gateway_classes
                    .get(&gw.spec.gateway_class_name)
                    .is_some_and(|gc| gc.spec.controller_name == inputs.controller_name)
            })
            .filter(|(_, gw)| {
                gw.spec.addresses.as_ref().is_none_or(|a| {
                    a.is_empty()
                        || a.iter()
                            .any(|x| x.value.as_deref().unwrap_or("").is_empty())
                })
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.assigned.retain(|k, _| ours.contains(k));
        // First the address a Gateway already reports in its status (a
        // restarted controller must not hand the pool out in another order:
        // Envoy would see two Gateways move, or one take another's address).
        for k in &ours {
            if self.assigned.contains_key(k) {
                continue;
            }
            let reported = inputs
                .gateways
                .get(k)
                .and_then(|gw| gw.status.as_ref())
                .and_then(|st| st.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.r#type.as_deref().is_none_or(|t| t == "IPAddress"))
                .filter_map(|a| a.value.parse::<IpAddr>().ok())
                .find(|ip| self.addresses.contains(ip) && !self.assigned.values().any(|u| u == ip));
            if let Some(ip) = reported {
                self.assigned.insert(k.clone(), ip);
            }
        }
        for k in ours {
            if !self.assigned.contains_key(&k) {
                let used: Vec<IpAddr> = self.assigned.values().copied().collect();
                if let Some(a) = self.addresses.iter().find(|a| !used.contains(a)) {
                    self.assigned.insert(k.clone(), *a);
                }
            }
        }
        inputs.assigned_addresses = self
            .assigned
            .iter()
            .map(|(k, a)| (k.clone(), vec![a.to_string()]))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_parse() {
        assert_eq!(
            AddressPool::parse("127.0.0.1/32").expect("ok").addresses,
            vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(
            AddressPool::parse("127.0.0.7").expect("ok").addresses.len(),
            1
        );
        let p = AddressPool::parse("127.0.0.0/24").expect("ok");
        assert_eq!(
            p.addresses.first().map(|a| a.to_string()),
            Some("127.0.0.1".into())
        );
        assert_eq!(p.addresses.len(), 254);
        assert!(AddressPool::parse("nope").is_err());
    }

    #[test]
    fn assign_publishes_the_pool_for_static_address_checks() {
        let mut inputs = Inputs::new("c");
        AddressPool::parse("10.0.0.0/29")
            .expect("pool")
            .assign(&mut inputs);
        let net = inputs.address_pool.expect("pool published");
        assert!(net.contains(&"10.0.0.6".parse::<IpAddr>().expect("ip")));
        assert!(!net.contains(&"10.0.0.9".parse::<IpAddr>().expect("ip")));
    }

    fn inputs_with(gws: &[(&str, Option<&str>)]) -> Inputs {
        let mut inputs = Inputs::new("c");
        inputs
            .insert_value(serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
                "metadata": {"name": "gc"}, "spec": {"controllerName": "c"},
            }))
            .unwrap();
        for (name, status) in gws {
            let mut gw = serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"gatewayClassName": "gc", "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]},
            });
            if let Some(ip) = status {
                gw["status"] =
                    serde_json::json!({"addresses": [{"type": "IPAddress", "value": ip}]});
            }
            inputs.insert_value(gw).unwrap();
        }
        inputs
    }

    #[test]
    fn a_restarted_controller_keeps_the_addresses_gateways_report() {
        let mut pool = AddressPool::parse("10.0.0.0/29").unwrap();
        // "a" was deleted while the controller was down; "b" and "c" keep
        // theirs, and the new "d" gets a free one, not one of theirs.
        let mut inputs = inputs_with(&[
            ("b", Some("10.0.0.2")),
            ("c", Some("10.0.0.3")),
            ("d", None),
        ]);
        pool.assign(&mut inputs);
        let got = |k: &str| inputs.assigned_addresses[&ObjKey::new("ns", k)][0].clone();
        assert_eq!(got("b"), "10.0.0.2");
        assert_eq!(got("c"), "10.0.0.3");
        assert_eq!(got("d"), "10.0.0.1");
        // A reported address outside the pool, or taken, is not reused.
        let mut pool = AddressPool::parse("10.0.0.0/29").unwrap();
        let mut inputs = inputs_with(&[
            ("x", Some("192.168.1.1")),
            ("y", Some("10.0.0.4")),
            ("z", Some("10.0.0.4")),
        ]);
        pool.assign(&mut inputs);
        let got = |k: &str| inputs.assigned_addresses[&ObjKey::new("ns", k)][0].clone();
        assert_eq!(got("y"), "10.0.0.4");
        assert_ne!(got("z"), "10.0.0.4");
        assert!(got("x").starts_with("10.0.0."));
    }
}
