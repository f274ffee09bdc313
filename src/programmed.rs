//! `Programmed` means Envoy acknowledged it.
//!
//! The translator says what *should* be programmed; this overlay turns the
//! Gateway's and its listeners' `Programmed=True` into the truth reported by
//! the Envoy fleet: `Pending` until every Envoy serving the Gateway has
//! ACKed the configuration version, `Invalid` with Envoy's own message when
//! one rejected a resource of that Gateway (it keeps serving its last good
//! configuration meanwhile).

use std::collections::BTreeSet;

use crate::inputs::Kind;
use crate::status::{Condition, ObjectStatus, StatusSet};
use crate::translate::conditions::{reasons, types};
use crate::xds::cache::NodeState;
use crate::xds::Snapshot;

/// The fleet's verdict for one Gateway.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Acked,
    Pending(String),
    Rejected(String),
}

/// What the nodes serving `gateway` say about `version` of `snap`.
pub fn verdict(gateway: &str, snap: &Snapshot, nodes: &[NodeState], version: u64) -> Verdict {
    let serving: Vec<&NodeState> = nodes
        .iter()
        .filter(|n| n.selection.serves(gateway))
        .collect();
    if serving.is_empty() {
        return Verdict::Pending("no Envoy serving this Gateway is connected".into());
    }
    let owned: BTreeSet<&str> = snap
        .gateways
        .get(gateway)
        .map(|set| {
            set.by_type
                .values()
                .flat_map(|m| m.keys().map(|k| k.as_str()))
                .collect()
        })
        .unwrap_or_default();
    for n in &serving {
        for (t, st) in &n.types {
            if let Some(nack) = &st.last_nack {
                // A NACK stays current until the node runs a newer version of that type.
                let current = st.acked_version < nack.version;
                if current
                    && nack
                        .resource_names
                        .iter()
                        .any(|r| owned.contains(r.as_str()))
                {
                    let short = t.rsplit('.').next().unwrap_or(t);
                    return Verdict::Rejected(format!(
                        "Envoy {} rejected {short} of configuration version {}: {}",
                        n.node_id, nack.version, nack.error
                    ));
                }
            }
        }
    }
    let behind = serving
        .iter()
        .filter(|n| n.types.is_empty() || n.types.values().any(|t| t.acked_version < version))
        .count();
    if behind > 0 {
        return Verdict::Pending(format!(
            "waiting for {behind} of {} Envoy(s) to acknowledge configuration version {version}",
            serving.len()
        ));
    }
    Verdict::Acked
}

fn apply(conds: &mut [Condition], v: &Verdict) {
    for c in conds
        .iter_mut()
        .filter(|c| c.type_ == types::PROGRAMMED && c.is_true())
    {
        match v {
            Verdict::Acked => {}
            Verdict::Pending(msg) => {
                c.status = "False".into();
                c.reason = reasons::PENDING.into();
                c.message = msg.clone().into();
            }
            Verdict::Rejected(msg) => {
                c.status = "False".into();
                c.reason = reasons::INVALID.into();
                c.message = msg.clone().into();
            }
        }
    }
}

/// `status` with every Gateway's `Programmed` replaced by the fleet's verdict.
///
/// `hold(gateway, verdict)` may keep a Gateway's `Programmed=True` through a
/// short `Pending` (Envoys catching up with a new version, or reconnecting
/// after a controller restart), so that status does not flap on every change.
/// A rejection is never held.
pub fn overlay(
    status: &StatusSet,
    snap: &Snapshot,
    nodes: &[NodeState],
    version: u64,
    mut hold: impl FnMut(&crate::inputs::ObjKey, &Verdict) -> bool,
) -> StatusSet {
    let mut out = status.clone();
    for ((kind, key), st) in out.objects.iter_mut() {
        if *kind != Kind::Gateway {
            continue;
        }
        let ObjectStatus::Gateway {
            conditions,
            listeners,
            ..
        } = st
        else {
            continue;
        };
        let v = verdict(&key.to_string(), snap, nodes, version);
        if matches!(v, Verdict::Pending(_)) && hold(key, &v) {
            continue;
        }
        apply(conditions, &v);
        for l in listeners.iter_mut() {
            apply(&mut l.conditions, &v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xds::cache::{Nack, TypeAckState};
    use crate::xds::{type_url, Resource, ResourceSet};
    use std::collections::BTreeMap;

    fn node(gateways: &[&str], acked: u64, nack: Option<(u64, &str)>) -> NodeState {
        let mut types = BTreeMap::new();
        types.insert(
            type_url::LISTENER.to_string(),
            TypeAckState {
                acked_version: acked,
                last_nack: nack.map(|(v, name)| Nack {
                    version: v,
                    nonce: "n".into(),
                    error: "bad listener".into(),
                    resource_names: vec![name.to_string()],
                    at_unix_ms: 0,
                }),
                ..Default::default()
            },
        );
        NodeState {
            stream_id: 1,
            node_id: "envoy-1".into(),
            cluster: "c".into(),
            protocol: crate::xds::cache::Protocol::Delta,
            selection: crate::xds::cache::Selection {
                requested: gateways.iter().map(|s| s.to_string()).collect(),
                entitled: None,
            },
            connected_at_unix_ms: 0,
            types,
        }
    }

    fn snap() -> Snapshot {
        let mut set = ResourceSet::default();
        let l = envoy_types::pb::envoy::config::listener::v3::Listener {
            name: "ns/gw/80".into(),
            ..Default::default()
        };
        set.insert(type_url::LISTENER, Resource::new("ns/gw/80", &l));
        let mut s = Snapshot::default();
        s.gateways.insert("ns/gw".into(), set);
        s
    }

    #[test]
    fn verdicts() {
        let s = snap();
        assert!(matches!(verdict("ns/gw", &s, &[], 3), Verdict::Pending(_)));
        assert_eq!(
            verdict("ns/gw", &s, &[node(&[], 3, None)], 3),
            Verdict::Acked
        );
        assert!(matches!(
            verdict("ns/gw", &s, &[node(&[], 2, None)], 3),
            Verdict::Pending(_)
        ));
        // A node that serves another Gateway does not count.
        assert!(matches!(
            verdict("ns/gw", &s, &[node(&["ns/other"], 3, None)], 3),
            Verdict::Pending(_)
        ));
        match verdict("ns/gw", &s, &[node(&[], 2, Some((3, "ns/gw/80")))], 3) {
            Verdict::Rejected(m) => {
                assert!(m.contains("bad listener") && m.contains("version 3"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        // A NACK of another Gateway's resource does not mark this one.
        assert!(matches!(
            verdict("ns/gw", &s, &[node(&[], 2, Some((3, "x/y/80")))], 3),
            Verdict::Pending(_)
        ));
        // A later ACK supersedes the NACK.
        assert_eq!(
            verdict("ns/gw", &s, &[node(&[], 4, Some((3, "ns/gw/80")))], 4),
            Verdict::Acked
        );
    }
}
