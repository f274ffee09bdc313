"""End to end: `switchyard explain` live (asking a running standalone
instance over its admin port), offline (the same manifests), and `--diff`
(a change that moves traffic), each checked against the real Envoy."""

import json
import shutil
import subprocess

from conftest import ROOT, name_of, route

SWITCHYARD = ROOT / "target" / "release" / "switchyard"


def explain(*args, check=True):
    p = subprocess.run([str(SWITCHYARD), "explain", *args], capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


CANARY = """\
  - matches: [{path: {type: PathPrefix, value: /cart}, headers: [{name: x-canary, value: "true"}]}]
    backendRefs: [{name: svc-1, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /cart}}]
    backendRefs: [{name: svc-0, port: 80}]
  - matches: [{path: {type: Exact, value: /old}}]
    filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /new}, statusCode: 301}}]
"""


def test_live_offline_and_envoy_agree(gw):
    gw.write("shop.yaml", route("shop", "shop.test", CANARY))
    gw.wait_for("shop.test", "/cart", lambda s, b, h: name_of(b) == "backend-1", headers={"x-canary": "true"})
    port = gw.stack.gw_port
    admin = f"127.0.0.1:{gw.stack.admin_port}"
    cases = [
        (f"GET http://shop.test:{port}/cart/1", ["x-canary: true"], "backend-1"),
        (f"GET http://shop.test:{port}/cart/1", [], "backend-0"),
        (f"GET http://shop.test:{port}/old", [], 301),
        (f"GET http://shop.test:{port}/nothing-here", [], 404),
    ]
    for line, headers, want in cases:
        hargs = [a for h in headers for a in ("-H", h)]
        live = json.loads(explain("--server", admin, "--request", line, *hargs, "-o", "json").stdout)
        offline = json.loads(explain("-f", str(gw.stack.config), "--request", line, *hargs, "-o", "json").stdout)
        assert live == offline, (live, offline)
        path = line.split(str(port), 1)[1]
        status, body, _ = gw.get("shop.test", path, dict(h.split(": ", 1) for h in headers))
        if isinstance(want, int):
            assert live["status"] == want and status == want, (line, live, status)
        else:
            assert live["status"] is None and status == 200, (line, live, status)
            svc = "svc-" + want.split("-")[1]
            assert [b["name"] for b in live["backends"]] == [svc]
            assert name_of(body) == want
    # The text form names the rule that won and the one it beat.
    text = explain("--server", admin, "--request", f"GET http://shop.test:{port}/cart", "-H", "x-canary: true").stdout
    assert "Route     HTTPRoute default/shop rule 0 match 0" in text, text
    assert "Lost      HTTPRoute default/shop rule 1: headers: more header matches win (1 against 0)" in text, text
    # Batch mode over the admin API keeps order and ids.
    reqs = gw.stack.dir / "reqs.jsonl"
    reqs.write_text("\n".join(json.dumps({"id": i, "url": f"http://shop.test:{port}/cart/{i}"}) for i in range(50)) + "\n")
    lines = explain("--server", admin, "--requests", str(reqs), "-o", "json").stdout.splitlines()
    assert [json.loads(x)["id"] for x in lines] == list(range(50))


def test_diff_shows_the_requests_a_change_moves(gw, tmp_path):
    port = gw.stack.gw_port
    before, after = tmp_path / "before", tmp_path / "after"
    shutil.copytree(gw.stack.config, before)
    (before / "shop.yaml").write_text(route("shop", "shop.test", CANARY))
    shutil.copytree(before, after)
    # The change: the canary header no longer matters, everyone gets svc-1.
    (after / "shop.yaml").write_text(route("shop", "shop.test", CANARY.replace("name: svc-0", "name: svc-1")))
    p = explain("--diff", str(before), str(after), check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert f"GET http://shop.test:{port}/cart\n" in p.stdout, p.stdout
    assert "before: HTTPRoute default/shop: → default/svc-0:80×1" in p.stdout, p.stdout
    assert "after:  HTTPRoute default/shop: → default/svc-1:80×1" in p.stdout, p.stdout
    assert "/old" not in p.stdout, "the redirect did not move"
    p = explain("--diff", str(before), str(before), check=False)
    assert p.returncode == 0 and "no request changes destination" in p.stdout
    # Applying the change moves exactly what --diff said.
    gw.write("shop.yaml", (after / "shop.yaml").read_text())
    gw.wait_for("shop.test", "/cart", lambda s, b, h: name_of(b) == "backend-1")
