//! Status the translator computed, in Gateway API shape, independent of
//! where it is written (Kubernetes status subresource or the standalone
//! `status/` directory).
//!
//! Conditions carry no `lastTransitionTime`: writers add it, keeping the
//! previous one when a condition's status did not change.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::inputs::{Kind, ObjKey};

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type, status and reason are nearly always constants: not allocated.
    #[serde(rename = "type")]
    pub type_: Cow<'static, str>,
    pub status: Cow<'static, str>,
    pub reason: Cow<'static, str>,
    pub message: Cow<'static, str>,
    pub observed_generation: i64,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        ok: bool,
        reason: &'static str,
        message: impl Into<Cow<'static, str>>,
        generation: i64,
    ) -> Self {
        Condition {
            type_: Cow::Borrowed(type_),
            status: Cow::Borrowed(if ok { "True" } else { "False" }),
            reason: Cow::Borrowed(reason),
            message: message.into(),
            observed_generation: generation,
        }
    }
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerStatus {
    pub name: String,
    pub supported_kinds: Vec<GroupKind>,
    pub attached_routes: i32,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    pub group: Cow<'static, str>,
    pub kind: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteParentStatus {
    pub parent_ref: ParentRef,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", untagged)]
pub enum ObjectStatus {
    #[serde(rename_all = "camelCase")]
    GatewayClass {
        conditions: Vec<Condition>,
        supported_features: Vec<SupportedFeature>,
    },
    #[serde(rename_all = "camelCase")]
    Gateway {
        addresses: Vec<GatewayAddress>,
        conditions: Vec<Condition>,
        listeners: Vec<ListenerStatus>,
        attached_listener_sets: i32,
    },
    /// A ListenerSet: its conditions and its listeners' status.
    #[serde(rename_all = "camelCase")]
    ListenerSet {
        conditions: Vec<Condition>,
        listeners: Vec<ListenerStatus>,
    },
    /// Routes: only the entries for parentRefs Switchyard owns.
    Route { parents: Vec<RouteParentStatus> },
    /// Objects with plain conditions.
    Conditions { conditions: Vec<Condition> },
    /// A policy (BackendTLSPolicy): its status per ancestor (Gateway).
    Policy {
        ancestors: Vec<PolicyAncestorStatus>,
    },
}

/// `PolicyAncestorStatus`: a policy's conditions for one ancestor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyAncestorStatus {
    pub ancestor_ref: ParentRef,
    pub controller_name: String,
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SupportedFeature {
    pub name: String,
}

/// Every status Switchyard wants on the API objects.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StatusSet {
    pub objects: BTreeMap<(Kind, ObjKey), ObjectStatus>,
}

impl StatusSet {
    pub fn get(&self, kind: Kind, key: &ObjKey) -> Option<&ObjectStatus> {
        self.objects.get(&(kind, key.clone()))
    }

    /// The statuses as a YAML-friendly list, sorted by kind then key.
    pub fn to_documents(&self) -> Vec<serde_json::Value> {
        self.objects
            .iter()
            .map(|((kind, key), st)| {
                let mut meta = serde_json::Map::new();
                meta.insert("name".into(), key.name.clone().into());
                if !key.namespace.is_empty() {
                    meta.insert("namespace".into(), key.namespace.clone().into());
                }
                serde_json::json!({
                    "kind": kind.as_str(),
                    "metadata": meta,
                    "status": st,
                })
            })
            .collect()
    }
}

/// Current time, RFC 3339, seconds precision, UTC.
pub fn now_rfc3339() -> String {
    // Seconds precision, UTC, without pulling in a date crate.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

/// Adds `lastTransitionTime` to every condition list in `v`, reusing the
/// time from `prev` where the condition (by type) kept its status.
pub fn stamp_conditions(v: &mut Value, prev: Option<&Value>, now: &str) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                let prev_child = prev.and_then(|p| p.get(k));
                if k == "conditions" {
                    if let Value::Array(conds) = child {
                        for c in conds.iter_mut() {
                            let ty = c.get("type").cloned();
                            let st = c.get("status").cloned();
                            let old = prev_child
                                .and_then(|p| p.as_array())
                                .and_then(|a| a.iter().find(|o| o.get("type") == ty.as_ref()))
                                .filter(|o| o.get("status") == st.as_ref())
                                .and_then(|o| o.get("lastTransitionTime").cloned());
                            if let Value::Object(cm) = c {
                                cm.insert(
                                    "lastTransitionTime".into(),
                                    old.unwrap_or_else(|| Value::String(now.into())),
                                );
                            }
                        }
                    }
                } else {
                    stamp_conditions(child, prev_child, now);
                }
            }
        }
        Value::Array(a) => {
            // Lists of parents/listeners: match by position (stable, sorted by the translator).
            for (i, child) in a.iter_mut().enumerate() {
                let p = prev.and_then(|p| p.as_array()).and_then(|pa| pa.get(i));
                stamp_conditions(child, p, now);
            }
        }
        _ => {}
    }
}

/// Removes every `lastTransitionTime` (to compare content).
pub fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| k.as_str() != "lastTransitionTime")
                .map(|(k, x)| (k.clone(), without_times(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

/// A policy's `status.ancestors` after merging our entries into what the
/// API server holds (`policy`): entries of other controllers are kept as
/// they are, at their place; ours are replaced in place (keeping each
/// condition's `lastTransitionTime` while its status holds), removed when
/// no longer wanted, and new ones appended, up to 16 entries in all.
/// `None` when nothing changes (or there is nothing of ours to write).
pub fn policy_ancestors(
    policy: &Value,
    ours: Option<&ObjectStatus>,
    controller_name: &str,
    now: &str,
) -> Option<Vec<Value>> {
    const MAX: usize = 16;
    let mine: Vec<Value> = match ours {
        Some(ObjectStatus::Policy { ancestors }) => ancestors
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .collect(),
        _ => Vec::new(),
    };
    let current: &[Value] = policy
        .pointer("/status/ancestors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let is_ours =
        |a: &Value| a.get("controllerName").and_then(Value::as_str) == Some(controller_name);
    if mine.is_empty() && !current.iter().any(is_ours) {
        return None;
    }
    let policy_ns = policy
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let key = |a: &Value| {
        let r = a.get("ancestorRef");
        let s = |k: &str, d: &str| {
            r.and_then(|r| r.get(k))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .unwrap_or(d)
                .to_string()
        };
        (
            s("group", crate::inputs::GATEWAY_GROUP),
            s("kind", "Gateway"),
            s("namespace", policy_ns),
            s("name", ""),
            s("sectionName", ""),
        )
    };
    let others = current.iter().filter(|a| !is_ours(a)).count();
    let mut wanted = mine;
    wanted.truncate(MAX.saturating_sub(others));
    let mut placed = vec![false; wanted.len()];
    let mut merged = Vec::new();
    for cur in current {
        if !is_ours(cur) {
            merged.push(cur.clone());
            continue;
        }
        let slot = (0..wanted.len()).find(|&j| !placed[j] && key(&wanted[j]) == key(cur));
        if let Some(j) = slot {
            let mut v = wanted[j].clone();
            stamp_conditions(&mut v, Some(cur), now);
            merged.push(v);
            placed[j] = true;
        }
    }
    for (j, w) in wanted.into_iter().enumerate() {
        if !placed[j] {
            let mut v = w;
            stamp_conditions(&mut v, None, now);
            merged.push(v);
        }
    }
    let same = merged.len() == current.len()
        && merged
            .iter()
            .zip(current)
            .all(|(a, b)| without_times(a) == without_times(b));
    (!same).then_some(merged)
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use serde_json::json;

    fn ours(gw: &str, ok: bool) -> ObjectStatus {
        ObjectStatus::Policy {
            ancestors: vec![PolicyAncestorStatus {
                ancestor_ref: ParentRef {
                    group: crate::inputs::GATEWAY_GROUP.into(),
                    kind: "Gateway".into(),
                    namespace: Some("apps".into()),
                    name: gw.into(),
                    section_name: None,
                    port: None,
                },
                controller_name: "me".into(),
                conditions: vec![Condition::new("Accepted", ok, "Accepted", "m", 1)],
            }],
        }
    }

    #[test]
    fn policy_ancestors_keep_other_controllers_and_skip_unchanged() {
        let other =
            json!({"ancestorRef": {"name": "x"}, "controllerName": "other", "conditions": []});
        let p =
            json!({"metadata": {"namespace": "apps"}, "status": {"ancestors": [other.clone()]}});
        let merged = policy_ancestors(&p, Some(&ours("gw", true)), "me", "T1").expect("written");
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0], other);
        assert_eq!(merged[1]["conditions"][0]["lastTransitionTime"], "T1");
        // Written already: nothing to do; then a change keeps the entry's place.
        let p = json!({"metadata": {"namespace": "apps"}, "status": {"ancestors": merged}});
        assert_eq!(
            policy_ancestors(&p, Some(&ours("gw", true)), "me", "T2"),
            None
        );
        let next = policy_ancestors(&p, Some(&ours("gw", false)), "me", "T2").expect("changed");
        assert_eq!(next[1]["conditions"][0]["lastTransitionTime"], "T2");
        // Nothing of ours any more: our entry goes, the other stays.
        let gone = policy_ancestors(&p, None, "me", "T3").expect("removed");
        assert_eq!(gone, vec![other]);
        // Another controller's policy with nothing of ours: untouched.
        let theirs = json!({"status": {"ancestors": [gone[0].clone()]}});
        assert_eq!(policy_ancestors(&theirs, None, "me", "T3"), None);
    }
}
