"""Shadowed rules in Kubernetes mode, on the local cluster: the lease holder
publishes one Warning Event (reason ShadowedRule) on the route whose rule can
never match, with the route's uid (so `kubectl describe` shows it), and not
again while the rule stays shadowed; the gauge follows; conditions stay the
spec's.

Isolated from other tests on the same cluster: its own GatewayClass and
controllerName, its own Lease, its own namespace. No Envoy or Pods needed.

Skipped when the cluster binaries are not built or not running as root.
"""

import json
import time

import pytest

import kubestack as ks

NS = "shadow-e2e"
CLASS = "shadow-e2e"
CONTROLLER = "switchyard.dev/shadow-e2e"
LEASE = "shadow-e2e"
POOL = "127.0.2.0/24"

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
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: web, namespace: {NS}}}
spec:
  gatewayClassName: {CLASS}
  listeners: [{{name: http, port: 80, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: {NS}}}
spec: {{ports: [{{name: http, port: 80}}]}}
"""


def route(name, headers):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: web}}]
  hostnames: [shadow.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /api}}, headers: [{headers}]}}]
    backendRefs: [{{name: svc, port: 80}}]
"""


def shadow_events():
    out = json.loads(ks.kubectl("get", "events", "-n", NS, "-o", "json"))
    return [e for e in out.get("items", []) if e.get("reason") == "ShadowedRule"]


def gauge(controller):
    return ks.metric(controller.metrics(), "switchyard_shadowed_rules")


@pytest.fixture(scope="module")
def stack():
    print("\n" + ks.cluster_up())
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s")
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    ks.install_gateway_class()  # the lease namespace
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    s = ks.KubeStack(POOL)
    try:
        s.controller("shadow-a", lease_secs=4,
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


def test_one_warning_event_per_shadowed_rule_on_the_route(stack):
    c = stack.controllers[0]
    ks.wait(c.is_leader, 30, "the controller to hold its lease")
    ks.kubectl("apply", "-f", "-", stdin=route("a", "{name: x-team, value: a}"))
    ks.kubectl("apply", "-f", "-", stdin=route("b", "{name: X-Team, value: a}"))
    uid = ks.get("httproute", "b", NS)["metadata"]["uid"]

    events = ks.wait(shadow_events, 30, "a ShadowedRule Event")
    assert len(events) == 1, events
    ev = events[0]
    assert ev["type"] == "Warning"
    assert ev["involvedObject"]["kind"] == "HTTPRoute" and ev["involvedObject"]["name"] == "b", ev
    assert ev["involvedObject"].get("uid") == uid, ev
    assert ev["message"].startswith(
        f"rule 0 (match 0) can never match: HTTPRoute {NS}/a rule 0 match 0 (hostname shadow.example.com)"), ev
    assert ks.wait(lambda: gauge(c) == 1, 10, "switchyard_shadowed_rules == 1")

    # Conditions stay the spec's: b is Accepted.
    def accepted():
        st = (ks.get("httproute", "b", NS) or {}).get("status") or {}
        parents = [p for p in st.get("parents") or [] if p.get("controllerName") == CONTROLLER]
        return parents and any(x["type"] == "Accepted" and x["status"] == "True" for x in parents[0]["conditions"])
    ks.wait(accepted, 30, "route b Accepted=True")

    # Other changes re-translate; the rule stays shadowed: no second Event.
    ks.kubectl("annotate", "httproute", "a", "-n", NS, "touched=1", "--overwrite")
    ks.kubectl("apply", "-f", "-", stdin=route("c", "{name: x-team, value: c}"))
    ks.wait(lambda: ks.get("httproute", "c", NS).get("status"), 30, "route c status")
    time.sleep(1)
    events = shadow_events()
    assert len(events) == 1 and (events[0].get("count") or 1) == 1 and not events[0].get("series"), events

    # A more specific match: b wins its requests again.
    ks.kubectl("apply", "-f", "-", stdin=route("b", "{name: x-team, value: a}, {name: x-canary, value: '1'}"))
    assert ks.wait(lambda: gauge(c) == 0, 20, "switchyard_shadowed_rules == 0")
    assert "no longer shadowed" in c.log.read_text(errors="replace")
