"""End to end: switchyard standalone → real Envoy → real echo backends.

Every test writes manifests into the watched directory and sends real HTTP
requests through Envoy; backends answer JSON naming themselves.
"""

import json
import math
import time
import urllib.request
from collections import Counter

from conftest import edits_under_load, name_of, route


def test_routing_by_host_path_header_query_method(gw):
    gw.write("match.yaml", route("match", "match.test", """\
  - matches: [{path: {type: Exact, value: /exact}}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /prefix}}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{headers: [{name: x-tier, value: gold}]}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{queryParams: [{name: beta, value: "yes"}]}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{method: DELETE}]
    backendRefs: [{name: svc-1, port: 80}]
  - backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("match.test", "/exact", lambda s, b, h: name_of(b) == "backend-1")
    cases = [
        ("/exact", {}, "GET", "backend-1"),
        ("/exact/more", {}, "GET", "backend-0"),      # Exact is exact
        ("/items/42", {}, "GET", "backend-1"),
        ("/items/abc", {}, "GET", "backend-0"),
        ("/prefix", {}, "GET", "backend-1"),
        ("/prefix/sub", {}, "GET", "backend-1"),
        ("/prefixed", {}, "GET", "backend-0"),        # segment-aware prefix
        ("/", {"x-tier": "gold"}, "GET", "backend-1"),
        ("/", {"x-tier": "silver"}, "GET", "backend-0"),
        ("/?beta=yes", {}, "GET", "backend-1"),
        ("/?beta=no", {}, "GET", "backend-0"),
        ("/", {}, "DELETE", "backend-1"),
        ("/", {}, "GET", "backend-0"),
    ]
    for path, headers, method, want in cases:
        status, body, _ = gw.get("match.test", path, headers, method)
        assert status == 200 and name_of(body) == want, (path, headers, method, status, body)
    # Host routing: another hostname does not see these rules.
    status, _, _ = gw.get("other.test", "/exact")
    assert status == 404
    # Port in the Host header is ignored for matching.
    status, body, _ = gw.get("match.test:8080", "/exact")
    assert status == 200 and name_of(body) == "backend-1"
    text = gw.wait_status("HTTPRoute", "match", "reason: Accepted")
    assert "reason: ResolvedRefs" in text


def test_weighted_split_within_statistical_bound(gw):
    gw.write("split.yaml", route("split", "split.test", """\
  - backendRefs:
    - {name: svc-0, port: 80, weight: 80}
    - {name: svc-1, port: 80, weight: 20}
"""))
    gw.wait_for("split.test")
    n = 400
    counts = Counter(name_of(gw.get("split.test")[1]) for _ in range(n))
    p = 0.2
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(counts["backend-1"] - n * p) <= 4 * sigma, counts
    assert counts["backend-0"] + counts["backend-1"] == n, counts


def test_redirect_status_and_location(gw):
    gw.write("redirect.yaml", route("redirect", "redirect.test", """\
  - matches: [{path: {type: PathPrefix, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 301, path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}}
  - matches: [{path: {type: Exact, value: /moved}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, hostname: secure.test, path: {type: ReplaceFullPath, replaceFullPath: /here}}
"""))
    status, _, headers = gw.wait_for("redirect.test", "/old/page", lambda s, b, h: s == 301)
    # No scheme or port in the filter: the listener's port (spec).
    assert headers["location"] == f"http://redirect.test:{gw.stack.gw_port}/new/page", headers
    status, _, headers = gw.get("redirect.test", "/moved")
    assert status == 302
    # Scheme changed, no port: the scheme's well-known port, omitted.
    assert headers["location"] == "https://secure.test/here", headers


def test_header_modifiers_both_ways(gw):
    gw.write("headers.yaml", route("headers", "headers.test", """\
  - filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        add: [{name: x-added, value: a}]
        set: [{name: x-set, value: s}]
        remove: [x-removed]
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        add: [{name: x-resp-added, value: r}]
        set: [{name: x-echo-name, value: overridden}]
        remove: [content-type]
    backendRefs: [{name: svc-0, port: 80}]
"""))
    req = {"x-set": "original", "x-removed": "gone"}
    status, body, headers = gw.wait_for("headers.test", headers=req,
                                        pred=lambda s, b, h: s == 200 and "x-added" in (b or {}).get("headers", {}))
    seen = body["headers"]
    assert seen["x-added"] == "a"
    assert seen["x-set"] == "s"
    assert "x-removed" not in seen
    assert headers["x-resp-added"] == "r"
    assert headers["x-echo-name"] == "overridden"
    assert "content-type" not in headers


def test_url_rewrite_prefix_and_hostname(gw):
    gw.write("rewrite.yaml", route("rewrite", "rewrite.test", """\
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.test, path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
    backendRefs: [{name: svc-0, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /v1}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    backendRefs: [{name: svc-0, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /full}}]
    filters:
    - type: URLRewrite
      urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /index.html}}
    backendRefs: [{name: svc-0, port: 80}]
"""))
    _, body, _ = gw.wait_for("rewrite.test", "/api/users", lambda s, b, h: s == 200)
    assert body["path"] == "/users" and body["host"] == "internal.test", body
    assert gw.get("rewrite.test", "/api")[1]["path"] == "/"
    assert gw.get("rewrite.test", "/v1/x/y")[1]["path"] == "/v2/x/y"
    assert gw.get("rewrite.test", "/v1")[1]["path"] == "/v2"
    assert gw.get("rewrite.test", "/full/any/thing")[1]["path"] == "/index.html"


def test_unresolvable_backend_answers_500_and_others_keep_working(gw):
    gw.write("broken.yaml", route("broken", "broken.test", """\
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: does-not-exist, port: 80}]
  - backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("broken.test", "/missing", lambda s, b, h: s == 500)
    status, body, _ = gw.get("broken.test", "/fine")
    assert status == 200 and name_of(body) == "backend-0"
    text = gw.wait_status("HTTPRoute", "broken", "reason: BackendNotFound")
    assert "default/does-not-exist" in text


def test_invalid_regex_and_unknown_filter_reported_other_routes_keep_working(gw):
    gw.write("invalid.yaml", route("invalid", "invalid.test", """\
  - matches: [{path: {type: RegularExpression, value: "/bad/(unclosed"}}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /mirror}}]
    filters:
    - type: ExtensionRef
      extensionRef: {group: example.com, kind: Thing, name: x}
    backendRefs: [{name: svc-1, port: 80}]
  - backendRefs: [{name: svc-0, port: 80}]
""") + "---\n" + route("fully-invalid", "fully-invalid.test", """\
  - matches: [{path: {type: RegularExpression, value: "(?<=x)y"}}]
    backendRefs: [{name: svc-1, port: 80}]
"""))
    text = gw.wait_status("HTTPRoute", "invalid", "type: PartiallyInvalid")
    assert "Dropped Rule" in text and "unclosed" in text and "ExtensionRef" in text
    text = gw.wait_status("HTTPRoute", "fully-invalid", "reason: UnsupportedValue")
    assert "status: 'False'" in text
    # The valid rule of the partially invalid route serves; dropped rules do not.
    status, body, _ = gw.wait_for("invalid.test", "/mirror")
    assert name_of(body) == "backend-0", body
    assert gw.get("fully-invalid.test", "/y")[0] == 404


def test_malformed_yaml_names_file_and_line_and_keeps_last_good(gw):
    gw.write("fragile.yaml", route("fragile", "fragile.test", "  - backendRefs: [{name: svc-1, port: 80}]\n"))
    gw.wait_for("fragile.test", pred=lambda s, b, h: name_of(b) == "backend-1")
    gw.write("fragile.yaml", "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: fragile\n  labels: [unclosed\n")
    errors = gw.stack.status / "errors.yaml"
    deadline = time.time() + 10
    while time.time() < deadline and not errors.exists():
        time.sleep(0.05)
    text = errors.read_text()
    assert "fragile.yaml" in text and "line:" in text, text
    # Last good config of that file still served.
    for _ in range(20):
        status, body, _ = gw.get("fragile.test")
        assert status == 200 and name_of(body) == "backend-1"
    # Fixing the file clears the error.
    gw.write("fragile.yaml", route("fragile", "fragile.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("fragile.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    deadline = time.time() + 5
    while time.time() < deadline and errors.exists():
        time.sleep(0.05)
    assert not errors.exists()


def test_route_edit_served_within_a_second_without_failed_requests(gw):
    gw.write("live.yaml", route("live", "live.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("live.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    # Ten edits, alternating the backend, while four clients hammer the route.
    wanted = [(i + 1) % 2 for i in range(10)]
    versions = [route("live", "live.test", f"  - backendRefs: [{{name: svc-{w}, port: 80}}]\n") for w in wanted]
    results, latencies = edits_under_load(
        gw, "live.yaml", "live.test", versions,
        expect=lambda i: lambda s, b, h: s == 200 and name_of(b) == f"backend-{wanted[i]}")
    assert sum(results.values()) > 100, results
    assert set(results) == {200}, f"failed requests during route edits: {results}"
    print(f"route edit → served: mean {1000 * sum(latencies) / len(latencies):.1f} ms, max {1000 * max(latencies):.1f} ms, "
          f"{sum(results.values())} requests all 200")


def test_config_dump_shows_pushed_version_and_programmed(gw):
    """Envoy runs exactly what Switchyard pushed: with delta xDS each resource's
    version is its content hash, which /debug/snapshot lists too."""
    gw.write("dump.yaml", route("dump", "dump.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("dump.test")
    name = f"default/bench/{gw.stack.gw_port}"
    deadline = time.time() + 10
    while True:
        snap = gw.stack.admin_json("/debug/snapshot")
        pushed = snap["resources"]["default/bench"]["RouteConfiguration"][name]
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.stack.envoy_admin}/config_dump", timeout=5) as r:
            dump = json.load(r)
        configs = {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}
        ours = [rc for rc in configs["RoutesConfigDump"]["dynamic_route_configs"] if rc["route_config"]["name"] == name]
        if (ours and ours[0]["version_info"] == pushed) or time.time() > deadline:
            break
        time.sleep(0.05)
    assert ours and ours[0]["version_info"] == pushed, (ours[:1], pushed)
    listeners = configs["ListenersConfigDump"]["dynamic_listeners"]
    assert any(l["name"] == name and l.get("active_state", {}).get("version_info") ==
               snap["resources"]["default/bench"]["Listener"][name] for l in listeners), listeners
    gw.wait_status("Gateway", "bench", "reason: Programmed")


def test_envoy_rejection_is_reported_and_last_good_config_kept(gw):
    # Values Envoy would refuse never reach it (see test_validation.py); what
    # still gets a NACK is the environment: a listener whose port is taken.
    # Envoy rejects it and keeps serving everything else; status says so.
    import socket
    import harness
    gw.write("ok.yaml", route("ok", "ok.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("ok.test")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]
    try:
        gw.write("nack.yaml", f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: taken, namespace: default}}
spec:
  gatewayClassName: switchyard
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {port}, protocol: HTTP}}
""")
        text = gw.wait_status("Gateway", "taken", "rejected", timeout=15)
        assert "reason: Invalid" in text and "Address already in use" in text, text
        # The last good configuration still serves; the other Gateway is untouched.
        status, body, _ = gw.get("ok.test")
        assert status == 200 and name_of(body) == "backend-0"
        assert "rejected" not in gw.status_doc("Gateway", "bench")
        nodes = gw.stack.admin_json("/debug/nodes")
        assert any(t.get("last_nack") for n in nodes for t in n["types"].values()), nodes
    finally:
        blocker.close()
    # Removing the Gateway recovers (so would freeing the port: the listener is retried).
    gw.remove("nack.yaml")
    gw.wait_status("Gateway", "bench", "reason: Programmed", timeout=15)
