"""Kubernetes mode end to end: the local cluster from real parts (etcd,
kube-apiserver, kube-controller-manager, process kubelet), `switchyard
controller` replicas, and a real Envoy started like the DaemonSet (bootstrap
rendered by the DaemonSet's init script from `kubectl kustomize`). Objects go
in with kubectl; traffic goes to echo Pods through the Gateway's address.

Skipped when the cluster binaries are not built or not running as root.
"""

import http.client
import json
import time
from collections import Counter

import pytest

import harness
import kubestack as ks

POOL = "127.0.1.0/24"  # Gateway addresses; distinct from the standalone tests' 127.0.0.x
NS = "kube-e2e"
NS_BACKEND = "kube-e2e-backend"
NS_SELECTED = "kube-e2e-selected"

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))


def echo_app(ns, name, replicas=2):
    return f"""
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
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
metadata: {{name: {name}, namespace: {ns}}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""


BASE = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS_BACKEND}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS_SELECTED}, labels: {{gateway-access: granted}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: {NS}}}
spec:
  gatewayClassName: switchyard
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: Same}}}}
  - name: selected
    port: 8081
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {{matchLabels: {{gateway-access: granted}}}}
""" + echo_app(NS, "echo") + echo_app(NS, "echo-v2", replicas=1) + echo_app(NS_BACKEND, "shared", replicas=1) \
    + echo_app(NS_SELECTED, "team", replicas=1)


def route(name, host, backends, ns=NS, section=None, filters=""):
    """An HTTPRoute for `host` on Gateway kube-e2e/web; backends: [(name, namespace or None)]."""
    refs = "".join(f"\n    - {{name: {b}, port: 80{', namespace: ' + bns if bns else ''}}}" for b, bns in backends)
    sec = f", sectionName: {section}" if section else ""
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{name: web, namespace: {NS}{sec}}}]
  hostnames: [{host}]
  rules:
  - backendRefs:{refs}{filters}
"""


GRANT = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: from-kube-e2e, namespace: {NS_BACKEND}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {NS}}}]
  to: [{{group: "", kind: Service, name: shared}}]
"""


def conditions(obj, parent=None):
    """{type: condition} of a Gateway, or of a route's entry for our controller."""
    st = (obj or {}).get("status") or {}
    if "parents" in st or parent is not None:
        entries = [p for p in st.get("parents") or [] if p.get("controllerName") == ks.CONTROLLER_NAME]
        st = entries[0] if entries else {}
    return {c["type"]: c for c in st.get("conditions") or []}


def has(obj, ctype, status, reason=None, generation=True):
    c = conditions(obj).get(ctype)
    ok = c is not None and c["status"] == status and (reason is None or c["reason"] == reason)
    if ok and generation:
        ok = c.get("observedGeneration") == obj["metadata"]["generation"]
    return ok


class Traffic:
    """HTTP to the Gateway's address; a load loop that counts every outcome."""

    def __init__(self, addr):
        self.addr = addr

    def get(self, host, port=80, path="/"):
        c = http.client.HTTPConnection(self.addr, port, timeout=5)
        try:
            c.request("GET", path, headers={"Host": host})
            r = c.getresponse()
            raw = r.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = None
            return r.status, body
        finally:
            c.close()

    def wait(self, host, pred, timeout=10, port=80, what=None):
        return ks.wait(lambda: (lambda r: r if pred(*r) else None)(self.get(host, port)), timeout,
                       what or f"{host}:{port} to answer as expected", interval=0.01)

    def load(self, host, threads=4):
        """Starts keep-alive clients; returns (finish() → Counter of outcomes, the live Counter)."""
        finish = harness.load(self.addr, 80, host, threads)
        return finish, finish.results


class Kube:
    """What the tests get: the stack (controllers, Envoys) and traffic to the Gateway."""

    def __init__(self, stack, traffic):
        self.stack, self.traffic = stack, traffic

    def __iter__(self):
        return iter((self.stack, self.traffic))

    def diagnostics(self):
        return self.stack.diagnostics()


@pytest.fixture(scope="module")
def kube(request):
    print("\n" + ks.cluster_up())
    ks.install_gateway_class()
    for ns in (NS, NS_BACKEND, NS_SELECTED):
        ks.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=90s")
    ks.kubectl("delete", "lease", "switchyard-controller", "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    stack = ks.KubeStack(POOL)
    try:
        stack.controller("replica-a", lease_secs=4)
        stack.envoy(stack.controllers[0])
        ks.kubectl("apply", "-f", "-", stdin=BASE)
        ks.kubectl("apply", "-f", "-", stdin=route("app", "app.example.com", [("echo", None)]))
        for ns, app in ((NS, "echo"), (NS, "echo-v2"), (NS_BACKEND, "shared"), (NS_SELECTED, "team")):
            ks.kubectl("rollout", "status", f"deployment/{app}", "-n", ns, "--timeout=90s", timeout=100)
        gw = ks.wait(lambda: (lambda g: g if (g.get("status") or {}).get("addresses") else None)(
            ks.get("gateway", "web", NS)), 30, "an address on Gateway web")
        yield Kube(stack, Traffic(gw["status"]["addresses"][0]["value"]))
    except BaseException:
        print(stack.diagnostics())
        raise
    finally:
        stack.stop()
        for ns in (NS, NS_BACKEND, NS_SELECTED):
            ks.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)


def test_status_and_traffic_to_pods(kube):
    stack, traffic = kube
    gw = ks.wait(lambda: (lambda g: g if has(g, "Accepted", "True", "Accepted") and
                          has(g, "Programmed", "True", "Programmed") else None)(ks.get("gateway", "web", NS)),
                 30, "Gateway web Accepted and Programmed (Envoy ACKed)")
    addr = gw["status"]["addresses"][0]
    assert addr["value"].startswith("127.0.1.") and addr.get("type", "IPAddress") == "IPAddress", addr
    listeners = {l["name"]: l for l in gw["status"]["listeners"]}
    assert listeners["http"]["attachedRoutes"] == 1, listeners
    lc = {c["type"]: c for c in listeners["http"]["conditions"]}
    for t, reason in (("Accepted", "Accepted"), ("ResolvedRefs", "ResolvedRefs"), ("Programmed", "Programmed"),
                      ("Conflicted", "NoConflicts")):
        assert lc[t]["reason"] == reason and lc[t]["observedGeneration"] == gw["metadata"]["generation"], lc[t]

    rt = ks.wait(lambda: (lambda r: r if has(r, "Accepted", "True", "Accepted") and
                          has(r, "ResolvedRefs", "True", "ResolvedRefs") else None)(
        ks.get("httproute", "app", NS)), 20, "HTTPRoute app Accepted and ResolvedRefs")
    parent = [p for p in rt["status"]["parents"] if p["controllerName"] == ks.CONTROLLER_NAME][0]
    assert parent["parentRef"]["name"] == "web"

    gwc = ks.get("gatewayclass", "switchyard")
    assert has(gwc, "Accepted", "True", "Accepted"), gwc["status"]
    assert has(gwc, "SupportedVersion", "True"), gwc["status"]

    pods = {p["metadata"]["name"] for p in json.loads(ks.kubectl("get", "pods", "-n", NS, "-l", "app=echo",
                                                                 "-o", "json"))["items"]}
    seen = Counter()
    traffic.wait("app.example.com", lambda s, b: s == 200, timeout=10)
    for _ in range(40):
        status, body = traffic.get("app.example.com")
        assert status == 200, (status, body)
        seen[body["name"]] += 1
    assert set(seen) == pods, f"requests reached {dict(seen)}, Pods are {pods}"


def test_route_edit_under_load_loses_no_request(kube):
    stack, traffic = kube
    host = "edit.example.com"
    ks.kubectl("apply", "-f", "-", stdin=route("edit", host, [("echo", None)]))
    traffic.wait(host, lambda s, b: s == 200 and b["name"].startswith("echo-") and not b["name"].startswith("echo-v2"))
    finish, results = traffic.load(host)
    latencies = []
    try:
        for i in range(6):
            backend = "echo-v2" if i % 2 == 0 else "echo"
            header = f"""
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{set: [{{name: x-edit, value: "v{i}"}}]}}"""
            t0 = time.time()
            ks.kubectl("apply", "-f", "-", stdin=route("edit", host, [(backend, None)], filters=header))
            traffic.wait(host, lambda s, b: s == 200 and b["name"].startswith(backend + "-")
                         and (backend == "echo-v2" or not b["name"].startswith("echo-v2")), timeout=5)
            latencies.append(time.time() - t0)
            time.sleep(0.2)
    finally:
        counts = finish()
    assert sum(counts.values()) > 100, counts
    assert set(counts) == {200}, f"non-200 responses during route edits: {dict(counts)}"
    print(f"\nroute edits: kubectl apply → served in {[round(x * 1000) for x in latencies]} ms; "
          f"{sum(counts.values())} requests, all 200")
    ks.kubectl("delete", "httproute", "edit", "-n", NS)


def test_reference_grant_delete_cuts_and_restore_returns(kube):
    stack, traffic = kube
    host = "shared.example.com"
    ks.kubectl("apply", "-f", "-", stdin=GRANT)
    ks.kubectl("apply", "-f", "-", stdin=route("cross", host, [("shared", NS_BACKEND)]))
    traffic.wait(host, lambda s, b: s == 200 and b["name"].startswith("shared-"))
    ks.wait(lambda: has(ks.get("httproute", "cross", NS), "ResolvedRefs", "True", "ResolvedRefs"), 10,
            "ResolvedRefs=True")

    t0 = time.time()
    ks.kubectl("delete", "referencegrant", "from-kube-e2e", "-n", NS_BACKEND)
    traffic.wait(host, lambda s, b: s == 500, timeout=1.0, what="HTTP 500 within 1 s of the grant's deletion")
    cut = time.time() - t0
    rt = ks.wait(lambda: (lambda r: r if has(r, "ResolvedRefs", "False", "RefNotPermitted") else None)(
        ks.get("httproute", "cross", NS)), 10, "ResolvedRefs=False/RefNotPermitted")
    assert NS_BACKEND in conditions(rt)["ResolvedRefs"]["message"], conditions(rt)
    # The trust change is announced as an Event on the route, naming the grant.
    events = ks.wait(lambda: [e for e in json.loads(ks.kubectl(
        "get", "events.events.k8s.io", "-n", NS, "-o", "json"))["items"]
        if e.get("reason") == "ReferenceGrantRemoved" and e["regarding"]["name"] == "cross"], 10,
        "a ReferenceGrantRemoved Event")
    assert events[0]["type"] == "Warning"

    t0 = time.time()
    ks.kubectl("apply", "-f", "-", stdin=GRANT)
    traffic.wait(host, lambda s, b: s == 200 and b["name"].startswith("shared-"), timeout=2)
    restored = time.time() - t0
    ks.wait(lambda: has(ks.get("httproute", "cross", NS), "ResolvedRefs", "True", "ResolvedRefs"), 10,
            "ResolvedRefs=True again")
    print(f"\ngrant deleted → 500 in {cut * 1000:.0f} ms; restored → 200 in {restored * 1000:.0f} ms")
    ks.kubectl("delete", "httproute", "cross", "-n", NS)


def test_namespace_label_removed_detaches_route(kube):
    stack, traffic = kube
    host = "team.example.com"
    ks.kubectl("apply", "-f", "-", stdin=route("team", host, [("team", None)], ns=NS_SELECTED, section="selected"))
    traffic.wait(host, lambda s, b: s == 200 and b["name"].startswith("team-"), port=8081)
    try:
        ks.kubectl("label", "namespace", NS_SELECTED, "gateway-access-")
        rt = ks.wait(lambda: (lambda r: r if has(r, "Accepted", "False", "NotAllowedByListeners") else None)(
            ks.get("httproute", "team", NS_SELECTED)), 10, "Accepted=False/NotAllowedByListeners")
        assert NS_SELECTED in conditions(rt)["Accepted"]["message"], conditions(rt)["Accepted"]
        traffic.wait(host, lambda s, b: s == 404, port=8081, timeout=2)
        gw = ks.get("gateway", "web", NS)
        assert {l["name"]: l["attachedRoutes"] for l in gw["status"]["listeners"]}["selected"] == 0
    finally:
        ks.kubectl("label", "namespace", NS_SELECTED, "gateway-access=granted", "--overwrite")
    traffic.wait(host, lambda s, b: s == 200, port=8081, timeout=5)
    ks.wait(lambda: has(ks.get("httproute", "team", NS_SELECTED), "Accepted", "True", "Accepted"), 10,
            "Accepted=True again")


def test_controller_killed_envoy_serves_restart_rewrites_nothing(kube):
    stack, traffic = kube
    a = stack.controllers[0]
    envoy = stack.envoys[0]
    host = "app.example.com"
    # Settle: every status written, Envoy in sync.
    ks.wait(lambda: has(ks.get("gateway", "web", NS), "Programmed", "True"), 20, "Gateway Programmed")
    before_rv = {k: ks.get(*k)["metadata"]["resourceVersion"] for k in
                 (("gateway", "web", NS), ("httproute", "app", NS), ("gatewayclass", "switchyard", None))}
    churn = ("listener_manager.listener_modified", "listener_manager.listener_removed",
             "listener_manager.listener_added", "cluster_manager.cluster_modified", "cluster_manager.cluster_removed")
    stats_before = envoy.stats(*churn)
    finish, results = traffic.load(host)
    try:
        a.kill()
        time.sleep(2)  # Envoy alone: keeps serving its last configuration
        alone = sum(results.values())
        a.start()
        ks.wait(a.ready, 30, "the restarted controller to be ready")
        ks.wait(lambda: a.is_leader(), 15, "the restarted controller to hold the Lease")
        ks.wait(lambda: json.loads(a.get("/debug/nodes")), 15, "Envoy to reconnect")
        time.sleep(6)  # longer than the Programmed grace (5 s): any unwanted write or push shows
    finally:
        counts = finish()
    assert alone > 50, f"only {alone} requests while the controller was down"
    assert set(counts) == {200}, f"non-200 responses around the controller restart: {dict(counts)}"
    assert a.status_writes() == 0, "the restarted controller rewrote status:\n" + a.metrics()
    after_rv = {k: ks.get(*k)["metadata"]["resourceVersion"] for k in before_rv}
    assert after_rv == before_rv, "objects changed across the controller restart"
    assert envoy.stats(*churn) == stats_before, "Envoy's listeners or clusters changed (config flap)"


def test_two_replicas_only_the_lease_holder_writes_status(kube):
    stack, traffic = kube
    a = stack.controllers[0]
    ks.wait(lambda: a.is_leader(), 15, "replica-a to lead")
    b = stack.controller("replica-b", lease_secs=4)
    ks.wait(b.ready, 30, "replica-b to be ready")
    # Both serve ADS: an Envoy on replica-b gets the same configuration.
    envoy_b = stack.envoy(b, name="envoy-b")
    ks.wait(lambda: json.loads(b.get("/debug/nodes")), 15, "envoy-b to connect to replica-b")
    writes_a, writes_b = a.status_writes(), b.status_writes()
    ks.kubectl("apply", "-f", "-", stdin=route("ha", "ha.example.com", [("echo", None)]))
    ks.wait(lambda: has(ks.get("httproute", "ha", NS), "Accepted", "True", "Accepted"), 10, "route ha Accepted")
    time.sleep(1)
    assert a.status_writes() > writes_a, "the leader wrote no status"
    assert b.status_writes() == writes_b == 0, "the standby replica wrote status"
    assert not b.is_leader()

    # The leader dies: replica-b takes the Lease within its duration and writes status.
    a.kill()
    t0 = time.time()
    ks.wait(b.is_leader, 10, "replica-b to take the Lease")
    took = time.time() - t0
    ks.kubectl("apply", "-f", "-", stdin=route("ha", "ha2.example.com", [("echo", None)]))
    ks.wait(lambda: has(ks.get("httproute", "ha", NS), "Accepted", "True", "Accepted"), 10,
            "route ha Accepted at its new generation")
    assert b.status_writes() > 0
    print(f"\nreplica-b took the Lease {took:.1f} s after the leader was killed (lease 4 s)")
    envoy_b.stop()
    a.start()  # leave a running controller for later tests
    ks.kubectl("delete", "httproute", "ha", "-n", NS)
