"""xDS mTLS and per-node authorization, end to end: real switchyard serving
xDS over mTLS to a real Envoy (fleet identity), and switchyard-xds-probe
playing the other clients (an attacker without a certificate, one from
another CA, a node entitled to a single Gateway, a node sending forged NACKs).
"""

import base64
import json
import ssl
import socket
import subprocess
import time
import urllib.request

import pytest

import harness
from conftest import start_stack

PROBE = harness.SWITCHYARD.parent / "switchyard-xds-probe"
TEAM_B = """
apiVersion: v1
kind: Secret
metadata: {{name: tls-b, namespace: team-b}}
type: kubernetes.io/tls
data: {{tls.crt: {crt}, tls.key: {key}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: secure, namespace: team-b}}
spec:
  gatewayClassName: switchyard
  addresses: [{{type: IPAddress, value: 127.0.0.3}}]
  listeners:
  - name: https
    port: {port}
    protocol: HTTPS
    hostname: b.example.com
    tls: {{certificateRefs: [{{name: tls-b}}]}}
"""


def certgen(out, *clients):
    args = [str(harness.SWITCHYARD), "certgen", "--out", str(out)]
    for c in clients:
        args += ["--client", c]
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def serving_cert(dirpath):
    key, crt = dirpath / "b.key", dirpath / "b.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=b.example.com",
                    "-addext", "subjectAltName=DNS:b.example.com"], check=True, capture_output=True, timeout=30)
    return [base64.b64encode(p.read_bytes()).decode() for p in (crt, key)]


def _configure(stack, g):
    certs = stack.dir / "certs"
    certgen(certs, "envoy=fleet", "bench-only=gateway:default/bench", "team-b=namespace:team-b")
    certgen(stack.dir / "other-ca", "envoy=fleet")
    stack.extra_args += ["--xds-tls-dir", str(certs / "server"), "--envoy-xds-tls-dir", str(certs / "envoy")]
    stack.tls_port = harness.free_port()
    stack.start_backends()
    stack.write("base.yaml", harness.gateway_manifests(
        stack.gw_port, [("svc-0", stack.backend_ports[0]), ("svc-1", stack.backend_ports[1])]))
    crt, key = serving_cert(stack.dir)
    stack.write("team-b.yaml", TEAM_B.format(crt=crt, key=key, port=stack.tls_port))
    stack.write("route.yaml", harness.route_manifest("r", "a.example.com", "svc-0"))
    stack.start_switchyard()
    g.wait_for("a.example.com", timeout=30)


@pytest.fixture(scope="module")
def sgw(request):
    yield from start_stack(request, configure=_configure, backends=2, debounce_ms=5)


def probe(stack, *args, wait_ms=1500):
    out = subprocess.run([str(PROBE), "--server", f"127.0.0.1:{stack.xds_port}", "--wait-ms", str(wait_ms), *args],
                         check=True, capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout)


def names(result, kind):
    return sorted((result.get("resources") or {}).get(kind, {}))


def test_plaintext_client_gets_nothing(sgw):
    r = probe(sgw.stack)
    assert not r["connected"] and not r.get("resources"), r


def test_client_from_another_ca_gets_nothing(sgw):
    d = sgw.stack.dir
    r = probe(sgw.stack, "--tls-dir", str(d / "other-ca" / "envoy"), "--server-ca", str(d / "certs" / "ca" / "ca.crt"))
    assert not r["connected"] and not r.get("resources"), r
    assert sgw.stack.metrics().get('switchyard_xds_tls_rejected_total{reason="handshake"}', 0) >= 1


def test_node_receives_only_the_gateways_its_certificate_names(sgw):
    d = sgw.stack.dir / "certs"
    # Claims every Gateway in its metadata; the certificate names only default/bench.
    r = probe(sgw.stack, "--tls-dir", str(d / "bench-only"), "--gateways", "team-b/secure,default/bench")
    assert r["connected"], r
    listeners = names(r, "Listener")
    assert any(str(sgw.stack.gw_port) in n for n in listeners), r
    assert not any(str(sgw.stack.tls_port) in n for n in listeners), f"a bench-only node received team-b's listener: {r}"
    assert names(r, "Secret") == [], f"a bench-only node received secrets: {r}"
    # Positive control: a node entitled to team-b does receive its certificate and key.
    r = probe(sgw.stack, "--tls-dir", str(d / "team-b"))
    secrets = r["resources"].get("Secret", {})
    assert any(v and v.get("private_key") for v in secrets.values()), r
    assert all("default/bench" not in n and str(sgw.stack.gw_port) not in n for n in names(r, "Listener")), r
    # The fleet identity (the real Envoy's) is not what the probes got: both are scoped.
    nodes = sgw.stack.admin_json("/debug/nodes")
    fleet = [n for n in nodes if n["entitled"] and n["entitled"]["fleet"]]
    assert fleet, nodes


def gateway_programmed(sgw, name, namespace):
    doc = sgw.status_obj("Gateway", name, namespace)
    return [c for c in (doc.get("status") or {}).get("conditions", []) if c["type"] == "Programmed"]


def test_forged_nack_cannot_change_another_gateways_status(sgw):
    before = gateway_programmed(sgw, "bench", "default")
    assert before and before[0]["status"] == "True", before
    d = sgw.stack.dir / "certs"
    p = subprocess.Popen([str(PROBE), "--server", f"127.0.0.1:{sgw.stack.xds_port}", "--tls-dir", str(d / "team-b"),
                          "--gateways", "default/bench", "--nack", "forged: listener default/bench is broken",
                          "--wait-ms", "3000"], stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 2.5
        seen_nack = False
        while time.time() < deadline:
            for n in sgw.stack.admin_json("/debug/nodes"):
                for t in n["types"].values():
                    nack = t.get("last_nack")
                    if nack:
                        seen_nack = True
                        assert all("default/bench" not in r for r in nack["resource_names"]), nack
            assert gateway_programmed(sgw, "bench", "default") == before
            time.sleep(0.1)
        assert seen_nack, "the probe's NACK was not recorded"
    finally:
        p.wait(timeout=10)
    assert gateway_programmed(sgw, "bench", "default") == before
    assert "forged" not in sgw.status_doc("Gateway", "bench")


def server_cert_der(stack, client_dir):
    ctx = ssl.create_default_context(cafile=str(client_dir / "ca.crt"))
    ctx.load_cert_chain(str(client_dir / "tls.crt"), str(client_dir / "tls.key"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", stack.xds_port), timeout=5) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return t.getpeercert(binary_form=True)


def envoy_client_serial(stack):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin}/certs", timeout=5) as r:
        certs = json.load(r)["certificates"]
    return {c["serial_number"].lower() for e in certs for c in e.get("cert_chain", [])}


def test_certificates_rotate_without_restart(sgw):
    stack = sgw.stack
    d = stack.dir / "certs"
    pid = stack.switchyard.pid
    old_server = server_cert_der(stack, d / "envoy")
    old_serials = envoy_client_serial(stack)
    finish = harness.load(sgw.addr, stack.gw_port, "a.example.com", threads=2)
    try:
        certgen(d, "envoy=fleet", "bench-only=gateway:default/bench", "team-b=namespace:team-b")
        new_serial = subprocess.run(["openssl", "x509", "-in", str(d / "envoy" / "tls.crt"), "-noout", "-serial"],
                                    check=True, capture_output=True, text=True).stdout.strip().split("=")[1].lower()
        deadline = time.time() + 10
        while time.time() < deadline:
            if server_cert_der(stack, d / "envoy") != old_server and new_serial in envoy_client_serial(stack):
                break
            time.sleep(0.2)
        assert server_cert_der(stack, d / "envoy") != old_server, "the xDS server still presents the old certificate"
        assert new_serial in envoy_client_serial(stack), f"Envoy still uses {old_serials}"
        # New clients authenticate with the rotated certificates.
        r = probe(stack, "--tls-dir", str(d / "team-b"))
        assert r["connected"] and names(r, "Secret"), r
        time.sleep(0.5)
    finally:
        results = finish()
    assert stack.switchyard.pid == pid and stack.switchyard.poll() is None
    assert set(results) == {200}, results


def test_a_broken_certificate_update_keeps_the_last_good_one_served(sgw):
    """A Secret update whose key does not match its certificate never reaches
    Envoy: the listener keeps serving the last good certificate and says why."""
    stack = sgw.stack

    def served_cert():
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with socket.create_connection(("127.0.0.3", stack.tls_port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="b.example.com") as t:
                return t.getpeercert(binary_form=True)

    deadline = time.time() + 10
    while True:
        try:
            good = served_cert()
            break
        except OSError:
            assert time.time() < deadline, "team-b's HTTPS listener never served"
            time.sleep(0.2)
    crt, key = serving_cert(stack.dir)  # a new pair ...
    old_crt, old_key = serving_cert(stack.dir / "certs")  # ... and the key of another one
    stack.write("team-b.yaml", TEAM_B.format(crt=crt, key=old_key, port=stack.tls_port))
    doc = sgw.wait_status("Gateway", "secure", "the last good certificate (notAfter", namespace="team-b")
    assert "InvalidCertificateRef" in doc and "does not belong" in doc, doc
    time.sleep(1)
    assert served_cert() == good
    # A good pair applies.
    stack.write("team-b.yaml", TEAM_B.format(crt=crt, key=key, port=stack.tls_port))
    sgw.wait_status("Gateway", "secure", "All references resolved", namespace="team-b")
    deadline = time.time() + 10
    while served_cert() == good:
        assert time.time() < deadline, "the new certificate was not served"
        time.sleep(0.2)
