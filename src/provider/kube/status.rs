//! StatusSet → Kubernetes status subresource patches.
//!
//! - Routes: only the `status.parents` entries whose `controllerName` is ours
//!   are replaced; other controllers' entries are kept as read.
//! - A write happens only when the content differs from what the API server
//!   holds, ignoring `lastTransitionTime` (kept while a condition's status is
//!   unchanged), so a restarted controller rewrites nothing.
//! - Patches carry the `resourceVersion` they were computed from: a
//!   concurrent writer makes ours fail with 409 and we retry from fresh data.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::inputs::{Kind, ObjKey};
use crate::status::{now_rfc3339, stamp_conditions, without_times, ObjectStatus, StatusSet};

/// The latest object as the watch delivered it, for kinds we write status to.
pub type RawObjects = BTreeMap<(Kind, ObjKey), Value>;

/// Kinds whose status we own or share.
pub fn writes_status(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::GatewayClass
            | Kind::Gateway
            | Kind::HTTPRoute
            | Kind::GRPCRoute
            | Kind::TLSRoute
            | Kind::TCPRoute
            | Kind::UDPRoute
    )
}

fn is_route(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::HTTPRoute | Kind::GRPCRoute | Kind::TLSRoute | Kind::TCPRoute | Kind::UDPRoute
    )
}

/// The status to write, or `None` if the API server already holds it.
pub fn desired(
    kind: Kind,
    ours: Option<&ObjectStatus>,
    current: &Value,
    controller_name: &str,
    now: &str,
) -> Option<Value> {
    let cur_status = current.get("status").cloned().unwrap_or(Value::Null);
    let mut want = if is_route(kind) {
        let mut parents: Vec<Value> = cur_status
            .get("parents")
            .and_then(|p| p.as_array())
            .map(|ps| {
                ps.iter()
                    .filter(|p| {
                        p.get("controllerName").and_then(|c| c.as_str()) != Some(controller_name)
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        if let Some(ObjectStatus::Route { parents: mine }) = ours {
            for p in mine {
                let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
                let prev = cur_status
                    .get("parents")
                    .and_then(|ps| ps.as_array())
                    .and_then(|ps| {
                        ps.iter().find(|c| {
                            c.get("controllerName").and_then(|x| x.as_str())
                                == Some(controller_name)
                                && same_parent_ref(c.get("parentRef"), v.get("parentRef"))
                        })
                    });
                stamp_conditions(&mut v, prev, now);
                parents.push(v);
            }
        }
        json!({ "parents": parents })
    } else {
        let ours = ours?;
        let mut v = serde_json::to_value(ours).unwrap_or(Value::Null);
        stamp_conditions(&mut v, Some(&cur_status), now);
        v
    };
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
                        "parents" | "conditions" | "listeners" | "addresses" | "supportedFeatures"
                    )
                {
                    m.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Some(want)
}

/// parentRef equality with the spec's defaults filled in.
fn same_parent_ref(a: Option<&Value>, b: Option<&Value>) -> bool {
    let norm = |v: Option<&Value>| {
        let v = v.cloned().unwrap_or(Value::Null);
        let s = |k: &str, d: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or(d).to_string();
        (
            s("group", crate::inputs::GATEWAY_GROUP),
            s("kind", "Gateway"),
            s("namespace", ""),
            s("name", ""),
            s("sectionName", ""),
            v.get("port").and_then(|p| p.as_i64()),
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
    limiter: std::sync::Mutex<TokenBucket>,
}

/// Status patches per second the writer allows itself, and the burst: the
/// API server is shared, and 5,000 routes becoming Accepted at once must not
/// starve everyone else. (A write skipped here is retried on the next loop
/// turn, at least every second.)
const WRITES_PER_SEC: f64 = 100.0;
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
            limiter: std::sync::Mutex::new(TokenBucket::new(WRITES_PER_SEC, WRITE_BURST)),
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
    pub async fn write(&self, set: &StatusSet, raw: &RawObjects) -> (usize, bool) {
        let now = now_rfc3339();
        let mut writes = 0;
        let mut retry = false;
        for ((kind, key), current) in raw {
            if !writes_status(*kind) {
                continue;
            }
            let ours = set.get(*kind, key);
            if ours.is_none() && !is_route(*kind) {
                continue;
            }
            let Some(status) = desired(*kind, ours, current, &self.controller_name, &now) else {
                continue;
            };
            let Some(ar) = self.resources.get(kind) else {
                continue;
            };
            let allowed = self
                .limiter
                .lock()
                .map(|mut l| l.take(std::time::Instant::now()))
                .unwrap_or(true);
            if !allowed {
                crate::metrics::counter_add(
                    "switchyard_status_writes_deferred_total",
                    "Status patches postponed by the writer's rate limit.",
                    &[],
                    1,
                );
                retry = true;
                break;
            }
            let api: Api<DynamicObject> = if key.namespace.is_empty() {
                Api::all_with(self.client.clone(), ar)
            } else {
                Api::namespaced_with(self.client.clone(), &key.namespace, ar)
            };
            let rv = current
                .get("metadata")
                .and_then(|m| m.get("resourceVersion"))
                .cloned()
                .unwrap_or(Value::Null);
            let patch = json!({ "metadata": { "resourceVersion": rv }, "status": status });
            match api
                .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    writes += 1;
                    debug!(kind = kind.as_str(), object = %key, "status written");
                    crate::metrics::counter_add(
                        "switchyard_status_writes_total",
                        "Status patches sent to the API server.",
                        &[("kind", kind.as_str())],
                        1,
                    );
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    debug!(kind = kind.as_str(), object = %key, "status conflict; will retry with fresh data");
                }
                Err(e) => {
                    retry = true;
                    warn!(kind = kind.as_str(), object = %key, "status write failed: {e}");
                    crate::metrics::counter_add(
                        "switchyard_status_write_errors_total",
                        "Failed status patches.",
                        &[("kind", kind.as_str())],
                        1,
                    );
                }
            }
        }
        (writes, retry)
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

    #[test]
    fn route_merge_keeps_other_controllers_and_skips_unchanged() {
        let current = json!({"status": {"parents": [
            {"controllerName": "other", "parentRef": {"name": "x"}, "conditions": []},
        ]}});
        let want = desired(Kind::HTTPRoute, Some(&ours(true)), &current, "me", "T1")
            .expect("write needed");
        let parents = want["parents"].as_array().expect("parents");
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0]["controllerName"], "other");
        assert_eq!(parents[1]["conditions"][0]["lastTransitionTime"], "T1");

        // The server now holds it: nothing to write, even at a later time.
        let current = json!({"status": want});
        assert!(desired(Kind::HTTPRoute, Some(&ours(true)), &current, "me", "T2").is_none());

        // A status change keeps the other entry and restamps the condition.
        let want =
            desired(Kind::HTTPRoute, Some(&ours(false)), &current, "me", "T3").expect("changed");
        assert_eq!(
            want["parents"][1]["conditions"][0]["lastTransitionTime"],
            "T3"
        );
        assert_eq!(want["parents"][0]["controllerName"], "other");

        // Our parentRef gone: our entry is removed, the other stays.
        let want = desired(Kind::HTTPRoute, None, &current, "me", "T4").expect("removal");
        assert_eq!(want["parents"].as_array().map(|a| a.len()), Some(1));
    }
}
