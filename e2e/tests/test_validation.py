"""End to end: hostile values never reach Envoy.

Each case is one file holding a route with one value that the Gateway API
schema or Envoy refuses, written together with a new valid route. The valid
route must be served (the listener's route table was not frozen by a NACK),
the hostile route must say Accepted=False naming the field, and at the end
the Gateway is Programmed and no Envoy ever NACKed anything.
"""

import pytest

from conftest import name_of, start_stack

LONG_PREFIX = "/" + "a" * 120

# (case, route YAML after `spec:` with parentRefs/hostnames filled in, field named in status)
CASES = [
    ("re2-repeat", """\
  - matches: [{headers: [{name: x-id, type: RegularExpression, value: "a{1001}"}]}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].matches[0].headers[0].value"),
    ("re2-size", """\
  - matches: [{path: {type: RegularExpression, value: "/(a|b){60}"}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].matches[0].path.value"),
    ("re2-lookbehind", """\
  - matches: [{path: {type: RegularExpression, value: "(?<=x)y"}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].matches[0].path.value"),
    ("re2-u-escape", """\
  - matches: [{path: {type: RegularExpression, value: "/\\\\u0041"}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].matches[0].path.value"),
    ("re2-class-op", """\
  - matches: [{queryParams: [{name: q, type: RegularExpression, value: "[a-z&&[^x]]"}]}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].matches[0].queryParams[0].value"),
    ("negative-weight", """\
  - backendRefs: [{name: svc-1, port: 80, weight: -1}]""", "spec.rules[0].backendRefs[0].weight"),
    ("huge-weight", """\
  - backendRefs: [{name: svc-1, port: 80, weight: 2147483647}, {name: svc-0, port: 80, weight: 2147483647}, {name: svc-0, port: 80, weight: 2147483647}]""",
     "spec.rules[0].backendRefs[0].weight"),
    ("backend-port", """\
  - backendRefs: [{name: svc-1, port: 70000}]""", "spec.rules[0].backendRefs[0].port"),
    ("redirect-port", """\
  - filters: [{type: RequestRedirect, requestRedirect: {port: 70000}}]""", "spec.rules[0].filters[0].requestRedirect.port"),
    ("set-host", """\
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: evil.test}]}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].filters[0].requestHeaderModifier.set[0].name"),
    ("remove-path", """\
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {remove: [":path"]}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].filters[0].requestHeaderModifier.remove[0]"),
    ("remove-status", """\
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {remove: [":status"]}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].filters[0].responseHeaderModifier.remove[0]"),
    ("empty-header-name", """\
  - filters: [{type: RequestHeaderModifier, requestHeaderModifier: {add: [{name: "", value: x}]}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].filters[0].requestHeaderModifier.add[0].name"),
    ("crlf-header-value", """\
  - filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {add: [{name: x-a, value: "a\\r\\nSet-Cookie: b"}]}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].filters[0].responseHeaderModifier.add[0].value"),
    ("nul-rewrite", """\
  - filters: [{type: URLRewrite, urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: "/a\\0b"}}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].filters[0].urlRewrite.path.replaceFullPath"),
    ("lf-redirect-path", """\
  - filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: "/a\\nb"}}}]""",
     "spec.rules[0].filters[0].requestRedirect.path.replaceFullPath"),
    ("long-prefix-rewrite", f"""\
  - matches: [{{path: {{type: PathPrefix, value: {LONG_PREFIX}}}}}]
    filters: [{{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /b}}}}}}]
    backendRefs: [{{name: svc-1, port: 80}}]""", "spec.rules[0].filters[0].urlRewrite.path.replacePrefixMatch"),
    ("unnormalized-path", """\
  - matches: [{path: {type: Exact, value: "/a//b"}}]
    backendRefs: [{name: svc-1, port: 80}]""", "spec.rules[0].matches[0].path"),
    ("too-many-rules", "\n".join(["  - backendRefs: [{name: svc-1, port: 80}]"] * 17), "spec.rules"),
]

HOSTILE_HOSTNAMES = [
    ("host-inner-wildcard", "a.*.example.test", "spec.hostnames[0]"),
    ("host-upper", "UPPER.test", "spec.hostnames[0]"),
    ("host-crlf", '"a.test\\r\\nx"', "spec.hostnames[0]"),
]


def manifest(name, host, rules):
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{host}]\n  rules:\n{rules}\n")


@pytest.fixture(scope="module")
def gwv(request):
    yield from start_stack(request, backends=2, debounce_ms=5)


def all_cases():
    for name, rules, field in CASES:
        yield name, manifest(name, f"{name}.test", rules), field
    for name, host, field in HOSTILE_HOSTNAMES:
        yield name, manifest(name, host, "  - backendRefs: [{name: svc-1, port: 80}]"), field


def test_hostile_values_are_refused_and_never_freeze_the_listener(gwv):
    for i, (name, text, field) in enumerate(all_cases()):
        # The hostile route and a brand-new valid route, in one change.
        gwv.write(f"hostile-{name}.yaml", text + "---\n" + manifest(
            f"valid-{i}", f"valid-{i}.test", "  - backendRefs: [{name: svc-0, port: 80}]"))
        status, body, _ = gwv.wait_for(f"valid-{i}.test", timeout=10)
        assert name_of(body) == "backend-0", (name, status, body)
        doc = gwv.wait_condition("HTTPRoute", name, "Accepted", status="False")
        conds = [c for p in doc["status"]["parents"] for c in p["conditions"] if c["type"] == "Accepted"]
        assert all(c["reason"] == "UnsupportedValue" for c in conds), (name, conds)
        assert all(field in c["message"] for c in conds), (name, field, conds)
        if name.startswith("host-"):
            continue
        assert gwv.get(f"{name}.test", "/")[0] == 404, name
    # Nothing was ever NACKed, and the Gateway is programmed.
    nodes = gwv.stack.admin_json("/debug/nodes")
    nacks = [(n.get("node"), t, s.get("last_nack")) for n in nodes for t, s in n["types"].items() if s.get("last_nack")]
    assert not nacks, nacks
    gwv.wait_condition("Gateway", "bench", "Programmed", status="True")
    # Every valid route is still served.
    for i in range(len(CASES) + len(HOSTILE_HOSTNAMES)):
        assert name_of(gwv.get(f"valid-{i}.test")[1]) == "backend-0", i


def static_bootstrap(xds):
    """The translated resources of every Gateway as one static bootstrap:
    EDS clusters get their endpoints inline, listeners their route tables."""
    clusters, listeners = [], []
    for res in xds["gateways"].values():
        eps = {e["clusterName"]: e for e in res.get("endpoints", [])}
        routes = {r["name"]: r for r in res.get("routes", [])}
        for c in res.get("clusters", []):
            c = dict(c)
            if c.get("type") == "EDS":
                c.pop("edsClusterConfig", None)
                c["type"] = "STATIC"
                la = dict(eps.get(c["name"], {"clusterName": c["name"]}))
                la.pop("@type", None)
                c["loadAssignment"] = la
            c.pop("@type", None)
            clusters.append(c)
        for lst in res.get("listeners", []):
            lst = dict(lst)
            lst.pop("@type", None)
            for chain in lst.get("filterChains", []):
                for f in chain.get("filters", []):
                    cfg = f.get("typedConfig", {})
                    rds = cfg.pop("rds", None)
                    if rds:
                        rc = dict(routes[rds["routeConfigName"]])
                        rc.pop("@type", None)
                        cfg["routeConfig"] = rc
            listeners.append(lst)
    return {"staticResources": {"clusters": clusters, "listeners": listeners}}


def test_translated_corpus_passes_envoy_validate_mode(tmp_path):
    """The whole corpus, translated offline, is accepted by `envoy --mode validate`."""
    import json
    import subprocess

    from conftest import ROOT
    import harness

    files = []
    base = tmp_path / "base.yaml"
    base.write_text(harness.gateway_manifests(8080, [("svc-0", 9001), ("svc-1", 9002)]))
    files.append(base)
    for i, (name, text, _) in enumerate(all_cases()):
        p = tmp_path / f"hostile-{name}.yaml"
        p.write_text(text + "---\n" + manifest(f"valid-{i}", f"valid-{i}.test",
                                                "  - backendRefs: [{name: svc-0, port: 80}]"))
        files.append(p)
    args = [str(harness.SWITCHYARD), "translate", "-o", "json"]
    for f in files:
        args += ["-f", str(f)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout)
    xds = doc.get("xds", doc)
    text = json.dumps(xds)
    assert "HTTPRoute/default/valid-0/rule/0/match/0" in text
    boot = tmp_path / "bootstrap.json"
    boot.write_text(json.dumps(static_bootstrap(xds)))
    envoy = ROOT / ".venv" / "bin" / "envoy"
    r = subprocess.run([str(envoy), "--mode", "validate", "-c", str(boot), "-l", "error"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
