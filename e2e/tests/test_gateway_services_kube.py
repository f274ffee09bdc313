"""The Service each Gateway gets in Kubernetes mode, on the local cluster
(docs/gateway-infrastructure.md): created in the Gateway's namespace with
spec.infrastructure labels/annotations and the Gateway's routable addresses
as endpoints, updated when they change, removed when the Gateway leaves the
class; a Service of that name that Switchyard did not create is left alone;
static addresses outside the pool are AddressNotUsable.

Isolated: its own GatewayClass/controllerName, Lease and namespace. No Envoy.
Skipped when the cluster binaries are not built or not running as root.
"""

import json

import pytest

import kubestack as ks

NS = "gwsvc-e2e"
CLASS = "gwsvc-e2e"
CONTROLLER = "switchyard.dev/gwsvc-e2e"
LEASE = "gwsvc-e2e"
# Routable (non-loopback) addresses, so that they become endpoints. No Envoy
# binds them in this test: only the Kubernetes objects are checked.
POOL = "10.251.0.0/24"

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))


def gateway(name, labels="{team: payments}", annotations="{cost-center: '42'}", cls=CLASS, addresses=""):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {NS}}}
spec:
  gatewayClassName: {cls}
  {addresses}
  infrastructure: {{labels: {labels}, annotations: {annotations}}}
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
  - {{name: dns, port: 53, protocol: UDP}}
"""


BASE = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {CLASS}}}
spec: {{controllerName: {CONTROLLER}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
"""


def service(name):
    return ks.get("service", name, NS)


def slice_of(name):
    return ks.get("endpointslice", f"{name}-ipv4", NS)


def condition(gw, type_):
    st = (ks.get("gateway", gw, NS) or {}).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), None)


@pytest.fixture(scope="module")
def stack():
    print("\n" + ks.cluster_up())
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s")
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    ks.install_gateway_class()
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    s = ks.KubeStack(POOL)
    try:
        s.controller("gwsvc-a", lease_secs=4,
                     extra=[f"--controller-name={CONTROLLER}", f"--lease-name={LEASE}"])
        yield s
    except BaseException:
        print(s.diagnostics())
        raise
    finally:
        s.stop()
        ks.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
        ks.kubectl("delete", "gatewayclass", CLASS, "--ignore-not-found", check=False)
        ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found", check=False)


def test_a_gateway_gets_a_service_with_its_infrastructure_metadata_and_addresses(stack):
    c = stack.controllers[0]
    ks.wait(c.is_leader, 30, "the controller to hold its lease")
    ks.kubectl("apply", "-f", "-", stdin=gateway("web"))
    svc = ks.wait(lambda: service("switchyard-web"), 30, "Service switchyard-web")
    meta = svc["metadata"]
    assert meta["labels"]["team"] == "payments", meta
    assert meta["labels"]["gateway.networking.k8s.io/gateway-name"] == "web", meta
    assert meta["annotations"]["cost-center"] == "42", meta
    uid = ks.get("gateway", "web", NS)["metadata"]["uid"]
    assert meta["ownerReferences"][0]["uid"] == uid, meta
    ports = sorted((p["port"], p["protocol"]) for p in svc["spec"]["ports"])
    assert ports == [(53, "UDP"), (80, "TCP")], ports
    assert not svc["spec"].get("selector"), svc["spec"]
    # The endpoints are the Gateway's address.
    sl = ks.wait(lambda: slice_of("switchyard-web"), 30, "EndpointSlice switchyard-web-ipv4")
    addr = ks.wait(lambda: ((ks.get("gateway", "web", NS).get("status") or {}).get("addresses") or [None])[0],
                   30, "a Gateway address")["value"]
    assert [e["addresses"] for e in sl["endpoints"]] == [[addr]], sl
    assert sl["metadata"]["labels"]["kubernetes.io/service-name"] == "switchyard-web", sl
    assert sl["metadata"]["labels"]["team"] == "payments", sl

    # The infrastructure labels change: the Service follows (the old label goes).
    ks.kubectl("apply", "-f", "-", stdin=gateway("web", labels="{team: checkout}"))
    ks.wait(lambda: service("switchyard-web")["metadata"]["labels"].get("team") == "checkout", 30,
            "the Service's label to follow the Gateway")

    # A static address outside the pool: accepted, not programmed, no endpoints.
    ks.kubectl("apply", "-f", "-", stdin=gateway(
        "web", addresses="addresses: [{type: IPAddress, value: 192.0.2.10}]"))
    ks.wait(lambda: (condition("web", "Programmed") or {}).get("reason") == "AddressNotUsable", 30,
            "Programmed=False/AddressNotUsable")
    assert condition("web", "Accepted")["status"] == "True"
    assert "outside the address pool" in condition("web", "Programmed")["message"]
    ks.wait(lambda: slice_of("switchyard-web") is None, 30, "the EndpointSlice to go")
    assert service("switchyard-web") is not None

    # The Gateway moves to a class Switchyard does not own: its Service goes.
    ks.kubectl("apply", "-f", "-", stdin=gateway("web", cls="not-ours"))
    ks.wait(lambda: service("switchyard-web") is None, 30, "the Service to be deleted")


def test_a_service_switchyard_did_not_create_is_left_alone(stack):
    ks.kubectl("apply", "-f", "-", stdin=f"""
apiVersion: v1
kind: Service
metadata: {{name: switchyard-taken, namespace: {NS}, labels: {{owner: someone-else}}}}
spec: {{ports: [{{name: http, port: 9999}}]}}
""")
    ks.kubectl("apply", "-f", "-", stdin=gateway("taken"))
    ks.kubectl("apply", "-f", "-", stdin=gateway("other"))
    ks.wait(lambda: service("switchyard-other"), 30, "Service switchyard-other (the loop ran)")
    svc = service("switchyard-taken")
    assert svc["metadata"]["labels"] == {"owner": "someone-else"}, svc["metadata"]
    assert [p["port"] for p in svc["spec"]["ports"]] == [9999]
    log = stack.controllers[0].log.read_text(errors="replace")
    assert "was not created by" in log and "switchyard-taken" in log
    out = json.loads(ks.kubectl("get", "endpointslices", "-n", NS, "-o", "json"))
    assert not any(s["metadata"]["name"].startswith("switchyard-taken") for s in out["items"])
