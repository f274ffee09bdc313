"""End to end with Envoy on state-of-the-world ADS (bootstrap api_type GRPC),
and the supervisor restarting a killed Envoy."""

import json
import os
import signal
import time
import urllib.request

from conftest import edits_under_load, name_of, route


def config_dump(gw):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.stack.envoy_admin}/config_dump", timeout=5) as r:
        dump = json.load(r)
    return {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}


def envoy_versions(gw, listener):
    """version_info of CDS, LDS and of our listener and route table, as Envoy reports them."""
    d = config_dump(gw)
    routes = {rc["route_config"]["name"]: rc["version_info"]
              for rc in d["RoutesConfigDump"].get("dynamic_route_configs", [])}
    listeners = {ls["name"]: ls.get("active_state", {}).get("version_info")
                 for ls in d["ListenersConfigDump"].get("dynamic_listeners", [])}
    return {
        "cds": d["ClustersConfigDump"].get("version_info"),
        "lds": d["ListenersConfigDump"].get("version_info"),
        "listener": listeners.get(listener),
        "route": routes.get(listener),
    }


ACKED = {"cds": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
         "lds": "type.googleapis.com/envoy.config.listener.v3.Listener",
         "route": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"}


def wait_versions_equal(gw, listener, timeout=10):
    """With SotW each response carries the snapshot version, and a type is
    only re-sent when its resources changed (an unchanged type counts as
    acknowledged at the new version in /debug/nodes). Waits until Envoy's
    route table (which every test edit changes) has /debug/snapshot's
    version, /debug/nodes shows every type at that version, and no type in
    Envoy is newer (a deferred cluster removal at version N is sent as "N.1":
    make-before-break); returns the version."""
    deadline = time.time() + timeout
    while True:
        want = str(gw.stack.admin_json("/debug/snapshot")["version"])
        got = envoy_versions(gw, listener)
        nodes = gw.stack.admin_json("/debug/nodes")
        acked = {k: str(nodes[0]["types"].get(t, {}).get("acked_version")) for k, t in ACKED.items()} if nodes else {}
        if (got["route"] == want and got["listener"] == got["lds"]
                and all(acked.get(k) == want for k in ACKED) and all(int(str(v).split(".")[0]) <= int(want) for v in got.values())):
            return int(want)
        if time.time() > deadline:
            raise AssertionError(f"Envoy has {got}, acknowledged {acked}, switchyard's snapshot is version {want}")
        time.sleep(0.05)


def test_sotw_serves_and_config_dump_matches_snapshot_version(gw_sotw):
    gw = gw_sotw
    listener = f"default/bench/{gw.stack.gw_port}"
    gw.write("v.yaml", route("v", "v.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("v.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    first = wait_versions_equal(gw, listener)
    gw.write("v.yaml", route("v", "v.test", "  - backendRefs: [{name: svc-1, port: 80}]\n"))
    gw.wait_for("v.test", pred=lambda s, b, h: name_of(b) == "backend-1")
    second = wait_versions_equal(gw, listener)
    assert second > first
    nodes = gw.stack.admin_json("/debug/nodes")
    assert [n["protocol"] for n in nodes] == ["sotw"], nodes
    gw.wait_condition("Gateway", "bench", "Programmed")


def test_sotw_route_edits_without_failed_requests(gw_sotw):
    gw = gw_sotw
    gw.write("live.yaml", route("live", "live-sotw.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("live-sotw.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    wanted = [(i + 1) % 2 for i in range(6)]
    versions = [route("live", "live-sotw.test", f"  - backendRefs: [{{name: svc-{w}, port: 80}}]\n") for w in wanted]
    results, latencies = edits_under_load(
        gw, "live.yaml", "live-sotw.test", versions,
        expect=lambda i: lambda s, b, h: s == 200 and name_of(b) == f"backend-{wanted[i]}")
    assert sum(results.values()) > 50, results
    assert set(results) == {200}, f"failed requests during route edits (SotW): {results}"
    print(f"SotW route edit → served: mean {1000 * sum(latencies) / len(latencies):.1f} ms, "
          f"max {1000 * max(latencies):.1f} ms, {sum(results.values())} requests all 200")


def test_killed_envoy_is_restarted_and_serves_again(gw_sotw):
    gw = gw_sotw
    gw.write("restart.yaml", route("restart", "restart.test", "  - backendRefs: [{name: svc-1, port: 80}]\n"))
    gw.wait_for("restart.test", pred=lambda s, b, h: name_of(b) == "backend-1")
    before = gw.stack.metrics().get("switchyard_envoy_restarts_total", 0.0)
    old = gw.stack.envoy_pid()
    assert old, "no Envoy child of switchyard found"
    os.kill(old, signal.SIGKILL)
    deadline = time.time() + 15
    new = None
    while time.time() < deadline:
        new = gw.stack.envoy_pid()
        if new and new != old:
            break
        time.sleep(0.05)
    assert new and new != old, "Envoy was not restarted"
    # The new Envoy gets the whole configuration again over ADS.
    gw.wait_for("restart.test", pred=lambda s, b, h: name_of(b) == "backend-1", timeout=15)
    assert gw.get("nothing.test")[0] == 404
    assert gw.stack.metrics().get("switchyard_envoy_restarts_total", 0.0) == before + 1
    gw.wait_condition("Gateway", "bench", "Programmed")
