//! The pure pipeline end to end (`Inputs → translate → xds::build`), and its
//! human-readable rendering used by `switchyard translate` and golden tests.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::inputs::Inputs;
use crate::translate::{self, Output};
use crate::xds::{self, render::RenderError, type_url, Snapshot};

/// Translates and builds; records timings as metrics.
pub fn run(inputs: &Inputs) -> (Output, Snapshot) {
    let t0 = Instant::now();
    let out = translate::translate(inputs);
    let t1 = Instant::now();
    let snap = xds::build::build(&out.model);
    let t2 = Instant::now();
    observe(t1 - t0, t2 - t1);
    (out, snap)
}

/// Records the time of one translation and one xDS build.
pub fn observe(translate: std::time::Duration, build: std::time::Duration) {
    crate::metrics::catalogue::TRANSLATE_SECONDS.observe([], translate.as_secs_f64());
    crate::metrics::catalogue::XDS_BUILD_SECONDS.observe([], build.as_secs_f64());
}

fn type_label(t: &str) -> &'static str {
    match t {
        type_url::CLUSTER => "clusters",
        type_url::ENDPOINT => "endpoints",
        type_url::LISTENER => "listeners",
        type_url::ROUTE => "routes",
        type_url::SCOPED_ROUTE => "scoped_routes",
        type_url::SECRET => "secrets",
        _ => "other",
    }
}

/// Envoy resources as JSON, per Gateway then per type, private keys redacted.
pub fn xds_document(snap: &Snapshot) -> Result<Value, RenderError> {
    let mut gws = Map::new();
    for (gw, set) in &snap.gateways {
        let mut types = Map::new();
        for t in type_url::PUSH_ORDER {
            let Some(resources) = set.get(t) else {
                continue;
            };
            let mut list = Vec::new();
            for r in resources.values() {
                let mut v = xds::render::any_to_json(&r.any)?;
                redact(&mut v);
                list.push(v);
            }
            types.insert(type_label(t).to_string(), Value::Array(list));
        }
        gws.insert(gw.clone(), Value::Object(types));
    }
    Ok(json!({ "gateways": gws }))
}

/// Replaces every `privateKey` (of SDS Secrets and inline TLS contexts) in
/// rendered Envoy JSON by `{"inlineString": "[redacted]"}`.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, val) in m.iter_mut() {
                if k == "privateKey" {
                    *val = json!({"inlineString": "[redacted]"});
                } else {
                    redact(val);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// Statuses as a list of `{kind, metadata, status}` documents.
pub fn status_documents(out: &Output) -> Value {
    Value::Array(out.status.to_documents())
}

/// YAML text of a JSON value (stable key order as built).
pub fn to_yaml(v: &Value) -> String {
    serde_yaml::to_string(v).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
}
