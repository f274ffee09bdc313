"""A refused certificate rotation in Kubernetes mode, on the local cluster:
the Secret of an HTTPS listener is updated (kubectl) to an expired
certificate → the listener says ResolvedRefs=False/InvalidCertificateRef
naming the Secret and the last good notAfter while staying Programmed in
our translation, the lease holder publishes one Warning Event
InvalidCertificateRotation on the Gateway (with its uid), and the metrics
switchyard_certificate_last_good_served / _rotations_rejected_total follow.
A valid rotation clears the condition and the gauge.

Isolated: its own GatewayClass, controllerName, Lease and namespace. No Envoy
is needed (status and Events come from the translation).

Skipped when the cluster binaries are not built or not running as root.
"""

import json
import sys
import tempfile
from pathlib import Path

import pytest

import kubestack as ks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_certificates import make_cert  # noqa: E402  (one way to make certificates)

NS = "certs-e2e"
CLASS = "certs-e2e"
CONTROLLER = "switchyard.dev/certs-e2e"
LEASE = "certs-e2e"
POOL = "127.0.7.0/24"
REASON = "InvalidCertificateRotation"

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
  listeners:
  - {{name: https, port: 443, protocol: HTTPS, tls: {{certificateRefs: [{{name: cert}}]}}}}
"""


def apply_secret(crt, key):
    ind = lambda t: "".join(f"    {line}\n" for line in t.splitlines())
    ks.kubectl("apply", "-f", "-", stdin=(
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: cert, namespace: {NS}}}\ntype: kubernetes.io/tls\n"
        f"stringData:\n  tls.crt: |\n{ind(crt)}  tls.key: |\n{ind(key)}"))


def listener_condition(ctype):
    gw = ks.get("gateway", "web", NS) or {}
    for l in (gw.get("status") or {}).get("listeners") or []:
        if l.get("name") == "https":
            for c in l.get("conditions") or []:
                if c.get("type") == ctype:
                    return c
    return None


def series(text, family, **labels):
    """The value of the series of `family` carrying these labels (None: absent)."""
    for line in text.splitlines():
        k, _, v = line.rpartition(" ")
        if k.startswith(family + "{") and all(f'{a}="{b}"' in k for a, b in labels.items()):
            return float(v)
    return None


def rotation_events():
    out = json.loads(ks.kubectl("get", "events", "-n", NS, "-o", "json"))
    return [e for e in out.get("items", []) if e.get("reason") == REASON]


@pytest.fixture(scope="module")
def stack():
    print("\n" + ks.cluster_up())
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s")
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    ks.install_gateway_class()  # the lease namespace
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    s = ks.KubeStack(POOL)
    try:
        s.controller("certs-a", lease_secs=4,
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


def test_refused_rotation_warns_on_the_gateway(stack):
    c = stack.controllers[0]
    d = Path(tempfile.mkdtemp(prefix="certs-kube-", dir=stack.workdir))
    good = make_cert(d, "good", days=90)
    apply_secret(*good)
    ks.wait(c.is_leader, 30, "the controller to hold its lease")
    ks.wait(lambda: (x := listener_condition("ResolvedRefs")) and x["status"] == "True", 30,
            "listener https ResolvedRefs=True")
    uid = ks.get("gateway", "web", NS)["metadata"]["uid"]
    assert series(c.metrics(), "switchyard_certificate_expiry_timestamp_seconds", namespace=NS, name="cert",
                     gateway=f"{NS}/web", listener="https") is not None

    expired = make_cert(d, "expired", start="20200101000000Z", end="20200201000000Z")
    apply_secret(*expired)
    cond = ks.wait(lambda: (x := listener_condition("ResolvedRefs")) and x["status"] == "False" and x, 30,
                   "listener https ResolvedRefs=False")
    assert cond["reason"] == "InvalidCertificateRef", cond
    assert f"Secret {NS}/cert" in cond["message"] and "expired at 2020-02-01T00:00:00Z" in cond["message"], cond
    assert "last good certificate" in cond["message"], cond

    events = ks.wait(rotation_events, 30, f"a {REASON} Event")
    assert len(events) == 1, events
    ev = events[0]
    assert ev["type"] == "Warning"
    assert ev["involvedObject"]["kind"] == "Gateway" and ev["involvedObject"]["name"] == "web", ev
    assert ev["involvedObject"].get("uid") == uid, ev
    assert f"Secret {NS}/cert was refused" in ev["message"] and "listener https" in ev["message"], ev
    metrics = c.metrics()
    assert series(metrics, "switchyard_certificate_last_good_served", namespace=NS, name="cert") == 1
    assert series(metrics, "switchyard_certificate_rotations_rejected_total", namespace=NS, name="cert") == 1

    # A valid rotation clears it.
    apply_secret(*make_cert(d, "next", days=90))
    ks.wait(lambda: (x := listener_condition("ResolvedRefs")) and x["status"] == "True", 30,
            "listener https ResolvedRefs=True again")
    assert ks.wait(lambda: series(c.metrics(), "switchyard_certificate_last_good_served",
                                     namespace=NS, name="cert") == 0, 10, "last_good_served == 0")
    assert len(rotation_events()) == 1
