"""Status as metrics and ReferenceGrant effects in Kubernetes mode, on the
local cluster (real API server, real controller): deleting a ReferenceGrant
flips the route's `switchyard_status_condition` series to
ResolvedRefs=False/RefNotPermitted, counts the grant and the route it cut
off, and publishes a Warning Event `ReferenceGrantRemoved` on the route that
names the grant; restoring the grant brings everything back.

Isolated from other tests on the same cluster: its own GatewayClass and
controllerName, its own Lease, its own namespaces. No Envoy needed (the
status and Events come from the API objects alone).
"""

import json
import re

import pytest

import kubestack as ks

NS = "sm-kube-app"
NS_BACKEND = "sm-kube-backend"
CLASS = "sm-kube-e2e"
CONTROLLER = "switchyard.dev/sm-kube-e2e"
LEASE = "sm-kube-e2e"
POOL = "127.0.13.0/24"

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))

BASE = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {CLASS}}}
spec: {{controllerName: {CONTROLLER}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS_BACKEND}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: {NS}}}
spec:
  gatewayClassName: {CLASS}
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: shared, namespace: {NS_BACKEND}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: cross, namespace: {NS}}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [sm.example.com]
  rules:
  - backendRefs: [{{name: shared, namespace: {NS_BACKEND}, port: 80}}]
"""

GRANT = f"""
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: let-app-in, namespace: {NS_BACKEND}}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: {NS}}}]
  to: [{{group: "", kind: Service}}]
"""


def route_series(c):
    """{(type, status, reason, parent)} of route `cross`'s condition series."""
    out = set()
    for line in c.metrics().splitlines():
        if not line.startswith("switchyard_status_condition{"):
            continue
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', line))
        if labels.get("kind") == "HTTPRoute" and labels.get("namespace") == NS and labels.get("name") == "cross":
            assert line.endswith(" 1"), line
            out.add((labels["type"], labels["status"], labels["reason"], labels["parent"]))
    return out


def counter(c, name, change):
    return ks.metric(c.metrics(), name, change=change)


def events(reason):
    out = json.loads(ks.kubectl("get", "events.events.k8s.io", "-n", NS, "-o", "json"))
    return [e for e in out.get("items", []) if e.get("reason") == reason and e["regarding"]["name"] == "cross"]


@pytest.fixture(scope="module")
def stack():
    print("\n" + ks.cluster_up())
    for ns in (NS, NS_BACKEND):
        ks.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=90s")
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    ks.install_gateway_class()  # the lease namespace
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    ks.kubectl("apply", "-f", "-", stdin=GRANT)
    s = ks.KubeStack(POOL)
    try:
        s.controller("sm-a", lease_secs=4, extra=[f"--controller-name={CONTROLLER}", f"--lease-name={LEASE}"])
        yield s
    except BaseException:
        print(s.diagnostics())
        raise
    finally:
        s.stop()
        for ns in (NS, NS_BACKEND):
            ks.kubectl("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)
        ks.kubectl("delete", "gatewayclass", CLASS, "--ignore-not-found", check=False)
        ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found", check=False)


def test_reference_grant_removal_flips_status_metrics_counts_and_warns(stack):
    c = stack.controllers[0]
    ks.wait(c.is_leader, 30, "the controller to hold its lease")
    parent = f"{NS}/web"
    good = {("Accepted", "True", "Accepted", parent), ("ResolvedRefs", "True", "ResolvedRefs", parent)}
    ks.wait(lambda: route_series(c) == good, 30, "route cross Accepted=True, ResolvedRefs=True series")
    assert ks.metric(c.metrics(), "switchyard_routes_unresolved_refs", kind="HTTPRoute") == 0
    assert ks.metric(c.metrics(), "switchyard_routes_accepted", kind="HTTPRoute") == 1
    assert ks.metric(c.metrics(), "switchyard_gateways_total") == 1
    removed = counter(c, "switchyard_reference_grant_changes_total", "removed")
    cut = counter(c, "switchyard_reference_grant_routes_affected_total", "removed")

    ks.kubectl("delete", "referencegrant", "let-app-in", "-n", NS_BACKEND)
    bad = {("Accepted", "True", "Accepted", parent), ("ResolvedRefs", "False", "RefNotPermitted", parent)}
    ks.wait(lambda: route_series(c) == bad, 30, "ResolvedRefs=False/RefNotPermitted series, the True one gone")
    assert counter(c, "switchyard_reference_grant_changes_total", "removed") == removed + 1
    assert counter(c, "switchyard_reference_grant_routes_affected_total", "removed") == cut + 1
    assert ks.metric(c.metrics(), "switchyard_routes_unresolved_refs", kind="HTTPRoute") == 1
    ev = ks.wait(lambda: events("ReferenceGrantRemoved"), 30, "a ReferenceGrantRemoved Event on the route")
    assert ev[0]["type"] == "Warning", ev
    assert f"ReferenceGrant {NS_BACKEND}/let-app-in removed" in ev[0]["note"], ev
    assert ev[0]["regarding"]["kind"] == "HTTPRoute" and ev[0]["regarding"]["namespace"] == NS, ev
    # The status written to the API server says the same.
    st = ks.get("httproute", "cross", NS)["status"]["parents"]
    mine = [p for p in st if p["controllerName"] == CONTROLLER]
    assert any(x["type"] == "ResolvedRefs" and x["reason"] == "RefNotPermitted" for x in mine[0]["conditions"]), st

    added = counter(c, "switchyard_reference_grant_changes_total", "added")
    let_in = counter(c, "switchyard_reference_grant_routes_affected_total", "added")
    ks.kubectl("apply", "-f", "-", stdin=GRANT)
    ks.wait(lambda: route_series(c) == good, 30, "the ResolvedRefs=True series back alone")
    assert counter(c, "switchyard_reference_grant_changes_total", "added") == added + 1
    assert counter(c, "switchyard_reference_grant_routes_affected_total", "added") == let_in + 1
    assert ks.metric(c.metrics(), "switchyard_routes_unresolved_refs", kind="HTTPRoute") == 0
    ks.wait(lambda: events("ReferencePermitted"), 30, "a ReferencePermitted Event on the route")
