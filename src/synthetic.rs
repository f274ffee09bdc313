//! Synthetic Gateway API configurations for benchmarks and scale tests:
//! `routes` HTTPRoutes spread over `namespaces` namespaces and `gateways`
//! Gateways, each route with its own hostname and two path rules.

use serde_json::json;

use crate::inputs::{Inputs, DEFAULT_CONTROLLER_NAME};

/// Manifests (as JSON values) of a synthetic configuration.
pub fn manifests(routes: usize, namespaces: usize, gateways: usize) -> Vec<serde_json::Value> {
    let namespaces = namespaces.max(1);
    let gateways = gateways.max(1);
    let mut out = vec![json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GatewayClass",
        "metadata": {"name": "switchyard"},
        "spec": {"controllerName": DEFAULT_CONTROLLER_NAME}
    })];
    for g in 0..gateways {
        out.push(json!({
            "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": format!("gw-{g}"), "namespace": "infra"},
            "spec": {"gatewayClassName": "switchyard", "listeners": [
                {"name": "http", "port": 8080, "protocol": "HTTP", "allowedRoutes": {"namespaces": {"from": "All"}}}
            ]}
        }));
    }
    for n in 0..namespaces {
        let ns = format!("team-{n}");
        out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}));
        for s in 0..2 {
            out.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": format!("svc-{s}"), "namespace": ns},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 9000 + s}]}
            }));
            out.push(json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": format!("svc-{s}-a"), "namespace": ns, "labels": {"kubernetes.io/service-name": format!("svc-{s}")}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 9000 + s}],
                "endpoints": [{"addresses": ["127.0.0.1"]}]
            }));
        }
    }
    for r in 0..routes {
        out.push(route(r, namespaces, gateways, 0));
    }
    out
}

/// One synthetic route; `variant` changes its backend weights (for update benchmarks).
pub fn route(r: usize, namespaces: usize, gateways: usize, variant: u32) -> serde_json::Value {
    let ns = format!("team-{}", r % namespaces.max(1));
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": format!("route-{r}"), "namespace": ns},
        "spec": {
            "parentRefs": [{"name": format!("gw-{}", r % gateways.max(1)), "namespace": "infra"}],
            "hostnames": [format!("r{r}.example.com")],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": format!("/api/{r}")}}],
                 "backendRefs": [{"name": "svc-0", "port": 80, "weight": 90 + variant}, {"name": "svc-1", "port": 80, "weight": 10}]},
                {"matches": [{"path": {"type": "Exact", "value": "/healthz"}, "headers": [{"name": "x-probe", "value": "1"}]}],
                 "filters": [{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"add": [{"name": "x-route", "value": format!("{r}")}]}}],
                 "backendRefs": [{"name": "svc-0", "port": 80}]}
            ]
        }
    })
}

/// A ready-to-translate snapshot (addresses assigned from 127.0.0.0/24).
pub fn inputs(routes: usize, namespaces: usize, gateways: usize) -> Inputs {
    let mut inputs = Inputs::new(DEFAULT_CONTROLLER_NAME);
    for m in manifests(routes, namespaces, gateways) {
        if let Err(e) = inputs.insert_value(m) {
            panic!("synthetic manifest does not decode: {e}");
        }
    }
    if let Ok(mut pool) = crate::provider::addresses::AddressPool::parse("127.0.0.0/24") {
        pool.assign(&mut inputs);
    }
    inputs
}
