"""NACK isolation, standalone mode with a real Envoy.

Switchyard refuses up front what Envoy would reject, so to make Envoy itself
reject a route the stack runs with the diagnostics flag
`--unsafe-skip-validation modifiable-header`: a RequestHeaderModifier that
sets `Host` then reaches Envoy, which NACKs the port's whole route table.
The route that produced it must be reported (status file, metric, NACK
counter) and quarantined: served at its last accepted content, while every
other route on the same port keeps updating. Fixing it lifts the quarantine.
"""

import time

import pytest

from conftest import name_of, route, start_stack

BAD_FILTER = """\
    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: Host, value: evil.test}]}}]
"""


def rules(backend, path="/", bad=False):
    return (f"  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n"
            + (BAD_FILTER if bad else "")
            + f"    backendRefs: [{{name: {backend}, port: 80}}]\n")


@pytest.fixture(scope="module")
def gwn(request):
    yield from start_stack(request, backends=2, debounce_ms=5,
                           extra_args=["--unsafe-skip-validation", "modifiable-header"])


def metric(g, metric_name, **labels):
    """The sample of `metric_name` whose labels include `labels` (None if absent)."""
    for k, v in g.stack.metrics().items():
        if k == metric_name or k.startswith(metric_name + "{"):
            if all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
                return v
    return None


def wait_metric(g, metric_name, pred, timeout=10, **labels):
    deadline = time.time() + timeout
    v = None
    while time.time() < deadline:
        v = metric(g, metric_name, **labels)
        if pred(v):
            return v
        time.sleep(0.1)
    raise AssertionError(f"{metric_name}{labels} = {v}; condition not met within {timeout}s")


def accepted(g, name):
    doc = g.status_obj("HTTPRoute", name)
    return [c for p in (doc.get("status") or {}).get("parents", []) for c in p["conditions"] if c["type"] == "Accepted"]


def test_a_rejected_route_is_quarantined_and_the_others_keep_updating(gwn):
    g = gwn
    g.write("nack-b.yaml", route("nack-b", "b.nack.test", rules("svc-0")))
    g.write("nack-a.yaml", route("nack-a", "a.nack.test", rules("svc-1")))
    g.wait_for("b.nack.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    g.wait_for("a.nack.test", pred=lambda s, b, h: name_of(b) == "backend-1")
    g.wait_condition("Gateway", "bench", "Programmed", status="True")
    nacks_before = metric(g, "switchyard_xds_nacks_total", type="rds") or 0.0

    # Route A's edit passes our checks (one is off) and Envoy rejects it.
    g.write("nack-a.yaml", route("nack-a", "a.nack.test", rules("svc-0", bad=True)))
    doc = g.wait_condition("HTTPRoute", "nack-a", "Accepted", status="False")
    for c in accepted(g, "nack-a"):
        assert c["reason"] == "UnsupportedValue", doc
        assert "Envoy rejected the configuration built from this route" in c["message"], doc
        assert "served at its last accepted version" in c["message"], doc
    assert wait_metric(g, "switchyard_xds_rejected_objects", lambda v: v == 1,
                       kind="HTTPRoute", namespace="default", name="nack-a") == 1
    assert (metric(g, "switchyard_xds_nacks_total", type="rds") or 0.0) > nacks_before
    # A is served at its last accepted content (svc-1), not cut.
    assert name_of(g.get("a.nack.test")[1]) == "backend-1"

    # Route B, on the same port's route table, keeps updating.
    t0 = time.time()
    g.write("nack-b.yaml", route("nack-b", "b.nack.test", rules("svc-1") + rules("svc-0", "/new")))
    g.wait_for("b.nack.test", pred=lambda s, b, h: name_of(b) == "backend-1", timeout=3)
    g.wait_for("b.nack.test", "/new", pred=lambda s, b, h: name_of(b) == "backend-0", timeout=3)
    assert time.time() - t0 < 3
    # The rebuild without A's edit is ACKed: the Gateway is Programmed again,
    # and every node converged.
    g.wait_condition("Gateway", "bench", "Programmed", status="True")
    wait_metric(g, "switchyard_xds_nodes_not_converged", lambda v: v == 0)
    assert name_of(g.get("a.nack.test")[1]) == "backend-1"

    # Fixing A lifts the quarantine: its new content is served.
    g.write("nack-a.yaml", route("nack-a", "a.nack.test", rules("svc-0")))
    g.wait_for("a.nack.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    g.wait_condition("HTTPRoute", "nack-a", "Accepted", status="True")
    wait_metric(g, "switchyard_xds_rejected_objects", lambda v: v is None,
                kind="HTTPRoute", namespace="default", name="nack-a")
    g.wait_condition("Gateway", "bench", "Programmed", status="True")


def test_a_new_route_envoy_rejects_is_left_out(gwn):
    g = gwn
    g.write("nack-c.yaml", route("nack-c", "c.nack.test", rules("svc-1", bad=True)))
    doc = g.wait_condition("HTTPRoute", "nack-c", "Accepted", status="False")
    assert all("not served" in c["message"] for c in accepted(g, "nack-c")), doc
    assert g.get("c.nack.test")[0] == 404
    # Others still update.
    g.write("nack-d.yaml", route("nack-d", "d.nack.test", rules("svc-1")))
    g.wait_for("d.nack.test", pred=lambda s, b, h: name_of(b) == "backend-1", timeout=3)
    # Deleting it lifts the quarantine.
    g.remove("nack-c.yaml")
    wait_metric(g, "switchyard_xds_rejected_objects", lambda v: v is None,
                kind="HTTPRoute", namespace="default", name="nack-c")
    g.wait_condition("Gateway", "bench", "Programmed", status="True")
