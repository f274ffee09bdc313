"""examples/quickstart, as shipped (ports moved), does what `make run` says:
every curl line printed there is checked here."""

import math
from collections import Counter

from conftest import QUICKSTART_ADDR, name_of


def test_host_path_and_header_routing(quickstart):
    gw = quickstart
    status, body, _ = gw.get("a.example.com", "/")
    assert status == 200 and name_of(body) == "echo-a", body
    _, body, _ = gw.get(QUICKSTART_ADDR, "/b/hello")
    assert name_of(body) == "echo-b" and body["path"] == "/b/hello", body
    _, body, _ = gw.get(QUICKSTART_ADDR, "/", {"x-canary": "true"})
    assert name_of(body) == "echo-b", body
    _, body, _ = gw.get(QUICKSTART_ADDR, "/")
    assert name_of(body) == "echo-a", body
    # /b is a path prefix by segment: /bee is not under it.
    assert name_of(gw.get(QUICKSTART_ADDR, "/bee")[1]) == "echo-a"


def test_weighted_split(quickstart):
    n, p = 400, 0.2
    counts = Counter(name_of(quickstart.get(QUICKSTART_ADDR, "/split")[1]) for _ in range(n))
    assert counts["echo-a"] + counts["echo-b"] == n, counts
    assert abs(counts["echo-b"] - n * p) <= 4 * math.sqrt(n * p * (1 - p)), counts


def test_redirect_and_rewrite_with_headers(quickstart):
    gw = quickstart
    status, _, headers = gw.get(QUICKSTART_ADDR, "/old/page")
    assert status == 301, headers
    assert headers["location"] == f"http://{QUICKSTART_ADDR}:{gw.stack.gw_port}/new/page", headers
    status, body, headers = gw.get(QUICKSTART_ADDR, "/api/users")
    assert status == 200 and name_of(body) == "echo-a"
    assert body["path"] == "/users", body
    assert body["headers"]["x-via"] == "switchyard", body
    assert headers["x-served-by"] == "switchyard", headers


def test_status_of_every_object(quickstart):
    gw = quickstart
    gw.wait_condition("GatewayClass", "switchyard", "Accepted", namespace="_cluster")
    doc = gw.wait_condition("Gateway", "demo", "Programmed")
    assert {"type": "IPAddress", "value": QUICKSTART_ADDR} in doc["status"]["addresses"], doc
    listeners = doc["status"]["listeners"]
    assert [(l["name"], l["attachedRoutes"]) for l in listeners] == [("http", 2)], listeners
    for name in ("by-host", "main"):
        gw.wait_condition("HTTPRoute", name, "Accepted")
        gw.wait_condition("HTTPRoute", name, "ResolvedRefs")
    assert not (gw.stack.status / "errors.yaml").exists()
