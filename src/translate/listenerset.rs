//! ListenerSet: listeners defined in other objects (often other namespaces)
//! and merged into a Gateway that allows them (`spec.allowedListeners`).
//!
//! Merge precedence: the Gateway's own listeners, then ListenerSets oldest
//! first, then by namespace/name; a ListenerSet listener that conflicts with
//! a listener of higher precedence is Conflicted. A Gateway parentRef never
//! reaches a ListenerSet's listeners (routes name the ListenerSet), and
//! `allowedRoutes.namespaces.from: Same` means the ListenerSet's namespace.

use std::collections::BTreeMap;

use gateway_api::experimental::gateways::{
    Gateway, GatewayAllowedListenersNamespacesFrom as From, GatewayListeners,
};
use gateway_api::experimental::listenersets::ListenerSet;

use super::attach::selector_matches;
use super::conditions::{reasons, types};
use super::gateway::GatewayState;
use super::listener::{listener_status, validate_listener, ListenerState};
use crate::inputs::{Inputs, Kind, ObjKey, GATEWAY_GROUP};
use crate::ir;
use crate::status::{Condition, ObjectStatus};

/// A ListenerSet naming a Gateway as its parent.
pub struct Candidate<'a> {
    pub key: &'a ObjKey,
    pub set: &'a ListenerSet,
}

/// What a Gateway knows of a ListenerSet that names it.
#[derive(Clone, Debug)]
pub struct ListenerSetInfo {
    pub generation: i64,
    /// `Err`: the Gateway does not allow it (message).
    pub allowed: Result<(), String>,
}

/// ListenerSets by the Gateway their parentRef names, each list in merge
/// precedence (creationTimestamp, then namespace/name).
pub fn by_gateway(inputs: &Inputs) -> BTreeMap<ObjKey, Vec<Candidate<'_>>> {
    let mut out: BTreeMap<ObjKey, Vec<Candidate<'_>>> = BTreeMap::new();
    for (key, set) in &inputs.listener_sets {
        let p = &set.spec.parent_ref;
        if p.group.as_deref().unwrap_or(GATEWAY_GROUP) != GATEWAY_GROUP
            || p.kind.as_deref().unwrap_or("Gateway") != "Gateway"
        {
            continue;
        }
        let gw = ObjKey::new(p.namespace.as_deref().unwrap_or(&key.namespace), &p.name);
        out.entry(gw).or_default().push(Candidate { key, set });
    }
    for list in out.values_mut() {
        list.sort_by_cached_key(|c| {
            (
                c.set
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or_default(),
                c.key.clone(),
            )
        });
    }
    out
}

/// Whether Gateway `gw` allows ListenerSets from the namespace of `set`.
pub fn allowed(inputs: &Inputs, gw: &Gateway, gw_key: &ObjKey, set: &ObjKey) -> Result<(), String> {
    let ns = gw
        .spec
        .allowed_listeners
        .as_ref()
        .and_then(|a| a.namespaces.as_ref());
    let ok = match ns.and_then(|n| n.from.clone()).unwrap_or(From::None) {
        From::None => false,
        From::All => true,
        From::Same => set.namespace == gw_key.namespace,
        From::Selector => {
            let labels = inputs.namespace_labels(&set.namespace);
            ns.and_then(|n| n.selector.as_ref()).is_some_and(|sel| {
                selector_matches(
                    &labels,
                    sel.match_labels.as_ref(),
                    sel.match_expressions.iter().flatten().map(|e| {
                        (
                            e.key.as_str(),
                            e.operator.as_str(),
                            e.values.as_deref().unwrap_or(&[]),
                        )
                    }),
                )
            })
        }
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "Gateway {gw_key} does not allow ListenerSets from namespace {} (spec.allowedListeners)",
            set.namespace
        ))
    }
}

/// The validated listeners of an allowed ListenerSet.
pub fn listeners(
    inputs: &Inputs,
    gw_key: &ObjKey,
    c: &Candidate<'_>,
    secrets: &mut BTreeMap<String, ir::TlsCertificate>,
) -> Vec<ListenerState> {
    let unknown = inputs.unknown(Kind::ListenerSet, c.key);
    let (listener_violations, set_violations) =
        super::validate::by_listener(super::validate::stored(inputs, Kind::ListenerSet, c.key));
    let violation = |i: usize| {
        listener_violations
            .get(&i)
            .or((!set_violations.is_empty()).then_some(&set_violations))
            .map(|v| super::validate::summary(v))
    };
    c.set
        .spec
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let prefix = format!("spec.listeners[{i}]");
            let unknown_here: Vec<String> = unknown
                .iter()
                .filter(|p| p.starts_with(&prefix))
                .cloned()
                .collect();
            // A ListenerSet listener has the fields of a Gateway listener.
            let as_gateway: Result<GatewayListeners, _> =
                serde_json::to_value(l).and_then(serde_json::from_value);
            match as_gateway {
                Ok(gl) => {
                    let mut st =
                        validate_listener(inputs, gw_key, &gl, Some(c.key), &unknown_here, secrets);
                    if let Some(msg) = violation(i) {
                        st.accepted = Err((reasons::UNSUPPORTED_VALUE, msg));
                    }
                    st
                }
                Err(e) => {
                    let gl = GatewayListeners {
                        name: l.name.clone(),
                        port: l.port,
                        protocol: l.protocol.clone(),
                        ..Default::default()
                    };
                    let mut st = validate_listener(inputs, gw_key, &gl, Some(c.key), &[], secrets);
                    st.accepted = Err((reasons::UNSUPPORTED_VALUE, format!("{prefix}: {e}")));
                    st
                }
            }
        })
        .collect()
}

/// Whether a ListenerSet of `gw` is accepted: allowed, and at least one
/// of its listeners is valid.
pub fn accepted(gw: &GatewayState, key: &ObjKey) -> bool {
    gw.listener_sets.get(key).is_some_and(|i| i.allowed.is_ok())
        && gw
            .listeners
            .iter()
            .any(|l| l.parent.as_ref() == Some(key) && l.programmable())
}

/// The status of ListenerSet `key` of Gateway `gw`.
pub fn status(gw: &GatewayState, key: &ObjKey, gateway_accepted: bool) -> Option<ObjectStatus> {
    let info = gw.listener_sets.get(key)?;
    let gen = info.generation;
    let mine: Vec<&ListenerState> = gw
        .listeners
        .iter()
        .filter(|l| l.parent.as_ref() == Some(key))
        .collect();
    let both = |ok: bool, reason: &'static str, msg: String| {
        let (acc_reason, prog_reason) = if ok {
            (reasons::ACCEPTED, reasons::PROGRAMMED)
        } else {
            (reason, reason)
        };
        vec![
            Condition::new(types::ACCEPTED, ok, acc_reason, msg.clone(), gen),
            Condition::new(types::PROGRAMMED, ok, prog_reason, msg, gen),
        ]
    };
    let conditions = if let Err(msg) = &info.allowed {
        both(false, reasons::NOT_ALLOWED, msg.clone())
    } else if !gateway_accepted {
        both(
            false,
            reasons::PARENT_NOT_ACCEPTED,
            format!("Gateway {} is not accepted", gw.key),
        )
    } else if !mine.iter().any(|l| l.programmable()) {
        let names: Vec<&str> = mine.iter().map(|l| l.name.as_str()).collect();
        both(
            false,
            reasons::LISTENERS_NOT_VALID,
            format!("no valid listener: {}", names.join(", ")),
        )
    } else {
        let bad: Vec<&str> = mine
            .iter()
            .filter(|l| !l.programmable())
            .map(|l| l.name.as_str())
            .collect();
        let msg = if bad.is_empty() {
            format!("merged into Gateway {}", gw.key)
        } else {
            format!(
                "merged into Gateway {}; invalid listeners: {}",
                gw.key,
                bad.join(", ")
            )
        };
        both(true, reasons::ACCEPTED, msg)
    };
    Some(ObjectStatus::ListenerSet {
        conditions,
        listeners: mine.iter().map(|l| listener_status(l, gen)).collect(),
    })
}
