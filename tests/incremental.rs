//! The incremental translator against the from-scratch one: after every
//! step of random route edits (hostnames, parentRefs, rules, removals,
//! re-additions) and endpoint changes, `Translator::update` with only the
//! changed objects must give exactly the IR and status `translate` gives for
//! the same inputs, and the reusing `Builder` exactly the resources a fresh
//! `build` gives.
//!
//! Every route kind is edited: HTTPRoute and GRPCRoute (matches, hostnames,
//! rules), and TLSRoute, TCPRoute and UDPRoute (SNI hostnames, sectionName
//! and port, backends and weights, extra rules, creation time, which decides
//! which of several routes on a listener or SNI name takes the traffic).

use std::path::Path;

use serde_json::{json, Value};
use switchyard::inputs::{Changes, Inputs, Kind, ObjKey, DEFAULT_CONTROLLER_NAME};
use switchyard::ir::Model;
use switchyard::provider::addresses::AddressPool;
use switchyard::provider::file::parse_documents;
use switchyard::translate::{translate, Translator};
use switchyard::xds::build::{build, Builder};

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn kind_str(d: &Value) -> &str {
    d.get("kind").and_then(|k| k.as_str()).unwrap_or("")
}

fn is_route(d: &Value) -> bool {
    matches!(
        kind_str(d),
        "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" | "UDPRoute"
    )
}

fn is_l4(d: &Value) -> bool {
    matches!(kind_str(d), "TLSRoute" | "TCPRoute" | "UDPRoute")
}

/// What L4 route edits pick from, read from the fixture: listener names and
/// ports, Gateways, hostnames, and backends (Service ports by protocol).
#[derive(Default)]
struct Pool {
    gateways: Vec<(String, String)>,
    sections: Vec<String>,
    ports: Vec<i64>,
    hostnames: Vec<String>,
    tcp_backends: Vec<Value>,
    udp_backends: Vec<Value>,
}

impl Pool {
    fn of(docs: &[Value]) -> Pool {
        let mut p = Pool::default();
        let push = |v: &mut Vec<String>, s: &str| {
            if !v.iter().any(|x| x == s) {
                v.push(s.to_string());
            }
        };
        for d in docs {
            let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
            let name = d["metadata"]["name"].as_str().unwrap_or("");
            match kind_str(d) {
                "Gateway" => {
                    p.gateways.push((ns.to_string(), name.to_string()));
                    for l in d["spec"]["listeners"].as_array().into_iter().flatten() {
                        if let Some(s) = l["name"].as_str() {
                            push(&mut p.sections, s);
                        }
                        if let Some(port) = l["port"].as_i64() {
                            if !p.ports.contains(&port) {
                                p.ports.push(port);
                            }
                        }
                        if let Some(h) = l["hostname"].as_str() {
                            push(&mut p.hostnames, h);
                        }
                    }
                }
                "TLSRoute" => {
                    for h in d["spec"]["hostnames"].as_array().into_iter().flatten() {
                        if let Some(h) = h.as_str() {
                            push(&mut p.hostnames, h);
                        }
                    }
                }
                "Service" => {
                    for sp in d["spec"]["ports"].as_array().into_iter().flatten() {
                        let b = json!({"name": name, "namespace": ns, "port": sp["port"]});
                        if sp["protocol"].as_str() == Some("UDP") {
                            p.udp_backends.push(b);
                        } else {
                            p.tcp_backends.push(b);
                        }
                    }
                }
                _ => {}
            }
        }
        for h in [
            "*.example.com",
            "a.example.com",
            "b.example.com",
            "x.other.org",
        ] {
            push(&mut p.hostnames, h);
        }
        p
    }

    /// A backendRef for a route of `kind`: mostly of the right protocol,
    /// sometimes of the wrong one or to a Service that does not exist.
    fn backend(&self, rng: &mut Rng, kind: &str) -> Value {
        let (right, wrong) = if kind == "UDPRoute" {
            (&self.udp_backends, &self.tcp_backends)
        } else {
            (&self.tcp_backends, &self.udp_backends)
        };
        let mut b = match rng.below(10) {
            0 => json!({"name": "no-such-service", "port": 1}),
            1 if !wrong.is_empty() => wrong[rng.below(wrong.len())].clone(),
            _ if !right.is_empty() => right[rng.below(right.len())].clone(),
            _ => json!({"name": "no-such-service", "port": 1}),
        };
        if rng.below(3) == 0 {
            b["weight"] = json!([0, 1, 1, 2, 30, 70][rng.below(6)]);
        }
        b
    }
}

/// A changed version of an L4 route manifest (TLSRoute, TCPRoute, UDPRoute):
/// one to three edits.
fn mutate_l4(rng: &mut Rng, doc: &Value, pool: &Pool) -> Value {
    let mut d = doc.clone();
    let kind = kind_str(doc).to_string();
    for _ in 0..1 + rng.below(3) {
        let spec = &mut d["spec"];
        match rng.below(11) {
            0 if kind == "TLSRoute" => {
                // New SNI names: one to three from the fixture's listeners and routes.
                let n = 1 + rng.below(3);
                let hs: Vec<Value> = (0..n)
                    .map(|_| json!(pool.hostnames[rng.below(pool.hostnames.len())]))
                    .collect();
                spec["hostnames"] = Value::Array(hs);
            }
            0 => {
                // A TCPRoute/UDPRoute has no hostnames: an unknown field.
                if rng.below(4) == 0 {
                    spec["hostnames"] = json!(["a.example.com"]);
                }
            }
            1 => {
                // Drop sectionName/port: attach to every listener of the Gateway.
                for pr in spec["parentRefs"].as_array_mut().into_iter().flatten() {
                    if let Some(m) = pr.as_object_mut() {
                        m.remove("sectionName");
                        m.remove("port");
                    }
                }
            }
            2 if !pool.sections.is_empty() => {
                // Another listener by name (maybe of another protocol, maybe absent).
                for pr in spec["parentRefs"].as_array_mut().into_iter().flatten() {
                    if let Some(m) = pr.as_object_mut() {
                        m.remove("port");
                        m.insert(
                            "sectionName".into(),
                            json!(pool.sections[rng.below(pool.sections.len())]),
                        );
                    }
                }
            }
            3 if !pool.ports.is_empty() => {
                // Another listener by port.
                for pr in spec["parentRefs"].as_array_mut().into_iter().flatten() {
                    if let Some(m) = pr.as_object_mut() {
                        m.remove("sectionName");
                        m.insert(
                            "port".into(),
                            json!(pool.ports[rng.below(pool.ports.len())]),
                        );
                    }
                }
            }
            4 => {
                // New backends, one to three, weights random.
                let n = 1 + rng.below(3);
                let bs: Vec<Value> = (0..n).map(|_| pool.backend(rng, &kind)).collect();
                if let Some(r0) = spec["rules"].get_mut(0) {
                    r0["backendRefs"] = Value::Array(bs);
                }
            }
            5 => {
                // New weights for the backends there are.
                for r in spec["rules"].as_array_mut().into_iter().flatten() {
                    for b in r["backendRefs"].as_array_mut().into_iter().flatten() {
                        b["weight"] = json!([0, 1, 1, 3, 50, 80][rng.below(6)]);
                    }
                }
            }
            6 => {
                // Another creation time: moves the route before or after the others.
                d["metadata"]["creationTimestamp"] = json!(
                    [
                        "2025-06-01T00:00:00Z",
                        "2026-01-01T00:00:00Z",
                        "2026-01-15T00:00:00Z",
                        "2027-01-01T00:00:00Z"
                    ][rng.below(4)]
                );
            }
            7 => {
                // A second rule (dropped, PartiallyInvalid), or back to one.
                if let Some(rules) = spec["rules"].as_array_mut() {
                    if rules.len() > 1 {
                        rules.truncate(1);
                    } else {
                        rules.push(json!({"backendRefs": [pool.backend(rng, &kind)]}));
                    }
                }
            }
            8 => {
                // Also point at a Gateway that does not exist.
                if let Some(p) = spec["parentRefs"].as_array_mut() {
                    p.push(json!({"name": "no-such-gateway"}));
                }
            }
            9 if !pool.gateways.is_empty() => {
                // Attach to another Gateway of the fixture (all listeners).
                let (ns, name) = &pool.gateways[rng.below(pool.gateways.len())];
                if let Some(p) = spec["parentRefs"].as_array_mut() {
                    p.push(json!({"name": name, "namespace": ns}));
                }
            }
            _ => {
                // Remove a backend (an empty list: the rule refuses everything).
                if let Some(bs) = spec["rules"]
                    .get_mut(0)
                    .and_then(|r| r["backendRefs"].as_array_mut())
                {
                    if !bs.is_empty() {
                        let i = rng.below(bs.len());
                        bs.remove(i);
                    }
                }
            }
        }
    }
    d
}

/// A changed version of a route manifest.
fn mutate(rng: &mut Rng, doc: &Value, pool: &Pool) -> Value {
    if is_l4(doc) {
        return mutate_l4(rng, doc, pool);
    }
    let mut d = doc.clone();
    let spec = &mut d["spec"];
    match rng.below(7) {
        0 => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("hostnames");
            }
        }
        1 => spec["hostnames"] = json!(["*.example.com"]),
        2 => spec["hostnames"] = json!([format!("h{}.example.com", rng.below(3))]),
        3 => {
            // Drop one rule (keep at least one).
            if let Some(rules) = spec.get_mut("rules").and_then(|r| r.as_array_mut()) {
                if rules.len() > 1 {
                    let i = rng.below(rules.len());
                    rules.remove(i);
                }
            }
        }
        4 => {
            // Drop sectionName/port from the parentRefs (attach to more listeners).
            for pr in spec
                .get_mut("parentRefs")
                .and_then(|p| p.as_array_mut())
                .into_iter()
                .flatten()
            {
                if let Some(m) = pr.as_object_mut() {
                    m.remove("sectionName");
                    m.remove("port");
                }
            }
        }
        5 => {
            // Point the route at a Gateway that does not exist.
            if let Some(p) = spec.get_mut("parentRefs").and_then(|p| p.as_array_mut()) {
                p.push(json!({"name": "no-such-gateway"}));
            }
        }
        _ => {
            // Reverse the rules (changes precedence between equal matches).
            if let Some(rules) = spec.get_mut("rules").and_then(|r| r.as_array_mut()) {
                rules.reverse();
            }
        }
    }
    d
}

fn key_of(d: &Value) -> (Kind, ObjKey) {
    let kind = match d["kind"].as_str() {
        Some("GRPCRoute") => Kind::GRPCRoute,
        Some("HTTPRoute") => Kind::HTTPRoute,
        Some("TLSRoute") => Kind::TLSRoute,
        Some("TCPRoute") => Kind::TCPRoute,
        Some("UDPRoute") => Kind::UDPRoute,
        other => panic!("not a route: {other:?}"),
    };
    let ns = d["metadata"]["namespace"].as_str().unwrap_or("default");
    (
        kind,
        ObjKey::new(ns, d["metadata"]["name"].as_str().unwrap_or("")),
    )
}

/// Checks one step; returns the IR.
fn check_equal(
    label: &str,
    t: &mut Translator,
    builder: &mut Builder,
    inputs: &Inputs,
    changes: &Changes,
) -> Model {
    let up = t.update(inputs, changes);
    let full = translate(inputs);
    assert!(
        *up.model == full.model,
        "{label}: incremental IR differs from a full translation\nincremental: {:#?}\nfull: {:#?}",
        up.model,
        full.model
    );
    assert!(
        *t.status() == full.status,
        "{label}: incremental status differs\nincremental: {:#?}\nfull: {:#?}",
        t.status(),
        full.status
    );
    let snap = builder.build(&up.model);
    assert!(
        snap == build(&full.model),
        "{label}: reused encodings differ from a fresh build"
    );
    std::sync::Arc::unwrap_or_clone(up.model)
}

/// Runs `steps` random edits; returns how many changed the IR.
fn run_case(name: &str, docs: Vec<Value>, seed: u64, steps: usize) -> usize {
    let mut rng = Rng(seed);
    let pool = Pool::of(&docs);
    let (routes, rest): (Vec<Value>, Vec<Value>) = docs.into_iter().partition(is_route);
    let slices: Vec<Value> = rest
        .iter()
        .filter(|d| d["kind"] == "EndpointSlice")
        .cloned()
        .collect();
    let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
    for d in rest {
        inputs.insert_value(d).expect("fixture decodes");
    }
    AddressPool::parse("127.0.0.0/24")
        .expect("pool")
        .assign(&mut inputs);
    // Start with about half the routes.
    let mut present = vec![false; routes.len()];
    for (i, r) in routes.iter().enumerate() {
        if rng.below(2) == 0 {
            inputs.insert_value(r.clone()).expect("route decodes");
            present[i] = true;
        }
    }
    let mut t = Translator::default();
    let mut builder = Builder::default();
    let mut model = check_equal(
        &format!("{name}: start"),
        &mut t,
        &mut builder,
        &inputs,
        &Changes::everything(),
    );
    let mut changed = 0;
    for step in 0..steps {
        let mut changes = Changes::default();
        // One to three objects per step, as a debounced batch would have.
        for _ in 0..1 + rng.below(3) {
            if !slices.is_empty() && rng.below(8) == 0 {
                let mut s = slices[rng.below(slices.len())].clone();
                let n = 1 + rng.below(4);
                s["endpoints"] = json!((0..n)
                    .map(|j| json!({"addresses": [format!("10.0.{}.{j}", rng.below(9))]}))
                    .collect::<Vec<_>>());
                let (kind, key) = inputs.insert_value(s).expect("slice decodes");
                changes.record(kind, &key);
                continue;
            }
            if routes.is_empty() {
                continue;
            }
            let i = rng.below(routes.len());
            let (kind, key) = key_of(&routes[i]);
            if present[i] && rng.below(3) == 0 {
                inputs.remove(kind, &key);
                present[i] = false;
            } else {
                let doc = if rng.below(4) == 0 {
                    routes[i].clone()
                } else {
                    mutate(&mut rng, &routes[i], &pool)
                };
                inputs.insert_value(doc).expect("mutated route decodes");
                present[i] = true;
            }
            changes.record(kind, &key);
        }
        let next = check_equal(
            &format!("{name}: step {step}"),
            &mut t,
            &mut builder,
            &inputs,
            &changes,
        );
        if next != model {
            changed += 1;
        }
        model = next;
    }
    changed
}

#[test]
fn incremental_matches_full_on_golden_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = 0;
    for e in std::fs::read_dir(&dir).expect("golden dir").flatten() {
        let input = e.path().join("input.yaml");
        let Ok(text) = std::fs::read_to_string(&input) else {
            continue;
        };
        let docs = parse_documents(&text).expect("golden input parses");
        let name = e.file_name().to_string_lossy().to_string();
        for seed in 1..=4u64 {
            run_case(&name, docs.clone(), seed * 7919 + cases, 60);
        }
        cases += 1;
    }
    assert!(cases >= 10, "only {cases} golden cases found");
}

#[test]
fn incremental_matches_full_on_synthetic_config() {
    let mut docs = switchyard::synthetic::manifests(60, 4, 2);
    // Routes without hostnames and with a wildcard: every other virtual host falls back to them.
    let mut catch_all = switchyard::synthetic::route(1000, 4, 2, 0);
    catch_all["spec"]
        .as_object_mut()
        .map(|m| m.remove("hostnames"));
    docs.push(catch_all);
    let mut wildcard = switchyard::synthetic::route(1001, 4, 2, 0);
    wildcard["spec"]["hostnames"] = json!(["*.example.com"]);
    docs.push(wildcard);
    for seed in [3u64, 11, 29] {
        run_case("synthetic", docs.clone(), seed, 150);
    }
}

/// A self-signed EC certificate for `*.example.com` and its key (the
/// translator checks that they parse and belong together).
const CERT_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBqTCCAVCgAwIBAgIUXM9+spkO+mL+NhruESWnszYvnckwCgYIKoZIzj0EAwIw\nFjEUMBIGA1UEAwwLZXhhbXBsZS5jb20wIBcNMjYxMTI5MTEwMjA0WhgPMjEyNjEx\nMDUxMTAyMDRaMBYxFDASBgNVBAMMC2V4YW1wbGUuY29tMFkwEwYHKoZIzj0CAQYI\nKoZIzj0DAQcDQgAE0he41GGPwPrayAuhdJyI0Lq70kCrJQMxkhVro9l+5jvk31xC\nnqtioR6IF/JtO42yNRw0JJn34Tp3iPOHpUDmo6N6MHgwHQYDVR0OBBYEFPaLi6Gq\nthE4s53Ah2f3E0a7scw6MB8GA1UdIwQYMBaAFPaLi6GqthE4s53Ah2f3E0a7scw6\nMA8GA1UdEwEB/wQFMAMBAf8wJQYDVR0RBB4wHIINKi5leGFtcGxlLmNvbYILZXhh\nbXBsZS5jb20wCgYIKoZIzj0EAwIDRwAwRAIgS7LV4UoQKkNnmrzjkgJ3xyWYTHTP\nMsB3XDcBNWAF424CIBeDIy6l/H1dbEFt37J82Jp4qn/zCfaTmsdl0LXKc8Eg\n-----END CERTIFICATE-----\n";
const KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgNfBeIgtTDKDTknGA\nXdLJp6LqH3FJfWg9XLXo0X22+GahRANCAATSF7jUYY/A+trIC6F0nIjQurvSQKsl\nAzGSFWuj2X7mO+TfXEKeq2KhHogX8m07jbI1HDQkmffhOneI84elQOaj\n-----END PRIVATE KEY-----\n";

/// A Gateway with every L4 listener kind sharing ports the ways the spec
/// allows (TLS Passthrough and Terminate and HTTPS on one port told apart by
/// SNI, TCP and UDP on one port number), a second Gateway, Services with a
/// TCP and a UDP port, ReferenceGrants for some cross-namespace backends, and
/// many TLSRoutes, TCPRoutes and UDPRoutes competing for the same listeners
/// and SNI names.
fn l4_fixture() -> Vec<Value> {
    let gw = "gateway.networking.k8s.io/v1";
    let all = json!({"namespaces": {"from": "All"}});
    let mut docs = vec![
        json!({"apiVersion": gw, "kind": "GatewayClass", "metadata": {"name": "switchyard"},
               "spec": {"controllerName": DEFAULT_CONTROLLER_NAME}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cert", "namespace": "infra"},
               "type": "kubernetes.io/tls",
               "stringData": {"tls.crt": CERT_PEM, "tls.key": KEY_PEM}}),
        json!({"apiVersion": gw, "kind": "Gateway", "metadata": {"name": "l4", "namespace": "infra"},
        "spec": {"gatewayClassName": "switchyard", "listeners": [
            {"name": "tls-wild", "port": 443, "protocol": "TLS", "hostname": "*.example.com",
             "tls": {"mode": "Passthrough"}, "allowedRoutes": all},
            {"name": "tls-any", "port": 443, "protocol": "TLS",
             "tls": {"mode": "Passthrough"}, "allowedRoutes": all},
            {"name": "tls-term", "port": 443, "protocol": "TLS", "hostname": "a.example.com",
             "tls": {"mode": "Terminate", "certificateRefs": [{"name": "cert"}]}, "allowedRoutes": all},
            {"name": "https", "port": 443, "protocol": "HTTPS", "hostname": "b.example.com",
             "tls": {"certificateRefs": [{"name": "cert"}]}, "allowedRoutes": all},
            {"name": "tcp-1", "port": 5000, "protocol": "TCP", "allowedRoutes": all},
            {"name": "tcp-2", "port": 5001, "protocol": "TCP", "allowedRoutes": all},
            {"name": "udp-1", "port": 5000, "protocol": "UDP", "allowedRoutes": all},
            {"name": "udp-2", "port": 5353, "protocol": "UDP", "allowedRoutes": all},
            {"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": all},
        ]}}),
        json!({"apiVersion": gw, "kind": "Gateway", "metadata": {"name": "l4b", "namespace": "infra"},
        "spec": {"gatewayClassName": "switchyard", "listeners": [
            {"name": "tcp-b", "port": 6000, "protocol": "TCP", "allowedRoutes": all},
            {"name": "udp-b", "port": 6000, "protocol": "UDP", "allowedRoutes": all},
            {"name": "tls-b", "port": 7443, "protocol": "TLS",
             "tls": {"mode": "Passthrough"}, "allowedRoutes": all},
        ]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
               "metadata": {"name": "l4-to-s0", "namespace": "infra"},
               "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "TCPRoute", "namespace": "apps"},
                                 {"group": "gateway.networking.k8s.io", "kind": "TLSRoute", "namespace": "apps"}],
                        "to": [{"group": "", "kind": "Service", "name": "s0"}]}}),
        json!({"apiVersion": "gateway.networking.k8s.io/v1beta1", "kind": "ReferenceGrant",
               "metadata": {"name": "udp-to-all", "namespace": "infra"},
               "spec": {"from": [{"group": "gateway.networking.k8s.io", "kind": "UDPRoute", "namespace": "apps"}],
                        "to": [{"group": "", "kind": "Service"}]}}),
    ];
    for (ns, svc) in [
        ("infra", "s0"),
        ("infra", "s1"),
        ("infra", "s2"),
        ("infra", "s3"),
        ("apps", "a0"),
    ] {
        docs.push(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc, "namespace": ns},
            "spec": {"ports": [{"name": "tcp", "port": 80, "targetPort": 8080},
                               {"name": "udp", "port": 53, "protocol": "UDP"}]}}));
        docs.push(json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{svc}-1"), "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"name": "tcp", "port": 8080}, {"name": "udp", "port": 53, "protocol": "UDP"}],
            "endpoints": [{"addresses": [format!("10.9.{}.1", svc.len() + svc.as_bytes()[1] as usize)]}]}));
    }
    let tls_sections = ["tls-wild", "tls-any", "tls-term", "tls-wild"];
    let hostnames = [
        json!(["a.example.com"]),
        json!(["*.example.com"]),
        json!(["c.example.com", "other.org"]),
        json!(["a.example.com", "*.example.com"]),
    ];
    let backend = |i: usize, port: i64, ns: &str| -> Value {
        let mut b = json!({"name": format!("s{}", i % 4), "port": port});
        if ns != "infra" {
            b["namespace"] = json!("infra");
        }
        b
    };
    for i in 0..8 {
        let ns = if i % 3 == 2 { "apps" } else { "infra" };
        let ts = format!("2026-01-0{}T00:00:00Z", 1 + i % 3);
        let meta = |kind: &str| json!({"name": format!("{kind}-{i}"), "namespace": ns, "creationTimestamp": ts});
        let parent =
            |section: &str| json!([{"name": "l4", "namespace": "infra", "sectionName": section}]);
        docs.push(
            json!({"apiVersion": gw, "kind": "TLSRoute", "metadata": meta("tls"),
            "spec": {"parentRefs": parent(tls_sections[i % 4]), "hostnames": hostnames[i % 4],
                     "rules": [{"backendRefs": [backend(i, 80, ns)]}]}}),
        );
        let mut tcp_backends = vec![backend(i, 80, ns)];
        if i % 2 == 1 {
            tcp_backends[0]["weight"] = json!(70);
            let mut b = backend(i + 1, 80, ns);
            b["weight"] = json!(30);
            tcp_backends.push(b);
        }
        docs.push(
            json!({"apiVersion": gw, "kind": "TCPRoute", "metadata": meta("tcp"),
            "spec": {"parentRefs": parent(if i % 2 == 0 { "tcp-1" } else { "tcp-2" }),
                     "rules": [{"backendRefs": tcp_backends}]}}),
        );
        let mut a = backend(i, 53, ns);
        a["weight"] = json!(1 + i % 3);
        let mut b = backend(i + 1, 53, ns);
        b["weight"] = json!(1);
        docs.push(json!({"apiVersion": gw, "kind": "UDPRoute", "metadata": meta("udp"),
            "spec": {"parentRefs": parent(if i % 2 == 0 { "udp-1" } else { "udp-2" }),
                     "rules": [{"backendRefs": if i % 4 == 0 { json!([a]) } else { json!([a, b]) }}]}}));
    }
    docs.push(json!({"apiVersion": gw, "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "infra"},
        "spec": {"parentRefs": [{"name": "l4", "sectionName": "https"}, {"name": "l4", "sectionName": "http"}],
                 "hostnames": ["b.example.com"],
                 "rules": [{"backendRefs": [{"name": "s0", "port": 80}]}]}}));
    docs
}

#[test]
fn incremental_matches_full_on_l4_config() {
    let docs = l4_fixture();
    assert!(docs.iter().filter(|d| is_l4(d)).count() >= 24);
    for seed in [5u64, 17, 41, 97] {
        let changed = run_case("l4", docs.clone(), seed, 200);
        // The edits must reach Envoy's configuration, not only status.
        assert!(
            changed >= 50,
            "seed {seed}: only {changed} of 200 steps changed the IR"
        );
    }
}

/// Every virtual host of a model, by name.
fn vhosts(
    model: &Model,
) -> std::collections::BTreeMap<String, std::sync::Arc<switchyard::ir::VirtualHost>> {
    let mut out = std::collections::BTreeMap::new();
    for gw in model.gateways.values() {
        for l in &gw.listeners {
            for c in &l.chains {
                if let switchyard::ir::App::Http(rc) = &c.app {
                    for vh in &rc.virtual_hosts {
                        out.insert(vh.name.clone(), vh.clone());
                    }
                }
            }
        }
    }
    out
}

/// A full translation keeps the previous one's virtual hosts that are equal
/// (the same value, already encoded); one whose routes a Service change
/// affects is built anew, and the output stays what a fresh translation
/// and build give.
#[test]
fn full_translation_keeps_equal_virtual_hosts_and_drops_changed_ones() {
    let mut inputs = switchyard::synthetic::inputs(40, 4, 2);
    let mut t = Translator::default();
    let mut b = Builder::default();
    let first = t.update(&inputs, &Changes::everything()).model;
    b.build(&first);
    let second = t.update(&inputs, &Changes::everything());
    assert!(second.full);
    let (v1, v2) = (vhosts(&first), vhosts(&second.model));
    assert!(v1.len() >= 40, "{} virtual hosts", v1.len());
    assert_eq!(v1.keys().collect::<Vec<_>>(), v2.keys().collect::<Vec<_>>());
    for (name, vh) in &v2 {
        assert!(std::sync::Arc::ptr_eq(vh, &v1[name]), "{name} not kept");
    }
    // Routes in team-0 send to svc-1 there: without it their backend is invalid.
    let gone = ObjKey::new("team-0", "svc-1");
    assert!(inputs.services.remove(&gone).is_some());
    let mut ch = Changes::default();
    ch.record(Kind::Service, &gone);
    let third = t.update(&inputs, &ch);
    assert!(third.full);
    let fresh = translate(&inputs);
    assert_eq!(*third.model, fresh.model);
    assert_eq!(b.build(&third.model), build(&fresh.model));
    let v3 = vhosts(&third.model);
    let (mut kept, mut rebuilt) = (0, 0);
    for (name, vh) in &v3 {
        // Route r is in namespace team-{r % 4}, with hostname r{r}.example.com.
        let team0 = (0..40)
            .step_by(4)
            .any(|r| name.ends_with(&format!("/r{r}.example.com")));
        if std::sync::Arc::ptr_eq(vh, &v2[name]) {
            assert!(!team0, "{name} kept although its backend is gone");
            kept += 1;
        } else {
            assert!(team0, "{name} rebuilt although nothing it uses changed");
            assert_ne!(**vh, *v2[name]);
            rebuilt += 1;
        }
    }
    assert_eq!(rebuilt, 10);
    assert!(kept >= 30, "{kept} kept");
}
