//! `switchyard fleet drift`: what we pushed to a node versus what its Envoy
//! runs (`/config_dump?include_eds`). Pure: both sides come in as JSON.
//!
//! Resources are compared per type and name after both sides are rendered
//! in one canonical proto-JSON ([`crate::xds::render::canonical_json`]):
//! Envoy's wrappers (`version_info`, `last_updated`, the `*_state` and
//! `*ConfigDump` envelopes) are not part of a resource, private keys are
//! never compared (both sides hold only a redaction marker), and endpoints
//! are compared as the set of their addresses, because Envoy rebuilds its
//! EDS dump from its host set (health, weights, defaults) instead of
//! echoing what it received. Bootstrap (static) resources are listed apart
//! and are never drift.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::xds::type_url;

/// How many differing JSON paths are listed per resource.
const MAX_PATHS: usize = 10;

/// One resource in a report: short type (`lds`, ...) and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ResourceId {
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    #[serde(flatten)]
    pub id: ResourceId,
    /// JSON paths where the two differ (at most [`MAX_PATHS`]).
    pub paths: Vec<String>,
    /// Envoy's side is not active yet (`warming`) or was rejected (`error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envoy_state: Option<String>,
}

/// The comparison of one node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Pushed, absent from Envoy.
    pub missing_in_envoy: Vec<ResourceId>,
    /// In Envoy (dynamic), not pushed.
    pub extra_in_envoy: Vec<ResourceId>,
    pub different: Vec<Difference>,
    /// Envoy's bootstrap resources (never drift).
    pub static_resources: Vec<ResourceId>,
    /// Resources that could not be put in canonical form (listed, and drift).
    pub uncomparable: Vec<(ResourceId, String)>,
}

impl Report {
    pub fn has_drift(&self) -> bool {
        !(self.missing_in_envoy.is_empty()
            && self.extra_in_envoy.is_empty()
            && self.different.is_empty()
            && self.uncomparable.is_empty())
    }
}

/// A dynamic resource found in Envoy's dump.
struct EnvoyResource {
    body: Value,
    /// `None` when active.
    state: Option<String>,
}

/// Short type → name → resource, plus the static resources.
#[derive(Default)]
struct Dump {
    dynamic: BTreeMap<&'static str, BTreeMap<String, EnvoyResource>>,
    statics: Vec<ResourceId>,
}

fn short(t: &str) -> &'static str {
    crate::xds::cache::type_label(t)
}

/// The resource name as xDS knows it.
fn name_of(t: &str, v: &Value) -> String {
    let key = if t == type_url::ENDPOINT {
        "cluster_name"
    } else {
        "name"
    };
    v.get(key)
        .or_else(|| v.get("clusterName"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

/// Where one `*ConfigDump` keeps a type: (type URL, static list, the
/// resource's field in an entry, dynamic lists with the state they mean).
type Section = (
    &'static str,
    &'static str,
    &'static str,
    Vec<(&'static str, Option<&'static str>)>,
);

/// Reads Envoy's `/config_dump` (with `include_eds`).
fn parse_dump(dump: &Value) -> Dump {
    let mut out = Dump::default();
    let arr = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let configs = dump
        .get("configs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for c in &configs {
        let kind = c.get("@type").and_then(Value::as_str).unwrap_or("");
        let kind = kind.rsplit('.').next().unwrap_or(kind);
        let (t, statics, field, dynamics): Section = match kind {
            "ClustersConfigDump" => (
                type_url::CLUSTER,
                "static_clusters",
                "cluster",
                vec![
                    ("dynamic_active_clusters", None),
                    ("dynamic_warming_clusters", Some("warming")),
                ],
            ),
            "RoutesConfigDump" => (
                type_url::ROUTE,
                "static_route_configs",
                "route_config",
                vec![("dynamic_route_configs", None)],
            ),
            "SecretsConfigDump" => (
                type_url::SECRET,
                "static_secrets",
                "secret",
                vec![
                    ("dynamic_active_secrets", None),
                    ("dynamic_warming_secrets", Some("warming")),
                ],
            ),
            "EndpointsConfigDump" => (
                type_url::ENDPOINT,
                "static_endpoint_configs",
                "endpoint_config",
                vec![("dynamic_endpoint_configs", None)],
            ),
            "ListenersConfigDump" => (type_url::LISTENER, "static_listeners", "listener", vec![]),
            "ScopedRoutesConfigDump" => {
                // Scopes come in groups (one per scoped routes config), each
                // a list of ScopedRouteConfigurations.
                let slot = out
                    .dynamic
                    .entry(short(type_url::SCOPED_ROUTE))
                    .or_default();
                for group in arr(c, "dynamic_scoped_route_configs") {
                    for s in arr(&group, "scoped_route_configs") {
                        let name = name_of(type_url::SCOPED_ROUTE, &s);
                        slot.insert(
                            name,
                            EnvoyResource {
                                body: s,
                                state: None,
                            },
                        );
                    }
                }
                continue;
            }
            _ => continue,
        };
        for s in arr(c, statics) {
            let name = s
                .get("name")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| s.get(field).map(|b| name_of(t, b)).unwrap_or_default());
            out.statics.push(ResourceId {
                type_: short(t).into(),
                name,
            });
        }
        let slot = out.dynamic.entry(short(t)).or_default();
        for (list, state) in dynamics {
            for d in arr(c, list) {
                let Some(body) = d.get(field) else { continue };
                let name = d
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| name_of(t, body));
                // An active entry wins over a warming one of the same name.
                if state.is_some() && slot.contains_key(&name) {
                    continue;
                }
                slot.insert(
                    name,
                    EnvoyResource {
                        body: body.clone(),
                        state: state.map(str::to_string),
                    },
                );
            }
        }
        if t == type_url::LISTENER {
            for d in arr(c, "dynamic_listeners") {
                let name = d
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let pick = [
                    ("active_state", None),
                    ("warming_state", Some("warming")),
                    ("error_state", Some("error")),
                ]
                .into_iter()
                .find_map(|(k, st)| {
                    d.get(k)
                        .and_then(|s| s.get("listener"))
                        .map(|l| (l.clone(), st))
                });
                match pick {
                    Some((body, st)) => {
                        slot.insert(
                            name,
                            EnvoyResource {
                                body,
                                state: st.map(str::to_string),
                            },
                        );
                    }
                    // Only error_state without a listener body (a rejected add).
                    None => {
                        slot.insert(
                            name,
                            EnvoyResource {
                                body: Value::Null,
                                state: Some("error".into()),
                            },
                        );
                    }
                }
            }
        }
    }
    out
}

/// Endpoints as the sorted set of `address:port` (see the module comment).
fn endpoint_set(v: &Value) -> Value {
    let mut addrs: Vec<String> = Vec::new();
    let arr = |v: &Value, k: &str, k2: &str| {
        v.get(k)
            .or_else(|| v.get(k2))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for locality in arr(v, "endpoints", "endpoints") {
        for lb in arr(&locality, "lbEndpoints", "lb_endpoints") {
            let sa = lb
                .get("endpoint")
                .and_then(|e| e.get("address"))
                .and_then(|a| a.get("socketAddress").or_else(|| a.get("socket_address")));
            if let Some(sa) = sa {
                let ip = sa.get("address").and_then(Value::as_str).unwrap_or("");
                let port = sa
                    .get("portValue")
                    .or_else(|| sa.get("port_value"))
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                addrs.push(format!("{ip}:{port}"));
            }
        }
    }
    addrs.sort();
    Value::from(addrs)
}

/// The canonical form both sides are compared in.
fn canonical(t: &str, v: &Value) -> Result<Value, String> {
    if t == type_url::ENDPOINT {
        return Ok(endpoint_set(v));
    }
    let mut c = crate::xds::render::canonical_json(v).map_err(|e| e.to_string())?;
    crate::pipeline::redact(&mut c);
    Ok(c)
}

/// JSON paths where `a` and `b` differ, depth first, at most `limit`.
pub fn diff_paths(a: &Value, b: &Value, path: &str, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let null = Value::Null;
                diff_paths(
                    x.get(k).unwrap_or(&null),
                    y.get(k).unwrap_or(&null),
                    &format!("{path}.{k}"),
                    out,
                    limit,
                );
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_paths(p, q, &format!("{path}[{i}]"), out, limit);
            }
        }
        _ => out.push(if path.is_empty() {
            ".".into()
        } else {
            path.to_string()
        }),
    }
}

/// Compares what we pushed (type URL → name → canonical JSON, as from
/// `GetNodeConfig`) with Envoy's `/config_dump`. `types` limits the types
/// compared (empty = every type we pushed).
pub fn compare(pushed: &BTreeMap<String, BTreeMap<String, Value>>, config_dump: &Value) -> Report {
    let dump = parse_dump(config_dump);
    let mut r = Report {
        static_resources: dump.statics.clone(),
        ..Default::default()
    };
    for (t, ours) in pushed {
        let st = short(t);
        let empty = BTreeMap::new();
        let theirs = dump.dynamic.get(st).unwrap_or(&empty);
        for (name, mine) in ours {
            let id = ResourceId {
                type_: st.into(),
                name: name.clone(),
            };
            let Some(env) = theirs.get(name) else {
                if !expected_in_envoy(t, name, &dump) {
                    continue;
                }
                r.missing_in_envoy.push(id);
                continue;
            };
            let (a, b) = match (canonical(t, mine), canonical(t, &env.body)) {
                (Ok(a), Ok(b)) => (a, b),
                (Err(e), _) | (_, Err(e)) if !env.body.is_null() => {
                    r.uncomparable.push((id, e));
                    continue;
                }
                _ => (Value::Bool(true), Value::Null),
            };
            if a != b || env.state.is_some() {
                let mut paths = Vec::new();
                diff_paths(&a, &b, "", &mut paths, MAX_PATHS);
                r.different.push(Difference {
                    id,
                    paths,
                    envoy_state: env.state.clone(),
                });
            }
        }
        for name in theirs.keys().filter(|n| !ours.contains_key(*n)) {
            r.extra_in_envoy.push(ResourceId {
                type_: st.into(),
                name: name.clone(),
            });
        }
    }
    r
}

/// Whether Envoy should hold a resource we serve. A sharded route table's
/// scopes and shards (`xds::build::shard`) are also served while the table is
/// below the threshold (kept current for a listener crossing back), and Envoy
/// fetches them only while one of its connection managers runs that table's
/// scopes; likewise the one table of a table Envoy runs in shards.
fn expected_in_envoy(t: &str, name: &str, dump: &Dump) -> bool {
    use crate::xds::build::shard;
    let scopes_of = |table: &str| {
        dump.dynamic
            .get(short(type_url::SCOPED_ROUTE))
            .is_some_and(|m| {
                m.keys()
                    .any(|n| shard::parse_shard_name(n).is_some_and(|(t, _, _)| t == table))
            })
    };
    if t == type_url::SCOPED_ROUTE || t == type_url::ROUTE {
        if let Some((table, _, _)) = shard::parse_shard_name(name) {
            return scopes_of(table);
        }
    }
    if t == type_url::ROUTE {
        // The one table, while Envoy runs the shards of it.
        return !scopes_of(name);
    }
    true
}

#[cfg(test)]
mod tests;
