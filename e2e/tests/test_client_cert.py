"""Gateway client certificate validation (`spec.tls.frontend`) end to end:
real switchyard (standalone), real Envoy, certificates from `switchyard certgen`.

Two CAs (two `certgen` runs). HTTPS listener `strict` uses the default entry
(AllowValidOnly, CA 1); `fallback` has a perPort entry with
AllowInsecureFallback (CA 1).

- strict: no client certificate → handshake fails; CA 1's client → 200;
  CA 2's client → handshake fails;
- fallback: no certificate, CA 1's and CA 2's clients → 200 (the spec: a
  connection is accepted even when the certificate is missing or fails
  verification), and the Gateway says InsecureFrontendValidationMode;
- the CA ConfigMap rotated to CA 2 → CA 2's client gets 200 and CA 1's is
  refused, without the listener changing (the CA is an SDS secret);
- the ConfigMap removed → the strict listener is not accepted
  (NoValidCACertificate) and refuses every connection; the HTTP listener
  keeps serving.
"""

import http.client
import json
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

import harness
from conftest import start_stack, route


def indent(text, n):
    return "\n".join(" " * n + line for line in text.strip().splitlines())


def ca_configmap(pem):
    return (f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: client-ca, namespace: default}}\n"
            f"data:\n  ca.crt: |\n{indent(pem, 4)}\n")


def _configure(stack, g):
    stack.ca1, stack.ca2 = stack.dir / "ca1", stack.dir / "ca2"
    for d in (stack.ca1, stack.ca2):
        # Each run makes its own CA; `app.test` is the listeners' certificate,
        # `alice` a client certificate issued by that CA.
        subprocess.run([str(harness.SWITCHYARD), "certgen", "--out", str(d), "--server-name", "app.test",
                        "--client", "alice=gateway:default/bench"], check=True, capture_output=True, timeout=30)
    stack.strict_port, stack.fallback_port = harness.free_port(), harness.free_port()
    server = stack.ca1 / "server"
    stack.start_backends()
    gateway = harness.gateway_manifests(stack.gw_port, [("svc-0", stack.backend_ports[0])]).replace(
        "allowedRoutes: {namespaces: {from: All}}}\n",
        "allowedRoutes: {namespaces: {from: All}}}\n"
        f"  - {{name: strict, port: {stack.strict_port}, protocol: HTTPS, allowedRoutes: {{namespaces: {{from: All}}}}, "
        "tls: {certificateRefs: [{name: app-cert}]}}\n"
        f"  - {{name: fallback, port: {stack.fallback_port}, protocol: HTTPS, allowedRoutes: {{namespaces: {{from: All}}}}, "
        "tls: {certificateRefs: [{name: app-cert}]}}\n"
        "  tls:\n    frontend:\n"
        "      default:\n        validation:\n"
        "          caCertificateRefs: [{group: '', kind: ConfigMap, name: client-ca}]\n"
        f"      perPort:\n      - port: {stack.fallback_port}\n        tls:\n          validation:\n"
        "            mode: AllowInsecureFallback\n"
        "            caCertificateRefs: [{group: '', kind: ConfigMap, name: client-ca}]\n", 1)
    stack.write("base.yaml", "---\n".join([
        gateway,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: app-cert, namespace: default}\ntype: kubernetes.io/tls\n"
        f"stringData:\n  tls.crt: |\n{indent((server / 'tls.crt').read_text(), 4)}\n"
        f"  tls.key: |\n{indent((server / 'tls.key').read_text(), 4)}\n",
        route("app", "app.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"),
    ]))
    stack.write("ca.yaml", ca_configmap((stack.ca1 / "ca" / "ca.crt").read_text()))
    stack.start_switchyard()
    g.wait_for("nothing.test", pred=lambda s, b, h: s == 404, timeout=30)


@pytest.fixture(scope="module")
def mtls(request):
    yield from start_stack(request, configure=_configure, backends=1, debounce_ms=5)


def https_get(stack, port, client=None):
    """GET https://app.test/ on `port` (server verified against CA 1),
    presenting `client` (a certgen client directory) if given. Returns the
    status, or the exception that ended the exchange."""
    ctx = ssl.create_default_context(cafile=str(stack.ca1 / "ca" / "ca.crt"))
    if client is not None:
        ctx.load_cert_chain(str(client / "tls.crt"), str(client / "tls.key"))
    c = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx)
    # Certificate checked against CA 1 for app.test, whatever address we dial.
    c.sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="app.test")
    try:
        c.request("GET", "/", headers={"Host": "app.test"})
        r = c.getresponse()
        r.read()
        return r.status
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return e
    finally:
        c.close()


def connect(stack, port, client=None):
    """Like https_get, but the handshake itself may fail (returned too)."""
    try:
        return https_get(stack, port, client)
    except (ssl.SSLError, ConnectionError, OSError) as e:
        return e


def wait_result(stack, port, client, want, timeout=15):
    """Polls until the outcome is `want` (200, or "refused"); returns it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = connect(stack, port, client)
        if (want == "refused" and isinstance(last, Exception)) or last == want:
            return last
        time.sleep(0.1)
    raise AssertionError(f"port {port} client {client}: wanted {want}, last {last!r}")


def refused(stack, port, client, times=5, error=ssl.SSLError):
    """The exchange fails `times` times in a row with `error` (by default a
    TLS alert: the listener is there, the handshake is what fails)."""
    for _ in range(times):
        r = connect(stack, port, client)
        assert isinstance(r, error), f"port {port} client {client}: got {r!r}, wanted {error.__name__}"


def alice(stack, ca):
    return getattr(stack, ca) / "alice"


def envoy_stat(stack, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.envoy_admin}/stats?format=json&filter={name}",
                                timeout=5) as r:
        stats = json.load(r).get("stats", [])
    return sum(s.get("value", 0) for s in stats if s.get("name") == name)


def test_strict_listener_needs_a_certificate_from_the_ca(mtls):
    st = mtls.stack
    assert wait_result(st, st.strict_port, alice(st, "ca1"), 200) == 200
    refused(st, st.strict_port, None)
    refused(st, st.strict_port, alice(st, "ca2"))
    # The HTTP listener is not targeted.
    assert mtls.wait_for("app.test")[0] == 200
    gw = mtls.wait_condition("Gateway", "bench", "InsecureFrontendValidationMode")
    listeners = {l["name"]: {c["type"]: c for c in l["conditions"]} for l in gw["status"]["listeners"]}
    for name in ("strict", "fallback", "http"):
        assert listeners[name]["Accepted"]["status"] == "True", listeners[name]
        assert listeners[name]["ResolvedRefs"]["status"] == "True", listeners[name]


def test_fallback_listener_accepts_any_client(mtls):
    st = mtls.stack
    assert wait_result(st, st.fallback_port, None, 200) == 200
    for client in (None, alice(st, "ca1"), alice(st, "ca2")):
        for _ in range(3):
            assert connect(st, st.fallback_port, client) == 200, client
    gw = mtls.status_obj("Gateway", "bench")["status"]
    c = [c for c in gw["conditions"] if c["type"] == "InsecureFrontendValidationMode"][0]
    assert c["status"] == "True" and c["reason"] == "ConfigurationChanged", c
    assert str(st.fallback_port) in c["message"], c


def test_rotated_ca_applies_without_changing_the_listener(mtls):
    st = mtls.stack
    assert wait_result(st, st.strict_port, alice(st, "ca1"), 200) == 200
    before = envoy_stat(st, "listener_manager.listener_modified")
    try:
        mtls.write("ca.yaml", ca_configmap((st.ca2 / "ca" / "ca.crt").read_text()))
        assert wait_result(st, st.strict_port, alice(st, "ca2"), 200) == 200
        refused(st, st.strict_port, alice(st, "ca1"))
        assert envoy_stat(st, "listener_manager.listener_modified") == before, \
            "a CA rotation must update the SDS secret only, not the listener (which would drain it)"
    finally:
        mtls.write("ca.yaml", ca_configmap((st.ca1 / "ca" / "ca.crt").read_text()))
    assert wait_result(st, st.strict_port, alice(st, "ca1"), 200) == 200


def test_missing_ca_configmap_refuses_instead_of_skipping_the_check(mtls):
    st = mtls.stack
    assert wait_result(st, st.strict_port, alice(st, "ca1"), 200) == 200
    mtls.remove("ca.yaml")
    try:
        doc = mtls.wait_condition("Gateway", "bench", "Accepted")
        deadline = time.time() + 10
        while time.time() < deadline:
            doc = mtls.status_obj("Gateway", "bench")
            ls = {l["name"]: {c["type"]: c for c in l["conditions"]} for l in doc["status"]["listeners"]}
            if ls["strict"]["Accepted"]["status"] == "False":
                break
            time.sleep(0.05)
        assert ls["strict"]["Accepted"]["reason"] == "NoValidCACertificate", ls["strict"]
        assert ls["strict"]["ResolvedRefs"]["reason"] == "InvalidCACertificateRef", ls["strict"]
        assert "ConfigMap default/client-ca not found" in ls["strict"]["ResolvedRefs"]["message"]
        assert ls["http"]["Accepted"]["status"] == "True"
        # Not served at all: no client gets through, not even CA 1's.
        wait_result(st, st.strict_port, alice(st, "ca1"), "refused")
        # Nothing listens on the port any more.
        refused(st, st.strict_port, None, error=ConnectionRefusedError)
        refused(st, st.fallback_port, None, error=ConnectionRefusedError)
        assert mtls.wait_for("app.test")[0] == 200, "the HTTP listener keeps serving"
    finally:
        mtls.write("ca.yaml", ca_configmap((st.ca1 / "ca" / "ca.crt").read_text()))
    assert wait_result(st, st.strict_port, alice(st, "ca1"), 200) == 200
