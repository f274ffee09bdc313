//! Warning Events on routes: `RejectedByEnvoy` when Envoy rejected what a
//! route produced (NACK isolation, [`publish_rejected`]), and for shadowed
//! rules (reason `ShadowedRule`):
//! the lease holder publishes one when a rule becomes shadowed, never again
//! while it stays shadowed. A replica announces what it has not announced
//! itself, so a new lease holder (or a restarted controller) publishes one
//! Event per rule shadowed at that moment. See docs/shadowed-rules.md.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use crate::inputs::{Kind, ObjKey};
use crate::ir::shadow::report::kind_of;
use crate::ir::shadow::{RuleRef, Shadowed};
use crate::provider::kube::status::RawObjects;

/// Event reason.
pub const REASON: &str = "ShadowedRule";

/// At most this many Events per loop turn (the rest follow on the next
/// turns, one a second at the latest), so a controller that starts with
/// thousands of shadowed rules does not hold up its loop or flood the API
/// server.
pub const PER_TURN: usize = 50;

/// Rules announced so far.
#[derive(Default)]
pub struct ShadowEvents {
    announced: BTreeSet<RuleRef>,
    /// Rules left for a later turn.
    backlog: bool,
}

impl ShadowEvents {
    /// Forgets rules no longer shadowed (announced again if they come back)
    /// and returns the rules to announce now, at most [`PER_TURN`], marking
    /// them announced.
    pub fn due<'a>(&mut self, current: &'a BTreeMap<RuleRef, Shadowed>) -> Vec<&'a Shadowed> {
        self.announced.retain(|r| current.contains_key(r));
        let due: Vec<&Shadowed> = current
            .iter()
            .filter(|(r, _)| !self.announced.contains(*r))
            .map(|(_, s)| s)
            .take(PER_TURN + 1)
            .collect();
        self.backlog = due.len() > PER_TURN;
        let due: Vec<&Shadowed> = due.into_iter().take(PER_TURN).collect();
        self.announced.extend(due.iter().map(|s| s.rule.clone()));
        due
    }

    /// Whether rules are waiting for a later turn.
    pub fn backlog(&self) -> bool {
        self.backlog
    }

    /// Publishes the Events due (call only while holding the lease).
    pub async fn publish(
        &mut self,
        recorder: &Recorder,
        current: &BTreeMap<RuleRef, Shadowed>,
        raw: &RawObjects,
    ) {
        for s in self.due(current) {
            let Some(kind) = kind_of(s.rule.kind) else {
                continue;
            };
            let ev = Event {
                type_: EventType::Warning,
                reason: REASON.into(),
                note: Some(truncated(&s.note())),
                action: "Route".into(),
                secondary: None,
            };
            let reference = reference(kind, &s.rule.route, raw);
            if let Err(e) = recorder.publish(&ev, &reference).await {
                warn!(kind = kind.as_str(), route = %s.rule.route, "publishing event failed: {e}");
            }
        }
    }
}

/// Event reason for an object Envoy rejected the configuration of (NACK
/// isolation, see docs/nack-isolation.md).
pub const REJECTED_REASON: &str = "RejectedByEnvoy";

/// The Warning Event for an object quarantined after a NACK; `message` is
/// its condition message (with Envoy's error).
pub fn rejected_event(message: &str) -> Event {
    Event {
        type_: EventType::Warning,
        reason: REJECTED_REASON.into(),
        note: Some(truncated(message)),
        action: "Program".into(),
        secondary: None,
    }
}

/// Publishes [`rejected_event`] on the object (call only while holding the lease).
pub async fn publish_rejected(
    recorder: &Recorder,
    kind: Kind,
    key: &ObjKey,
    message: &str,
    raw: &RawObjects,
) {
    let reference = reference(kind, key, raw);
    if let Err(e) = recorder.publish(&rejected_event(message), &reference).await {
        warn!(kind = kind.as_str(), object = %key, "publishing event failed: {e}");
    }
}

/// The Event's reference to a route, with its uid when the watch has it
/// (`kubectl describe` finds Events by it).
fn reference(kind: Kind, key: &ObjKey, raw: &RawObjects) -> ObjectReference {
    let meta = raw
        .get(&(kind, key.clone()))
        .and_then(|v| v.get("metadata"));
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(|x| x.as_str())
            .map(str::to_string)
    };
    ObjectReference {
        api_version: Some(kind.info().api_version()),
        kind: Some(kind.as_str().to_string()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: field("uid"),
        ..Default::default()
    }
}

/// Event notes are limited to 1 KiB by the API server.
pub(crate) fn truncated(msg: &str) -> String {
    const MAX: usize = 1000;
    if msg.len() <= MAX {
        return msg.to_string();
    }
    let mut end = MAX;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &msg[..end])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn shadowed(name: &str, rule: usize) -> (RuleRef, Shadowed) {
        let r = RuleRef {
            kind: "HTTPRoute",
            route: Arc::new(ObjKey::new("default", name)),
            rule,
        };
        (
            r.clone(),
            Shadowed {
                rule: r,
                covers: vec![],
            },
        )
    }

    #[test]
    fn a_rejected_object_gets_a_warning_with_envoys_error() {
        let ev = rejected_event(
            "Envoy rejected the configuration built from this route: bad host; not served",
        );
        assert!(matches!(ev.type_, EventType::Warning));
        assert_eq!(ev.reason, REJECTED_REASON);
        assert!(ev.note.as_deref().is_some_and(|n| n.contains("bad host")));
        let long = "x".repeat(5000);
        assert!(rejected_event(&long).note.is_some_and(|n| n.len() < 1100));
    }

    #[test]
    fn each_rule_is_announced_once_while_shadowed_and_again_if_it_comes_back() {
        let mut ev = ShadowEvents::default();
        let mut current: BTreeMap<RuleRef, Shadowed> = [shadowed("a", 1)].into_iter().collect();
        assert_eq!(ev.due(&current).len(), 1);
        assert!(ev.due(&current).is_empty(), "not repeated");
        current.extend([shadowed("b", 0)]);
        let due: Vec<String> = ev
            .due(&current)
            .iter()
            .map(|s| s.rule.route.name.clone())
            .collect();
        assert_eq!(due, vec!["b"]);
        current.clear();
        assert!(ev.due(&current).is_empty());
        current.extend([shadowed("a", 1)]);
        assert_eq!(ev.due(&current).len(), 1, "shadowed again: announced again");
    }

    #[test]
    fn a_large_set_is_announced_over_several_turns() {
        let mut ev = ShadowEvents::default();
        let current: BTreeMap<RuleRef, Shadowed> =
            (0..PER_TURN * 2 + 1).map(|i| shadowed("a", i)).collect();
        assert_eq!(ev.due(&current).len(), PER_TURN);
        assert!(ev.backlog());
        assert_eq!(ev.due(&current).len(), PER_TURN);
        assert!(ev.backlog());
        assert_eq!(ev.due(&current).len(), 1);
        assert!(!ev.backlog());
        assert!(ev.due(&current).is_empty());
    }

    #[test]
    fn the_reference_carries_the_uid_from_the_watch() {
        let key = ObjKey::new("default", "a");
        let mut raw = RawObjects::new();
        raw.insert(
            (Kind::HTTPRoute, key.clone()),
            serde_json::json!({"metadata": {"name": "a", "namespace": "default", "uid": "u-1"}}),
        );
        let r = reference(Kind::HTTPRoute, &key, &raw);
        assert_eq!(r.uid.as_deref(), Some("u-1"));
        assert_eq!(
            r.api_version.as_deref(),
            Some("gateway.networking.k8s.io/v1")
        );
        let other = reference(Kind::GRPCRoute, &ObjKey::new("x", "y"), &raw);
        assert_eq!(other.uid, None);
        assert_eq!(truncated(&"é".repeat(600)).len(), 1000 + "…".len());
    }
}
