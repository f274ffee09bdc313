//! The OpenAPI v3 schemas of the Gateway API v1.6.1 CRDs, applied the way
//! the API server applies them before it stores an object: types, enums,
//! string patterns and lengths, numeric bounds, list sizes, list uniqueness
//! (`x-kubernetes-list-type: set|map`) and required fields. The schemas are
//! read from the CRDs this repository installs (`deploy/crds/experimental`),
//! so the two cannot drift apart. CEL rules are in cel.rs.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use serde_json::Value;

use super::Violation;
use crate::inputs::Kind;

macro_rules! crd {
    ($file:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/deploy/crds/experimental/gateway.networking.k8s.io_",
            $file,
            ".yaml"
        ))
    };
}

fn crd_text(kind: Kind) -> Option<&'static str> {
    Some(match kind {
        Kind::GatewayClass => crd!("gatewayclasses"),
        Kind::Gateway => crd!("gateways"),
        Kind::HTTPRoute => crd!("httproutes"),
        Kind::GRPCRoute => crd!("grpcroutes"),
        Kind::TLSRoute => crd!("tlsroutes"),
        Kind::TCPRoute => crd!("tcproutes"),
        Kind::UDPRoute => crd!("udproutes"),
        Kind::ReferenceGrant => crd!("referencegrants"),
        Kind::BackendTLSPolicy => crd!("backendtlspolicies"),
        Kind::ListenerSet => crd!("listenersets"),
        _ => return None,
    })
}

/// The `spec` schema of the storage version of `kind`'s CRD.
pub fn spec_schema(kind: Kind) -> Option<&'static Value> {
    static SCHEMAS: OnceLock<RwLock<HashMap<&'static str, &'static Value>>> = OnceLock::new();
    let text = crd_text(kind)?;
    let map = SCHEMAS.get_or_init(Default::default);
    if let Some(v) = map
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(kind.as_str())
    {
        return Some(v);
    }
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = map.get(kind.as_str()) {
        return Some(v);
    }
    let crd: Value = serde_yaml::from_str(text).ok()?;
    let versions = crd.pointer("/spec/versions")?.as_array()?;
    let version = versions
        .iter()
        .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .or_else(|| versions.first())?;
    let mut spec = version
        .pointer("/schema/openAPIV3Schema/properties/spec")?
        .clone();
    // Descriptions are most of a CRD's bytes and no check reads them.
    strip_descriptions(&mut spec);
    let leaked: &'static Value = Box::leak(Box::new(spec));
    map.insert(kind.as_str(), leaked);
    Some(leaked)
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // A schema's own text, not a property named `description`
            // (GatewayClass has one), whose value is a schema object.
            if m.get("description").is_some_and(Value::is_string) {
                m.remove("description");
            }
            m.values_mut().for_each(strip_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// A compiled CRD pattern (patterns are few and reused; compiled once and
/// shared, so matching reuses the regex's caches).
fn pattern(p: &str) -> Option<&'static regex::Regex> {
    static CACHE: OnceLock<RwLock<HashMap<String, Option<&'static regex::Regex>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(r) = cache.read().unwrap_or_else(|e| e.into_inner()).get(p) {
        return *r;
    }
    let mut w = cache.write().unwrap_or_else(|e| e.into_inner());
    *w.entry(p.to_string())
        .or_insert_with(|| regex::Regex::new(p).ok().map(|r| &*Box::leak(Box::new(r))))
}

/// A value as a message shows it: quoted, escaped, at most 80 characters.
pub fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

/// Checks `v` against `schema`; violations are appended to `out` with
/// their field path (`spec.rules[0].matches[1].headers[0].value`).
pub fn check(v: &Value, schema: &Value, path: &str, out: &mut Vec<Violation>) {
    if v.is_null() {
        return;
    }
    let mut bad = |msg: String| out.push(Violation::new(path, msg));
    let ty = schema.get("type").and_then(Value::as_str);
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let type_ok = int_or_string
        || match ty {
            Some("string") => v.is_string(),
            Some("integer") => v.is_i64() || v.is_u64(),
            Some("number") => v.is_number(),
            Some("boolean") => v.is_boolean(),
            Some("array") => v.is_array(),
            Some("object") => v.is_object(),
            _ => true,
        };
    if !type_ok {
        bad(format!("must be of type {}", ty.unwrap_or("?")));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            bad(format!(
                "Unsupported value {}: supported values: {}",
                shown(v),
                names.join(", ")
            ));
        }
    }
    match v {
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if n > max {
                    bad(format!("must have at most {max} characters (has {n})"));
                }
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if n < min {
                    bad(format!("must have at least {min} characters"));
                }
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                if let Some(re) = pattern(p) {
                    if !re.is_match(s) {
                        bad(format!("{} must match the pattern {p}", shown(v)));
                    }
                }
            }
        }
        Value::Number(num) => {
            if let Some(x) = num.as_f64() {
                if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                    if x > max {
                        bad(format!("{num} must be less than or equal to {max}"));
                    }
                }
                if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                    if x < min {
                        bad(format!("{num} must be greater than or equal to {min}"));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    bad(format!(
                        "must have at most {max} items (has {})",
                        items.len()
                    ));
                }
            }
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    bad(format!("must have at least {min} items"));
                }
            }
            match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("set") => {
                    for (i, a) in items.iter().enumerate() {
                        if items[..i].contains(a) {
                            out.push(Violation::new(
                                &format!("{path}[{i}]"),
                                format!("Duplicate value: {}", shown(a)),
                            ));
                        }
                    }
                }
                Some("map") => {
                    let keys: Vec<&str> = schema
                        .get("x-kubernetes-list-map-keys")
                        .and_then(Value::as_array)
                        .map(|k| k.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let key_of = |a: &Value| -> Vec<Value> {
                        keys.iter()
                            .map(|k| a.get(*k).cloned().unwrap_or(Value::Null))
                            .collect()
                    };
                    for (i, a) in items.iter().enumerate() {
                        let k = key_of(a);
                        if items[..i].iter().any(|b| key_of(b) == k) {
                            out.push(Violation::new(
                                &format!("{path}[{i}]"),
                                format!("Duplicate value: {}", shown(&Value::Array(k))),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, a) in items.iter().enumerate() {
                    check(a, item_schema, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(fields) => {
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
                if fields.len() as u64 > max {
                    bad(format!("must have at most {max} entries"));
                }
            }
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
                if (fields.len() as u64) < min {
                    bad(format!("must have at least {min} entries"));
                }
            }
            for r in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if fields.get(r).is_none_or(Value::is_null) {
                    out.push(Violation::new(&join(path, r), "Required value".into()));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in fields {
                if let Some(s) = props.and_then(|p| p.get(k)) {
                    check(child, s, &join(path, k), out);
                } else if let Some(s) = additional {
                    check(child, s, &format!("{path}[{k:?}]"), out);
                }
            }
        }
        _ => {}
    }
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{path}.{field}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pattern in every CRD compiles with the `regex` crate (they are
    /// RE2 patterns; a pattern that did not compile would be skipped).
    #[test]
    fn every_crd_loads_and_every_pattern_compiles() {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(p)) = m.get("pattern") {
                        out.push(p.clone());
                    }
                    m.values().for_each(|c| walk(c, out));
                }
                Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
                _ => {}
            }
        }
        for kind in super::super::VALIDATED_KINDS {
            let s = spec_schema(kind).unwrap_or_else(|| panic!("schema of {kind:?}"));
            let mut pats = Vec::new();
            walk(s, &mut pats);
            for p in pats {
                assert!(
                    pattern(&p).is_some(),
                    "{kind:?}: pattern {p} does not compile"
                );
            }
        }
    }
}
