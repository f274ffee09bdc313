use super::*;

fn class_with(config: Option<&str>, parameters_ref: &str) -> Inputs {
    let mut text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: gc}}\n\
         spec:\n  controllerName: {}\n  {parameters_ref}\n",
        crate::inputs::DEFAULT_CONTROLLER_NAME
    );
    if let Some(spec) = config {
        text.push_str(&format!(
            "---\napiVersion: gateway.switchyard.dev/v1alpha1\nkind: GatewayClassConfig\n\
             metadata: {{name: cfg}}\nspec: {spec}\n"
        ));
    }
    crate::testing::inputs(&text)
}

const REF: &str =
    "parametersRef: {group: gateway.switchyard.dev, kind: GatewayClassConfig, name: cfg}";

#[test]
fn valid_configs_resolve_to_their_mode() {
    let m = resolve(
        &class_with(
            Some("{addressMode: LoadBalancer, loadBalancer: {portRange: {from: 100, to: 200}, externalTrafficPolicy: Local}}"),
            REF,
        ),
        "gc",
    );
    assert_eq!(
        m,
        Ok(Mode::LoadBalancer {
            ports: PortRange { from: 100, to: 200 },
            load_balancer_class: None,
            external_traffic_policy: Some("Local".into()),
        })
    );
    let m = resolve(&class_with(Some("{addressMode: NodeAddresses}"), REF), "gc");
    assert_eq!(
        m,
        Ok(Mode::NodeAddresses {
            address_types: vec!["ExternalIP".into(), "InternalIP".into()]
        })
    );
    let m = resolve(
        &class_with(
            Some("{addressMode: VirtualIP, virtualIP: {pool: 10.0.0.5}}"),
            REF,
        ),
        "gc",
    );
    assert_eq!(
        m,
        Ok(Mode::VirtualIP {
            pool: "10.0.0.5/32".parse().ok()
        })
    );
}

#[test]
fn invalid_parameters_name_the_object_and_field() {
    for (config, parameters_ref, want) in [
        (None, REF, "GatewayClassConfig \"cfg\" not found"),
        (
            None,
            "parametersRef: {group: \"\", kind: ConfigMap, name: x}",
            "spec.parametersRef: core/ConfigMap \"x\" is not a parameters kind",
        ),
        (
            Some("{addressMode: VirtualIP}"),
            REF,
            "GatewayClassConfig cfg: spec.virtualIP.pool is required",
        ),
        (
            Some("{addressMode: Anycast}"),
            REF,
            "GatewayClassConfig cfg: spec.addressMode: \"Anycast\"",
        ),
        (
            Some("{addressMode: NodeAddresses, virtualIP: {pool: 10.0.0.0/24}}"),
            REF,
            "spec.virtualIP is only for addressMode VirtualIP",
        ),
        (
            Some("{addressMode: LoadBalancer, loadBalancer: {portRange: {from: 9, to: 8}}}"),
            REF,
            "spec.loadBalancer.portRange: from (9) is greater than to (8)",
        ),
        (
            Some("{addressMode: NodeAddresses, nodeAddresses: {addressTypes: [Hostname]}}"),
            REF,
            "spec.nodeAddresses.addressTypes[0]: \"Hostname\"",
        ),
        (
            Some("{addressMode: NodeAddresses, frobnicate: 1}"),
            REF,
            "GatewayClassConfig cfg: fields not supported by this Switchyard: spec.frobnicate",
        ),
    ] {
        let inputs = class_with(config, parameters_ref);
        let err = resolve(&inputs, "gc").expect_err(want);
        assert!(err.contains(want), "{err:?} should contain {want:?}");
        // ... and the class says so.
        let status = crate::translate::translate(&inputs).status;
        let Some(crate::status::ObjectStatus::GatewayClass { conditions, .. }) =
            status.get(Kind::GatewayClass, &ObjKey::cluster("gc"))
        else {
            panic!("no GatewayClass status");
        };
        assert_eq!(conditions[0].reason, "InvalidParameters");
        assert!(conditions[0].message.contains(want));
    }
}

#[test]
fn defaults_apply_without_parameters_ref_and_standalone_has_no_load_balancer() {
    let mut inputs = class_with(None, "");
    inputs.addressing.mode = AddressMode::LoadBalancer;
    assert!(
        matches!(resolve(&inputs, "gc"), Ok(Mode::LoadBalancer { ports, .. }) if ports == PortRange::default())
    );
    inputs.addressing.standalone = true;
    let err = resolve(&inputs, "gc").expect_err("standalone");
    assert!(err.contains("needs Kubernetes"), "{err}");
    inputs.addressing.mode = AddressMode::VirtualIP;
    assert_eq!(resolve(&inputs, "gc"), Ok(Mode::VirtualIP { pool: None }));
}

#[test]
fn flags_parse() {
    assert_eq!(
        "1-2".parse::<PortRange>().ok(),
        Some(PortRange { from: 1, to: 2 })
    );
    assert!("2-1".parse::<PortRange>().is_err());
    assert!("0-1".parse::<PortRange>().is_err());
    assert!("x".parse::<PortRange>().is_err());
    assert_eq!(
        "NodeAddresses".parse::<AddressMode>().ok(),
        Some(AddressMode::NodeAddresses)
    );
    assert!("nodeaddresses".parse::<AddressMode>().is_err());
    let sel = parse_selector("a=b, c=d").expect("selector");
    assert_eq!(sel.len(), 2);
    assert!(parse_selector("nokey").is_err());
}

#[test]
fn node_addresses_prefer_the_first_type_each_node_has_and_skip_unready_nodes() {
    let node = |name: &str, ready: &str, addrs: &str| {
        format!(
            "---\napiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\nstatus:\n  \
             conditions: [{{type: Ready, status: \"{ready}\"}}]\n  addresses: {addrs}\n"
        )
    };
    let text = [
        node(
            "a",
            "True",
            "[{type: InternalIP, address: 10.0.0.2}, {type: ExternalIP, address: 203.0.113.2}]",
        ),
        node(
            "b",
            "True",
            "[{type: InternalIP, address: 10.0.0.1}, {type: Hostname, address: b}]",
        ),
        node("c", "False", "[{type: ExternalIP, address: 203.0.113.3}]"),
        node("d", "True", "[{type: InternalIP, address: 10.0.0.1}]"),
    ]
    .concat();
    let inputs = crate::testing::inputs(&text);
    let types = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        node_addresses(&inputs, &types(&["ExternalIP", "InternalIP"])),
        ["10.0.0.1", "203.0.113.2"]
    );
    assert_eq!(
        node_addresses(&inputs, &types(&["InternalIP"])),
        ["10.0.0.1", "10.0.0.2"]
    );
}

#[test]
fn the_crd_matches_the_kinds_table_and_the_helm_chart_ships_the_same_copy() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let file = "gateway.switchyard.dev_gatewayclassconfigs.yaml";
    let text = std::fs::read_to_string(root.join("crds/switchyard").join(file)).expect("CRD");
    let helm =
        std::fs::read_to_string(root.join("helm/switchyard/crds").join(file)).expect("chart CRD");
    assert_eq!(
        text, helm,
        "deploy/helm/switchyard/crds/{file} differs from deploy/crds/switchyard/"
    );
    let v: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    let info = Kind::GatewayClassConfig.info();
    assert_eq!(v["spec"]["group"].as_str(), Some(info.group));
    assert_eq!(v["spec"]["names"]["kind"].as_str(), Some(info.name));
    assert_eq!(v["spec"]["names"]["plural"].as_str(), Some(info.plural));
    assert_eq!(v["spec"]["scope"].as_str(), Some("Cluster"));
    assert_eq!(
        v["spec"]["versions"][0]["name"].as_str(),
        Some(info.version)
    );
    let props =
        &v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    let modes: Vec<&str> = props["addressMode"]["enum"]
        .as_sequence()
        .expect("enum")
        .iter()
        .filter_map(|m| m.as_str())
        .collect();
    for m in &modes {
        assert!(m.parse::<AddressMode>().is_ok(), "{m}");
    }
    assert_eq!(modes.len(), 3);
}
