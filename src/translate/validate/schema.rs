//! The OpenAPI v3 schemas of the Gateway API v1.6.1 CRDs, applied the way
//! the API server applies them before it stores an object: types, enums,
//! string patterns and lengths, numeric bounds, list sizes, list uniqueness
//! (`x-kubernetes-list-type: set|map`) and required fields. The schemas are
//! read from the CRDs this repository installs (`deploy/crds/experimental`),
//! so the two cannot drift apart. CEL rules are in cel.rs.

use std::collections::HashMap;
use std::fmt;
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

/// A field path, rendered only when a violation names it
/// (`spec.rules[0].matches[1].headers[0].value`): checking a valid object
/// allocates no path strings.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root(&'a str),
    Field(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl Path<'_> {
    fn is_empty(&self) -> bool {
        matches!(self, Path::Root(s) if s.is_empty())
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root(s) => f.write_str(s),
            Path::Field(p, field) if p.is_empty() => f.write_str(field),
            Path::Field(p, field) => write!(f, "{p}.{field}"),
            Path::Index(p, i) => write!(f, "{p}[{i}]"),
            Path::Key(p, k) => write!(f, "{p}[{k:?}]"),
        }
    }
}

fn violation(path: &Path<'_>, message: String) -> Violation {
    Violation {
        path: path.to_string(),
        message,
    }
}

/// The JSON type a schema node asks for.
#[derive(Clone, Copy)]
enum Ty {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
    /// No `type`, or one this checker does not know: anything goes.
    Any,
}

/// A schema node read once: every keyword the checks use, looked up when
/// the schema is loaded rather than on every value checked.
struct Node {
    ty: Ty,
    /// The `type` text, for the message.
    ty_name: Option<&'static str>,
    int_or_string: bool,
    /// Allowed values and their list as the message shows it.
    allowed: Option<(&'static [Value], String)>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    pattern: Option<(&'static str, Option<&'static regex::Regex>)>,
    maximum: Option<f64>,
    minimum: Option<f64>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    list_type: Option<&'static str>,
    list_map_keys: Vec<&'static str>,
    items: Option<Box<Node>>,
    max_properties: Option<u64>,
    min_properties: Option<u64>,
    required: Vec<&'static str>,
    properties: Option<HashMap<&'static str, Node>>,
    additional: Option<Box<Node>>,
}

impl Node {
    fn compile(schema: &'static Value) -> Node {
        let ty_name = schema.get("type").and_then(Value::as_str);
        let ty = match ty_name {
            Some("string") => Ty::String,
            Some("integer") => Ty::Integer,
            Some("number") => Ty::Number,
            Some("boolean") => Ty::Boolean,
            Some("array") => Ty::Array,
            Some("object") => Ty::Object,
            _ => Ty::Any,
        };
        let u = |k: &str| schema.get(k).and_then(Value::as_u64);
        let f = |k: &str| schema.get(k).and_then(Value::as_f64);
        Node {
            ty,
            ty_name,
            int_or_string: schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)),
            allowed: schema.get("enum").and_then(Value::as_array).map(|a| {
                let names: Vec<String> = a.iter().map(|x| x.to_string()).collect();
                (a.as_slice(), names.join(", "))
            }),
            max_length: u("maxLength"),
            min_length: u("minLength"),
            pattern: schema
                .get("pattern")
                .and_then(Value::as_str)
                .map(|p| (p, pattern(p))),
            maximum: f("maximum"),
            minimum: f("minimum"),
            max_items: u("maxItems"),
            min_items: u("minItems"),
            list_type: schema.get("x-kubernetes-list-type").and_then(Value::as_str),
            list_map_keys: schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default(),
            items: schema.get("items").map(|s| Box::new(Node::compile(s))),
            max_properties: u("maxProperties"),
            min_properties: u("minProperties"),
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect(),
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, s)| (k.as_str(), Node::compile(s)))
                        .collect()
                }),
            additional: schema
                .get("additionalProperties")
                .filter(|a| a.is_object())
                .map(|s| Box::new(Node::compile(s))),
        }
    }
}

/// The compiled `spec` schema of `kind` (see [`spec_schema`]).
fn spec_node(kind: Kind) -> Option<&'static Node> {
    static NODES: OnceLock<RwLock<HashMap<&'static str, &'static Node>>> = OnceLock::new();
    let map = NODES.get_or_init(Default::default);
    if let Some(n) = map
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(kind.as_str())
    {
        return Some(n);
    }
    let schema = spec_schema(kind)?;
    let mut map = map.write().unwrap_or_else(|e| e.into_inner());
    let node: &'static Node = map
        .entry(kind.as_str())
        .or_insert_with(|| Box::leak(Box::new(Node::compile(schema))));
    Some(node)
}

/// Checks the `spec` `v` of an object of `kind` against its CRD schema;
/// violations are appended to `out` with their field path
/// (`spec.rules[0].matches[1].headers[0].value`).
pub fn check_spec(kind: Kind, v: &Value, out: &mut Vec<Violation>) {
    if let Some(node) = spec_node(kind) {
        check(v, node, &Path::Root("spec"), out);
    }
}

fn check(v: &Value, schema: &Node, path: &Path<'_>, out: &mut Vec<Violation>) {
    if v.is_null() {
        return;
    }
    let mut bad = |msg: String| out.push(violation(path, msg));
    let type_ok = schema.int_or_string
        || match schema.ty {
            Ty::String => v.is_string(),
            Ty::Integer => v.is_i64() || v.is_u64(),
            Ty::Number => v.is_number(),
            Ty::Boolean => v.is_boolean(),
            Ty::Array => v.is_array(),
            Ty::Object => v.is_object(),
            Ty::Any => true,
        };
    if !type_ok {
        bad(format!("must be of type {}", schema.ty_name.unwrap_or("?")));
        return;
    }
    if let Some((allowed, names)) = &schema.allowed {
        if !allowed.contains(v) {
            bad(format!(
                "Unsupported value {}: supported values: {names}",
                shown(v)
            ));
        }
    }
    match v {
        Value::String(s) => {
            if schema.max_length.is_some() || schema.min_length.is_some() {
                let n = s.chars().count() as u64;
                if let Some(max) = schema.max_length {
                    if n > max {
                        bad(format!("must have at most {max} characters (has {n})"));
                    }
                }
                if let Some(min) = schema.min_length {
                    if n < min {
                        bad(format!("must have at least {min} characters"));
                    }
                }
            }
            if let Some((p, Some(re))) = schema.pattern {
                if !re.is_match(s) {
                    bad(format!("{} must match the pattern {p}", shown(v)));
                }
            }
        }
        Value::Number(num) => {
            if let Some(x) = num.as_f64() {
                if let Some(max) = schema.maximum {
                    if x > max {
                        bad(format!("{num} must be less than or equal to {max}"));
                    }
                }
                if let Some(min) = schema.minimum {
                    if x < min {
                        bad(format!("{num} must be greater than or equal to {min}"));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema.max_items {
                if items.len() as u64 > max {
                    bad(format!(
                        "must have at most {max} items (has {})",
                        items.len()
                    ));
                }
            }
            if let Some(min) = schema.min_items {
                if (items.len() as u64) < min {
                    bad(format!("must have at least {min} items"));
                }
            }
            match schema.list_type {
                Some("set") => {
                    for (i, a) in items.iter().enumerate() {
                        if items[..i].contains(a) {
                            out.push(violation(
                                &Path::Index(path, i),
                                format!("Duplicate value: {}", shown(a)),
                            ));
                        }
                    }
                }
                Some("map") => {
                    let keys = &schema.list_map_keys;
                    let key_of = |a: &'_ Value| -> Vec<Value> {
                        keys.iter()
                            .map(|k| a.get(*k).cloned().unwrap_or(Value::Null))
                            .collect()
                    };
                    let same_key = |a: &Value, b: &Value| {
                        keys.iter().all(|k| {
                            a.get(*k).unwrap_or(&Value::Null) == b.get(*k).unwrap_or(&Value::Null)
                        })
                    };
                    for (i, a) in items.iter().enumerate() {
                        if items[..i].iter().any(|b| same_key(a, b)) {
                            out.push(violation(
                                &Path::Index(path, i),
                                format!("Duplicate value: {}", shown(&Value::Array(key_of(a)))),
                            ));
                        }
                    }
                }
                _ => {}
            }
            if let Some(item_schema) = &schema.items {
                for (i, a) in items.iter().enumerate() {
                    check(a, item_schema, &Path::Index(path, i), out);
                }
            }
        }
        Value::Object(fields) => {
            if let Some(max) = schema.max_properties {
                if fields.len() as u64 > max {
                    bad(format!("must have at most {max} entries"));
                }
            }
            if let Some(min) = schema.min_properties {
                if (fields.len() as u64) < min {
                    bad(format!("must have at least {min} entries"));
                }
            }
            for r in &schema.required {
                if fields.get(*r).is_none_or(Value::is_null) {
                    out.push(violation(&Path::Field(path, r), "Required value".into()));
                }
            }
            for (k, child) in fields {
                if let Some(s) = schema.properties.as_ref().and_then(|p| p.get(k.as_str())) {
                    check(child, s, &Path::Field(path, k), out);
                } else if let Some(s) = &schema.additional {
                    check(child, s, &Path::Key(path, k), out);
                }
            }
        }
        _ => {}
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
