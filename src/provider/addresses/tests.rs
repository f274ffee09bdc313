use super::*;

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
                gw["status"] =
                    serde_json::json!({"addresses": [{"type": "IPAddress", "value": ip}]});
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

