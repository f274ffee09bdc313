"""Status as metrics, standalone mode with a real Envoy: every current
condition of a route is a `switchyard_status_condition` series; when the
route's backend Service is deleted its ResolvedRefs series flips to
False/BackendNotFound (the True series disappears, no stale series), the
route totals follow, and restoring the Service flips it back. Every metric of
the catalogue is declared (HELP/TYPE) from start, and build info is set.
"""

import http.client
import re
import time

from conftest import name_of, route

HOST = "status-metrics.test"
ROUTE = "sm-route"
SVC = "sm-svc"


def raw_metrics(gw):
    c = http.client.HTTPConnection("127.0.0.1", gw.stack.admin_port, timeout=10)
    c.request("GET", "/metrics")
    text = c.getresponse().read().decode()
    c.close()
    return text


def series(gw, metric, **labels):
    """{label dict: value} for each series of `metric` whose labels include `labels`."""
    out = {}
    for line in raw_metrics(gw).splitlines():
        if not line.startswith(metric + "{") and not line.startswith(metric + " "):
            continue
        sel, _, value = line.rpartition(" ")
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', sel))
        if all(got.get(k) == v for k, v in labels.items()):
            out[tuple(sorted(got.items()))] = float(value)
    return out


def cond_series(gw):
    """{(type, status, reason): value} of the route's condition series."""
    return {(d["type"], d["status"], d["reason"]): v
            for d, v in ((dict(k), v) for k, v in series(
                gw, "switchyard_status_condition", kind="HTTPRoute", namespace="default", name=ROUTE).items())}


def one(gw, metric, **labels):
    s = series(gw, metric, **labels)
    assert len(s) == 1, (metric, labels, s)
    return next(iter(s.values()))


def wait_until(pred, what, timeout=10):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s; last {last}")


SERVICE = f"""apiVersion: v1
kind: Service
metadata: {{name: {SVC}, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {SVC}-1, namespace: default, labels: {{kubernetes.io/service-name: {SVC}}}}}
addressType: IPv4
ports: [{{name: http, port: PORT}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


def test_catalogue_declared_and_build_info(gw):
    text = raw_metrics(gw)
    for name, kind in [("switchyard_status_condition", "gauge"), ("switchyard_routes_unresolved_refs", "gauge"),
                       ("switchyard_reference_grant_changes_total", "counter"),
                       ("switchyard_certificate_expiry_timestamp_seconds", "gauge"),
                       ("switchyard_xds_rejected_objects", "gauge"), ("switchyard_xds_nodes_not_converged", "gauge"),
                       ("switchyard_translate_seconds", "histogram")]:
        assert f"# HELP {name} " in text and f"# TYPE {name} {kind}\n" in text, name
    info = series(gw, "switchyard_build_info")
    assert list(info.values()) == [1.0], info
    labels = dict(next(iter(info)))
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", labels["version"]) and labels["commit"], labels


def test_route_condition_series_flip_when_the_backend_service_goes(gw):
    gw.write("sm-svc.yaml", SERVICE.replace("PORT", str(gw.stack.backend_ports[0])))
    gw.write("sm-route.yaml", route(ROUTE, HOST, f"""\
  - backendRefs: [{{name: {SVC}, port: 80}}]
"""))
    gw.wait_for(HOST, pred=lambda s, b, h: s == 200 and name_of(b) == "backend-0")
    parent = "default/bench"
    ok = wait_until(lambda: (lambda s: s if ("ResolvedRefs", "True", "ResolvedRefs") in s else None)(cond_series(gw)),
                    "ResolvedRefs=True series")
    assert ok == {("Accepted", "True", "Accepted"): 1.0, ("ResolvedRefs", "True", "ResolvedRefs"): 1.0}, ok
    assert all(dict(k)["parent"] == parent for k in series(
        gw, "switchyard_status_condition", kind="HTTPRoute", name=ROUTE)), "parent label is <ns>/<gateway>"
    total = one(gw, "switchyard_routes_total", kind="HTTPRoute")
    accepted = one(gw, "switchyard_routes_accepted", kind="HTTPRoute")
    unresolved = one(gw, "switchyard_routes_unresolved_refs", kind="HTTPRoute")
    assert total >= 1 and accepted >= 1
    assert one(gw, "switchyard_gateways_total") == 1
    wait_until(lambda: one(gw, "switchyard_gateways_programmed") == 1, "the Gateway Programmed (Envoy ACKed)")
    gw_series = series(gw, "switchyard_status_condition", kind="Gateway", name="bench", type="Programmed")
    assert [dict(k)["status"] for k in gw_series] == ["True"], gw_series
    assert series(gw, "switchyard_status_condition", kind="Listener", name="bench/http", type="Accepted")

    # The Service goes: Envoy answers 500 and the series flip, without a stale True.
    gw.remove("sm-svc.yaml")
    gw.wait_for(HOST, pred=lambda s, b, h: s == 500)
    bad = wait_until(lambda: (lambda s: s if ("ResolvedRefs", "False", "BackendNotFound") in s else None)(
        cond_series(gw)), "ResolvedRefs=False/BackendNotFound series")
    assert bad == {("Accepted", "True", "Accepted"): 1.0, ("ResolvedRefs", "False", "BackendNotFound"): 1.0}, bad
    assert one(gw, "switchyard_routes_total", kind="HTTPRoute") == total
    assert one(gw, "switchyard_routes_unresolved_refs", kind="HTTPRoute") == unresolved + 1

    # Back: True again, the False series gone.
    gw.write("sm-svc.yaml", SERVICE.replace("PORT", str(gw.stack.backend_ports[0])))
    gw.wait_for(HOST, pred=lambda s, b, h: s == 200 and name_of(b) == "backend-0")
    wait_until(lambda: cond_series(gw) == ok, "the ResolvedRefs=True series back alone")
    assert one(gw, "switchyard_routes_unresolved_refs", kind="HTTPRoute") == unresolved

    # The route deleted: none of its series remain, the total drops.
    gw.remove("sm-route.yaml")
    wait_until(lambda: not cond_series(gw), "no series left for the deleted route")
    assert one(gw, "switchyard_routes_total", kind="HTTPRoute") == total - 1
    assert one(gw, "switchyard_routes_accepted", kind="HTTPRoute") == accepted - 1
    gw.remove("sm-svc.yaml")
