use super::*;

const MANIFESTS: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: ours}
spec: {controllerName: switchyard.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: theirs}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: web, namespace: apps, uid: 0f6a1c5e-1111-2222-3333-444455556666}
spec:
  gatewayClassName: ours
  addresses: [{type: IPAddress, value: 10.20.0.7}]
  infrastructure:
    labels: {team: payments}
    annotations: {cost-center: "42"}
  listeners:
  - {name: http, port: 80, protocol: HTTP}
  - {name: https, port: 443, protocol: HTTPS, hostname: a.example.com,
     tls: {certificateRefs: [{name: cert}]}}
  - {name: https2, port: 443, protocol: HTTPS, hostname: b.example.com,
     tls: {certificateRefs: [{name: cert}]}}
  - {name: dns, port: 53, protocol: UDP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: local.gw, namespace: apps, uid: 0f6a1c5e-aaaa-2222-3333-444455556666}
spec:
  gatewayClassName: ours
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: other, namespace: apps, uid: 0f6a1c5e-bbbb-2222-3333-444455556666}
spec:
  gatewayClassName: theirs
  listeners: [{name: http, port: 80, protocol: HTTP}]
"#;

fn desired_for(pool: &str) -> BTreeMap<ObjKey, Desired> {
    let mut inputs = crate::testing::inputs(MANIFESTS);
    crate::provider::addresses::AddressPool::parse(pool)
        .expect("pool")
        .assign(&mut inputs);
    let out = crate::translate::translate(&inputs);
    desired(&inputs, &out.status)
}

#[test]
fn a_service_per_gateway_of_ours_with_infrastructure_metadata_and_its_addresses() {
    let d = desired_for("10.20.0.0/24");
    let keys: Vec<String> = d.keys().map(ToString::to_string).collect();
    // Not the other controller's Gateway; a dotted name becomes a DNS label.
    assert_eq!(keys, ["apps/switchyard-local-gw", "apps/switchyard-web"]);
    let web = &d[&ObjKey::new("apps", "switchyard-web")];
    let meta = &web.service["metadata"];
    assert_eq!(meta["labels"]["team"], "payments");
    assert_eq!(meta["labels"][GATEWAY_NAME], "web");
    assert_eq!(meta["labels"][MANAGED_BY], MANAGER);
    assert_eq!(meta["annotations"]["cost-center"], "42");
    assert_eq!(
        meta["annotations"][CONTROLLER],
        crate::inputs::DEFAULT_CONTROLLER_NAME
    );
    assert_eq!(meta["ownerReferences"][0]["kind"], "Gateway");
    assert_eq!(
        meta["ownerReferences"][0]["uid"],
        "0f6a1c5e-1111-2222-3333-444455556666"
    );
    // One port per listener port (two HTTPS listeners share 443), UDP kept.
    let ports: Vec<(i64, String)> = web.service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| (p["port"].as_i64().unwrap_or(0), p["protocol"].to_string()))
        .collect();
    assert_eq!(
        ports,
        [
            (53, "\"UDP\"".to_string()),
            (80, "\"TCP\"".to_string()),
            (443, "\"TCP\"".to_string())
        ]
    );
    assert!(web.service["spec"].get("selector").is_none());
    let slice = &web.slices["switchyard-web-ipv4"];
    assert_eq!(slice["addressType"], "IPv4");
    assert_eq!(slice["endpoints"][0]["addresses"][0], "10.20.0.7");
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "switchyard-web"
    );
    assert_eq!(slice["metadata"]["labels"]["team"], "payments");
    assert_eq!(slice["ports"], web.service["spec"]["ports"]);
    // The pooled Gateway got 10.20.0.1 (10.20.0.7 is static for "web").
    let local = &d[&ObjKey::new("apps", "switchyard-local-gw")];
    assert_eq!(
        local.slices["switchyard-local-gw-ipv4"]["endpoints"][0]["addresses"][0],
        "10.20.0.1"
    );
}

#[test]
fn loopback_addresses_leave_the_service_without_endpoints() {
    let d = desired_for("127.0.0.0/24");
    let local = &d[&ObjKey::new("apps", "switchyard-local-gw")];
    assert!(local.slices.is_empty());
    // "web" asks for 10.20.0.7, outside this pool: not programmed, no
    // endpoints, but its Service (and the propagated metadata) exists.
    let web = &d[&ObjKey::new("apps", "switchyard-web")];
    assert!(web.slices.is_empty());
    assert_eq!(web.service["metadata"]["labels"]["team"], "payments");
}

#[test]
fn service_names_are_dns_labels() {
    assert_eq!(service_name("web"), "switchyard-web");
    assert_eq!(service_name("a.b.c"), "switchyard-a-b-c");
    let long = "x".repeat(80);
    let n = service_name(&long);
    assert_eq!(n.len(), 63);
    assert!(n.starts_with("switchyard-x"));
    assert_ne!(n, service_name(&"x".repeat(81)));
    for ip in [
        "127.0.0.1",
        "0.0.0.0",
        "169.254.1.1",
        "::1",
        "fe80::1",
        "224.0.0.1",
    ] {
        assert!(
            !endpoint_address(&ip.parse().expect("ip")),
            "{ip} must not be an endpoint"
        );
    }
    assert!(endpoint_address(&"10.0.0.1".parse().expect("ip")));
    assert!(endpoint_address(&"2001:db8::1".parse().expect("ip")));
}

/// `MANIFESTS` with class "ours" pointing at a GatewayClassConfig.
fn with_config(config_spec: &str) -> crate::inputs::Inputs {
    let text = MANIFESTS.replace(
        "spec: {controllerName: switchyard.dev/gateway-controller}",
        "spec:\n  controllerName: switchyard.dev/gateway-controller\n  parametersRef: \
         {group: gateway.switchyard.dev, kind: GatewayClassConfig, name: cfg}",
    );
    let text = format!(
        "{text}---\napiVersion: gateway.switchyard.dev/v1alpha1\nkind: GatewayClassConfig\n\
         metadata: {{name: cfg}}\nspec: {config_spec}\n"
    );
    crate::testing::inputs(&text)
}

fn desired_with(mut inputs: crate::inputs::Inputs) -> BTreeMap<ObjKey, Desired> {
    crate::provider::addresses::AddressPool::new(crate::addressing::AddressDefaults::default())
        .assign(&mut inputs);
    let out = crate::translate::translate(&inputs);
    desired(&inputs, &out.status)
}

fn ports_of(d: &Desired) -> Vec<(i64, String, i64)> {
    d.service["spec"]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["port"].as_i64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("").to_string(),
                p["targetPort"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

#[test]
fn load_balancer_mode_selects_the_envoy_pods_and_targets_the_allocated_ports() {
    let d = desired_with(with_config(
        "{addressMode: LoadBalancer, loadBalancer: {portRange: {from: 30100, to: 30199}, \
         loadBalancerClass: example.com/lb, externalTrafficPolicy: Local}}",
    ));
    let web = &d[&ObjKey::new("apps", "switchyard-web")];
    let spec = &web.service["spec"];
    assert_eq!(spec["type"], "LoadBalancer");
    assert_eq!(
        spec["selector"]["app.kubernetes.io/name"],
        "switchyard-envoy"
    );
    assert_eq!(spec["loadBalancerClass"], "example.com/lb");
    assert_eq!(spec["externalTrafficPolicy"], "Local");
    // The one static address is requested from the load balancer.
    assert_eq!(spec["loadBalancerIP"], "10.20.0.7");
    // Each listener port gets its own Envoy port from the range; UDP and
    // TCP ports are separate spaces.
    let ports = ports_of(web);
    assert_eq!(ports.len(), 3);
    let targets: BTreeSet<i64> = ports.iter().filter(|p| p.1 == "TCP").map(|p| p.2).collect();
    assert_eq!(targets.len(), 2, "{ports:?}");
    assert!(
        ports.iter().all(|p| (30100..=30199).contains(&p.2)),
        "{ports:?}"
    );
    assert!(web.slices.is_empty(), "the selector makes the endpoints");
    let local = &d[&ObjKey::new("apps", "switchyard-local-gw")];
    assert!(local.service["spec"].get("loadBalancerIP").is_none());
    let lp = ports_of(local);
    assert_eq!(lp.len(), 1);
    assert!(
        !targets.contains(&lp[0].2),
        "two Gateways never share an Envoy port: {lp:?} {targets:?}"
    );
}

#[test]
fn node_addresses_mode_is_a_cluster_ip_service_on_the_listener_ports() {
    let d = desired_with(with_config("{addressMode: NodeAddresses}"));
    let local = &d[&ObjKey::new("apps", "switchyard-local-gw")];
    let spec = &local.service["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(
        spec["selector"]["app.kubernetes.io/name"],
        "switchyard-envoy"
    );
    assert_eq!(ports_of(local), [(8080, "TCP".to_string(), 8080)]);
    assert!(local.slices.is_empty());
}

#[test]
fn virtual_ip_mode_keeps_the_selectorless_service_and_its_slices() {
    let d = desired_with(with_config(
        "{addressMode: VirtualIP, virtualIP: {pool: 10.30.0.0/28}}",
    ));
    let local = &d[&ObjKey::new("apps", "switchyard-local-gw")];
    assert_eq!(local.service["spec"]["type"], "ClusterIP");
    assert!(local.service["spec"].get("selector").is_none());
    assert_eq!(
        local.slices["switchyard-local-gw-ipv4"]["endpoints"][0]["addresses"][0],
        "10.30.0.1"
    );
    assert_eq!(ports_of(local), [(8080, "TCP".to_string(), -1)]);
}

#[test]
fn an_invalid_class_config_creates_no_services() {
    let d = desired_with(with_config("{addressMode: VirtualIP}"));
    assert!(d.is_empty(), "{:?}", d.keys().collect::<Vec<_>>());
}
