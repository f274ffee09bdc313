"""Address modes on the local cluster (docs/networking.md), smoke level:

* NodeAddresses: a GatewayClass with parametersRef to a GatewayClassConfig
  (addressMode NodeAddresses, addressTypes [InternalIP]) is Accepted; its
  Gateway reports the local Node's InternalIP (10.244.0.1, bridge sybr0) in
  status.addresses; its Service selects the Envoy pods with targetPort =
  listener port; and a request to 10.244.0.1:<port> is answered by the
  Envoy on this host, which binds 0.0.0.0 (a redirect route: no backend).
* LoadBalancer: the Gateway's Service is type LoadBalancer with targetPort
  from the class's port range, and until a load balancer fills the ingress
  the Gateway says Programmed=False/AddressNotAssigned (nothing fills it
  here; the ingress itself is the lead's "MetalLB-like" test).
* A parametersRef to a missing GatewayClassConfig is InvalidParameters.

Isolated: its own GatewayClasses/controllerName, Lease and namespace.
Skipped when the cluster binaries are not built or not running as root.
"""

import urllib.error
import urllib.request

import pytest

import kubestack as ks

NS = "addrmode-e2e"
CONTROLLER = "switchyard.dev/addrmode-e2e"
LEASE = "addrmode-e2e"
NODE_IP = "10.244.0.1"
PORT = 18391  # a listener port nothing else on this host uses

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))

BASE = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: gateway.switchyard.dev/v1alpha1
kind: GatewayClassConfig
metadata: {{name: addrmode-e2e-nodes}}
spec:
  addressMode: NodeAddresses
  nodeAddresses: {{addressTypes: [InternalIP]}}
---
apiVersion: gateway.switchyard.dev/v1alpha1
kind: GatewayClassConfig
metadata: {{name: addrmode-e2e-lb}}
spec:
  addressMode: LoadBalancer
  loadBalancer: {{portRange: {{from: 31500, to: 31509}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: addrmode-e2e-nodes}}
spec:
  controllerName: {CONTROLLER}
  parametersRef: {{group: gateway.switchyard.dev, kind: GatewayClassConfig, name: addrmode-e2e-nodes}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: addrmode-e2e-lb}}
spec:
  controllerName: {CONTROLLER}
  parametersRef: {{group: gateway.switchyard.dev, kind: GatewayClassConfig, name: addrmode-e2e-lb}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: addrmode-e2e-missing}}
spec:
  controllerName: {CONTROLLER}
  parametersRef: {{group: gateway.switchyard.dev, kind: GatewayClassConfig, name: addrmode-e2e-nope}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: nodes, namespace: {NS}}}
spec:
  gatewayClassName: addrmode-e2e-nodes
  listeners: [{{name: http, port: {PORT}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: redirect, namespace: {NS}}}
spec:
  parentRefs: [{{name: nodes}}]
  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect: {{hostname: moved.example.com, statusCode: 302}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: lb, namespace: {NS}}}
spec:
  gatewayClassName: addrmode-e2e-lb
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
"""

CLASSES = ["addrmode-e2e-nodes", "addrmode-e2e-lb", "addrmode-e2e-missing"]
CONFIGS = ["addrmode-e2e-nodes", "addrmode-e2e-lb"]


def condition(kind, name, type_, ns=None):
    st = (ks.get(kind, name, ns) or {}).get("status") or {}
    return next((c for c in st.get("conditions") or [] if c["type"] == type_), None)


def cleanup():
    ks.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
    ks.kubectl("delete", "gatewayclass", *CLASSES, "--ignore-not-found", check=False)
    ks.kubectl("delete", "gatewayclassconfig", *CONFIGS, "--ignore-not-found", check=False)
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def stack():
    print("\n" + ks.cluster_up())
    ks.install_gateway_class()  # also the namespace of the Lease
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s")
    cleanup()
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    # The pool is not used by these classes (each has its own mode).
    s = ks.KubeStack("127.0.0.1/32")
    try:
        c = s.controller("addrmode-a", lease_secs=4, address_mode="LoadBalancer",
                         extra=[f"--controller-name={CONTROLLER}", f"--lease-name={LEASE}"])
        s.envoy(c)
        yield s
    except BaseException:
        print(s.diagnostics())
        raise
    finally:
        s.stop()
        cleanup()


def test_node_addresses_gateway_reports_the_node_and_answers_on_it(stack):
    ks.wait(lambda: (condition("gatewayclass", "addrmode-e2e-nodes", "Accepted") or {}).get("status") == "True",
            30, "GatewayClass addrmode-e2e-nodes Accepted")
    ks.wait(lambda: (condition("gateway", "nodes", "Programmed", NS) or {}).get("status") == "True",
            30, "Gateway nodes Programmed")
    gw = ks.get("gateway", "nodes", NS)
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": NODE_IP}]
    svc = ks.get("service", "switchyard-nodes", NS)
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "switchyard-envoy"}
    assert [(p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [(PORT, PORT)]

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **kw):
            return None

    def answered():
        try:
            urllib.request.build_opener(NoRedirect).open(f"http://{NODE_IP}:{PORT}/x", timeout=2)
        except urllib.error.HTTPError as e:
            return e.code == 302 and e.headers.get("location", "").startswith("http://moved.example.com")
        except OSError:
            return False
        return False

    ks.wait(answered, 30, f"Envoy answering on {NODE_IP}:{PORT} with the route's redirect")


def test_load_balancer_gateway_waits_for_its_ingress(stack):
    ks.wait(lambda: (ks.get("service", "switchyard-lb", NS) or {}).get("spec", {}).get("type") == "LoadBalancer",
            30, "Service switchyard-lb of type LoadBalancer")
    svc = ks.get("service", "switchyard-lb", NS)
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "switchyard-envoy"}
    [port] = svc["spec"]["ports"]
    assert port["port"] == 80 and 31500 <= port["targetPort"] <= 31509, port
    ks.wait(lambda: (condition("gateway", "lb", "Programmed", NS) or {}).get("reason") == "AddressNotAssigned",
            30, "Gateway lb AddressNotAssigned")
    c = condition("gateway", "lb", "Programmed", NS)
    assert c["status"] == "False"
    assert f"waiting for a load balancer address for Service {NS}/switchyard-lb" in c["message"]


def test_a_missing_class_config_is_invalid_parameters(stack):
    ks.wait(lambda: (condition("gatewayclass", "addrmode-e2e-missing", "Accepted") or {}).get("reason")
            == "InvalidParameters", 30, "GatewayClass addrmode-e2e-missing InvalidParameters")
    c = condition("gatewayclass", "addrmode-e2e-missing", "Accepted")
    assert c["status"] == "False"
    assert 'GatewayClassConfig "addrmode-e2e-nope" not found' in c["message"]
