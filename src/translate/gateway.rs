//! Gateways of our classes: addresses, their own listeners and those merged
//! in from ListenerSets, and Gateway status.

use std::collections::{BTreeMap, BTreeSet};

use gateway_api::experimental::gateways::Gateway;

use super::conditions::{reasons, types};
use super::listener::{
    detect_conflicts, listener_status, mark_overlapping_tls, validate_listener, ListenerState,
};
use super::listenerset::{self, ListenerSetInfo};
use super::{generation, GatewayMap};
use crate::addressing::{self, AddressMode};
use crate::inputs::{Inputs, Kind, ObjKey};
use crate::ir;
use crate::status::{Condition, GatewayAddress, ObjectStatus};

/// Where Envoy binds a Gateway's listeners.
#[derive(Clone, Debug, PartialEq)]
pub struct Bind {
    /// An address of the Gateway (VirtualIP) or `0.0.0.0` (LoadBalancer,
    /// NodeAddresses).
    pub address: String,
    /// Bind before the address is on the node (VirtualIP, not loopback).
    pub freebind: bool,
    /// LoadBalancer: the Envoy port of each (listener port, UDP?); empty:
    /// Envoy listens on the listener port.
    pub ports: BTreeMap<(u16, bool), u16>,
    pub mode: AddressMode,
}

/// Why a Gateway has no usable address: (reason for Accepted when it is
/// `UnsupportedAddress`, reason for Programmed, message).
pub type AddressError = (&'static str, &'static str, String);

#[derive(Clone, Debug)]
pub struct GatewayState {
    pub key: ObjKey,
    pub generation: i64,
    /// The addresses `status.addresses` reports.
    pub address: Result<Vec<GatewayAddress>, AddressError>,
    /// Where Envoy listens (`None`: no Envoy listener). Set even while the
    /// address is pending (a load balancer not provisioned yet): the
    /// listeners are ready when it appears.
    pub bind: Option<Bind>,
    /// Why the Gateway is not accepted regardless of its listeners
    /// (reason, message): fields Switchyard cannot honour, what the API
    /// server would have refused, an unusable infrastructure.parametersRef.
    pub unsupported: Option<(&'static str, String)>,
    pub listeners: Vec<ListenerState>,
    pub secrets: BTreeMap<String, ir::TlsCertificate>,
    /// CA bundles of `spec.tls.frontend` its listeners use, by SDS name.
    pub client_cas: BTreeMap<String, ir::ClientCa>,
    /// `InsecureFrontendValidationMode`'s message when some
    /// `spec.tls.frontend` entry is `AllowInsecureFallback`.
    pub insecure_frontend: Option<String>,
    /// ListenerSets naming this Gateway as parent; the listeners of those
    /// it allows are in `listeners` (with `parent` set).
    pub listener_sets: BTreeMap<ObjKey, ListenerSetInfo>,
}

impl GatewayState {
    #[cfg(test)]
    pub fn for_tests(key: ObjKey, listeners: Vec<ListenerState>) -> Self {
        GatewayState {
            key,
            generation: 1,
            address: Ok(vec![ip_address("127.0.0.1")]),
            bind: Some(Bind {
                address: "127.0.0.1".into(),
                freebind: false,
                ports: BTreeMap::new(),
                mode: AddressMode::VirtualIP,
            }),
            unsupported: None,
            listeners,
            secrets: BTreeMap::new(),
            client_cas: BTreeMap::new(),
            insecure_frontend: None,
            listener_sets: BTreeMap::new(),
        }
    }

    /// The Gateway's own listeners (not those of its ListenerSets).
    pub fn own_listeners(&self) -> impl Iterator<Item = &ListenerState> {
        self.listeners.iter().filter(|l| l.parent.is_none())
    }

    pub fn status(&self) -> ObjectStatus {
        let gen = self.generation;
        let own = self.own_listeners().count();
        let valid = self.own_listeners().filter(|l| l.programmable()).count();
        let all_valid = valid == own;
        let mut conditions = Vec::new();
        let address_error = self.address.as_ref().err();
        let accepted = if let Some((reason, msg)) = &self.unsupported {
            Condition::new(types::ACCEPTED, false, reason, msg.clone(), gen)
        } else if let Some((reason, _, msg)) =
            address_error.filter(|(r, _, _)| *r == reasons::UNSUPPORTED_ADDRESS)
        {
            Condition::new(types::ACCEPTED, false, reason, msg.clone(), gen)
        } else if all_valid {
            Condition::new(
                types::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "Gateway is accepted",
                gen,
            )
        } else {
            let bad: Vec<&str> = self
                .own_listeners()
                .filter(|l| !l.programmable())
                .map(|l| l.name.as_str())
                .collect();
            Condition::new(
                types::ACCEPTED,
                valid > 0,
                reasons::LISTENERS_NOT_VALID,
                format!("invalid listeners: {}", bad.join(", ")),
                gen,
            )
        };
        let accepted_ok = accepted.is_true();
        conditions.push(accepted);
        let programmed = match (&self.address, accepted_ok) {
            (Err((_, reason, msg)), _) => {
                Condition::new(types::PROGRAMMED, false, reason, msg.clone(), gen)
            }
            (Ok(_), false) => Condition::new(
                types::PROGRAMMED,
                false,
                reasons::INVALID,
                "Gateway is not accepted",
                gen,
            ),
            (Ok(_), true) => match self.node_port_conflicts() {
                Some(msg) => Condition::new(types::PROGRAMMED, false, reasons::INVALID, msg, gen),
                None => Condition::new(
                    types::PROGRAMMED,
                    true,
                    reasons::PROGRAMMED,
                    "Gateway is programmed",
                    gen,
                ),
            },
        };
        conditions.push(programmed);
        if let Some(msg) = &self.insecure_frontend {
            conditions.push(Condition::new(
                types::INSECURE_FRONTEND_VALIDATION_MODE,
                true,
                reasons::CONFIGURATION_CHANGED,
                msg.clone(),
                gen,
            ));
        }
        let addresses = self.address.clone().unwrap_or_default();
        let mut listeners: Vec<_> = self
            .own_listeners()
            .map(|l| listener_status(l, gen))
            .collect();
        // Without an address (or not accepted) no Envoy listener exists:
        // a listener is not programmed, whatever its own state.
        if let Some(why) = conditions
            .iter()
            .find(|c| c.type_ == types::PROGRAMMED && !c.is_true())
            .map(|c| c.message.clone())
        {
            for l in &mut listeners {
                for c in &mut l.conditions {
                    if c.type_ == types::PROGRAMMED && c.is_true() {
                        *c = Condition::new(
                            types::PROGRAMMED,
                            false,
                            reasons::PENDING,
                            format!("the Gateway is not programmed: {why}"),
                            gen,
                        );
                    }
                }
            }
        }
        let attached_listener_sets = self
            .listener_sets
            .keys()
            .filter(|k| listenerset::accepted(self, k))
            .count();
        ObjectStatus::Gateway {
            addresses,
            conditions,
            listeners,
            attached_listener_sets: i32::try_from(attached_listener_sets).unwrap_or(i32::MAX),
        }
    }

    /// The status of the Gateway and of every ListenerSet that names it.
    pub fn statuses(&self) -> Vec<((Kind, ObjKey), ObjectStatus)> {
        let gw = self.status();
        let accepted = matches!(&gw, ObjectStatus::Gateway { conditions, .. }
            if conditions.first().is_some_and(|c| c.is_true()));
        let mut out = vec![((Kind::Gateway, self.key.clone()), gw)];
        for key in self.listener_sets.keys() {
            if let Some(st) = listenerset::status(self, key, accepted) {
                out.push(((Kind::ListenerSet, key.clone()), st));
            }
        }
        out
    }

    /// The address Envoy binds this Gateway's listeners to.
    pub fn bind_address(&self) -> Option<&str> {
        self.bind.as_ref().map(|b| b.address.as_str())
    }

    /// The port Envoy listens on for a listener port.
    pub fn envoy_port(&self, port: u16, udp: bool) -> u16 {
        self.bind
            .as_ref()
            .and_then(|b| b.ports.get(&(port, udp)))
            .copied()
            .unwrap_or(port)
    }

    /// NodeAddresses mode: own listeners that lost their port to an older
    /// Gateway (every Gateway binds 0.0.0.0 on every node).
    fn node_port_conflicts(&self) -> Option<String> {
        if self.bind.as_ref().map(|b| b.mode) != Some(AddressMode::NodeAddresses) {
            return None;
        }
        let lost: Vec<String> = self
            .own_listeners()
            .filter_map(|l| match &l.accepted {
                Err((r, msg)) if *r == reasons::PORT_UNAVAILABLE => {
                    Some(format!("{}: {msg}", l.name))
                }
                _ => None,
            })
            .collect();
        (!lost.is_empty()).then(|| {
            format!(
                "listeners cannot bind their port on the nodes (NodeAddresses mode): {}",
                lost.join("; ")
            )
        })
    }
}

#[cfg(test)]
fn ip_address(v: &str) -> GatewayAddress {
    GatewayAddress {
        type_: "IPAddress".into(),
        value: v.to_string(),
    }
}

/// Gateways of our classes, validated.
pub fn gateways(inputs: &Inputs, classes: &BTreeSet<String>) -> GatewayMap {
    let mut out = GatewayMap::new();
    let mut sets = listenerset::by_gateway(inputs);
    for (key, gw) in &inputs.gateways {
        if !classes.contains(&gw.spec.gateway_class_name) {
            continue;
        }
        let mine = sets.remove(key).unwrap_or_default();
        out.insert(key.clone(), gateway_state(inputs, key, gw, &mine));
    }
    claim_ports(inputs, &mut out);
    out
}

/// Gateways sharing an address cannot bind the same port twice (Envoy
/// would reject the second listener): the oldest Gateway (then by
/// namespace/name) keeps an (address, port, transport); the others'
/// listeners on it are `PortUnavailable`.
fn claim_ports(inputs: &Inputs, gateways: &mut GatewayMap) {
    let mut order: Vec<(String, ObjKey)> = gateways
        .keys()
        .map(|k| {
            let ts = inputs
                .gateways
                .get(k)
                .and_then(|g| g.metadata.creation_timestamp.as_ref())
                .map(|t| t.0.to_string())
                .unwrap_or_default();
            (ts, k.clone())
        })
        .collect();
    order.sort();
    let mut owner: BTreeMap<(String, u16, bool), ObjKey> = BTreeMap::new();
    for (_, key) in order {
        let Some(gw) = gateways.get_mut(&key) else {
            continue;
        };
        let Some(bind) = gw.bind.clone() else {
            continue;
        };
        let address = bind.address;
        for l in gw.listeners.iter_mut().filter(|l| l.attachable()) {
            let udp = l.transport() == ir::Transport::Udp;
            let port = bind.ports.get(&(l.port, udp)).copied().unwrap_or(l.port);
            match owner.get(&(address.clone(), port, udp)) {
                Some(other) if *other != key => {
                    l.accepted = Err((
                        reasons::PORT_UNAVAILABLE,
                        format!(
                            "port {port} on address {address} is already used by Gateway {other}"
                        ),
                    ));
                }
                _ => {
                    owner.insert((address.clone(), port, udp), key.clone());
                }
            }
        }
    }
}

fn gateway_state(
    inputs: &Inputs,
    key: &ObjKey,
    gw: &Gateway,
    sets: &[listenerset::Candidate<'_>],
) -> GatewayState {
    let gen = generation(&gw.metadata);
    let unknown = inputs.unknown(Kind::Gateway, key);
    let unsupported_fields: Vec<String> = unknown
        .iter()
        .filter(|p| !p.starts_with("spec.listeners["))
        .cloned()
        .collect();
    // No parameters kind exists for Switchyard's Gateways: any reference is
    // one "not supported" by the implementation, which the spec reports as
    // InvalidParameters.
    let invalid_parameters = gw
        .spec
        .infrastructure
        .as_ref()
        .and_then(|i| i.parameters_ref.as_ref())
        .map(|p| {
            format!(
                "spec.infrastructure.parametersRef: {}/{} {:?} is not a parameters kind Switchyard \
                 supports (none is; remove the reference)",
                if p.group.is_empty() { "core" } else { p.group.as_str() },
                p.kind,
                p.name
            )
        });
    // spec.tls.backend and spec.tls.frontend are honoured
    // (translate/backend_tls.rs, translate/frontend_tls.rs).
    // What the API server would have refused: inside a listener, that
    // listener is not accepted; anywhere else, the Gateway is not.
    let violations = super::validate::stored(inputs, Kind::Gateway, key);
    let (listener_violations, gateway_violations) = super::validate::by_listener(violations);
    let mut unsupported = (!unsupported_fields.is_empty()).then(|| {
        (
            reasons::UNSUPPORTED_VALUE,
            format!(
                "fields not supported by this Switchyard: {}",
                unsupported_fields.join(", ")
            ),
        )
    });
    if let Some(msg) = invalid_parameters {
        unsupported = Some((reasons::INVALID_PARAMETERS, msg));
    }
    if !gateway_violations.is_empty() {
        unsupported = Some((
            reasons::UNSUPPORTED_VALUE,
            super::validate::summary(&gateway_violations),
        ));
    }

    let (address, bind) = match addressing::resolve(inputs, &gw.spec.gateway_class_name) {
        Ok(mode) => super::addresses::gateway_address(inputs, key, gw, &mode),
        Err(msg) => {
            unsupported.get_or_insert((reasons::INVALID_PARAMETERS, msg.clone()));
            (
                Err((reasons::INVALID_PARAMETERS, reasons::INVALID, msg)),
                None,
            )
        }
    };
    let mut secrets = BTreeMap::new();
    let mut listeners: Vec<ListenerState> = gw
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let field_prefix = format!("spec.listeners[{i}]");
            let unknown_here: Vec<String> = unknown
                .iter()
                .filter(|p| p.starts_with(&field_prefix))
                .cloned()
                .collect();
            let mut st = validate_listener(inputs, key, l, None, &unknown_here, &mut secrets);
            if let Some(v) = listener_violations.get(&i) {
                st.accepted = Err((reasons::UNSUPPORTED_VALUE, super::validate::summary(v)));
            } else if !gateway_violations.is_empty() {
                st.accepted = Err((
                    reasons::UNSUPPORTED_VALUE,
                    "the Gateway's spec is invalid (see the Gateway's Accepted condition)".into(),
                ));
            }
            st
        })
        .collect();
    // ListenerSets, in merge precedence after the Gateway's own listeners.
    let mut listener_sets = BTreeMap::new();
    let mut ranks = vec![0usize; listeners.len()];
    for (rank, c) in sets.iter().enumerate() {
        let allowed = listenerset::allowed(inputs, gw, key, c.key);
        if allowed.is_ok() {
            for l in listenerset::listeners(inputs, key, c, &mut secrets) {
                listeners.push(l);
                ranks.push(rank + 1);
            }
        }
        listener_sets.insert(
            c.key.clone(),
            ListenerSetInfo {
                generation: generation(&c.set.metadata),
                allowed,
            },
        );
    }
    let mut client_cas = BTreeMap::new();
    super::frontend_tls::apply(inputs, key, gw, &mut listeners, &mut client_cas);
    detect_conflicts(&mut listeners, &ranks);
    mark_overlapping_tls(&mut listeners);
    GatewayState {
        key: key.clone(),
        generation: gen,
        address,
        bind,
        unsupported,
        listeners,
        secrets,
        client_cas,
        insecure_frontend: super::frontend_tls::insecure_fallback(gw),
        listener_sets,
    }
}
