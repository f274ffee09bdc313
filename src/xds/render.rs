//! Renders encoded Envoy resources as canonical proto-JSON (the format of
//! Envoy's own `/config_dump`), using the descriptor set shipped with
//! `envoy-types`. Used by `switchyard translate` and the golden tests.

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};

static POOL: LazyLock<Result<DescriptorPool, String>> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptors.bin"))[..])
        .map_err(|e| e.to_string())
});

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("envoy descriptor set: {0}")]
    Pool(String),
    #[error("unknown message type {0}")]
    UnknownType(String),
    #[error("decode {0}: {1}")]
    Decode(String, String),
    #[error("serialize {0}: {1}")]
    Serialize(String, String),
}

/// Re-renders proto-JSON of an Envoy resource (snake_case as Envoy's
/// `/config_dump` prints it, or camelCase) in the canonical form of
/// [`any_to_json`], so the two can be compared. `value` carries the message
/// type in its `@type` field. Fields this build's descriptors do not know
/// are dropped.
pub fn canonical_json(value: &serde_json::Value) -> Result<serde_json::Value, RenderError> {
    let pool = POOL.as_ref().map_err(|e| RenderError::Pool(e.clone()))?;
    let type_url = value
        .get("@type")
        .and_then(|t| t.as_str())
        .ok_or_else(|| RenderError::UnknownType("(no @type)".into()))?;
    let name = type_url.rsplit('/').next().unwrap_or(type_url);
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| RenderError::UnknownType(name.to_string()))?;
    let mut body = value.clone();
    if let serde_json::Value::Object(m) = &mut body {
        m.remove("@type");
    }
    let opts = prost_reflect::DeserializeOptions::new().deny_unknown_fields(false);
    let msg = DynamicMessage::deserialize_with_options(desc, body, &opts)
        .map_err(|e| RenderError::Decode(name.to_string(), e.to_string()))?;
    use prost::Message;
    any_to_json(&prost_types::Any {
        type_url: type_url.to_string(),
        value: msg.encode_to_vec(),
    })
}

/// Decodes an `Any` and returns it as JSON, with nested `Any`s expanded and
/// an `@type` field naming the message.
pub fn any_to_json(any: &prost_types::Any) -> Result<serde_json::Value, RenderError> {
    let pool = POOL.as_ref().map_err(|e| RenderError::Pool(e.clone()))?;
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let desc = pool
        .get_message_by_name(name)
        .ok_or_else(|| RenderError::UnknownType(name.to_string()))?;
    let msg = DynamicMessage::decode(desc, any.value.as_slice())
        .map_err(|e| RenderError::Decode(name.to_string(), e.to_string()))?;
    let opts = SerializeOptions::new().stringify_64_bit_integers(false);
    let mut v = msg
        .serialize_with_options(serde_json::value::Serializer, &opts)
        .map_err(|e| RenderError::Serialize(name.to_string(), e.to_string()))?;
    if let serde_json::Value::Object(m) = &mut v {
        let mut out = serde_json::Map::new();
        out.insert(
            "@type".into(),
            serde_json::Value::String(any.type_url.clone()),
        );
        out.extend(std::mem::take(m));
        v = serde_json::Value::Object(out);
    }
    Ok(v)
}
