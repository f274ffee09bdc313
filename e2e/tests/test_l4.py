"""End to end: TLSRoute (passthrough and terminate), TCPRoute and UDPRoute
through switchyard standalone and a real Envoy, to real switchyard-echo
backends in their TCP, UDP and TLS modes (each names itself first)."""

import socket
import ssl
import subprocess
import time
from collections import Counter

import pytest

from conftest import start_stack

import harness

ECHO = harness.ECHO


def cert(directory, name, cn):
    """A self-signed certificate for `cn` (and its key), PEM files."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", f"/CN={cn}", "-addext", f"subjectAltName=DNS:{cn}",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


def service(name, port, protocol="TCP"):
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec: {{ports: [{{name: p, port: 7000, protocol: {protocol}}}]}}\n---\n"
            f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, "
            f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\n"
            f"ports: [{{name: p, port: {port}, protocol: {protocol}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n")


def route(kind, name, backends, section, hostnames=None):
    refs = ", ".join(f"{{name: {b}, port: 7000, weight: {w}}}" for b, w in backends)
    hosts = f"  hostnames: [{', '.join(hostnames)}]\n" if hostnames else ""
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  parentRefs: [{{name: l4, sectionName: {section}}}]\n{hosts}"
            f"  rules: [{{backendRefs: [{refs}]}}]\n")


class L4:
    def __init__(self, stack, g):
        self.stack, self.g = stack, g
        self.ports = {k: harness.free_port() for k in ("tcp", "udp", "udp-idle", "tls", "term")}
        self.backend = {}

    def write(self, name, text):
        self.stack.write(name, text)

    def tcp_name(self, port, timeout=2):
        """Connects, reads the backend's first line; None when refused or closed."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
                line = s.makefile("rb").readline().decode().strip()
                return line or None
        except OSError:
            return None

    def tls_name(self, port, sni, ca=None, timeout=2):
        """TLS with SNI; returns (first line, peer certificate subject CN) or (None, error)."""
        ctx = ssl.create_default_context(cafile=str(ca)) if ca else ssl.create_default_context()
        if not ca:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw:
                with ctx.wrap_socket(raw, server_hostname=sni) as s:
                    line = s.makefile("rb").readline().decode().strip()
                    return line or None, s.getpeercert() if ca else None
        except (OSError, ssl.SSLError) as e:
            return None, e

    def udp_name(self, port, timeout=1):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(b"ping", ("127.0.0.1", port))
            try:
                data, _ = s.recvfrom(2048)
            except OSError:
                return None
            return data.decode().split(":")[0]

    def eventually(self, f, want, timeout=15):
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            got = f()
            if want(got):
                return got
            time.sleep(0.05)
        raise AssertionError(f"last result {got!r}\n{self.g.diagnostics()}")


def _configure(stack, g):
    l4 = L4(stack, g)
    g.l4 = l4
    d = stack.dir
    a_crt, a_key = cert(d, "a", "a.tls.test")
    b_crt, b_key = cert(d, "b", "b.tls.test")
    t_crt, t_key = cert(d, "term", "term.test")
    l4.term_crt = t_crt
    l4.a_crt = a_crt
    backends = {
        "tcp-a": ["--tcp"], "tcp-b": ["--tcp"], "udp-a": ["--udp"], "udp-b": ["--udp"],
        "tls-a": ["--tls", "--tls-cert", str(a_crt), "--tls-key", str(a_key)],
        "tls-b": ["--tls", "--tls-cert", str(b_crt), "--tls-key", str(b_key)],
    }
    docs = []
    for name, args in backends.items():
        port = harness.free_port()
        l4.backend[name] = port
        stack.procs.append(subprocess.Popen([str(ECHO), args[0], f"127.0.0.1:{port}", *args[1:], "--name", name],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        docs.append(service(name, port, "UDP" if name.startswith("udp") else "TCP"))
    for name, port in l4.backend.items():
        if not name.startswith("udp"):
            assert harness.wait_port("127.0.0.1", port), f"{name} did not start"
    tls_secret = "".join(f"    {line}\n" for line in t_crt.read_text().splitlines())
    tls_key = "".join(f"    {line}\n" for line in t_key.read_text().splitlines())
    p = l4.ports
    docs.append(f"""apiVersion: v1
kind: Secret
metadata: {{name: term-cert, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{tls_secret}  tls.key: |
{tls_key}---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: switchyard}}
spec: {{controllerName: switchyard.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: l4, namespace: default}}
spec:
  gatewayClassName: switchyard
  listeners:
  - {{name: tcp, port: {p['tcp']}, protocol: TCP}}
  - {{name: udp, port: {p['udp']}, protocol: UDP}}
  - {{name: udp-idle, port: {p['udp-idle']}, protocol: UDP}}
  - {{name: tls, port: {p['tls']}, protocol: TLS, hostname: "*.tls.test", tls: {{mode: Passthrough}}}}
  - {{name: term, port: {p['term']}, protocol: TLS, hostname: term.test,
      tls: {{mode: Terminate, certificateRefs: [{{name: term-cert}}]}}}}
""")
    stack.write("base.yaml", "".join(docs))
    stack.write("routes.yaml", "---\n".join([
        route("TCPRoute", "tcp", [("tcp-a", 1)], "tcp"),
        route("UDPRoute", "udp", [("udp-a", 1)], "udp"),
        route("TLSRoute", "tls-a", [("tls-a", 1)], "tls", ["a.tls.test"]),
        route("TLSRoute", "tls-b", [("tls-b", 1)], "tls", ["b.tls.test"]),
        route("TLSRoute", "term", [("tcp-b", 1)], "term", ["term.test"]),
    ]))
    stack.start_switchyard()
    l4.eventually(lambda: l4.tcp_name(p["tcp"]), lambda n: n == "tcp-a", timeout=30)


@pytest.fixture(scope="module")
def l4(request):
    for g in start_stack(request, configure=_configure, backends=0, debounce_ms=5):
        yield g.l4


def test_tls_passthrough_by_sni_presents_the_backends_certificate(l4):
    p = l4.ports["tls"]
    line, peer = l4.eventually(lambda: l4.tls_name(p, "a.tls.test", ca=l4.a_crt), lambda r: r[0] is not None)
    assert line == "tls-a sni=a.tls.test", line
    # The client verified the backend's own certificate (a.tls.test, not Envoy's).
    assert dict(x[0] for x in peer["subject"])["commonName"] == "a.tls.test"
    line, _ = l4.tls_name(p, "b.tls.test")
    assert line == "tls-b sni=b.tls.test", line


def test_tls_sni_without_a_route_is_closed(l4):
    p = l4.ports["tls"]
    l4.eventually(lambda: l4.tls_name(p, "a.tls.test")[0], lambda n: n is not None)
    for sni in ("c.tls.test", "a.other.test"):
        line, err = l4.tls_name(p, sni)
        assert line is None, f"{sni} reached {line}"


def test_tls_terminate_to_a_plain_tcp_backend(l4):
    line, peer = l4.eventually(lambda: l4.tls_name(l4.ports["term"], "term.test", ca=l4.term_crt),
                               lambda r: r[0] is not None)
    # Envoy presented the listener's certificate and the backend got plain TCP.
    assert line == "tcp-b", line
    assert dict(x[0] for x in peer["subject"])["commonName"] == "term.test"


def test_tcp_weights_80_20(l4):
    p = l4.ports["tcp"]
    l4.write("routes-tcp.yaml", route("TCPRoute", "tcp", [("tcp-a", 80), ("tcp-b", 20)], "tcp"))
    # The same route in two files is a duplicate; move it instead.
    routes = (l4.stack.config / "routes.yaml").read_text().split("---\n")
    l4.write("routes.yaml", "---\n".join(r for r in routes if "name: tcp," not in r))
    l4.eventually(lambda: l4.tcp_name(p), lambda n: n == "tcp-b", timeout=15)
    counts = Counter(l4.tcp_name(p) for _ in range(400))
    assert set(counts) <= {"tcp-a", "tcp-b"}, counts
    share = counts["tcp-b"] / sum(counts.values())
    assert 0.13 < share < 0.27, counts


def test_udp_weights_and_edit_followed_within_a_second(l4):
    p = l4.ports["udp"]
    l4.eventually(lambda: l4.udp_name(p), lambda n: n == "udp-a", timeout=15)
    routes = (l4.stack.config / "routes.yaml").read_text().split("---\n")
    l4.write("routes.yaml", "---\n".join(r for r in routes if "name: udp," not in r))
    t0 = time.time()
    l4.write("routes-udp.yaml", route("UDPRoute", "udp", [("udp-a", 1), ("udp-b", 1)], "udp"))
    l4.eventually(lambda: l4.udp_name(p), lambda n: n == "udp-b", timeout=5)
    assert time.time() - t0 < 1.5
    counts = Counter(l4.udp_name(p) for _ in range(300))
    assert set(counts) <= {"udp-a", "udp-b", None}, counts
    assert counts[None] < 10, counts
    share = counts["udp-b"] / (counts["udp-a"] + counts["udp-b"])
    assert 0.35 < share < 0.65, counts
    # All to udp-b: new sessions follow within a second.
    t0 = time.time()
    l4.write("routes-udp.yaml", route("UDPRoute", "udp", [("udp-b", 1)], "udp"))
    l4.eventually(lambda: Counter(l4.udp_name(p) for _ in range(20)), lambda c: c["udp-b"] == 20, timeout=5)
    assert time.time() - t0 < 1.5


def test_established_tcp_connection_survives_an_unrelated_route_change(l4):
    p = l4.ports["tcp"]
    s = socket.create_connection(("127.0.0.1", p), timeout=5)
    f = s.makefile("rwb")
    first = f.readline().decode().strip()
    assert first in ("tcp-a", "tcp-b")
    # Change other routes (TLS, UDP) while the connection is open.
    l4.write("routes-udp.yaml", route("UDPRoute", "udp", [("udp-a", 1)], "udp"))
    routes = (l4.stack.config / "routes.yaml").read_text()
    l4.write("routes.yaml", routes.replace("b.tls.test", "bb.tls.test"))
    l4.eventually(lambda: l4.tls_name(l4.ports["tls"], "bb.tls.test")[0], lambda n: n is not None)
    for i in range(5):
        f.write(f"hello {i}\n".encode())
        f.flush()
        assert f.readline().decode() == f"hello {i}\n"
    s.close()


def test_l4_route_status(l4):
    for kind, name in (("TCPRoute", "tcp"), ("UDPRoute", "udp"), ("TLSRoute", "tls-a"), ("TLSRoute", "term")):
        text = l4.g.wait_status(kind, name, "reason: Accepted")
        assert "reason: ResolvedRefs" in text, text
    gw = l4.g.status_obj("Gateway", "l4")["status"]
    by_name = {x["name"]: x for x in gw["listeners"]}
    assert by_name["tls"]["attachedRoutes"] == 2
    for l in by_name.values():
        conds = {c["type"]: c for c in l["conditions"]}
        assert conds["Programmed"]["status"] == "True", l
    # A UDP listener without routes is bound (Envoy took it) and answers nothing.
    assert l4.udp_name(l4.ports["udp-idle"], timeout=0.3) is None
    listeners = l4.stack.admin_json("/listeners?format=json", port=l4.stack.envoy_admin)
    bound = {x["name"] for x in listeners["listener_statuses"]}
    assert f"default/l4/{l4.ports['udp-idle']}/udp" in bound, bound


def test_bad_l4_input_gets_the_spec_conditions(l4):
    # A TLSRoute to the TCP listener; a UDPRoute to a Service without a UDP port.
    l4.write("bad.yaml", route("TLSRoute", "tls-on-tcp", [("tls-a", 1)], "tcp", ["x.tls.test"]) + "---\n"
             + route("UDPRoute", "udp-to-tcp", [("tcp-a", 1)], "udp"))
    text = l4.g.wait_status("TLSRoute", "tls-on-tcp", "reason: NotAllowedByListeners")
    assert "status: 'False'" in text
    text = l4.g.wait_status("UDPRoute", "udp-to-tcp", "reason: UnsupportedProtocol")
    # The TCP route that served before still serves.
    assert l4.tcp_name(l4.ports["tcp"]) in ("tcp-a", "tcp-b")
