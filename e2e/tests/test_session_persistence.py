"""End to end: HTTPRoute `sessionPersistence` through switchyard standalone
and a real Envoy (its stateful session filter), to three real echo backends
behind one Service. Each echo answers with its name, so a test sees which
endpoint took each request.

- Without persistence, requests spread over the endpoints.
- Cookie: the first response sets the cookie (a session cookie: no Max-Age,
  Path from the match, HttpOnly, SameSite=Strict); every request carrying it
  lands on the same endpoint and gets no new cookie.
- Permanent cookie: Max-Age is absoluteTimeout.
- Header: the token comes back in the named response header, and requests
  carrying it stick likewise.
- A weighted split across two Services keeps a session on its endpoint
  whichever Service it is in (one Envoy cluster with a locality per
  backend), while new clients follow the weights.
- The pinned endpoint is removed: the next request carrying the old token
  goes to another endpoint (200, never an error) with a new token, which
  sticks from then on.
- A value Envoy cannot honour is refused, the field named in the route status.
"""

import time

import pytest

from conftest import name_of, route, start_stack

N = 3


@pytest.fixture(scope="module")
def gw3(request):
    """A stack with three echo backends (backend-0..2)."""
    yield from start_stack(request, backends=N)


def pool_manifest(ports, svc="pool"):
    """Service `svc` whose endpoints are the echo backends on `ports`."""
    out = f"apiVersion: v1\nkind: Service\nmetadata: {{name: {svc}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n"
    for i, port in enumerate(ports):
        out += (f"---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-{port}, namespace: default, "
                f"labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
                f"endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]\n")
    return out


RULES = """\
  - matches: [{path: {type: PathPrefix, value: /cookie}}]
    sessionPersistence: {sessionName: sticky}
    backendRefs: [{name: pool, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /default}}]
    sessionPersistence: {}
    backendRefs: [{name: pool, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /permanent}}]
    sessionPersistence: {sessionName: forever, absoluteTimeout: 5m, cookieConfig: {lifetimeType: Permanent}}
    backendRefs: [{name: pool, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /header}}]
    sessionPersistence: {type: Header, sessionName: x-session}
    backendRefs: [{name: pool, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /plain}}]
    backendRefs: [{name: pool, port: 80}]
"""


def set_cookie(headers):
    """The Set-Cookie header parsed: (name, value, attributes lower-cased)."""
    raw = headers.get("set-cookie")
    if raw is None:
        return None
    first, *attrs = [p.strip() for p in raw.split(";")]
    name, _, value = first.partition("=")
    flags = {}
    for a in attrs:
        k, _, v = a.partition("=")
        flags[k.lower()] = v
    return name, value, flags


@pytest.fixture(scope="module")
def sticky(gw3):
    gw3.write("pool.yaml", pool_manifest(gw3.stack.backend_ports))
    gw3.write("sticky.yaml", route("sticky", "sticky.test", RULES))
    # Every endpoint answers before the tests begin.
    seen = set()
    for _ in range(200):
        seen.add(name_of(gw3.wait_for("sticky.test", "/plain")[1]))
        if len(seen) == N:
            break
    assert len(seen) == N, seen
    return gw3


def test_without_persistence_requests_spread(sticky):
    names = [name_of(sticky.get("sticky.test", "/plain")[1]) for _ in range(30)]
    assert len(set(names)) == N, names
    # No token is handed out where persistence is off.
    s, _, h = sticky.get("sticky.test", "/plain")
    assert s == 200 and "set-cookie" not in h and "x-session" not in h


def test_cookie_pins_the_client_to_one_endpoint(sticky):
    s, body, h = sticky.get("sticky.test", "/cookie/start")
    assert s == 200, (s, body)
    c = set_cookie(h)
    assert c is not None, h
    name, value, flags = c
    assert name == "sticky" and value
    # A session cookie: no lifetime attributes; Path from the match.
    assert "max-age" not in flags and "expires" not in flags, h["set-cookie"]
    assert flags.get("path") == "/cookie", h["set-cookie"]
    assert "httponly" in flags and flags.get("samesite") == "Strict", h["set-cookie"]
    first = name_of(body)
    for i in range(30):
        s, body, h = sticky.get("sticky.test", f"/cookie/{i}", headers={"Cookie": f"other=1; sticky={value}"})
        assert s == 200 and name_of(body) == first, (i, s, body)
        assert "set-cookie" not in h, "the token still holds: no new cookie"
    # A fresh client (no cookie) is load-balanced and each gets its own cookie.
    fresh = set()
    for _ in range(30):
        s, body, h = sticky.get("sticky.test", "/cookie/x")
        assert s == 200 and set_cookie(h) is not None
        fresh.add(name_of(body))
    assert len(fresh) > 1, fresh
    # The cookie is not sent for other paths: /plain ignores it.
    names = {name_of(sticky.get("sticky.test", "/plain", headers={"Cookie": f"sticky={value}"})[1]) for _ in range(30)}
    assert len(names) > 1, names


def test_default_session_name_is_made_per_rule(sticky):
    _, _, h = sticky.get("sticky.test", "/default")
    name, value, _ = set_cookie(h)
    assert name.startswith("sy-session-") and value
    _, body, _ = sticky.get("sticky.test", "/default")
    pinned = None
    for _ in range(20):
        s, body, h = sticky.get("sticky.test", "/default", headers={"Cookie": f"{name}={value}"})
        pinned = pinned or name_of(body)
        assert s == 200 and name_of(body) == pinned


def test_permanent_cookie_carries_max_age(sticky):
    s, body, h = sticky.get("sticky.test", "/permanent")
    assert s == 200
    name, value, flags = set_cookie(h)
    assert name == "forever" and flags.get("max-age") == "300", h["set-cookie"]
    first = name_of(body)
    for _ in range(20):
        _, body, _ = sticky.get("sticky.test", "/permanent", headers={"Cookie": f"forever={value}"})
        assert name_of(body) == first


def test_header_pins_the_client_to_one_endpoint(sticky):
    s, body, h = sticky.get("sticky.test", "/header")
    assert s == 200 and h.get("x-session"), h
    token = h["x-session"]
    assert "set-cookie" not in h
    first = name_of(body)
    for i in range(30):
        s, body, h = sticky.get("sticky.test", f"/header/{i}", headers={"x-session": token})
        assert s == 200 and name_of(body) == first, (i, s, body)
        assert "x-session" not in h, "the token still holds: not sent again"


def test_removed_endpoint_moves_the_session_without_an_error(sticky):
    ports = sticky.stack.backend_ports
    s, body, h = sticky.get("sticky.test", "/cookie")
    _, value, _ = set_cookie(h)
    pinned = name_of(body)
    idx = int(pinned.rsplit("-", 1)[1])
    remaining = [p for i, p in enumerate(ports) if i != idx]
    sticky.write("pool.yaml", pool_manifest(remaining))
    try:
        # Until Envoy has the new endpoints the old one still answers; after,
        # the client is moved. Never an error.
        moved = None
        deadline = time.time() + 15
        while time.time() < deadline:
            s, body, h = sticky.get("sticky.test", "/cookie", headers={"Cookie": f"sticky={value}"})
            assert s == 200, (s, body)
            if name_of(body) != pinned:
                moved = (name_of(body), set_cookie(h))
                break
            time.sleep(0.01)
        assert moved is not None, "the session never left the removed endpoint"
        new_backend, cookie = moved
        assert cookie is not None and cookie[1] != value, "a new token for the new endpoint"
        for _ in range(20):
            s, body, _ = sticky.get("sticky.test", "/cookie", headers={"Cookie": f"sticky={cookie[1]}"})
            assert s == 200 and name_of(body) == new_backend
        # The header session likewise.
        _, body, h = sticky.get("sticky.test", "/header")
        token, on = h["x-session"], name_of(body)
        assert on != pinned
    finally:
        sticky.write("pool.yaml", pool_manifest(ports))


def test_unhonourable_value_is_refused_naming_the_field(sticky):
    sticky.write("refused.yaml", route("refused", "refused.test", """\
  - matches: [{path: {type: PathPrefix, value: /ok}}]
    backendRefs: [{name: pool, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /timeout}}]
    sessionPersistence: {absoluteTimeout: 10m}
    backendRefs: [{name: pool, port: 80}]
"""))
    text = sticky.wait_status("HTTPRoute", "refused", "sessionPersistence.absoluteTimeout")
    assert "UnsupportedValue" in text or "PartiallyInvalid" in text, text
    sticky.wait_for("refused.test", "/ok")
    # The dropped rule serves nothing (no silent approximation).
    s, _, h = sticky.get("refused.test", "/timeout")
    assert s == 404 and "set-cookie" not in h, s


def test_permanent_session_ends_after_absolute_timeout(sticky):
    """Envoy encodes the expiry in the token: after absoluteTimeout the old
    cookie is no longer honoured and a new one is issued, even if the client
    keeps sending the old one."""
    sticky.write("expiring.yaml", route("expiring", "expiring.test", """\
  - sessionPersistence: {sessionName: brief, absoluteTimeout: 1s, cookieConfig: {lifetimeType: Permanent}}
    backendRefs: [{name: pool, port: 80}]
"""))
    _, _, h = sticky.wait_for("expiring.test", "/")
    name, value, flags = set_cookie(h)
    assert name == "brief" and flags.get("max-age") == "1", h["set-cookie"]
    s, _, h = sticky.get("expiring.test", "/", headers={"Cookie": f"brief={value}"})
    assert s == 200 and "set-cookie" not in h, "fresh token honoured"
    time.sleep(2.2)
    s, _, h = sticky.get("expiring.test", "/", headers={"Cookie": f"brief={value}"})
    assert s == 200 and set_cookie(h) is not None and set_cookie(h)[1] != value, h


def test_session_holds_across_a_weighted_split(sticky):
    """Service left (backend-0, backend-1) and Service right (backend-2),
    split 50/50 in one rule: fresh clients reach both Services; a client
    pinned to any endpoint, in either Service, stays there (with
    weighted_clusters Envoy would send about half of its requests to the
    other Service)."""
    ports = sticky.stack.backend_ports
    sticky.write("split.yaml", pool_manifest(ports[:2], "left") + "---\n" + pool_manifest(ports[2:], "right")
                 + "---\n" + route("split", "split.test", """\
  - sessionPersistence: {sessionName: sid}
    backendRefs: [{name: left, port: 80, weight: 50}, {name: right, port: 80, weight: 50}]
"""))
    sticky.wait_for("split.test", "/")
    tokens = {}
    for _ in range(200):
        s, body, h = sticky.get("split.test", "/")
        assert s == 200
        tokens.setdefault(name_of(body), set_cookie(h)[1])
        if len(tokens) == N:
            break
    assert set(tokens) == {f"backend-{i}" for i in range(N)}, tokens
    for backend, token in sorted(tokens.items()):
        for _ in range(40):
            s, body, h = sticky.get("split.test", "/", headers={"Cookie": f"sid={token}"})
            assert s == 200 and name_of(body) == backend, (backend, body)
            assert "set-cookie" not in h
    # The split cluster follows the Services' endpoints: backend-1 leaves
    # Service left, and its client moves (200, a new token) to an endpoint
    # that is still there; the other clients stay where they were.
    sticky.write("split.yaml", pool_manifest(ports[:1], "left") + "---\n" + pool_manifest(ports[2:], "right")
                 + "---\n" + route("split", "split.test", """\
  - sessionPersistence: {sessionName: sid}
    backendRefs: [{name: left, port: 80, weight: 50}, {name: right, port: 80, weight: 50}]
"""))
    deadline = time.time() + 15
    moved = None
    while time.time() < deadline and moved is None:
        s, body, h = sticky.get("split.test", "/", headers={"Cookie": f"sid={tokens['backend-1']}"})
        assert s == 200, (s, body)
        if name_of(body) != "backend-1":
            moved = name_of(body)
            assert set_cookie(h) is not None
        time.sleep(0.01)
    assert moved in ("backend-0", "backend-2"), moved
    for backend in ("backend-0", "backend-2"):
        for _ in range(20):
            _, body, _ = sticky.get("split.test", "/", headers={"Cookie": f"sid={tokens[backend]}"})
            assert name_of(body) == backend
