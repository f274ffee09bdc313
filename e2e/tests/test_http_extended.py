"""End to end: HTTPRoute retries, request mirroring and CORS through
switchyard standalone and a real Envoy, to real switchyard-echo backends.

The echo backend counts requests by their `key` query parameter and can fail
the first `fail` of them (`code`, `delay_ms`); `/__echo/count?key=K` reads a
count (see src/bin/echo/script.rs)."""

import http.client
import json
import socket
import time
import uuid

from conftest import name_of, route


def count(gw, backend, key):
    """How many requests with `key` the echo backend number `backend` received."""
    c = http.client.HTTPConnection("127.0.0.1", gw.stack.backend_ports[backend], timeout=5)
    c.request("GET", f"/__echo/count?key={key}")
    body = json.loads(c.getresponse().read())
    c.close()
    return body["count"]


def wait_count(gw, backend, key, want, timeout=5):
    deadline = time.time() + timeout
    n = None
    while time.time() < deadline:
        n = count(gw, backend, key)
        if n == want:
            return n
        time.sleep(0.02)
    return n


def key():
    return uuid.uuid4().hex


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# --- retries ---------------------------------------------------------------

def test_retry_codes_and_attempts(gw):
    gw.write("retry.yaml", route("retry", "retry.test", """\
  - matches: [{path: {type: PathPrefix, value: /r}}]
    retry: {codes: [500, 503], attempts: 2, backoff: 10ms}
    backendRefs: [{name: svc-0, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /none}}]
    backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("retry.test", "/r")
    # Fails twice, then answers: two retries are allowed, the client sees 200.
    k = key()
    status, body, _ = gw.get("retry.test", f"/r?key={k}&fail=2")
    assert status == 200 and name_of(body) == "backend-0", (status, body)
    assert count(gw, 0, k) == 3
    # Fails three times: the attempts are spent, the client gets the error.
    k = key()
    status, _, _ = gw.get("retry.test", f"/r?key={k}&fail=3&code=500")
    assert status == 500
    assert count(gw, 0, k) == 3, "one try and exactly two retries"
    # A code that is not listed is not retried.
    k = key()
    status, _, _ = gw.get("retry.test", f"/r?key={k}&fail=1&code=502")
    assert status == 502 and count(gw, 0, k) == 1
    # Without a retry stanza nothing is retried.
    k = key()
    status, _, _ = gw.get("retry.test", f"/none?key={k}&fail=1")
    assert status == 503 and count(gw, 0, k) == 1


def test_retry_after_backend_request_timeout(gw):
    gw.write("retry-timeout.yaml", route("retry-timeout", "retry-timeout.test", """\
  - retry: {codes: [503], attempts: 2}
    timeouts: {request: 5s, backendRequest: 300ms}
    backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("retry-timeout.test")
    # The first try answers only after 2 s: it times out at 300 ms and is retried.
    k = key()
    t0 = time.time()
    status, body, _ = gw.get("retry-timeout.test", f"/?key={k}&fail=1&code=200&delay_ms=2000")
    took = time.time() - t0
    assert status == 200 and name_of(body) == "backend-0", (status, body)
    assert took < 1.5, f"the slow try should have been abandoned at 300 ms (took {took:.2f}s)"
    assert count(gw, 0, k) == 2


def test_retry_on_connection_error(gw):
    """A Service with a dead endpoint: connection failures are retried on
    the next endpoint, so every request succeeds."""
    dead = free_port()
    live = gw.stack.backend_ports[0]
    slices = "".join(
        f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: flaky-{i}, namespace: default, "
        f"labels: {{kubernetes.io/service-name: flaky}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
        f"endpoints: [{{addresses: [127.0.0.1]}}]\n"
        for i, port in enumerate((live, dead)))
    svc = "apiVersion: v1\nkind: Service\nmetadata: {name: flaky, namespace: default}\nspec: {ports: [{name: http, port: 80}]}\n"
    gw.write("flaky.yaml", svc + slices + "---\n" + route("flaky", "flaky.test", """\
  - matches: [{path: {type: PathPrefix, value: /retried}}]
    retry: {attempts: 3}
    backendRefs: [{name: flaky, port: 80}]
  - backendRefs: [{name: flaky, port: 80}]
"""))
    gw.wait_for("flaky.test", "/retried")
    results = [gw.get("flaky.test", "/retried")[0] for _ in range(20)]
    assert results == [200] * 20, results
    # Without retries about half of them fail: the dead endpoint is real.
    plain = [gw.get("flaky.test", "/")[0] for _ in range(20)]
    assert 200 in plain and any(s != 200 for s in plain), plain


# --- mirroring ---------------------------------------------------------------

def test_mirror_receives_a_copy_and_the_client_the_primary_answer(gw):
    gw.write("mirror.yaml", route("mirror", "mirror.test", """\
  - matches: [{path: {type: PathPrefix, value: /m}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-set, value: "yes"}]}
    - type: RequestMirror
      requestMirror: {backendRef: {name: svc-1, port: 80}}
    backendRefs: [{name: svc-0, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /half}}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: svc-1, port: 80}, fraction: {numerator: 1, denominator: 2}}
    backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("mirror.test", "/m")
    k = key()
    status, body, _ = gw.get("mirror.test", f"/m?key={k}")
    assert status == 200 and name_of(body) == "backend-0", body
    assert body["headers"].get("x-set") == "yes"
    assert count(gw, 0, k) == 1
    assert wait_count(gw, 1, k, 1) == 1, "the mirror got exactly one copy"
    # A fraction of 1/2: about half of 200 requests are mirrored.
    k = key()
    for _ in range(200):
        assert gw.get("mirror.test", f"/half?key={k}")[0] == 200
    time.sleep(0.3)
    n = count(gw, 1, k)
    assert 60 <= n <= 140, f"{n} of 200 mirrored, expected about 100"
    assert count(gw, 0, k) == 200


def test_multiple_mirrors(gw):
    gw.write("mirror-many.yaml", route("mirror-many", "mirror-many.test", """\
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: svc-1, port: 80}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: svc-0, port: 80}}
    backendRefs: [{name: svc-1, port: 80}]
"""))
    gw.wait_for("mirror-many.test")
    k = key()
    status, body, _ = gw.get("mirror-many.test", f"/?key={k}")
    assert status == 200 and name_of(body) == "backend-1"
    # backend-1 sees the request and its mirror copy, backend-0 one copy.
    assert wait_count(gw, 1, k, 2) == 2
    assert wait_count(gw, 0, k, 1) == 1


def test_unresolved_mirror_keeps_the_route_working(gw):
    gw.write("mirror-broken.yaml", route("mirror-broken", "mirror-broken.test", """\
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: no-such-service, port: 80}}
    backendRefs: [{name: svc-0, port: 80}]
"""))
    status, body, _ = gw.wait_for("mirror-broken.test")
    assert name_of(body) == "backend-0"
    doc = gw.wait_condition("HTTPRoute", "mirror-broken", "ResolvedRefs", "False")
    text = json.dumps(doc, default=str)
    assert "no-such-service" in text and "requestMirror" in text, text
    gw.wait_condition("HTTPRoute", "mirror-broken", "Accepted", "True")


# --- CORS --------------------------------------------------------------------

PREFLIGHT = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-header-1, x-header-2"}


def test_cors_preflight_and_simple_requests(gw):
    gw.write("cors.yaml", route("cors", "cors.test", """\
  - matches: [{path: {type: PathPrefix, value: /cors}}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
        allowMethods: [GET, OPTIONS]
        allowHeaders: [x-header-1, x-header-2]
        exposeHeaders: [x-header-3, x-header-4]
        allowCredentials: true
        maxAge: 3600
    backendRefs: [{name: svc-0, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /open}}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"], allowCredentials: true}
    backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("cors.test", "/cors")
    for origin in ("https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"):
        status, _, h = gw.get("cors.test", "/cors", {"Origin": origin, **PREFLIGHT}, "OPTIONS")
        assert status in (200, 204), (origin, status, h)
        assert h.get("access-control-allow-origin") == origin, h
        assert h.get("access-control-allow-methods", "").replace(" ", "") == "GET,OPTIONS", h
        assert h.get("access-control-allow-headers", "").replace(" ", "") == "x-header-1,x-header-2", h
        assert h.get("access-control-expose-headers", "").replace(" ", "") == "x-header-3,x-header-4", h
        assert h.get("access-control-max-age") == "3600", h
        assert h.get("access-control-allow-credentials") == "true", h
    # An origin that is not allowed: no CORS headers (and no preflight reaches the backend).
    for origin in ("https://foobar.com", "https://bar.com", "http://www.foo.com"):
        status, _, h = gw.get("cors.test", "/cors", {"Origin": origin, **PREFLIGHT}, "OPTIONS")
        assert status in (200, 204, 403), (origin, status)
        assert "access-control-allow-origin" not in h, (origin, h)
    # A simple request from an allowed origin reaches the backend and gets the headers.
    status, body, h = gw.get("cors.test", "/cors", {"Origin": "https://www.bar.com"})
    assert status == 200 and name_of(body) == "backend-0"
    assert h.get("access-control-allow-origin") == "https://www.bar.com", h
    assert h.get("access-control-allow-credentials") == "true", h
    status, body, h = gw.get("cors.test", "/cors", {"Origin": "https://evil.test"})
    assert status == 200 and "access-control-allow-origin" not in h, h
    # Wildcards with credentials: Envoy echoes what was asked, never '*'.
    status, _, h = gw.get("cors.test", "/open", {"Origin": "https://other.foo.com",
                                                 "Access-Control-Request-Method": "PUT",
                                                 "Access-Control-Request-Headers": "x-a, x-b"}, "OPTIONS")
    assert status in (200, 204)
    assert h.get("access-control-allow-origin") == "https://other.foo.com", h
    assert h.get("access-control-allow-methods") == "PUT", h
    assert h.get("access-control-allow-headers", "").replace(" ", "") == "x-a,x-b", h


def test_cors_malformed_origin_is_refused_with_the_field(gw):
    gw.write("cors-bad.yaml", route("cors-bad", "cors-bad.test", """\
  - filters:
    - type: CORS
      cors: {allowOrigins: ["https://www.*.com"]}
    backendRefs: [{name: svc-0, port: 80}]
"""))
    doc = gw.wait_condition("HTTPRoute", "cors-bad", "Accepted", "False")
    assert "allowOrigins[0]" in json.dumps(doc, default=str), doc
