"""BackendTLSPolicy end to end: real switchyard (standalone), real Envoy, an
HTTPS echo backend whose certificate is issued by `switchyard certgen`.

- the right CA and SAN → 200, over TLS (the backend saw the policy's SNI);
- a wrong hostname (SAN mismatch) → 503, counted by Envoy as a SAN failure;
- a policy whose CA ConfigMap is missing → 500 from the Gateway, and the
  plaintext backend the Service points to never sees a request;
- the policy removed → plaintext again (the user's choice);
- the Gateway's client certificate is presented to a backend that requires one.
"""

import json
import subprocess
import time
import urllib.request

import pytest

import harness
from conftest import start_stack, route

ECHO = harness.ECHO


def indent(text, n):
    return "\n".join(" " * n + line for line in text.strip().splitlines())


def service(name, port, port_name="https"):
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{ports: [{{name: {port_name}, port: 443}}]}}\n---\n"
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, "
            f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n"
            f"ports: [{{name: {port_name}, port: {port}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n")


def policy(name, svc, ca_ref, hostname, sans=""):
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: BackendTLSPolicy\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  targetRefs: [{{group: '', kind: Service, name: {svc}}}]\n"
            f"  validation:\n    caCertificateRefs: [{{group: '', kind: ConfigMap, name: {ca_ref}}}]\n"
            f"    hostname: {hostname}\n{sans}")


def tls_route(name, svc):
    return route(name, f"{name}.test", f"  - backendRefs: [{{name: {svc}, port: 443}}]\n")


def _configure(stack, g):
    d = stack.dir / "certs"
    # `switchyard certgen`: a private CA, the backend's serving certificate
    # (DNS SAN backend.test) and a client certificate for the Gateway.
    subprocess.run([str(harness.SWITCHYARD), "certgen", "--out", str(d), "--server-name", "backend.test",
                    "--client", "gw-client=gateway:default/bench"], check=True, capture_output=True, timeout=30)
    stack.https_port, stack.mtls_port = harness.free_port(), harness.free_port()
    server = d / "server"
    for args in (["--https", f"127.0.0.1:{stack.https_port}"],
                 ["--https", f"127.0.0.1:{stack.mtls_port}", "--https-client-ca", str(d / "ca" / "ca.crt")]):
        stack.procs.append(subprocess.Popen(
            [str(ECHO), *args, "--tls-cert", str(server / "tls.crt"), "--tls-key", str(server / "tls.key"),
             "--name", "secure"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    stack.start_backends()  # backend-0: the plaintext echo
    for port in (stack.https_port, stack.mtls_port):
        assert harness.wait_port("127.0.0.1", port), "https echo did not start"
    ca = (d / "ca" / "ca.crt").read_text()
    client = d / "gw-client"
    gateway = harness.gateway_manifests(stack.gw_port, []).replace(
        "allowedRoutes: {namespaces: {from: All}}}\n",
        "allowedRoutes: {namespaces: {from: All}}}\n"
        "  tls: {backend: {clientCertificateRef: {name: gw-client}}}\n")
    stack.write("base.yaml", "---\n".join([
        gateway,
        f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: backend-ca, namespace: default}}\n"
        f"data:\n  ca.crt: |\n{indent(ca, 4)}\n",
        "apiVersion: v1\nkind: Secret\nmetadata: {name: gw-client, namespace: default}\ntype: kubernetes.io/tls\n"
        f"stringData:\n  tls.crt: |\n{indent((client / 'tls.crt').read_text(), 4)}\n"
        f"  tls.key: |\n{indent((client / 'tls.key').read_text(), 4)}\n",
        service("secure", stack.https_port), service("mtls", stack.mtls_port),
        service("wrong-san", stack.https_port), service("plain", stack.backend_ports[0]),
        tls_route("secure", "secure"), tls_route("mtls", "mtls"), tls_route("wrong-san", "wrong-san"),
        tls_route("plain", "plain"),
        policy("secure", "secure", "backend-ca", "backend.test",
               "    subjectAltNames: [{type: Hostname, hostname: backend.test}]\n"),
        policy("mtls", "mtls", "backend-ca", "backend.test"),
        policy("wrong-san", "wrong-san", "backend-ca", "other.test"),
    ]))
    stack.start_switchyard()
    g.wait_for("nothing.test", pred=lambda s, b, h: s == 404, timeout=30)


@pytest.fixture(scope="module")
def btls(request):
    yield from start_stack(request, configure=_configure, backends=1, debounce_ms=5)


def wait_policy(g, name, accepted="True", timeout=10):
    """Waits until every ancestor entry of policy `name` has Accepted=`accepted`; returns the document."""
    deadline = time.time() + timeout
    doc = {}
    while time.time() < deadline:
        doc = g.status_obj("BackendTLSPolicy", name)
        anc = (doc.get("status") or {}).get("ancestors") or []
        if anc and all(any(c["type"] == "Accepted" and c["status"] == accepted for c in a["conditions"])
                       for a in anc):
            return doc
        time.sleep(0.05)
    raise AssertionError(f"BackendTLSPolicy {name}: no Accepted={accepted} within {timeout}s: {doc}")


def envoy_stat(stack, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin}/stats?format=json&filter={name}",
                                timeout=5) as r:
        stats = json.load(r).get("stats", [])
    return sum(s.get("value", 0) for s in stats if s.get("name") == name)


def test_right_ca_and_san_get_200_over_tls(btls):
    status, body, headers = btls.wait_for("secure.test", timeout=15)
    assert status == 200 and body["name"] == "secure"
    assert headers.get("x-echo-sni") == "backend.test", headers
    doc = wait_policy(btls, "secure")
    anc = doc["status"]["ancestors"]
    assert [a["ancestorRef"]["name"] for a in anc] == ["bench"]
    assert {c["type"]: c["reason"] for c in anc[0]["conditions"]} == \
        {"Accepted": "Accepted", "ResolvedRefs": "ResolvedRefs"}


def test_gateway_client_certificate_is_presented(btls):
    status, body, headers = btls.wait_for("mtls.test", timeout=15)
    assert headers.get("x-echo-client-cert") == "verified", headers
    gw = btls.status_obj("Gateway", "bench")["status"]
    rr = [c for c in gw["conditions"] if c["type"] == "ResolvedRefs"]
    assert rr and rr[0]["status"] == "True", gw["conditions"]


def test_wrong_san_gets_503_and_envoy_counts_it(btls):
    stat = "cluster.default_wrong-san_443_tls.ssl.fail_verify_san"
    status, _, headers = btls.wait_for("wrong-san.test", pred=lambda s, b, h: s == 503, timeout=15)
    assert "x-echo-name" not in headers
    deadline = time.time() + 5
    while envoy_stat(btls.stack, stat) == 0 and time.time() < deadline:
        time.sleep(0.1)
    assert envoy_stat(btls.stack, stat) > 0, f"{stat} did not count the SAN mismatch"


def test_missing_ca_never_reaches_the_plaintext_backend(btls):
    assert btls.wait_for("plain.test")[1]["name"] == "backend-0", "plaintext without a policy"
    btls.write("plain-policy.yaml", policy("plain", "plain", "does-not-exist", "backend.test"))
    try:
        # From the moment the policy is in force, not one request reaches the backend.
        btls.wait_for("plain.test", pred=lambda s, b, h: s == 500, timeout=10)
        for _ in range(20):
            status, body, headers = btls.get("plain.test")
            assert status == 500 and "x-echo-name" not in headers, (status, body)
        doc = wait_policy(btls, "plain", accepted="False")
        conds = {c["type"]: c for c in doc["status"]["ancestors"][0]["conditions"]}
        assert conds["Accepted"]["reason"] == "NoValidCACertificate"
        assert conds["ResolvedRefs"]["reason"] == "InvalidCACertificateRef"
        assert "does-not-exist" in conds["ResolvedRefs"]["message"]
        route_doc = btls.wait_condition("HTTPRoute", "plain", "ResolvedRefs", status="False")
        rr = [c for c in route_doc["status"]["parents"][0]["conditions"] if c["type"] == "ResolvedRefs"][0]
        assert rr["reason"] == "InvalidBackendTLSPolicy" and "default/plain" in rr["message"], rr
        # A CA that resolves: TLS to a plaintext backend fails the handshake (503), still never plaintext.
        btls.write("plain-policy.yaml", policy("plain", "plain", "backend-ca", "backend.test"))
        btls.wait_for("plain.test", pred=lambda s, b, h: s == 503, timeout=10)
    finally:
        btls.remove("plain-policy.yaml")
    # The policy removed: plaintext again (the user's choice).
    assert btls.wait_for("plain.test", timeout=10)[1]["name"] == "backend-0"
