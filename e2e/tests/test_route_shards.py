"""End to end with a real Envoy: a route table above --route-shards-above is
served in shards through scoped routes (a Lua filter hashes the host into the
scope key; docs/scaling.md). Requests must reach the same backends as with one
table: exact hosts (any case, with a port), wildcard hosts, the catch-all;
an edit of an exact host changes one shard only; crossing the threshold and
changing the shard count lose no request; SotW and delta both work."""

import json
import time
import urllib.request

import pytest

from conftest import name_of, route, start_stack

THRESHOLD = 4
SHARDS = 256
SHARD_HEADER = "x-switchyard-route-shard"


def exact_routes(n, prefix="h"):
    docs = []
    for i in range(n):
        docs.append(route(f"{prefix}{i}", f"{prefix}{i}.shard.test",
                          f"  - backendRefs: [{{name: svc-{i % 2}, port: 80}}]\n"))
    return "---\n".join(docs)


WILDCARD = route("wild", "'*.wild.test'", "  - backendRefs: [{name: svc-1, port: 80}]\n")
CATCH_ALL = (
    "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: any, namespace: default}\n"
    "spec:\n  parentRefs: [{name: bench}]\n  rules:\n"
    "  - filters:\n    - type: ResponseHeaderModifier\n"
    "      responseHeaderModifier: {set: [{name: x-caught, value: all}]}\n"
    "    backendRefs: [{name: svc-0, port: 80}]\n")


def config_dump(gw):
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.stack.envoy_admin}/config_dump", timeout=5) as r:
        dump = json.load(r)
    return {c["@type"].rsplit(".", 1)[-1]: c for c in dump["configs"]}


def shard_versions(gw):
    """Name → version of every route table Envoy runs."""
    d = config_dump(gw)
    return {rc["route_config"]["name"]: rc["version_info"]
            for rc in d["RoutesConfigDump"].get("dynamic_route_configs", [])}


def scopes(gw):
    d = config_dump(gw).get("ScopedRoutesConfigDump", {})
    out = {}
    for group in d.get("dynamic_scoped_route_configs", []):
        for s in group.get("scoped_route_configs", []):
            out[s["name"]] = s["route_configuration_name"]
    return out


def _fixture(request, delta):
    yield from start_stack(request, backends=2, debounce_ms=5, delta=delta,
                           extra_args=["--route-shards-above", str(THRESHOLD)])


@pytest.fixture(scope="module", params=[True, False], ids=["delta", "sotw"])
def sharded(request):
    yield from _fixture(request, request.param)


def test_every_kind_of_host_reaches_its_backend_through_the_shards(sharded):
    gw = sharded
    gw.write("exact.yaml", exact_routes(40))
    gw.write("wild.yaml", WILDCARD)
    gw.write("any.yaml", CATCH_ALL)
    for i in range(40):
        gw.wait_for(f"h{i}.shard.test", pred=lambda s, b, h, i=i: s == 200 and name_of(b) == f"backend-{i % 2}")
    # The table is served in shards: one scope per bucket, tables named ~shard<i>of<k>.
    table = f"default/bench/{gw.stack.gw_port}"
    sc = scopes(gw)
    want = {f"{table}~shard{i}of{SHARDS}" for i in range(SHARDS)}
    assert sc == {n: n for n in want}, sc
    shards = {n for n in shard_versions(gw) if n.startswith(f"{table}~shard")}
    assert shards == want, shards
    # Case and port do not change the shard (nor the answer).
    for i in (0, 1, 7, 30):
        host = f"H{i}.Shard.TEST:{gw.stack.gw_port}"
        s, b, _ = gw.get(host)
        assert (s, name_of(b)) == (200, f"backend-{i % 2}"), host
    # A host only the wildcard serves, in whatever shard it hashes to.
    for h in ("a.wild.test", "b.wild.test", "deep.er.wild.test", "X.WILD.TEST:80"):
        s, b, _ = gw.get(h)
        assert (s, name_of(b)) == (200, "backend-1"), h
    # A host nothing names: the catch-all route.
    for h in ("nothing.test", "other.example", "h99.shard.test"):
        s, b, hd = gw.get(h)
        assert (s, name_of(b), hd.get("x-caught")) == (200, "backend-0", "all"), h
    # The scope key header never reaches a backend, even one a client sent.
    s, b, _ = gw.get("h3.shard.test", headers={SHARD_HEADER: f"{table}~shard0of{SHARDS}"})
    assert s == 200 and name_of(b) == "backend-1"
    assert SHARD_HEADER not in {k.lower() for k in b["headers"]}, b["headers"]


def test_an_exact_host_edit_changes_one_shard(sharded):
    gw = sharded
    before = shard_versions(gw)
    gw.write("exact.yaml", exact_routes(40).replace(
        "hostnames: [h5.shard.test]\n  rules:\n  - backendRefs: [{name: svc-1",
        "hostnames: [h5.shard.test]\n  rules:\n  - backendRefs: [{name: svc-0"))
    gw.wait_for("h5.shard.test", pred=lambda s, b, h: s == 200 and name_of(b) == "backend-0")
    after = shard_versions(gw)
    changed = sorted(n for n in after if before.get(n) != after[n])
    assert len(changed) == 1 and "~shard" in changed[0], changed
    # The other hosts kept their backends.
    for i in (0, 1, 6, 39):
        s, b, _ = gw.get(f"h{i}.shard.test")
        assert (s, name_of(b)) == (200, f"backend-{i % 2}")


def test_threshold_crossings_lose_no_request(sharded):
    """40 exact hosts + wildcard + catch-all (sharded) → 2 + 2 (one table) →
    sharded again → one table again, each step under load on a host that
    stays; the second crossing up comes while the sharded listener of the
    first still drains (Envoy reuses its scope subscription)."""
    import harness
    gw = sharded
    host = "h2.shard.test"
    table = f"default/bench/{gw.stack.gw_port}"
    outcomes = {}
    # 3 exact hosts: at or below the threshold (one table), above half of it
    # (the scopes and shards stay served).
    for phase, n in (("down", 3), ("up", 40), ("down again", 3), ("up again", 40)):
        finish = harness.load(gw.addr, gw.stack.gw_port, host, 4)
        try:
            gw.write("exact.yaml", exact_routes(n))
            gw.wait_for(f"h{n - 1}.shard.test", pred=lambda s, b, h: s == 200 and "x-caught" not in h, timeout=20)
            if n == 3:
                gw.wait_for("h3.shard.test", pred=lambda s, b, h: s == 200 and h.get("x-caught") == "all", timeout=20)
            # Envoy runs the shape the threshold asks for.
            names = set(shard_versions(gw))
            deadline = time.time() + 10
            while (table in names) != (n == 3) and time.time() < deadline:
                time.sleep(0.05)
                names = set(shard_versions(gw))
            assert (table in names) == (n == 3), (phase, sorted(names)[:5])
            time.sleep(0.3)
        finally:
            outcomes[phase] = finish()
    for phase, results in outcomes.items():
        assert set(results) == {200}, (phase, results)
        assert results[200] > 20, (phase, results)


def sharded_then_one_table_drained(gw):
    """40 exact hosts + wildcard + catch-all (sharded), then 3 exact hosts
    (one table, scopes still served), then past the supervisor's
    --drain-time-s: the sharded listener is gone from Envoy."""
    gw.write("wild.yaml", WILDCARD)
    gw.write("any.yaml", CATCH_ALL)
    gw.write("exact.yaml", exact_routes(40))
    gw.wait_for("h39.shard.test", pred=lambda s, b, h: s == 200 and "x-caught" not in h, timeout=20)
    gw.write("exact.yaml", exact_routes(3))
    gw.wait_for("h3.shard.test", pred=lambda s, b, h: s == 200 and h.get("x-caught") == "all", timeout=20)
    time.sleep(8)


def test_crossing_up_again_after_the_old_listener_drained(sharded):
    """Sharded → one table → (the sharded listener's drain ends: Envoy drops
    its scope subscription) → sharded again: the new listener must get its
    scopes and serve, without waiting out Envoy's initial fetch timeout."""
    import harness
    gw = sharded
    sharded_then_one_table_drained(gw)
    finish = harness.load(gw.addr, gw.stack.gw_port, "h1.shard.test", 4)
    try:
        t0 = time.time()
        gw.write("exact.yaml", exact_routes(40))
        gw.wait_for("h39.shard.test", pred=lambda s, b, h: s == 200 and "x-caught" not in h, timeout=20)
        took = time.time() - t0
        time.sleep(0.5)
    finally:
        results = finish()
    assert set(results) == {200}, results
    assert took < 5, f"the sharded listener took {took:.1f} s to serve"
    for h in ("h0.shard.test", "h21.shard.test", "x.wild.test", "nothing.test"):
        s, _, _ = gw.get(h)
        assert s == 200, h


def test_scopes_leaving_after_the_drain_keep_the_gateway_programmed(sharded):
    """Sharded → one table in the band (scopes still served) → the sharded
    listener drains away → the table shrinks below half the threshold, so
    the scopes go: Envoy, without an SRDS watch, may not answer that last
    SRDS response; the Gateway must still become Programmed at the new
    version and later changes must still go out."""
    gw = sharded
    sharded_then_one_table_drained(gw)
    gw.remove("wild.yaml")
    gw.remove("any.yaml")
    gw.write("exact.yaml", exact_routes(1))
    gw.wait_for("h1.shard.test", pred=lambda s, b, h: s == 404, timeout=20)
    gw.wait_condition("Gateway", "bench", "Programmed", timeout=20)
    # A later change still goes out, and a removal completes.
    gw.write("exact.yaml", exact_routes(2))
    gw.wait_for("h1.shard.test", pred=lambda s, b, h: s == 200 and name_of(b) == "backend-1", timeout=20)
    gw.write("exact.yaml", exact_routes(1))
    gw.wait_for("h1.shard.test", pred=lambda s, b, h: s == 404, timeout=20)
    gw.wait_condition("Gateway", "bench", "Programmed", timeout=20)
    nodes = gw.stack.admin_json("/debug/nodes")
    want = gw.stack.admin_json("/debug/snapshot")["version"]
    deadline = time.time() + 10
    while time.time() < deadline:
        nodes = gw.stack.admin_json("/debug/nodes")
        types = nodes[0]["types"]
        if all(int(str(v.get("acked_version", 0)).split(".")[0]) >= want for v in types.values()):
            break
        time.sleep(0.1)
    assert all(int(str(v.get("acked_version", 0)).split(".")[0]) >= want for v in types.values()), types
