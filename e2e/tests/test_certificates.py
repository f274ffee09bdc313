"""Certificate rotation with a real Envoy (standalone mode): a Secret rotated
to an expired certificate keeps the last good one serving (same TLS peer
certificate, requests keep succeeding), with ResolvedRefs=False /
InvalidCertificateRef on the listener and the metrics
switchyard_certificate_last_good_served / _rotations_rejected_total; a
rotation to a valid certificate is served and clears it. Also checks the
expiry metric and the 14-day warning. See docs/certificates.md.
"""

import calendar
import hashlib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import start_stack

HOST = "certs.example.org"


def make_cert(d, name, start=None, end=None, days=None):
    """A self-signed EC certificate for HOST: `days` from now, or from
    `start` to `end` (YYYYMMDDHHMMSSZ, e.g. in the past) through `openssl ca`."""
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    if days is not None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-days", str(days), "-subj", f"/CN={HOST}", "-addext",
                        f"subjectAltName=DNS:{HOST}", "-keyout", str(key), "-out", str(crt)],
                       check=True, capture_output=True)
        return crt.read_text(), key.read_text()
    ca = d / f"{name}-ca"
    ca.mkdir()
    (ca / "index.txt").write_text("")
    (ca / "serial").write_text("01\n")
    (ca / "ca.cnf").write_text(
        f"[ca]\ndefault_ca = d\n[d]\ndatabase = {ca}/index.txt\nnew_certs_dir = {ca}\nserial = {ca}/serial\n"
        "default_md = sha256\npolicy = p\nunique_subject = no\ncopy_extensions = copy\n[p]\ncommonName = supplied\n")
    csr = ca / "req.csr"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", f"/CN={HOST}", "-addext", f"subjectAltName=DNS:{HOST}", "-keyout", str(key),
                    "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "ca", "-batch", "-notext", "-config", str(ca / "ca.cnf"), "-selfsign", "-keyfile",
                    str(key), "-in", str(csr), "-startdate", start, "-enddate", end, "-out", str(crt)],
                   check=True, capture_output=True)
    return crt.read_text(), key.read_text()


def fingerprint(pem):
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def secret(crt, key):
    ind = lambda t: "".join(f"    {line}\n" for line in t.splitlines())
    return ("apiVersion: v1\nkind: Secret\nmetadata: {name: rotating, namespace: default}\n"
            f"type: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{ind(crt)}  tls.key: |\n{ind(key)}")


def handshake(port):
    """(sha256 of the certificate Envoy presents, HTTP status of GET /)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname=HOST) as s:
        fp = hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()
        s.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        head = s.recv(64).decode(errors="replace")
    return fp, int(head.split()[1]) if head.startswith("HTTP/") else None


def wait(cond, what, g, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s\n{g.diagnostics()}")


def listener_condition(g, ctype):
    doc = g.status_obj("Gateway", "certs")
    for l in (doc.get("status") or {}).get("listeners") or []:
        if l.get("name") == "https":
            for c in l.get("conditions") or []:
                if c.get("type") == ctype:
                    return c
    return None


def metric(g, family, **labels):
    """The value of the series of `family` carrying these labels (None: absent)."""
    for k, v in g.stack.metrics().items():
        if k.startswith(family + "{") and all(f'{a}="{b}"' in k for a, b in labels.items()):
            return v
    return None


def _configure(stack, g):
    stack.start_backends()
    d = stack.dir
    g.cert_a = make_cert(d, "a", days=10)  # within 14 days: a warning
    stack.write("base.yaml", f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: switchyard}}
spec: {{controllerName: switchyard.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: certs, namespace: default}}
spec:
  gatewayClassName: switchyard
  listeners:
  - {{name: https, port: {stack.gw_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: rotating}}]}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: svc-0, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-0-1, namespace: default, labels: {{kubernetes.io/service-name: svc-0}}}}
addressType: IPv4
ports: [{{name: http, port: {stack.backend_ports[0]}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: certs, namespace: default}}
spec:
  parentRefs: [{{name: certs}}]
  hostnames: [{HOST}]
  rules: [{{backendRefs: [{{name: svc-0, port: 80}}]}}]
""")
    stack.write("secret.yaml", secret(*g.cert_a))
    stack.start_switchyard()


@pytest.fixture(scope="module")
def gw(request):
    for g in start_stack(request, configure=_configure, backends=1, debounce_ms=5):
        port = g.stack.gw_port

        def served_a():
            try:
                return handshake(port) == (fingerprint(g.cert_a[0]), 200)
            except OSError:
                return False

        wait(served_a, "certificate A was not served", g, timeout=30)
        yield g


def test_expiry_metric_and_14_day_warning(gw):
    c = wait(lambda: listener_condition(gw, "ResolvedRefs"), "no ResolvedRefs", gw)
    assert c["status"] == "True", c
    assert "Secret default/rotating" in c["message"] and "days left" in c["message"], c
    not_after = subprocess.run(["openssl", "x509", "-noout", "-enddate"], input=gw.cert_a[0], text=True,
                               capture_output=True, check=True).stdout.strip().split("=", 1)[1]
    want = calendar.timegm(time.strptime(not_after, "%b %d %H:%M:%S %Y GMT"))
    got = metric(gw, "switchyard_certificate_expiry_timestamp_seconds", namespace="default", name="rotating",
                 gateway="default/certs", listener="https")
    assert got == want, (got, want)


def test_expired_rotation_keeps_the_last_good_then_a_good_one_is_served(gw):
    port = gw.stack.gw_port
    fp_a = fingerprint(gw.cert_a[0])
    expired = make_cert(gw.stack.dir, "b", start="20200101000000Z", end="20200201000000Z")
    gw.write("secret.yaml", secret(*expired))

    def refused():
        c = listener_condition(gw, "ResolvedRefs")
        return c if c and c["status"] == "False" else None

    c = wait(refused, "ResolvedRefs never became False", gw)
    assert c["reason"] == "InvalidCertificateRef", c
    assert "default/rotating" in c["message"] and "expired at 2020-02-01T00:00:00Z" in c["message"], c
    assert "last good certificate" in c["message"], c
    assert listener_condition(gw, "Programmed")["status"] == "True"
    # The old certificate keeps serving: several handshakes after the change.
    for _ in range(20):
        assert handshake(port) == (fp_a, 200)
        time.sleep(0.02)
    assert metric(gw, "switchyard_certificate_last_good_served", namespace="default", name="rotating") == 1
    assert metric(gw, "switchyard_certificate_rotations_rejected_total", namespace="default", name="rotating") == 1
    assert "refusing the new version of TLS Secret default/rotating" in gw.log_tail(200)

    # A valid certificate C: served, condition back to True, gauge 0.
    cert_c = make_cert(gw.stack.dir, "c", days=90)
    gw.write("secret.yaml", secret(*cert_c))
    wait(lambda: handshake(port) == (fingerprint(cert_c[0]), 200), "certificate C was not served", gw)
    c = wait(lambda: (c := listener_condition(gw, "ResolvedRefs")) and c["status"] == "True" and c,
             "ResolvedRefs never came back", gw)
    assert "days left" not in c["message"], c
    assert metric(gw, "switchyard_certificate_last_good_served", namespace="default", name="rotating") == 0
