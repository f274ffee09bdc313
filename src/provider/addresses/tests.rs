use super::*;
use crate::addressing::AddressDefaults;

#[test]
fn pools_parse() {
    let addrs = |s: &str| {
        let net = addressing::parse_pool(s).expect("pool");
        AddressPool::parse(s).expect("ok").addresses(net).to_vec()
    };
    assert_eq!(
        addrs("127.0.0.1/32"),
        vec!["127.0.0.1".parse::<IpAddr>().expect("ip")]
    );
    assert_eq!(addrs("127.0.0.7").len(), 1);
    let p = addrs("127.0.0.0/24");
    assert_eq!(p.first().map(|a| a.to_string()), Some("127.0.0.1".into()));
    assert_eq!(p.len(), 254);
    assert!(AddressPool::parse("nope").is_err());
}

#[test]
fn assign_publishes_the_pool_for_static_address_checks() {
    let mut inputs = Inputs::new("c");
    AddressPool::parse("10.0.0.0/29")
        .expect("pool")
        .assign(&mut inputs);
    let net = inputs.addressing.pool.expect("pool published");
    assert!(net.contains(&"10.0.0.6".parse::<IpAddr>().expect("ip")));
    assert!(!net.contains(&"10.0.0.9".parse::<IpAddr>().expect("ip")));
}

fn inputs_with(gws: &[(&str, Option<&str>)]) -> Inputs {
    let mut inputs = Inputs::new("c");
    inputs
        .insert_value(serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
            "metadata": {"name": "gc"}, "spec": {"controllerName": "c"},
        }))
        .unwrap();
    for (name, status) in gws {
        let mut gw = serde_json::json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"gatewayClassName": "gc", "listeners": [{"name": "h", "port": 80, "protocol": "HTTP"}]},
        });
        if let Some(ip) = status {
            gw["status"] = serde_json::json!({"addresses": [{"type": "IPAddress", "value": ip}]});
        }
        inputs.insert_value(gw).unwrap();
    }
    inputs
}

#[test]
fn a_restarted_controller_keeps_the_addresses_gateways_report() {
    let mut pool = AddressPool::parse("10.0.0.0/29").unwrap();
    // "a" was deleted while the controller was down; "b" and "c" keep
    // theirs, and the new "d" gets a free one, not one of theirs.
    let mut inputs = inputs_with(&[
        ("b", Some("10.0.0.2")),
        ("c", Some("10.0.0.3")),
        ("d", None),
    ]);
    pool.assign(&mut inputs);
    let got = |k: &str| inputs.assigned_addresses[&ObjKey::new("ns", k)][0].clone();
    assert_eq!(got("b"), "10.0.0.2");
    assert_eq!(got("c"), "10.0.0.3");
    assert_eq!(got("d"), "10.0.0.1");
    // A reported address outside the pool, or taken, is not reused.
    let mut pool = AddressPool::parse("10.0.0.0/29").unwrap();
    let mut inputs = inputs_with(&[
        ("x", Some("192.168.1.1")),
        ("y", Some("10.0.0.4")),
        ("z", Some("10.0.0.4")),
    ]);
    pool.assign(&mut inputs);
    let got = |k: &str| inputs.assigned_addresses[&ObjKey::new("ns", k)][0].clone();
    assert_eq!(got("y"), "10.0.0.4");
    assert_ne!(got("z"), "10.0.0.4");
    assert!(got("x").starts_with("10.0.0."));
}

const LB_CLASS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: gc}
spec:
  controllerName: example.com/c
  parametersRef: {group: gateway.switchyard.dev, kind: GatewayClassConfig, name: lb}
---
apiVersion: gateway.switchyard.dev/v1alpha1
kind: GatewayClassConfig
metadata: {name: lb}
spec:
  addressMode: LoadBalancer
  loadBalancer: {portRange: {from: 20000, to: 20002}}
"#;

fn lb_inputs(gws: &[(&str, &[(u16, &str)])]) -> Inputs {
    let mut inputs = Inputs::new("example.com/c");
    for d in crate::provider::file::parse_documents(LB_CLASS).expect("yaml") {
        inputs.insert_value(d).expect("decodes");
    }
    for (name, listeners) in gws {
        let ls: Vec<serde_json::Value> = listeners
            .iter()
            .map(|(p, proto)| serde_json::json!({"name": format!("l{p}-{}", proto.to_lowercase()), "port": p, "protocol": proto}))
            .collect();
        inputs
            .insert_value(serde_json::json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"gatewayClassName": "gc", "listeners": ls},
            }))
            .expect("gateway");
    }
    inputs
}

fn ports(inputs: &Inputs, gw: &str) -> Vec<((u16, bool), u16)> {
    inputs
        .assigned_ports
        .get(&ObjKey::new("ns", gw))
        .map(|m| m.iter().map(|(k, v)| (*k, *v)).collect())
        .unwrap_or_default()
}

#[test]
fn load_balancer_ports_are_sticky_and_released_with_their_listener() {
    let mut pool = AddressPool::new(AddressDefaults::default());
    let mut inputs = lb_inputs(&[
        ("a", &[(80, "HTTP"), (443, "HTTPS")]),
        ("b", &[(80, "HTTP")]),
    ]);
    pool.assign(&mut inputs);
    assert_eq!(
        ports(&inputs, "a"),
        [((80, false), 20000), ((443, false), 20001)]
    );
    assert_eq!(ports(&inputs, "b"), [((80, false), 20002)]);
    // "a" drops 443: its port is free again; "b" keeps 20002 although a
    // lower one is free now.
    let mut inputs = lb_inputs(&[("a", &[(80, "HTTP")]), ("b", &[(80, "HTTP")])]);
    pool.assign(&mut inputs);
    assert_eq!(ports(&inputs, "a"), [((80, false), 20000)]);
    assert_eq!(ports(&inputs, "b"), [((80, false), 20002)]);
    // A UDP listener on 53 gets the lowest UDP port (its own space).
    let mut inputs = lb_inputs(&[("a", &[(80, "HTTP"), (53, "UDP")]), ("b", &[(80, "HTTP")])]);
    pool.assign(&mut inputs);
    assert_eq!(
        ports(&inputs, "a"),
        [((53, true), 20000), ((80, false), 20000)]
    );
}

#[test]
fn load_balancer_ports_are_restored_from_the_gateway_service_after_a_restart() {
    let mut inputs = lb_inputs(&[("a", &[(80, "HTTP")]), ("b", &[(80, "HTTP")])]);
    // "b"'s Service (written before the restart) targets 20001; one of
    // "a"'s targets a port outside the range, which is not taken.
    for (gw, target) in [("b", 20001), ("a", 31000)] {
        inputs
            .insert_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("switchyard-{gw}"), "namespace": "ns"},
                "spec": {"type": "LoadBalancer",
                         "ports": [{"name": "tcp-80", "port": 80, "protocol": "TCP", "targetPort": target}]},
            }))
            .expect("service");
    }
    let mut pool = AddressPool::new(AddressDefaults::default());
    pool.assign(&mut inputs);
    assert_eq!(ports(&inputs, "b"), [((80, false), 20001)]);
    assert_eq!(ports(&inputs, "a"), [((80, false), 20000)]);
}

#[test]
fn an_exhausted_port_range_leaves_the_listener_without_a_port_and_says_so() {
    let mut pool = AddressPool::new(AddressDefaults::default());
    let mut inputs = lb_inputs(&[
        ("a", &[(80, "HTTP"), (81, "HTTP")]),
        ("b", &[(80, "HTTP"), (443, "HTTPS")]),
    ]);
    pool.assign(&mut inputs);
    let all: usize = inputs.assigned_ports.values().map(|m| m.len()).sum();
    assert_eq!(all, 3, "the range has three ports");
    assert_eq!(ports(&inputs, "b"), [((80, false), 20002)]);
    let out = crate::translate::translate(&inputs);
    let st = out
        .status
        .get(crate::inputs::Kind::Gateway, &ObjKey::new("ns", "b"))
        .unwrap_or_else(|| {
            panic!(
                "no status: {:?}",
                out.status.objects.keys().collect::<Vec<_>>()
            )
        });
    let crate::status::ObjectStatus::Gateway { conditions, .. } = st else {
        panic!("not a Gateway status");
    };
    let programmed = conditions
        .iter()
        .find(|c| c.type_ == "Programmed")
        .expect("Programmed");
    assert_eq!(programmed.status, "False");
    assert_eq!(programmed.reason, "AddressNotAssigned");
    assert!(
        programmed.message.contains("20000-20002") && programmed.message.contains("443/TCP"),
        "{}",
        programmed.message
    );
    // No Envoy listener for the Gateway without every port.
    let model = out.model;
    assert!(model
        .gateways
        .get(&ObjKey::new("ns", "b"))
        .is_none_or(|g| g.listeners.is_empty()));
    let a = &model.gateways[&ObjKey::new("ns", "a")];
    let bound: Vec<(String, u16)> = a
        .listeners
        .iter()
        .map(|l| (l.address.clone(), l.port))
        .collect();
    assert_eq!(
        bound,
        [
            ("0.0.0.0".to_string(), 20000),
            ("0.0.0.0".to_string(), 20001)
        ]
    );
    assert_eq!(
        a.listeners[0].name, "ns/a/80",
        "names keep the listener port"
    );
}
