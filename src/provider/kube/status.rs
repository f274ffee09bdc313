//! StatusSet → Kubernetes status subresource patches.
//!
//! - Which kinds get status, and how, is the table of kinds
//!   ([`crate::kinds::StatusWrite`]): GatewayClasses and Gateways get their
//!   whole status when the translator reports on them; routes share
//!   `status.parents` with other controllers ([`route_parents`]).
//! - Routes are touched only when they have a parentRef of ours (one of our
//!   Gateways or ListenerSets, as the translator decided) or still carry an
//!   entry of ours: a route of another controller is never patched. Other
//!   controllers' entries are kept exactly as read, at their place.
//! - A write happens only when the content differs from what the API server
//!   holds, ignoring `lastTransitionTime` (kept while a condition's status is
//!   unchanged), so a restarted controller rewrites nothing.
//! - Patches carry the `resourceVersion` they were computed from: a
//!   concurrent writer makes ours fail with 409 and we retry from fresh data.

use std::collections::BTreeMap;
use std::sync::Mutex;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::inputs::{Kind, ObjKey};
use crate::kinds::StatusWrite;
use crate::provider::kube::lease::Leadership;
use crate::provider::kube::sent::SentPatches;
use crate::status::{
    now_rfc3339, stamp_conditions, without_times, ObjectStatus, RouteParentStatus, StatusSet,
};

/// The latest object as the watch delivered it, for kinds we write status to.
pub type RawObjects = BTreeMap<(Kind, ObjKey), Value>;

/// `maxItems` of `RouteStatus.parents` in Gateway API v1.6.1 (every route kind).
pub const MAX_ROUTE_PARENTS: usize = 32;

/// Kinds whose status we own or share.
pub fn writes_status(kind: Kind) -> bool {
    kind.info().status != StatusWrite::No
}

/// What to write onto one object's status.
#[derive(Debug, Default, PartialEq)]
pub struct StatusPatch {
    /// The `status` to patch, or `None` when nothing is to be written.
    pub status: Option<Value>,
    /// Route entries of ours left out because `status.parents` is full.
    pub dropped_parents: usize,
}

/// The status to write onto `current` (the object as the API server holds
/// it), given the translator's status of it (`ours`).
pub fn desired(
    kind: Kind,
    ours: Option<&ObjectStatus>,
    current: &Value,
    controller_name: &str,
    now: &str,
) -> StatusPatch {
    match kind.info().status {
        StatusWrite::No => StatusPatch::default(),
        StatusWrite::Whole => StatusPatch {
            status: ours.and_then(|ours| whole_status(ours, current, now)),
            dropped_parents: 0,
        },
        StatusWrite::RouteParents => {
            let mine = match ours {
                Some(ObjectStatus::Route { parents }) => parents.as_slice(),
                _ => &[],
            };
            let merged = route_parents(current, mine, controller_name, now);
            StatusPatch {
                status: merged.parents.map(|p| json!({ "parents": p })),
                dropped_parents: merged.dropped,
            }
        }
        StatusWrite::PolicyAncestors => StatusPatch {
            status: crate::status::policy_ancestors(current, ours, controller_name, now)
                .map(|a| json!({ "ancestors": a })),
            dropped_parents: 0,
        },
    }
}

/// The whole status of an object we own, or `None` if the API server already holds it.
fn whole_status(ours: &ObjectStatus, current: &Value, now: &str) -> Option<Value> {
    let cur_status = current.get("status").cloned().unwrap_or(Value::Null);
    let mut want = serde_json::to_value(ours).ok()?;
    stamp_conditions(&mut want, Some(&cur_status), now);
    if without_times(&normalize(&want)) == without_times(&normalize(&cur_status)) {
        return None;
    }
    if let Some(m) = want.as_object_mut() {
        // Keep fields of the status we do not own (e.g. future additions).
        if let Some(cur) = cur_status.as_object() {
            for (k, v) in cur {
                if !m.contains_key(k)
                    && !matches!(
                        k.as_str(),
                        "conditions" | "listeners" | "addresses" | "supportedFeatures"
                    )
                {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Some(want)
}

/// A route's `status.parents` after merging our entries in.
#[derive(Debug, Default, PartialEq)]
pub struct RouteParents {
    /// The list to write, or `None`: the API server already holds it, or the
    /// route has neither a parentRef of ours nor an entry of ours (then it is
    /// not ours to touch at all).
    pub parents: Option<Vec<Value>>,
    /// How many of our entries did not fit under [`MAX_ROUTE_PARENTS`].
    pub dropped: usize,
}

/// Merges our entries into the `status.parents` of `route` (as the API
/// server holds it); the one merge for every route kind.
///
/// - `ours` are the translator's entries, one per parentRef of ours (a
///   parentRef to one of our Gateways or ListenerSets). Only those whose
///   parentRef is still in the route's `spec.parentRefs` are written, in
///   parentRef order.
/// - Entries of other controllers are kept exactly as they are, at their
///   place. Entries with our `controllerName` are replaced in place (their
///   `lastTransitionTime`s kept while a condition's status holds), or
///   removed when their parentRef is no longer ours or no longer on the
///   route; new entries of ours go at the end.
/// - `status.parents` holds at most [`MAX_ROUTE_PARENTS`] entries. When ours
///   and the others' would exceed it, the others' entries are kept (they are
///   not ours to delete, and removing them would make their controller write
///   them back, a patch war) and only as many of ours as fit are written, the
///   first ones in parentRef order; `dropped` says how many were left out
///   (the writer logs a warning naming the route).
pub fn route_parents(
    route: &Value,
    ours: &[RouteParentStatus],
    controller_name: &str,
    now: &str,
) -> RouteParents {
    let route_ns = route
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let current: &[Value] = route
        .pointer("/status/parents")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let spec_refs: &[Value] = route
        .pointer("/spec/parentRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let is_ours =
        |p: &Value| p.get("controllerName").and_then(Value::as_str) == Some(controller_name);
    let same = |a: Option<&Value>, b: Option<&Value>| same_parent_ref(a, b, route_ns);

    // Our entries, in parentRef order, for parentRefs the route still has.
    let ours: Vec<Value> = ours
        .iter()
        .filter_map(|p| serde_json::to_value(p).ok())
        .collect();
    let mut wanted: Vec<Value> = Vec::new();
    for spec_ref in spec_refs {
        let entry = ours
            .iter()
            .find(|v| same(v.get("parentRef"), Some(spec_ref)))
            .cloned();
        if let Some(v) = entry {
            if !wanted
                .iter()
                .any(|w| same(w.get("parentRef"), v.get("parentRef")))
            {
                wanted.push(v);
            }
        }
    }
    if wanted.is_empty() && !current.iter().any(is_ours) {
        return RouteParents::default();
    }

    let others = current.iter().filter(|p| !is_ours(p)).count();
    let room = MAX_ROUTE_PARENTS.saturating_sub(others);
    let dropped = wanted.len().saturating_sub(room);
    wanted.truncate(room);

    let mut placed = vec![false; wanted.len()];
    let mut merged = Vec::with_capacity(current.len().max(others + wanted.len()));
    for cur in current {
        if !is_ours(cur) {
            merged.push(cur.clone());
            continue;
        }
        let slot = wanted
            .iter()
            .zip(&placed)
            .position(|(w, done)| !done && same(w.get("parentRef"), cur.get("parentRef")));
        // No slot: a stale entry of ours (or one that no longer fits): removed.
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
    let comparable =
        |ps: &[Value]| -> Vec<Value> { ps.iter().map(|p| without_times(&normalize(p))).collect() };
    let unchanged = comparable(&merged) == comparable(current);
    RouteParents {
        parents: (!unchanged).then_some(merged),
        dropped,
    }
}

/// parentRef equality with the spec's defaults filled in (group, kind, the
/// route's namespace).
fn same_parent_ref(a: Option<&Value>, b: Option<&Value>, route_ns: &str) -> bool {
    let norm = |v: Option<&Value>| {
        let s = |k: &str, d: &'static str| {
            v.and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or(d)
                .to_string()
        };
        (
            s("group", crate::inputs::GATEWAY_GROUP),
            s("kind", "Gateway"),
            v.and_then(|v| v.get("namespace"))
                .and_then(Value::as_str)
                .filter(|x| !x.is_empty())
                .unwrap_or(route_ns)
                .to_string(),
            s("name", ""),
            s("sectionName", ""),
            v.and_then(|v| v.get("port")).and_then(Value::as_i64),
        )
    };
    norm(a) == norm(b)
}

/// Drops empty values the API server omits, so comparisons are fair.
fn normalize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| {
                    !matches!(x, Value::Null) && !x.as_array().is_some_and(|a| a.is_empty())
                })
                .map(|(k, x)| (k.clone(), normalize(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        other => other.clone(),
    }
}

pub struct KubeStatusWriter {
    client: Client,
    controller_name: String,
    resources: BTreeMap<Kind, ApiResource>,
    limiter: Mutex<TokenBucket>,
    /// Routes whose `status.parents` could not take all our entries, and how
    /// many were left out when that was last logged (one warning per change).
    truncated: Mutex<BTreeMap<(Kind, ObjKey), usize>>,
    /// Patches accepted whose result the watch has not delivered yet.
    sent: SentPatches,
}

/// Status patches per second the writer allows itself, and the burst: the
/// API server is shared, and 5,000 routes becoming Accepted at once must not
/// starve everyone else. (A write skipped here is retried on the next loop
/// turn, at least every second.)
const WRITES_PER_SEC: f64 = 100.0;
/// Bound on one status patch (besides the Lease's remaining time).
const PATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const WRITE_BURST: f64 = 200.0;

/// A token bucket: `take` succeeds while tokens remain; they refill at `rate`/s.
#[derive(Debug)]
pub struct TokenBucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: std::time::Instant,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            tokens: burst,
            rate,
            burst,
            last: std::time::Instant::now(),
        }
    }

    pub fn take(&mut self, now: std::time::Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl KubeStatusWriter {
    pub fn new(client: Client, controller_name: String) -> Self {
        KubeStatusWriter {
            client,
            controller_name,
            resources: BTreeMap::new(),
            limiter: Mutex::new(TokenBucket::new(WRITES_PER_SEC, WRITE_BURST)),
            truncated: Mutex::new(BTreeMap::new()),
            sent: SentPatches::default(),
        }
    }

    /// Remembers the API resource (group/version/plural) of a watched kind.
    pub fn register(&mut self, kind: Kind, ar: ApiResource) {
        self.resources.insert(kind, ar);
    }

    /// Writes every status that differs from the API server's copy. Returns
    /// the number of patches sent and whether some are left to retry (rate
    /// limit, errors); a conflict needs no retry here (the watch brings the
    /// newer object, which triggers another pass).
    ///
    /// Every patch is sent only while `leadership` has time left, and is
    /// abandoned when that time runs out: a replica that lost (or may have
    /// lost) the Lease writes nothing more.
    ///
    /// Before each patch, `yield_now` is asked whether something more urgent
    /// waits (a configuration change to translate and push): if so the pass
    /// stops there and reports a retry, so a change waits for one status
    /// patch at most (the caller keeps status from starving).
    pub async fn write(
        &self,
        set: &StatusSet,
        raw: &RawObjects,
        leadership: &Leadership,
        yield_now: &(dyn Fn() -> bool + Send + Sync),
    ) -> (usize, bool) {
        let now = now_rfc3339();
        let mut writes = 0;
        let mut retry = false;
        for ((kind, key), current) in raw {
            if !writes_status(*kind) {
                continue;
            }
            let patch = desired(
                *kind,
                set.get(*kind, key),
                current,
                &self.controller_name,
                &now,
            );
            self.note_truncation(*kind, key, patch.dropped_parents);
            let Some(status) = patch.status else {
                self.sent.forget(*kind, key);
                continue;
            };
            // Only objects that need a patch pay for this clone.
            let rv = current
                .get("metadata")
                .and_then(|m| m.get("resourceVersion"))
                .cloned()
                .unwrap_or(Value::Null);
            if self.sent.already(*kind, key, &rv, &status) {
                continue;
            }
            let Some(ar) = self.resources.get(kind) else {
                continue;
            };
            if yield_now() {
                retry = true;
                break;
            }
            let allowed = self
                .limiter
                .lock()
                .map(|mut l| l.take(std::time::Instant::now()))
                .unwrap_or(true);
            if !allowed {
                crate::metrics::catalogue::STATUS_WRITES_DEFERRED.inc([]);
                retry = true;
                break;
            }
            let api: Api<DynamicObject> = if key.namespace.is_empty() {
                Api::all_with(self.client.clone(), ar)
            } else {
                Api::namespaced_with(self.client.clone(), &key.namespace, ar)
            };
            let patch = json!({ "metadata": { "resourceVersion": rv }, "status": status });
            let Some(left) = leadership.remaining() else {
                debug!("not leading any more: status writes stop");
                crate::metrics::catalogue::STATUS_WRITES_ABANDONED.inc([]);
                return (writes, false);
            };
            let sent = tokio::time::timeout(
                left.min(PATCH_TIMEOUT),
                api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await;
            let Ok(sent) = sent else {
                warn!(kind = kind.as_str(), object = %key, "status write timed out");
                crate::metrics::catalogue::STATUS_WRITE_ERRORS.inc([kind.as_str()]);
                retry = true;
                continue;
            };
            match sent {
                Ok(_) => {
                    writes += 1;
                    self.sent.record(*kind, key, rv, status);
                    debug!(kind = kind.as_str(), object = %key, "status written");
                    crate::metrics::catalogue::STATUS_WRITES.inc([kind.as_str()]);
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    debug!(kind = kind.as_str(), object = %key, "status conflict; will retry with fresh data");
                }
                Err(e) => {
                    retry = true;
                    warn!(kind = kind.as_str(), object = %key, "status write failed: {e}");
                    crate::metrics::catalogue::STATUS_WRITE_ERRORS.inc([kind.as_str()]);
                }
            }
        }
        if let Ok(mut t) = self.truncated.lock() {
            t.retain(|k, _| raw.contains_key(k));
        }
        self.sent.retain(|k| raw.contains_key(k));
        (writes, retry)
    }

    /// Logs a warning when a route's `status.parents` cannot take all our
    /// entries (once per route and number left out, not on every pass).
    fn note_truncation(&self, kind: Kind, key: &ObjKey, dropped: usize) {
        let Ok(mut t) = self.truncated.lock() else {
            return;
        };
        if dropped == 0 {
            t.remove(&(kind, key.clone()));
            return;
        }
        if t.insert((kind, key.clone()), dropped) != Some(dropped) {
            warn!(
                kind = kind.as_str(),
                route = %key,
                dropped,
                "status.parents is full ({MAX_ROUTE_PARENTS} entries at most): other controllers' \
                 entries are kept, {dropped} of Switchyard's are not written (the last in parentRef order)"
            );
            crate::metrics::catalogue::ROUTE_PARENTS_TRUNCATED.inc([kind.as_str()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Condition, ParentRef, RouteParentStatus};

    fn ours(ok: bool) -> ObjectStatus {
        ObjectStatus::Route {
            parents: vec![RouteParentStatus {
                parent_ref: ParentRef {
                    group: crate::inputs::GATEWAY_GROUP.into(),
                    kind: "Gateway".into(),
                    namespace: None,
                    name: "gw".into(),
                    section_name: None,
                    port: None,
                },
                controller_name: "me".into(),
                conditions: vec![Condition::new("Accepted", ok, "Accepted", "m", 2)],
            }],
        }
    }

    #[test]
    fn token_bucket_allows_the_burst_then_the_rate() {
        let t0 = std::time::Instant::now();
        let mut b = TokenBucket::new(10.0, 3.0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0), "burst spent");
        assert!(
            b.take(t0 + std::time::Duration::from_millis(100)),
            "one token after 100 ms at 10/s"
        );
        assert!(!b.take(t0 + std::time::Duration::from_millis(100)));
        assert!(
            (0..3).all(|_| b.take(t0 + std::time::Duration::from_secs(10))),
            "refills to the burst"
        );
        assert!(!b.take(t0 + std::time::Duration::from_secs(10)));
    }

    /// One entry of ours for parentRef `gw` (`ok`: Accepted).
    fn entry(gw: &str, ok: bool) -> RouteParentStatus {
        RouteParentStatus {
            parent_ref: ParentRef {
                group: crate::inputs::GATEWAY_GROUP.into(),
                kind: "Gateway".into(),
                namespace: None,
                name: gw.into(),
                section_name: None,
                port: None,
            },
            controller_name: "me".into(),
            conditions: vec![Condition::new("Accepted", ok, "Accepted", "m", 2)],
        }
    }

    /// A route in namespace `ns` with these parentRefs (Gateway names) and
    /// `status.parents` (absent when `None`).
    fn route(refs: &[&str], parents: Option<Value>) -> Value {
        let refs: Vec<Value> = refs.iter().map(|n| json!({"name": n})).collect();
        let mut v = json!({
            "metadata": {"name": "r", "namespace": "ns", "resourceVersion": "1"},
            "spec": {"parentRefs": refs},
        });
        if let Some(p) = parents {
            v["status"] = json!({ "parents": p });
        }
        v
    }

    fn other(name: &str) -> Value {
        json!({"controllerName": "other.example/gw", "parentRef": {"name": name},
               "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                               "message": "theirs", "lastTransitionTime": "T0"}]})
    }

    fn names(parents: &[Value]) -> Vec<(String, String)> {
        parents
            .iter()
            .map(|p| {
                (
                    p["controllerName"].as_str().unwrap_or("?").to_string(),
                    p["parentRef"]["name"].as_str().unwrap_or("?").to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn route_merge_keeps_other_controllers_and_skips_unchanged() {
        let current = route(&["x", "gw"], Some(json!([other("x")])));
        let want = desired(Kind::HTTPRoute, Some(&ours(true)), &current, "me", "T1")
            .status
            .expect("write needed");
        let parents = want["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], other("x"), "kept exactly as it was");
        assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], "T1");

        // The server now holds it: nothing to write, even at a later time.
        let current = route(&["x", "gw"], Some(want["parents"].clone()));
        assert_eq!(
            desired(Kind::HTTPRoute, Some(&ours(true)), &current, "me", "T2"),
            StatusPatch::default()
        );

        // A status change keeps the other entry and restamps the condition.
        let want = desired(Kind::HTTPRoute, Some(&ours(false)), &current, "me", "T3")
            .status
            .expect("changed");
        assert_eq!(
            want["parents"][1]["conditions"][0]["lastTransitionTime"],
            "T3"
        );
        assert_eq!(want["parents"][0], other("x"));

        // Our parentRef gone: our entry is removed, the other stays.
        let want = desired(Kind::HTTPRoute, None, &current, "me", "T4")
            .status
            .expect("removal");
        assert_eq!(want["parents"], json!([other("x")]));
    }

    #[test]
    fn merge_replaces_ours_in_place_and_keeps_unchanged_times() {
        let mine = [entry("a", true), entry("b", true)];
        let first = route_parents(&route(&["a", "x", "b"], None), &mine, "me", "T1");
        let held = first.parents.expect("first write");
        assert_eq!(
            names(&held),
            [("me".into(), "a".into()), ("me".into(), "b".into())]
        );
        // Another controller appended its entry between our two writes.
        let current = json!([held[0].clone(), other("x"), held[1].clone()]);
        let mine = [entry("a", false), entry("b", true)];
        let next = route_parents(&route(&["a", "x", "b"], Some(current)), &mine, "me", "T2")
            .parents
            .expect("a changed");
        assert_eq!(
            names(&next),
            [
                ("me".into(), "a".into()),
                ("other.example/gw".into(), "x".into()),
                ("me".into(), "b".into())
            ],
            "ours replaced where they were, theirs untouched"
        );
        assert_eq!(next[0]["conditions"][0]["lastTransitionTime"], "T2");
        assert_eq!(next[0]["conditions"][0]["status"], "False");
        assert_eq!(
            next[2]["conditions"][0]["lastTransitionTime"], "T1",
            "unchanged condition keeps its time"
        );
        assert_eq!(next[1], other("x"));
    }

    #[test]
    fn merge_removes_stale_entries_of_ours() {
        let current = json!([
            {"controllerName": "me", "parentRef": {"name": "gone"}, "conditions": []},
            other("x"),
            {"controllerName": "me", "parentRef": {"name": "a"}, "conditions": []},
            {"controllerName": "me", "parentRef": {"name": "not-ours-any-more"}, "conditions": []},
        ]);
        // `gone` left spec.parentRefs; `not-ours-any-more` is still there
        // but the translator has no entry for it (no longer our Gateway);
        // the translator's `stale` entry is not on the route any more.
        let r = route(&["x", "a", "not-ours-any-more"], Some(current));
        let mine = [entry("a", true), entry("stale", true)];
        let out = route_parents(&r, &mine, "me", "T1");
        assert_eq!(out.dropped, 0);
        assert_eq!(
            names(&out.parents.expect("stale entries removed")),
            [
                ("other.example/gw".into(), "x".into()),
                ("me".into(), "a".into())
            ]
        );

        // Nothing of ours left at all: only our entries go.
        let r = route(
            &["x"],
            Some(json!([
                other("x"),
                {"controllerName": "me", "parentRef": {"name": "a"}, "conditions": []}
            ])),
        );
        let out = route_parents(&r, &[], "me", "T1");
        assert_eq!(out.parents, Some(vec![other("x")]));
    }

    #[test]
    fn merge_touches_no_route_without_a_parent_or_entry_of_ours() {
        // Another controller's route, no status yet: no `parents: []` patch.
        let r = route(&["x"], None);
        assert_eq!(route_parents(&r, &[], "me", "T1"), RouteParents::default());
        assert_eq!(
            desired(Kind::HTTPRoute, None, &r, "me", "T1"),
            StatusPatch::default()
        );
        // With the other controller's status.
        let r = route(&["x"], Some(json!([other("x")])));
        assert_eq!(route_parents(&r, &[], "me", "T1"), RouteParents::default());
        // Every route kind goes through the same merge.
        for kind in crate::kinds::routes() {
            assert_eq!(
                desired(kind, None, &r, "me", "T1"),
                StatusPatch::default(),
                "{kind}"
            );
            let want = desired(kind, Some(&ours(true)), &route(&["gw"], None), "me", "T1");
            assert_eq!(
                want.status
                    .map(|s| names(s["parents"].as_array().expect("list"))),
                Some(vec![("me".to_string(), "gw".to_string())]),
                "{kind}"
            );
        }
    }

    #[test]
    fn merge_matches_parent_refs_with_defaults() {
        // The API server holds the ref with group/kind/namespace filled in.
        let current = json!([{"controllerName": "me", "conditions": [],
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                          "namespace": "ns", "name": "gw"}}]);
        let r = json!({
            "metadata": {"name": "r", "namespace": "ns"},
            "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}]},
            "status": {"parents": current},
        });
        let out = route_parents(&r, &[entry("gw", true)], "me", "T1");
        let parents = out.parents.expect("conditions differ");
        assert_eq!(parents.len(), 1, "the same parent, replaced: {parents:?}");
    }

    #[test]
    fn merge_caps_parents_at_32_keeping_others() {
        let others: Vec<Value> = (0..30).map(|i| other(&format!("o{i}"))).collect();
        let mut refs: Vec<String> = (0..30).map(|i| format!("o{i}")).collect();
        refs.extend(["a", "b", "c", "d"].map(String::from));
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        // The translator's order differs from parentRef order: parentRef order wins.
        let mine = [
            entry("d", true),
            entry("c", true),
            entry("b", true),
            entry("a", true),
        ];
        let out = route_parents(&route(&refs, Some(json!(others))), &mine, "me", "T1");
        assert_eq!(out.dropped, 2);
        let parents = out.parents.expect("room for two");
        assert_eq!(parents.len(), MAX_ROUTE_PARENTS);
        assert_eq!(
            &parents[..30],
            others.as_slice(),
            "others' entries all kept"
        );
        assert_eq!(
            names(&parents[30..]),
            [("me".into(), "a".into()), ("me".into(), "b".into())],
            "the first of ours in parentRef order"
        );

        // Held as written: nothing to write, still two left out (the writer
        // logs that once).
        let r = route(&refs, Some(Value::Array(parents)));
        let again = route_parents(&r, &mine, "me", "T2");
        assert_eq!(again.parents, None);
        assert_eq!(again.dropped, 2);

        // 31 others and our `a`: a new parentRef `b` before `a` takes the
        // one slot; `a` is left out and its old entry removed.
        let mut current: Vec<Value> = (0..31).map(|i| other(&format!("o{i}"))).collect();
        current.push(json!({"controllerName": "me", "parentRef": {"name": "a"}, "conditions": []}));
        let mut refs: Vec<String> = (0..31).map(|i| format!("o{i}")).collect();
        refs.extend(["b", "a"].map(String::from));
        let refs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let out = route_parents(&route(&refs, Some(json!(current))), &mine, "me", "T3");
        assert_eq!(out.dropped, 1);
        let parents = out.parents.expect("b replaces a");
        assert_eq!(parents.len(), MAX_ROUTE_PARENTS);
        assert_eq!(&parents[..31], &current[..31]);
        assert_eq!(names(&parents[31..]), [("me".into(), "b".into())]);
    }
}
