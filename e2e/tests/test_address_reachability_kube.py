"""Gateway address modes on the local cluster (docs/networking.md): a request
from another network namespace than Envoy's reaches the backend Pod through
the address the Gateway reports in `status.addresses`, in each mode:

- NodeAddresses: Envoy binds the listener port on the node; the address is the
  Node's InternalIP (the bridge address 10.244.0.1); a second Gateway on the
  same port is reported, never sent to Envoy;
- VirtualIP: an address from the class's pool; Envoy binds it with freebind
  before the address exists on the node, and serves as soon as it is
  announced (here: put on the host, as keepalived or MetalLB would);
- LoadBalancer: a `type: LoadBalancer` Service per Gateway; until a load
  balancer fills its ingress the Gateway is `Programmed=False/
  AddressNotAssigned` with no address (never 127.0.0.1); then e2e/lbfiller.py
  (a stand-in for MetalLB or a cloud) assigns one and forwards to Envoy's
  per-Gateway port.

Isolated: its own controllerName, GatewayClasses, Lease and namespace; one
controller and one Envoy started like the DaemonSet (e2e/kubestack.py).
Skipped when the cluster binaries are not built or not running as root.
"""

import json

import pytest

import kubestack as ks

NS = "addrmodes-e2e"
CONTROLLER = "switchyard.dev/addrmodes-e2e"
LEASE = "addrmodes-e2e"
NODE_IP = "10.244.0.1"          # e2e-node's InternalIP (bridge sybr0)
VIP_POOL = "10.245.1.0/29"      # the VirtualIP class's pool
LB_POOL = "10.245.2.0/28"       # what the test load balancer hands out
LB_PORTS = (28500, 28599)       # Envoy's per-Gateway ports in LoadBalancer mode
NODE_PORT = 28481               # NodeAddresses listener port (bound on the node)
VIP_PORT = 28482
LB_PORT = 8088                  # the LoadBalancer Service's port (Envoy listens on LB_PORTS)

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))


def config(name, spec):
    return f"""
---
apiVersion: gateway.switchyard.dev/v1alpha1
kind: GatewayClassConfig
metadata: {{name: {name}}}
spec: {spec}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {name}}}
spec:
  controllerName: {CONTROLLER}
  parametersRef: {{group: gateway.switchyard.dev, kind: GatewayClassConfig, name: {name}}}
"""


def gateway(name, cls, port):
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: {NS}}}
spec:
  gatewayClassName: {cls}
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: {name}}}]
  hostnames: [{name}.example.com]
  rules: [{{backendRefs: [{{name: echo, port: 80}}]}}]
"""


BASE = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: switchyard-echo:dev
        args: ["--listen", "0.0.0.0:8080"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports: [{{containerPort: 8080, name: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: http}}]
""" + config("am-node", "{addressMode: NodeAddresses}") \
    + config("am-vip", f"{{addressMode: VirtualIP, virtualIP: {{pool: {VIP_POOL}}}}}") \
    + config("am-lb", f"{{addressMode: LoadBalancer, loadBalancer: {{portRange: {{from: {LB_PORTS[0]}, "
                      f"to: {LB_PORTS[1]}}}}}}}")

CLASSES = ("am-node", "am-vip", "am-lb")


def gw_status(name):
    return (ks.get("gateway", name, NS) or {}).get("status") or {}


def condition(status, type_):
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), None)


def programmed(name):
    st = gw_status(name)
    c = condition(st, "Programmed")
    return st if c and c["status"] == "True" else None


def addresses(st):
    return [a["value"] for a in st.get("addresses") or []]


def answered_by_echo(client, url, host):
    code, body = client.curl(url, host=host)
    if code != 200:
        return None
    try:
        return json.loads(body)
    except ValueError:
        return None


@pytest.fixture(scope="module")
def stack():
    print("\n" + ks.cluster_up())
    ks.install_gateway_class()  # also the namespace of the Lease
    ks.kubectl("apply", "--server-side", "-k", str(ks.ROOT / "deploy" / "crds" / "switchyard"))
    ks.kubectl("wait", "--for=condition=Established", "crd/gatewayclassconfigs.gateway.switchyard.dev",
               "--timeout=30s")
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s")
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    s = ks.KubeStack("10.245.9.0/29")
    filler = ks.LbFiller(LB_POOL, s.workdir)
    s.filler = filler
    try:
        with ks.ClientNetns("syaddrmode") as client:
            c = s.controller("addrmodes-a", lease_secs=4,
                             extra=[f"--controller-name={CONTROLLER}", f"--lease-name={LEASE}"])
            s.envoy(c)
            ks.kubectl("rollout", "status", "deployment/echo", "-n", NS, "--timeout=90s", timeout=100)
            s.client = client
            yield s
    except BaseException:
        print(s.diagnostics())
        print("--- lbfiller\n" + filler.log_tail())
        raise
    finally:
        filler.stop()
        s.stop()
        ks.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
        for cls in CLASSES:
            ks.kubectl("delete", "gatewayclass", cls, "--ignore-not-found", check=False)
            ks.kubectl("delete", "gatewayclassconfig", cls, "--ignore-not-found", check=False)
        ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found", check=False)


def test_gateway_classes_accept_their_configs(stack):
    for cls in CLASSES:
        ks.wait(lambda: (lambda c: c and c["status"] == "True")(condition(
            (ks.get("gatewayclass", cls) or {}).get("status") or {}, "Accepted")), 30, f"class {cls} Accepted")


def test_node_addresses_reach_the_backend_through_the_node_address(stack):
    ks.kubectl("apply", "-f", "-", stdin=gateway("gw-node", "am-node", NODE_PORT))
    st = ks.wait(lambda: programmed("gw-node"), 30, "gw-node Programmed")
    assert addresses(st) == [NODE_IP], st
    body = ks.wait(lambda: answered_by_echo(stack.client, f"http://{NODE_IP}:{NODE_PORT}/", "gw-node.example.com"),
                   30, "a request from another network namespace through the node address")
    assert body["name"].startswith("echo-"), body

    # A second Gateway on the same port of every node: reported, the first keeps serving.
    ks.kubectl("apply", "-f", "-", stdin=gateway("gw-node2", "am-node", NODE_PORT))

    def reported():
        st = gw_status("gw-node2")
        lst = next((l for l in st.get("listeners") or [] if l["name"] == "http"), None)
        c = condition(lst or {}, "Accepted")
        return (st, lst, c) if c and c["status"] == "False" else None

    st2, lst, c = ks.wait(reported, 30, "gw-node2's listener reported (the port is taken on every node)")
    assert c["reason"] == "PortUnavailable" and f"{NS}/gw-node" in c["message"], c
    assert condition(lst, "Programmed")["status"] == "False", lst
    assert condition(st2, "Programmed")["status"] == "False", st2
    assert condition(gw_status("gw-node"), "Programmed")["status"] == "True"
    for _ in range(3):
        assert answered_by_echo(stack.client, f"http://{NODE_IP}:{NODE_PORT}/", "gw-node.example.com")
    assert stack.envoys[0].stats("listener_manager.lds.update_rejected")["listener_manager.lds.update_rejected"] == 0
    ks.kubectl("delete", "gateway", "gw-node2", "-n", NS)


def test_virtual_ip_binds_before_the_address_arrives_and_serves_once_announced(stack):
    import ipaddress
    import subprocess

    ks.kubectl("apply", "-f", "-", stdin=gateway("gw-vip", "am-vip", VIP_PORT))
    st = ks.wait(lambda: programmed("gw-vip"), 30, "gw-vip Programmed")
    (vip,) = addresses(st)
    assert ipaddress.ip_address(vip) in ipaddress.ip_network(VIP_POOL), st
    # Envoy has the listener although no interface carries the address yet (freebind).
    ks.wait(lambda: f"{vip}:{VIP_PORT}" in stack.envoys[0].admin("/listeners"), 30,
            f"Envoy listening on {vip}:{VIP_PORT}")
    assert stack.envoys[0].stats("listener_manager.listener_create_failure")[
        "listener_manager.listener_create_failure"] == 0
    # Announce it (what keepalived / kube-vip / MetalLB do on the node that holds the VIP).
    subprocess.run(["ip", "addr", "add", f"{vip}/32", "dev", "lo"], check=True, capture_output=True)
    try:
        body = ks.wait(lambda: answered_by_echo(stack.client, f"http://{vip}:{VIP_PORT}/", "gw-vip.example.com"),
                       30, "a request through the virtual IP")
        assert body["name"].startswith("echo-"), body
    finally:
        subprocess.run(["ip", "addr", "del", f"{vip}/32", "dev", "lo"], capture_output=True)


def test_load_balancer_address_comes_from_the_service_ingress(stack):
    ks.kubectl("apply", "-f", "-", stdin=gateway("gw-lb", "am-lb", LB_PORT))
    svc = ks.wait(lambda: (lambda s: s if s and s["spec"].get("type") == "LoadBalancer" else None)(
        ks.get("service", "switchyard-gw-lb", NS)), 30, "Service switchyard-gw-lb of type LoadBalancer")
    (port,) = svc["spec"]["ports"]
    assert port["port"] == LB_PORT and LB_PORTS[0] <= port["targetPort"] <= LB_PORTS[1], port
    assert svc["spec"]["selector"] == {"app.kubernetes.io/name": "switchyard-envoy"}, svc["spec"]

    # No load balancer yet: no address, never a node-local one; Programmed=False/AddressNotAssigned.
    def not_assigned():
        c = condition(gw_status("gw-lb"), "Programmed")
        return c if c and c["status"] == "False" and c["reason"] == "AddressNotAssigned" else None

    c = ks.wait(not_assigned, 30, "gw-lb Programmed=False/AddressNotAssigned")
    assert "switchyard-gw-lb" in c["message"], c
    assert addresses(gw_status("gw-lb")) == [], gw_status("gw-lb")

    stack.filler.start()
    st = ks.wait(lambda: programmed("gw-lb"), 30, "gw-lb Programmed once the load balancer assigned an address")
    (addr,) = addresses(st)
    ingress = ks.get("service", "switchyard-gw-lb", NS)["status"]["loadBalancer"]["ingress"]
    assert [i["ip"] for i in ingress] == [addr], (ingress, st)
    body = ks.wait(lambda: answered_by_echo(stack.client, f"http://{addr}:{LB_PORT}/", "gw-lb.example.com"),
                   30, "a request through the load balancer address")
    assert body["name"].startswith("echo-"), body
