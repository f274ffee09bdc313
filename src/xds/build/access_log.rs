//! Envoy access logs: one JSON object per HTTP request or TCP connection on
//! Envoy's standard output (`envoy.access_loggers.stdout`), naming the
//! Gateway, the Envoy listener, the filter chain, the route and the upstream.
//! The field list is documented in docs/observability.md.
//!
//! The JSON format is a `google.protobuf.Struct`, whose fields prost keeps in
//! a `HashMap`: encoding it through prost would order the fields differently
//! in every process, so the same IR would not yield the same bytes (and a
//! restarted controller would hand Envoy "changed" listeners). The Struct is
//! therefore encoded here by hand, fields in a fixed order.

use envoy_types::pb::envoy::config::accesslog::v3 as accesslog;
use envoy_types::pb::google::protobuf::{value::Kind, Any, Value};
use prost::encoding::{encode_key, encode_varint, WireType};

/// Name of Envoy's standard-output access logger.
const STDOUT_LOGGER: &str = "envoy.access_loggers.stdout";
const STDOUT_LOG_TYPE: &str =
    "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog";

/// Fields of an HTTP access-log line (command operators of Envoy's
/// substitution formatter), besides the Gateway identity.
pub const HTTP_FIELDS: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("method", "%REQ(:METHOD)%"),
    ("path", "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"),
    ("authority", "%REQ(:AUTHORITY)%"),
    ("protocol", "%PROTOCOL%"),
    ("response_code", "%RESPONSE_CODE%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    ("response_code_details", "%RESPONSE_CODE_DETAILS%"),
    ("duration_ms", "%DURATION%"),
    (
        "upstream_service_time_ms",
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    ),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("route_name", "%ROUTE_NAME%"),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("request_id", "%REQ(X-REQUEST-ID)%"),
    ("user_agent", "%REQ(USER-AGENT)%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("filter_chain", "%FILTER_CHAIN_NAME%"),
];

/// Fields of a TCP (TCPRoute / TLSRoute) connection log line.
pub const TCP_FIELDS: &[(&str, &str)] = &[
    ("start_time", "%START_TIME%"),
    ("protocol", "%PROTOCOL%"),
    ("response_flags", "%RESPONSE_FLAGS%"),
    (
        "connection_termination_details",
        "%CONNECTION_TERMINATION_DETAILS%",
    ),
    ("duration_ms", "%DURATION%"),
    ("upstream_cluster", "%UPSTREAM_CLUSTER_RAW%"),
    ("upstream_host", "%UPSTREAM_HOST%"),
    (
        "upstream_transport_failure_reason",
        "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
    ),
    ("bytes_received", "%BYTES_RECEIVED%"),
    ("bytes_sent", "%BYTES_SENT%"),
    ("downstream_remote_address", "%DOWNSTREAM_REMOTE_ADDRESS%"),
    ("requested_server_name", "%REQUESTED_SERVER_NAME%"),
    ("filter_chain", "%FILTER_CHAIN_NAME%"),
];

/// The Gateway (`namespace/name`) of an Envoy listener named
/// `<namespace>/<gateway>/<port>[/udp]`; the whole name if it has another form.
fn gateway_of(listener: &str) -> &str {
    let mut slashes = listener.match_indices('/').map(|(i, _)| i);
    match (slashes.next(), slashes.next()) {
        (Some(_), Some(second)) => &listener[..second],
        _ => listener,
    }
}

/// The access log of a listener's HTTP connection managers (`tcp == false`)
/// or TCP proxies (`tcp == true`).
pub fn stdout_json(listener: &str, tcp: bool) -> accesslog::AccessLog {
    let gateway = gateway_of(listener);
    let mut fields: Vec<(&str, &str)> = vec![("gateway", gateway), ("listener", listener)];
    fields.extend_from_slice(if tcp { TCP_FIELDS } else { HTTP_FIELDS });
    accesslog::AccessLog {
        name: STDOUT_LOGGER.into(),
        filter: None,
        config_type: Some(accesslog::access_log::ConfigType::TypedConfig(Any {
            type_url: STDOUT_LOG_TYPE.into(),
            value: stdout_access_log_bytes(&fields),
        })),
    }
}

fn length_delimited(tag: u32, bytes: &[u8], out: &mut Vec<u8>) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

/// `StdoutAccessLog { log_format: SubstitutionFormatString { json_format:
/// Struct { fields } } }`, the Struct's entries in the given order.
fn stdout_access_log_bytes(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut strukt = Vec::new();
    for (key, value) in fields {
        // A map entry: key = 1 (string), value = 2 (google.protobuf.Value).
        let mut entry = Vec::new();
        prost::encoding::string::encode(1, &key.to_string(), &mut entry);
        let v = Value {
            kind: Some(Kind::StringValue(value.to_string())),
        };
        prost::encoding::message::encode(2, &v, &mut entry);
        length_delimited(1, &entry, &mut strukt); // Struct.fields = 1
    }
    let mut format = Vec::new();
    length_delimited(2, &strukt, &mut format); // SubstitutionFormatString.json_format = 2
    let mut out = Vec::new();
    length_delimited(1, &format, &mut out); // StdoutAccessLog.log_format = 1
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::substitution_format_string::Format;
    use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
        stdout_access_log::AccessLogFormat, StdoutAccessLog,
    };
    use prost::Message;

    #[test]
    fn gateway_is_the_first_two_segments_of_the_listener_name() {
        assert_eq!(gateway_of("infra/gw/8080"), "infra/gw");
        assert_eq!(gateway_of("infra/gw/53/udp"), "infra/gw");
        assert_eq!(gateway_of("odd"), "odd");
        assert_eq!(gateway_of("a/b"), "a/b");
    }

    #[test]
    fn hand_encoded_log_decodes_to_the_documented_fields() {
        let log = stdout_json("infra/gw/8080", false);
        let Some(accesslog::access_log::ConfigType::TypedConfig(any)) = log.config_type else {
            panic!("typed config expected");
        };
        let decoded = StdoutAccessLog::decode(any.value.as_slice()).unwrap();
        let Some(AccessLogFormat::LogFormat(f)) = decoded.access_log_format else {
            panic!("log format expected");
        };
        let Some(Format::JsonFormat(s)) = f.format else {
            panic!("json format expected");
        };
        let get = |k: &str| match s.fields.get(k).and_then(|v| v.kind.clone()) {
            Some(Kind::StringValue(v)) => v,
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(get("gateway"), "infra/gw");
        assert_eq!(get("listener"), "infra/gw/8080");
        assert_eq!(get("response_code"), "%RESPONSE_CODE%");
        assert_eq!(get("route_name"), "%ROUTE_NAME%");
        assert_eq!(s.fields.len(), HTTP_FIELDS.len() + 2);
    }

    #[test]
    fn encoding_is_the_same_every_time() {
        let a = stdout_json("infra/gw/443", true).encode_to_vec();
        for _ in 0..8 {
            assert_eq!(stdout_json("infra/gw/443", true).encode_to_vec(), a);
        }
    }
}
