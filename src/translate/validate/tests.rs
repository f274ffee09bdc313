//! One test per rule family: the value is refused, and the message names
//! the field.

use serde_json::Value;

use super::*;

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).expect("yaml")
}

/// Violations of an HTTPRoute spec given as YAML.
fn http(s: &str) -> Vec<Violation> {
    spec(Kind::HTTPRoute, &yaml(s))
}

fn refused(v: &[Violation], path: &str, words: &str) {
    assert!(
        v.iter()
            .any(|x| x.path == path && x.message.contains(words)),
        "expected {path}: …{words}… in {v:#?}"
    );
}

const OK_ROUTE: &str = "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: svc, port: 80}]}]";

#[test]
fn a_valid_route_passes() {
    assert_eq!(http(OK_ROUTE), vec![]);
}

#[test]
fn schema_patterns_lengths_bounds_and_enums() {
    let v = http("hostnames: ['a.*.example.com', 'A.com']\nparentRefs: [{name: gw, port: 70000}]\nrules: [{backendRefs: [{name: svc, port: 0, weight: -1}]}]");
    refused(&v, "spec.hostnames[0]", "must match the pattern");
    refused(&v, "spec.hostnames[1]", "must match the pattern");
    refused(&v, "spec.parentRefs[0].port", "less than or equal to 65535");
    refused(
        &v,
        "spec.rules[0].backendRefs[0].port",
        "greater than or equal to 1",
    );
    refused(
        &v,
        "spec.rules[0].backendRefs[0].weight",
        "greater than or equal to 0",
    );
    let v =
        http("rules: [{matches: [{headers: [{name: 'x', value: \"a\\r\\nb\"}], method: FETCH}]}]");
    refused(
        &v,
        "spec.rules[0].matches[0].headers[0].value",
        "must match the pattern",
    );
    refused(&v, "spec.rules[0].matches[0].method", "Unsupported value");
    let v = http("rules: [{filters: [{type: RequestRedirect, requestRedirect: {port: 70000, statusCode: 399}}]}]");
    refused(&v, "spec.rules[0].filters[0].requestRedirect.port", "65535");
    refused(
        &v,
        "spec.rules[0].filters[0].requestRedirect.statusCode",
        "Unsupported value",
    );
    let v = http("rules: [{timeouts: {request: '10x'}}]");
    refused(
        &v,
        "spec.rules[0].timeouts.request",
        "must match the pattern",
    );
}

#[test]
fn list_sizes_and_uniqueness() {
    let many: Vec<String> = (0..17).map(|_| "{}".to_string()).collect();
    let v = http(&format!("rules: [{}]", many.join(",")));
    refused(&v, "spec.rules", "at most 16 items");
    let v = http("rules: [{filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: a, value: b}, {name: a, value: c}]}}]}]");
    refused(
        &v,
        "spec.rules[0].filters[0].requestHeaderModifier.set[1]",
        "Duplicate value",
    );
    let rules: Vec<String> = (0..3)
        .map(|_| format!("{{matches: [{}]}}", vec!["{}"; 50].join(",")))
        .collect();
    let v = http(&format!("rules: [{}]", rules.join(",")));
    refused(&v, "spec.rules", "less than 128");
}

#[test]
fn http_route_cel_rules() {
    let v = http("parentRefs: [{name: gw}, {name: gw}]");
    refused(&v, "spec.parentRefs[1]", "must be unique");
    let v = http("parentRefs: [{name: gw}, {name: gw, sectionName: a}]");
    refused(&v, "spec.parentRefs[1]", "must be specified");
    let v = http("rules: [{name: a}, {name: a}]");
    refused(&v, "spec.rules[1].name", "Rule name must be unique");
    let v = http("rules: [{backendRefs: [{name: svc}]}]");
    refused(
        &v,
        "spec.rules[0].backendRefs[0]",
        "Must have port for Service reference",
    );
    let v = http("rules: [{matches: [{path: {type: PathPrefix, value: '/a//b'}}, {path: {type: Exact, value: 'x'}}, {path: {type: Exact, value: '/a b'}}]}]");
    refused(&v, "spec.rules[0].matches[0].path", "must not contain '//'");
    refused(&v, "spec.rules[0].matches[1].path", "start with '/'");
    refused(&v, "spec.rules[0].matches[2].path", "valid characters");
    let v = http("rules: [{filters: [{type: RequestHeaderModifier}, {type: URLRewrite, requestRedirect: {}}]}]");
    refused(
        &v,
        "spec.rules[0].filters[0]",
        "filter.requestHeaderModifier must be specified",
    );
    refused(
        &v,
        "spec.rules[0].filters[1]",
        "filter.requestRedirect must be nil",
    );
    let v = http("rules: [{backendRefs: [{name: s, port: 80}], filters: [{type: RequestRedirect, requestRedirect: {}}]}]");
    refused(
        &v,
        "spec.rules[0]",
        "must not be used together with backendRefs",
    );
    let v = http("rules: [{matches: [{path: {type: Exact, value: /a}}], filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /b}}}]}]");
    refused(&v, "spec.rules[0]", "exactly one PathPrefix match");
    let v = http(
        "rules: [{filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath}}}]}]",
    );
    refused(
        &v,
        "spec.rules[0].filters[0].urlRewrite.path",
        "replaceFullPath must be specified",
    );
    let v = http(
        "rules: [{filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replacePrefixMatch: /x}}}]}]",
    );
    refused(
        &v,
        "spec.rules[0].filters[0].requestRedirect.path",
        "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
    );
    let v = http(
        "rules: [{filters: [{type: ExternalAuth, externalAuth: {protocol: GRPC, http: {}, backendRef: {name: a, port: 9}}}]}]",
    );
    refused(
        &v,
        "spec.rules[0].filters[0].externalAuth",
        "grpc must be specified when protocol is set to 'GRPC'",
    );
    refused(
        &v,
        "spec.rules[0].filters[0].externalAuth",
        "protocol must be 'HTTP' when http is set",
    );
    let v = http("rules: [{timeouts: {request: 1s, backendRequest: 2s}}]");
    refused(
        &v,
        "spec.rules[0].timeouts",
        "backendRequest timeout cannot be longer",
    );
    let v = http("rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: m, port: 80}, percent: 5, fraction: {numerator: 5, denominator: 2}}}]}]");
    refused(
        &v,
        "spec.rules[0].filters[0].requestMirror",
        "Only one of percent or fraction",
    );
    refused(
        &v,
        "spec.rules[0].filters[0].requestMirror.fraction",
        "numerator must be less than",
    );
}

#[test]
fn grpc_route_rules() {
    let v = spec(
        Kind::GRPCRoute,
        &yaml("rules: [{matches: [{method: {type: Exact}}, {method: {service: 'a/b', method: 'x.y'}}]}]"),
    );
    refused(
        &v,
        "spec.rules[0].matches[0].method",
        "One or both of 'service' or 'method'",
    );
    refused(
        &v,
        "spec.rules[0].matches[1].method",
        "service must only contain valid characters",
    );
    refused(
        &v,
        "spec.rules[0].matches[1].method",
        "method must only contain valid characters",
    );
}

#[test]
fn l4_route_rules() {
    let v = spec(
        Kind::TLSRoute,
        &yaml("hostnames: ['10.0.0.1', 'a.*.b', '*.ok.com']\nparentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: s}]}]"),
    );
    refused(&v, "spec.hostnames[0]", "cannot contain an IP");
    refused(
        &v,
        "spec.hostnames[1]",
        "Wildcards on hostnames must be the first label",
    );
    assert!(!v.iter().any(|x| x.path == "spec.hostnames[2]"), "{v:#?}");
    refused(&v, "spec.rules[0].backendRefs[0]", "Must have port");
    let v = spec(
        Kind::TCPRoute,
        &yaml(
            "parentRefs: [{name: gw}]\nrules: [{backendRefs: [{name: s, port: 80, weight: -3}]}]",
        ),
    );
    refused(
        &v,
        "spec.rules[0].backendRefs[0].weight",
        "greater than or equal to 0",
    );
    let v = spec(
        Kind::UDPRoute,
        &yaml("rules: [{backendRefs: [{name: s, port: 65536}]}]"),
    );
    refused(&v, "spec.rules[0].backendRefs[0].port", "65535");
}

#[test]
fn gateway_and_listener_set_rules() {
    let gw = yaml(
        "gatewayClassName: c\nlisteners:\n\
         - {name: a, port: 80, protocol: HTTP, tls: {mode: Terminate, certificateRefs: [{name: x}]}}\n\
         - {name: a, port: 81, protocol: HTTP}\n\
         - {name: b, port: 70000, protocol: HTTP, hostname: 'a.*.com'}\n\
         - {name: c, port: 90, protocol: TCP, hostname: x.com}\n\
         - {name: d, port: 91, protocol: TLS}\n\
         addresses: [{type: IPAddress, value: 10.0.0.1}, {type: IPAddress, value: 10.0.0.1}]",
    );
    let v = spec(Kind::Gateway, &gw);
    refused(&v, "spec.listeners[0]", "tls must not be specified");
    refused(&v, "spec.listeners[1]", "Listener name must be unique");
    refused(&v, "spec.listeners[2].port", "65535");
    refused(&v, "spec.listeners[2].hostname", "must match the pattern");
    refused(&v, "spec.listeners[3]", "hostname must not be specified");
    refused(
        &v,
        "spec.listeners[4]",
        "tls mode must be set for protocol TLS",
    );
    refused(&v, "spec.addresses[1]", "values must be unique");
    let (by, rest) = by_listener(v);
    assert_eq!(by.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
    assert!(
        rest.iter().all(|x| x.path.starts_with("spec.addresses")),
        "{rest:#?}"
    );
    let v = spec(
        Kind::ListenerSet,
        &yaml("parentRef: {name: gw}\nlisteners: [{name: a, port: 80, protocol: HTTPS, tls: {mode: Passthrough}}]"),
    );
    refused(
        &v,
        "spec.listeners[0]",
        "tls mode must be Terminate for protocol HTTPS",
    );
}

#[test]
fn gateway_class_schema() {
    let v = spec(
        Kind::GatewayClass,
        &yaml("controllerName: 'not a domain/path'\ndescription: '0123456789012345678901234567890123456789012345678901234567890123456789'"),
    );
    refused(&v, "spec.controllerName", "must match the pattern");
    refused(&v, "spec.description", "at most 64 characters");
}

#[test]
fn reference_grant_and_backend_tls_policy_rules() {
    let v = spec(
        Kind::ReferenceGrant,
        &yaml("from: [{group: '', kind: HTTPRoute, namespace: 'Bad_NS'}]\nto: [{group: '', kind: Service}]"),
    );
    refused(&v, "spec.from[0].namespace", "must match the pattern");
    let v = spec(
        Kind::BackendTLSPolicy,
        &yaml("targetRefs: [{group: '', kind: Service, name: s}, {group: '', kind: Service, name: s}]\nvalidation: {hostname: a.com, subjectAltNames: [{type: Hostname}]}"),
    );
    refused(&v, "spec.targetRefs[1]", "sectionName must be unique");
    refused(
        &v,
        "spec.validation",
        "must specify either CACertificateRefs",
    );
    refused(
        &v,
        "spec.validation.subjectAltNames[0]",
        "must contain Hostname",
    );
}

/// Envoy-side checks of a rule the schema accepts.
fn rule_error(s: &str) -> String {
    rule::check_http(0, &typed_rule(s)).expect_err("refused")
}

/// A rule given as YAML, decoded as the translator sees it.
fn typed_rule(s: &str) -> gateway_api::experimental::httproutes::HttpRouteRules {
    serde_json::from_value(yaml(s)).expect("a rule")
}

#[test]
fn envoy_side_rule_checks_name_the_field() {
    let e = rule_error(
        "matches: [{}, {headers: [{name: x, type: RegularExpression, value: 'a{1001}'}]}]",
    );
    assert!(
        e.starts_with("spec.rules[0].matches[1].headers[0].value: "),
        "{e}"
    );
    let e = rule_error("matches: [{path: {type: RegularExpression, value: '(?<=a)b'}}]");
    assert!(
        e.starts_with("spec.rules[0].matches[0].path.value: "),
        "{e}"
    );
    let e = rule_error("filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: x}]}}]");
    assert!(
        e.contains("requestHeaderModifier.set[0].name") && e.contains("host"),
        "{e}"
    );
    let e = rule_error(
        "filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [':status']}}]",
    );
    assert!(
        e.contains("responseHeaderModifier.remove[0]") && e.contains("pseudo-header"),
        "{e}"
    );
    let e = rule_error(
        "filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: ['']}}]",
    );
    assert!(e.contains("must not be empty"), "{e}");
    let e = rule_error("filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: \"/a\\nb\"}}}]");
    assert!(e.contains("urlRewrite.path.replaceFullPath"), "{e}");
    let long = format!("/{}", "a".repeat(120));
    let e = rule_error(&format!("matches: [{{path: {{type: PathPrefix, value: '{long}'}}}}]\nfilters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /b}}}}}}]"));
    assert!(e.contains("too long for Envoy's prefix rewrite"), "{e}");
    // Each weight fits the typed field (i32); their sum does not fit Envoy's u32.
    let refs: Vec<String> = (0..3)
        .map(|i| format!("{{name: s{i}, port: 80, weight: 2147483647}}"))
        .collect();
    let e = rule_error(&format!("backendRefs: [{}]", refs.join(",")));
    assert!(e.contains("weights sum to 6442450941"), "{e}");
    assert!(rule::check_http(
        0,
        &typed_rule("matches: [{path: {type: RegularExpression, value: '/v[0-9]+/.*'}}]")
    )
    .is_ok());
}

#[test]
fn a_field_named_description_survives_stripping_schema_descriptions() {
    // GatewayClass has a `description` field; schema texts are stripped, it is not.
    let ok = spec(
        Kind::GatewayClass,
        &yaml("{controllerName: example.com/c, description: shared class}"),
    );
    assert!(ok.is_empty(), "{ok:?}");
    let long = "x".repeat(100);
    let bad = spec(
        Kind::GatewayClass,
        &yaml(&format!(
            "{{controllerName: example.com/c, description: {long}}}"
        )),
    );
    refused(&bad, "spec.description", "");
}

#[test]
fn envoy_side_checks_reach_backend_filters_and_query_params() {
    let e = rule_error(
        "backendRefs: [{name: s, port: 80, filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: Host, value: x}]}}]}]",
    );
    assert!(
        e.starts_with(
            "spec.rules[0].backendRefs[0].filters[0].requestHeaderModifier.add[0].name: "
        ),
        "{e}"
    );
    let e = rule_error("matches: [{queryParams: [{name: '', value: x}]}]");
    assert_eq!(
        e,
        "spec.rules[0].matches[0].queryParams[0].name: must not be empty"
    );
    let e = rule_error("backendRefs: [{name: s, port: 80, weight: -1}]");
    assert_eq!(e, "spec.rules[0].backendRefs[0].weight: -1 is out of range");
    let e =
        rule_error("filters: [{type: RequestRedirect, requestRedirect: {hostname: \"a\\nb\"}}]");
    assert!(
        e.starts_with("spec.rules[0].filters[0].requestRedirect.hostname: "),
        "{e}"
    );
}
