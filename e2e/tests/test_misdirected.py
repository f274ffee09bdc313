"""421 Misdirected Request on HTTPS listeners sharing a port, with a real Envoy
(Gateway API feature GatewayHTTPSListenerDetectMisdirectedRequests).

The Gateway has the four HTTPS listeners of the conformance test
HTTPRouteHTTPSListenerDetectMisdirectedRequests on one port (no hostname,
second-example.org, *.wildcard.org, fourth-example.wildcard.org). Each
request goes over its own TLS connection whose SNI picks a listener; the
Host then belongs to the most specific listener whose hostname matches it.
Another listener's Host → 421; a Host no listener of the port matches → 404.
Requests go over HTTP/1.1 (Python) and HTTP/2 (curl), and `switchyard
explain` must predict every answer Envoy gives.
"""

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import time

import pytest

import harness
from conftest import name_of, start_stack

LISTENERS = [
    ("https", None),
    ("https-with-hostname", "second-example.org"),
    ("https-with-wildcard-hostname", "*.wildcard.org"),
    ("https-with-hostname-matching-wildcard", "fourth-example.wildcard.org"),
]

# (SNI, Host, status, backend): the conformance test's cases.
CASES = [
    ("example.org", "example.org", 200, "backend-0"),
    ("example.org", "second-example.org", 421, None),
    ("example.org", "unknown-example.org", 404, None),
    ("second-example.org", "second-example.org", 200, "backend-1"),
    ("second-example.org", "example.org", 421, None),
    ("second-example.org", "unknown-example.org", 421, None),
    ("third-example.wildcard.org", "third-example.wildcard.org", 200, "backend-2"),
    ("third-example.wildcard.org", "fith-example.wildcard.org", 200, "backend-2"),
    ("third-example.wildcard.org", "fourth-example.wildcard.org", 421, None),
    ("third-example.wildcard.org", "second-example.org", 421, None),
    ("third-example.wildcard.org", "unknown-example.org", 421, None),
    ("fourth-example.wildcard.org", "fourth-example.wildcard.org", 200, "backend-0"),
    ("fourth-example.wildcard.org", "fith-example.wildcard.org", 421, None),
    ("unknown-example.org", "example.org", 200, "backend-0"),
    ("unknown-example.org", "unknown-example.org", 404, None),
]
PATH = "/detect-misdirected-requests"


def https_route(name, section, backend, hostnames=None, path=PATH):
    hosts = f"  hostnames: [{', '.join(hostnames)}]\n" if hostnames else ""
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  parentRefs: [{{name: tls, sectionName: {section}}}]\n{hosts}"
            f"  rules:\n  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
            f"    backendRefs: [{{name: {backend}, port: 80}}]\n")


def _configure(stack, g):
    stack.start_backends()
    d = stack.dir
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "2", "-subj", "/CN=example.org", "-keyout", str(d / "tls.key"),
                    "-out", str(d / "tls.crt"), "-addext",
                    "subjectAltName=DNS:example.org,DNS:*.example.org,DNS:second-example.org,DNS:*.wildcard.org"],
                   check=True, capture_output=True)
    indent = lambda p: "".join(f"    {line}\n" for line in p.read_text().splitlines())
    listeners = "".join(
        f"  - {{name: {n}, port: {stack.gw_port}, protocol: HTTPS" + (f", hostname: \"{h}\"" if h else "")
        + ", tls: {certificateRefs: [{name: cert}]}}\n" for n, h in LISTENERS)
    services = "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc-{i}, namespace: default}}\n"
        "spec: {ports: [{name: http, port: 80}]}\n"
        f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{i}-1, namespace: default, "
        f"labels: {{kubernetes.io/service-name: svc-{i}}}}}\naddressType: IPv4\nports: [{{name: http, port: {p}}}]\n"
        "endpoints: [{addresses: [127.0.0.1]}]\n" for i, p in enumerate(stack.backend_ports))
    stack.write("base.yaml", f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: switchyard}}
spec: {{controllerName: switchyard.dev/gateway-controller}}
---
apiVersion: v1
kind: Secret
metadata: {{name: cert, namespace: default}}
type: kubernetes.io/tls
stringData:
  tls.crt: |
{indent(d / "tls.crt")}  tls.key: |
{indent(d / "tls.key")}---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: tls, namespace: default}}
spec:
  gatewayClassName: switchyard
  listeners:
{listeners}{services}""")
    stack.write("routes.yaml", "---\n".join([
        https_route("test-1", "https", "svc-0", ["example.org"]),
        https_route("test-2", "https-with-hostname", "svc-1"),
        https_route("test-3", "https-with-wildcard-hostname", "svc-2"),
        https_route("test-4", "https-with-hostname-matching-wildcard", "svc-0"),
    ]))
    stack.start_switchyard()


def fetch(port, sni, host, path=PATH, timeout=5):
    """One HTTP/1.1 request on a fresh TLS connection with this SNI
    (None: no SNI); returns (status, echo backend name or None)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=sni) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        r = http.client.HTTPResponse(s)
        r.begin()
        raw_body = r.read()
    try:
        body = json.loads(raw_body) if raw_body else None
    except ValueError:
        body = None
    return r.status, name_of(body)


def fetch_h2(port, sni, host, path=PATH):
    """The same over HTTP/2 with curl: the Host becomes :authority."""
    r = subprocess.run(["curl", "-sk", "--http2", "-o", "/dev/null", "-w", "%{http_code} %{http_version}",
                        "--connect-to", f"{sni}:{port}:127.0.0.1:{port}", "-H", f"Host: {host}",
                        f"https://{sni}:{port}{path}"], capture_output=True, text=True, timeout=10)
    code, version = r.stdout.split()
    return int(code), version


@pytest.fixture(scope="module")
def gw(request):
    for g in start_stack(request, configure=_configure, backends=3, debounce_ms=5):
        port = g.stack.gw_port

        def ready():
            try:
                return fetch(port, "example.org", "example.org") == (200, "backend-0")
            except OSError:
                return False

        harness_wait(ready, g)
        yield g


def harness_wait(cond, g, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"the Gateway did not serve in {timeout}s\n{g.diagnostics()}")


def test_the_conformance_cases_over_http1(gw):
    port = gw.stack.gw_port
    got = [(sni, host) + fetch(port, sni, host) for sni, host, _, _ in CASES]
    want = [(sni, host, status, backend) for sni, host, status, backend in CASES]
    assert got == want


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed for HTTP/2")
def test_the_conformance_cases_over_http2(gw):
    port = gw.stack.gw_port
    got = [(sni, host) + fetch_h2(port, sni, host) for sni, host, _, _ in CASES]
    want = [(sni, host, status, "2") for sni, host, status, _ in CASES]
    assert got == want


def test_no_sni_takes_the_listener_without_hostname(gw):
    port = gw.stack.gw_port
    assert fetch(port, None, "example.org") == (200, "backend-0")
    assert fetch(port, None, "second-example.org")[0] == 421
    assert fetch(port, None, "a.wildcard.org")[0] == 421


def test_explain_predicts_every_answer(gw):
    """`switchyard explain` on the same directory: 421/404 where Envoy says
    so, and the backend Envoy forwarded to otherwise."""
    port = gw.stack.gw_port
    extra = [("example.org", "a.wildcard.org"), ("second-example.org", "x.fourth-example.wildcard.org"),
             ("fourth-example.wildcard.org", "FOURTH-example.wildcard.org"), ("nothing.test", "nothing.test")]
    pairs = [(s, h) for s, h, _, _ in CASES] + extra
    reqs = gw.stack.dir / "requests.jsonl"
    reqs.write_text("".join(json.dumps({"id": i, "url": f"https://{h}:{port}{PATH}", "sni": s}) + "\n"
                            for i, (s, h) in enumerate(pairs)))
    r = subprocess.run([str(harness.SWITCHYARD), "explain", "-f", str(gw.stack.config), "--requests", str(reqs),
                        "-o", "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    answers = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert len(answers) == len(pairs)
    seen = set()
    for (sni, host), e in zip(pairs, answers):
        status, name = fetch(port, sni, host)
        seen.add(status)
        if e["status"] is not None:
            assert (status, name) == (e["status"], None), (sni, host, e)
        else:
            want = {f"backend-{b['name'].split('-')[1]}" for b in e["backends"]}
            assert status == 200 and name in want, (sni, host, e)
    assert seen == {200, 404, 421}


def test_route_edits_change_only_routes(gw):
    """A route that starts serving another hostname on the catch-all
    listener: hosts of the wildcard listener stay 421 there, the new one is
    served; the Envoy listener is never modified (RDS only)."""
    port = gw.stack.gw_port

    def modified():
        body = gw.stack.admin_json("/stats?format=json&filter=listener_manager.listener_",
                                   port=gw.stack.envoy_admin)
        return {s["name"]: s["value"] for s in body["stats"]
                if s["name"].endswith(("listener_added", "listener_modified", "listener_removed"))}

    before = modified()
    gw.write("more.yaml", https_route("more", "https", "svc-1", ["more.example.org", "y.wildcard.org"], path="/"))
    harness_wait(lambda: fetch(port, "example.org", "more.example.org", "/x") == (200, "backend-1"), gw)
    assert fetch(port, "example.org", "y.wildcard.org", "/x")[0] == 421
    assert fetch(port, "y.wildcard.org", "y.wildcard.org")[0] == 200
    assert fetch(port, "second-example.org", "more.example.org")[0] == 421
    gw.remove("more.yaml")
    harness_wait(lambda: fetch(port, "example.org", "more.example.org", "/x")[0] == 404, gw)
    assert modified() == before
