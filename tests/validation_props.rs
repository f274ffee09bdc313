//! Property test of the validation layer: routes built from hostile strings
//! and numbers, next to one valid route. Translation and xDS building never
//! panic, nothing in the generated Envoy resources is something Envoy would
//! refuse (validate::envoy::check_resources), and the valid route is always
//! served.
//!
//! `cargo test` runs a fixed number of cases (64); `make fuzz` runs many
//! more (PROPTEST_CASES).

use proptest::prelude::*;
use serde_json::{json, Value};

use switchyard::inputs::{Inputs, DEFAULT_CONTROLLER_NAME};
use switchyard::pipeline;
use switchyard::provider::addresses::AddressPool;
use switchyard::translate::validate::envoy::check_resources;

/// Fragments that broke (or could break) Envoy or our checks.
const FRAGMENTS: &[&str] = &[
    "",
    "a",
    "/",
    "/ok",
    "x-h",
    "Host",
    "host",
    ":path",
    ":status",
    ":authority",
    "\r\n",
    "\n",
    "\0",
    " ",
    "\t",
    "é",
    "*",
    "*.",
    ".",
    "..",
    "//",
    "/..",
    "/./",
    "%2F",
    "%",
    "#",
    "?",
    "a{1001}",
    "(a|b){60}",
    "(?<=a)",
    "(a)\\1",
    "\\u0041",
    "a**",
    "[a&&b]",
    "[a[b]]",
    "\\pL",
    "\\p{Letter}",
    "(?x)",
    ".*",
    "[^/]+",
    "\\d+",
    "(",
    ")",
    "[",
    "\\",
    "$1",
    "\\1",
    "a.*.example.com",
    "example.com",
    "EXAMPLE.com",
    "10.0.0.1",
    "-a",
    "a-",
    "xn--",
    "\u{202e}",
    "\u{fffd}",
];

const NUMBERS: &[i64] = &[
    -2147483648,
    -1,
    0,
    1,
    80,
    301,
    399,
    65535,
    65536,
    70000,
    1000000,
    1000001,
    2147483647,
];

fn hostile_string() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(FRAGMENTS), 1..4).prop_map(|v| v.concat()),
        (prop::sample::select(FRAGMENTS), 1usize..300).prop_map(|(f, n)| f.repeat(n)),
        "[ -~]{0,40}",
        ".{0,12}",
    ]
}

/// Mostly `valid`, sometimes hostile: a route with one bad field gets past
/// the other checks, so each check is exercised on its own.
fn field(valid: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![3 => Just(valid.to_string()), 2 => prop::sample::select(HAZARDS).prop_map(String::from), 1 => hostile_string()]
}

/// Values the CRD schema lets through somewhere but Envoy refuses.
const HAZARDS: &[&str] = &[
    "Host", "host", ":path", "", "a{1001}", "(a|b){60}", "\\u0041", "a**", "(?<=a)b", "[a&&b]",
    "\\p{Letter}", "/a\r\nb", "/a\u{0}", "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ".*.*.*.*.*", "(?i)[a-z]{30}",
];

fn num(valid: i64) -> impl Strategy<Value = i64> {
    prop_oneof![3 => Just(valid), 1 => hostile_number()]
}

fn hostile_number() -> impl Strategy<Value = i64> {
    prop_oneof![
        prop::sample::select(NUMBERS),
        any::<i32>().prop_map(i64::from)
    ]
}

fn one_of(v: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    prop::sample::select(v)
}

/// A hostile HTTPRoute rule.
fn http_rule() -> impl Strategy<Value = Value> {
    (
        (one_of(&["Exact", "PathPrefix", "RegularExpression"]), field("/p")),
        (field("x-h"), one_of(&["Exact", "RegularExpression"]), field("v")),
        (field("x-add"), field("v"), field("x-rm"), field("x-resp")),
        (field("example.com"), num(8080), one_of(&["ReplaceFullPath", "ReplacePrefixMatch"]), field("/new"), num(302)),
        (num(1), num(80), 0usize..5),
        (field("q"), one_of(&["Exact", "RegularExpression"]), field("v")),
    )
        .prop_map(
            |((pt, pv), (hn, ht, hv), (an, av, rm, rn), (rh, rp, kind, path, code), (w, port, shape), (qn, qt, qv))| {
                let path_field = if kind == "ReplaceFullPath" { "replaceFullPath" } else { "replacePrefixMatch" };
                let matches = json!([{
                    "path": {"type": pt, "value": pv},
                    "headers": [{"name": hn, "type": ht, "value": hv}],
                    "queryParams": [{"name": qn, "type": qt, "value": qv}],
                }]);
                let backends = json!([{"name": "s", "port": port, "weight": w}, {"name": "s", "port": 80, "weight": w}]);
                match shape {
                    0 => json!({"matches": matches, "backendRefs": backends, "filters": [
                        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": an, "value": av}], "remove": [rm]}},
                        {"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": rn, "value": av}], "remove": [rn]}},
                    ]}),
                    1 => json!({"matches": matches, "filters": [{"type": "RequestRedirect", "requestRedirect": {
                        "hostname": rh, "port": rp, "statusCode": code, "path": {"type": kind, path_field: path}}}]}),
                    2 => json!({"matches": matches, "backendRefs": backends, "filters": [{"type": "URLRewrite", "urlRewrite": {
                        "hostname": rh, "path": {"type": kind, path_field: path}}}]}),
                    3 => json!({"matches": matches, "backendRefs": [{"name": "s", "port": 80, "filters": [
                        {"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": an, "value": av}], "remove": [rm]}}]}]}),
                    _ => json!({"matches": [{"path": {"type": "PathPrefix", "value": "/w"}}], "backendRefs": backends}),
                }
            },
        )
}

fn http_route() -> impl Strategy<Value = Value> {
    (
        prop::collection::vec(http_rule(), 1..4),
        prop::collection::vec(field("a.example.com"), 0..3),
    )
        .prop_map(|(rules, hostnames)| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "hostile", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "gw"}], "hostnames": hostnames, "rules": rules}})
        })
}

fn grpc_route() -> impl Strategy<Value = Value> {
    (
        field("pkg.Svc"),
        field("Method"),
        one_of(&["Exact", "RegularExpression"]),
        field("x-h"),
        field("v"),
    )
        .prop_map(|(svc, method, t, hn, hv)| {
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
                "metadata": {"name": "hostile-grpc", "namespace": "default"},
                "spec": {"parentRefs": [{"name": "gw"}], "rules": [{
                    "matches": [{"method": {"type": t, "service": svc, "method": method},
                                 "headers": [{"name": hn, "value": hv}]}],
                    "backendRefs": [{"name": "s", "port": 80}]}]}})
        })
}

fn l4_route() -> impl Strategy<Value = Value> {
    (
        one_of(&["TCPRoute", "UDPRoute", "TLSRoute"]),
        num(80),
        num(1),
        prop::collection::vec(field("a.example.com"), 1..3),
    )
        .prop_map(|(kind, port, weight, hostnames)| {
            let mut spec = json!({"parentRefs": [{"name": "gw", "sectionName": "l4"}],
                "rules": [{"backendRefs": [{"name": "s", "port": port, "weight": weight}]}]});
            if kind == "TLSRoute" {
                spec["hostnames"] = json!(hostnames);
            }
            json!({"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": kind,
                "metadata": {"name": "hostile-l4", "namespace": "default"}, "spec": spec})
        })
}

fn base() -> Vec<Value> {
    vec![
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "switchyard"}, "spec": {"controllerName": DEFAULT_CONTROLLER_NAME}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "gw", "namespace": "default"},
            "spec": {"gatewayClassName": "switchyard", "listeners": [
                {"name": "http", "port": 80, "protocol": "HTTP"},
                {"name": "l4", "port": 9000, "protocol": "TCP"}]}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80}]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "good", "namespace": "default"},
            "spec": {"parentRefs": [{"name": "gw", "sectionName": "http"}], "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/good"}}],
                 "backendRefs": [{"name": "s", "port": 80}]}]}}),
    ]
}

fn run(hostile: Vec<Value>) -> Result<(), TestCaseError> {
    let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
    for d in base().into_iter().chain(hostile) {
        // An object that does not decode is refused at load (file error).
        let _ = inputs.insert_value(d);
    }
    AddressPool::parse("127.0.0.0/24")
        .expect("pool")
        .assign(&mut inputs);
    let (_, snap) = pipeline::run(&inputs);
    let doc = pipeline::xds_document(&snap).expect("render xds");
    let problems = check_resources(&doc);
    prop_assert!(problems.is_empty(), "Envoy would refuse: {problems:#?}");
    let text = doc.to_string();
    prop_assert!(
        text.contains("HTTPRoute/default/good/rule/0/match/0"),
        "the valid route is not served"
    );
    Ok(())
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_http_routes_never_reach_envoy(route in http_route()) {
        run(vec![route])?;
    }

    #[test]
    fn hostile_grpc_and_l4_routes_never_reach_envoy(g in grpc_route(), l in l4_route()) {
        run(vec![g, l])?;
    }
}
