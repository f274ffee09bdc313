//! Pure conversions from the cache, the status set and manifests to the
//! admin API's messages (no I/O: unit-tested in `tests.rs`).

use serde_json::Value;

use super::pb;
use crate::status::{Condition, ObjectStatus, ParentRef, StatusSet};
use crate::xds::cache::{type_label, NodeState, Protocol, State};
use crate::xds::type_url;

/// `cds`, `eds`, ... or a full type URL → type URLs (empty = every type).
pub fn parse_types(given: &[String]) -> Result<Vec<&'static str>, String> {
    given
        .iter()
        .map(|g| {
            type_url::PUSH_ORDER
                .into_iter()
                .find(|t| *t == g.as_str() || type_label(t) == g.to_ascii_lowercase())
                .ok_or_else(|| {
                    format!(
                        "unknown type {g:?}: expected cds, eds, lds, rds, srds, sds or a type URL"
                    )
                })
        })
        .collect()
}

fn protocol(p: Protocol) -> i32 {
    match p {
        Protocol::Sotw => pb::Protocol::Sotw as i32,
        Protocol::Delta => pb::Protocol::Delta as i32,
    }
}

/// One node's registry entry as the API shows it.
pub(crate) fn node(st: &State, n: &NodeState) -> pb::Node {
    let mut types = Vec::new();
    // Push order first, then anything else the node subscribed to.
    let order = |t: &str| {
        type_url::PUSH_ORDER
            .iter()
            .position(|p| *p == t)
            .unwrap_or(usize::MAX)
    };
    let mut subscribed: Vec<(&String, &crate::xds::cache::TypeAckState)> = n.types.iter().collect();
    subscribed.sort_by_key(|(t, _)| (order(t), t.to_string()));
    for (t, s) in subscribed {
        types.push(pb::TypeState {
            type_url: t.clone(),
            short_name: type_label(t).to_string(),
            acked_version: s.acked_version,
            acked_nonce: s.acked_nonce.clone(),
            last_nack: s.last_nack.as_ref().map(|k| pb::Nack {
                version: k.version,
                nonce: k.nonce.clone(),
                error: k.error.clone(),
                resource_names: k.resource_names.clone(),
                at_unix_ms: k.at_unix_ms,
            }),
            current: st.version > 0 && s.acked_version >= st.version,
        });
    }
    let ent = n.selection.entitled.as_deref();
    pb::Node {
        stream_id: n.stream_id,
        node_id: n.node_id.clone(),
        cluster: n.cluster.clone(),
        protocol: protocol(n.protocol),
        requested_gateways: n.selection.requested.clone(),
        entitled_fleet: ent.is_some_and(|e| e.fleet),
        entitled_gateways: ent
            .map(|e| e.gateways.iter().cloned().collect())
            .unwrap_or_default(),
        entitled_namespaces: ent
            .map(|e| e.namespaces.iter().cloned().collect())
            .unwrap_or_default(),
        connected_at_unix_ms: n.connected_at_unix_ms,
        types,
        gateways: st.gateways_of(&n.selection),
    }
}

pub(crate) fn list_nodes(st: &State, nodes: &[NodeState]) -> pb::ListNodesResponse {
    pb::ListNodesResponse {
        snapshot_version: st.version,
        nodes: nodes.iter().map(|n| node(st, n)).collect(),
    }
}

/// What the node is served now (its view of the current snapshot), private
/// keys redacted. `types` empty = every type.
pub(crate) fn node_config(
    st: &State,
    n: &NodeState,
    types: &[&'static str],
) -> Result<pb::GetNodeConfigResponse, crate::xds::render::RenderError> {
    let view = st.view(&n.selection);
    let mut out = Vec::new();
    for t in type_url::PUSH_ORDER {
        if !types.is_empty() && !types.contains(&t) {
            continue;
        }
        let mut resources = Vec::new();
        for (name, r) in view.get(t) {
            let mut v = crate::xds::render::any_to_json(&r.any)?;
            crate::pipeline::redact(&mut v);
            resources.push(pb::NodeResource {
                name: name.clone(),
                version: r.version.clone(),
                json: v.to_string(),
            });
        }
        out.push(pb::TypeResources {
            type_url: t.to_string(),
            short_name: type_label(t).to_string(),
            resources,
        });
    }
    Ok(pb::GetNodeConfigResponse {
        version: st.version,
        node_id: n.node_id.clone(),
        types: out,
    })
}

/// `<ns>/<name>[/<sectionName>][:<port>]`, the namespace defaulting to the
/// object's own.
pub fn parent_label(own_ns: &str, p: &ParentRef) -> String {
    let mut s = format!("{}/{}", p.namespace.as_deref().unwrap_or(own_ns), p.name);
    if let Some(sec) = &p.section_name {
        s.push('/');
        s.push_str(sec);
    }
    if let Some(port) = p.port {
        s.push_str(&format!(":{port}"));
    }
    s
}

fn conditions(parent: &str, cs: &[Condition], out: &mut Vec<pb::Condition>) {
    out.extend(cs.iter().map(|c| pb::Condition {
        parent: parent.to_string(),
        r#type: c.type_.to_string(),
        status: c.status.to_string(),
        reason: c.reason.to_string(),
        message: c.message.to_string(),
        observed_generation: c.observed_generation,
    }));
}

/// Every object's status, with its conditions flattened per parent.
pub fn status(set: &StatusSet) -> pb::GetStatusResponse {
    let objects = set
        .objects
        .iter()
        .map(|((kind, key), st)| {
            let mut cs = Vec::new();
            match st {
                ObjectStatus::GatewayClass { conditions: c, .. }
                | ObjectStatus::Conditions { conditions: c } => conditions("", c, &mut cs),
                ObjectStatus::Gateway {
                    conditions: c,
                    listeners,
                    ..
                }
                | ObjectStatus::ListenerSet {
                    conditions: c,
                    listeners,
                } => {
                    conditions("", c, &mut cs);
                    for l in listeners {
                        conditions(&l.name, &l.conditions, &mut cs);
                    }
                }
                ObjectStatus::Route { parents } => {
                    for p in parents {
                        let label = parent_label(&key.namespace, &p.parent_ref);
                        conditions(&label, &p.conditions, &mut cs);
                    }
                }
                ObjectStatus::Policy { ancestors } => {
                    for a in ancestors {
                        let label = parent_label(&key.namespace, &a.ancestor_ref);
                        conditions(&label, &a.conditions, &mut cs);
                    }
                }
            }
            pb::ObjectStatus {
                kind: kind.as_str().to_string(),
                namespace: key.namespace.clone(),
                name: key.name.clone(),
                status_json: serde_json::to_string(st).unwrap_or_default(),
                conditions: cs,
            }
        })
        .collect();
    pb::GetStatusResponse { objects }
}

/// Translates manifests given as text, as `switchyard translate` does
/// with files.
pub fn translate(
    yaml: &str,
    controller_name: &str,
    address_pool: &str,
) -> anyhow::Result<pb::TranslateResponse> {
    let mut inputs = crate::inputs::Inputs::new(controller_name);
    let docs = crate::provider::file::parse_documents(yaml).map_err(|(line, msg)| {
        anyhow::anyhow!(
            "line {}: {msg}",
            line.map(|l| l.to_string()).unwrap_or_else(|| "?".into())
        )
    })?;
    for d in docs {
        inputs.insert_value(d).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    crate::provider::addresses::AddressPool::parse(address_pool)?.assign(&mut inputs);
    let (out, snap) = crate::pipeline::run(&inputs);
    let xds: Value = crate::pipeline::xds_document(&snap)?;
    Ok(pb::TranslateResponse {
        xds_json: xds.to_string(),
        status_json: crate::pipeline::status_documents(&out).to_string(),
    })
}
