"""Changes at configuration size (issue #15 items 1 and 2, and its "route
change under traffic at 10,000 routes" check).

For each size N: `switchyard standalone` and its Envoy load the synthetic
configuration of the scale scenario (N HTTPRoutes over 50 namespaces, one
Gateway, one hostname each, so one virtual host per route) plus a `churn`
route. Then, while clients keep requesting the churn route and routes already
in place (every response counted), the configuration changes CHANGES times,
alternating:

- **add**: a new HTTPRoute in a file of its own; timed from the file write
  until Envoy answers 200 for its hostname;
- **edit**: the churn route switches backend and toggles a response header;
  timed from the file write until Envoy answers from the new backend with
  the new header.

Per size: the latency of each kind, the xDS bytes pushed per change, the
controller's and Envoy's CPU per change, both processes' RSS with the
configuration loaded, and every non-200 response of the traffic. The ratio of
a size's mean to the smallest size's is what item 1 of the issue targets
(within 1.5x at 10,000 and 50,000 routes)."""

import os
import random
import re
import threading
import time
from collections import Counter
from datetime import datetime, timezone

import harness as h

POLL_S = 0.0005
# The ADS server logs each push and ACK at debug level: where a change's time
# goes is read from those lines (same clock as the bench's file writes).
LOG_FILTER = "info,switchyard::xds::server=debug"
RDS = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
LINE = re.compile(r"^(\S+Z) DEBUG switchyard::xds::server: (xDS push|ACK) .*?type_url=\"?([^\s\"]+)\"? .*?nonce=\"?(\d+)")


def log_events(path):
    """(unix time, 'push'|'ack', nonce) of every RouteConfiguration push and ACK."""
    out = []
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if not m or m.group(3) != RDS:
            continue
        ts = datetime.strptime(m.group(1)[:26], "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=timezone.utc).timestamp()
        out.append((ts, "push" if m.group(2) == "xDS push" else "ack", int(m.group(4))))
    return out


def breakdown(events, changes):
    """Per change (file write time, seen-served time): write → RDS push (the
    controller: file watch, debounce, translation, build), push → ACK (Envoy
    decoding and applying the RouteConfiguration), ACK → served (Envoy's
    workers picking it up, and the probe's next poll)."""
    parts = {"controller_ms": [], "envoy_apply_ms": [], "after_ack_ms": []}
    for wrote, served in changes:
        push = next((e for e in events if e[1] == "push" and e[0] >= wrote), None)
        if push is None or served is None:
            continue
        ack = next((e for e in events if e[1] == "ack" and e[2] == push[2]), None)
        if ack is None:
            continue
        parts["controller_ms"].append(1000 * (push[0] - wrote))
        parts["envoy_apply_ms"].append(1000 * (ack[0] - push[0]))
        parts["after_ack_ms"].append(1000 * max(0.0, served - ack[0]))
    return {k: round(sum(v) / len(v), 2) if v else None for k, v in parts.items()}


def churn_route(backend, header):
    filters = ("    filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n"
               f"        set: [{{name: x-churn, value: \"{header}\"}}]\n") if header else ""
    return ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: churn, namespace: team-0}\n"
            "spec:\n  parentRefs: [{name: gw-0, namespace: infra}]\n  hostnames: [churn.bench]\n  rules:\n"
            f"  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n{filters}"
            f"    backendRefs: [{{name: {backend}, port: 80}}]\n")


def added_route(i):
    return ("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            f"metadata: {{name: added-{i}, namespace: team-0}}\n"
            f"spec:\n  parentRefs: [{{name: gw-0, namespace: infra}}]\n  hostnames: [added-{i}.bench]\n"
            "  rules: [{backendRefs: [{name: svc-0, port: 80}]}]\n")


class Traffic:
    """Keep-alive clients: `churn` threads on the churn route, `spread`
    threads on random routes already in place; every outcome counted."""

    def __init__(self, port, routes, churn=2, spread=2):
        self.port, self.routes = port, routes
        self.results = {"churn": Counter(), "spread": Counter()}
        self.lock, self.stop_ev = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.loop, args=("churn",), daemon=True) for _ in range(churn)]
        self.threads += [threading.Thread(target=self.loop, args=("spread",), daemon=True) for _ in range(spread)]
        for t in self.threads:
            t.start()

    def loop(self, kind):
        c = h.Client(self.port)
        rnd = random.Random()
        while not self.stop_ev.is_set():
            if kind == "churn":
                status, _, _ = c.get("churn.bench")
            else:
                r = rnd.randrange(self.routes)
                status, _, _ = c.get(f"r{r}.example.com", f"/api/{r}")
            with self.lock:
                self.results[kind][str(status)] += 1

    def finish(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(10)
        return {k: dict(v) for k, v in self.results.items()}


def wait_for(pred, timeout):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if pred():
            return time.perf_counter() - t0
        time.sleep(POLL_S)
    return None


def one_size(routes, changes):
    before = os.environ.get("SWITCHYARD_LOG")
    os.environ["SWITCHYARD_LOG"] = LOG_FILTER
    try:
        return measure(routes, changes)
    finally:
        if before is None:
            os.environ.pop("SWITCHYARD_LOG", None)
        else:
            os.environ["SWITCHYARD_LOG"] = before


def measure(routes, changes):
    # run.py imports this module: its helpers are imported when used.
    from run import accepted_routes, backend_of, synthetic_config

    with h.Stack(backends=2, extra_args=["--address-pool", "127.0.0.1/32"]) as st:
        synthetic_config(st, routes, gateways=1)
        st.write("churn.yaml", churn_route("svc-0", None))
        t0 = time.time()
        st.start_switchyard()
        load_timeout = 120 + routes / 100
        c = h.Client(st.gw_port, timeout=10)
        last = routes - 1
        deadline = time.time() + load_timeout
        while time.time() < deadline:
            status, _, _ = c.get(f"r{last}.example.com", f"/api/{last}")
            if status == 200 and c.get("churn.bench")[0] == 200:
                break
            time.sleep(0.2)
        served_s = time.time() - t0
        deadline = time.time() + load_timeout
        while accepted_routes(st) < routes + 1 and time.time() < deadline:
            time.sleep(1 if routes > 5000 else 0.1)
        time.sleep(2)
        envoy = st.envoy_pid()
        rss = {"controller_mib": round(h.rss_kib(st.switchyard.pid) / 1024, 1),
               "envoy_mib": round(h.rss_kib(envoy) / 1024, 1) if envoy else None}

        traffic = Traffic(st.gw_port, routes)
        time.sleep(1)
        m0 = st.metrics()
        cpu0 = (h.cpu_seconds(st.switchyard.pid), h.cpu_seconds(envoy) if envoy else 0.0)
        lat = {"add": [], "edit": []}
        missed = Counter()
        stamps = []
        probe = h.Client(st.gw_port, timeout=10)
        for i in range(changes):
            wrote = time.time()
            if i % 2 == 0:
                st.write(f"added-{i}.yaml", added_route(i))
                took = wait_for(lambda: probe.get(f"added-{i}.bench")[0] == 200, 30)
                kind = "add"
            else:
                backend = f"svc-{(i // 2 + 1) % 2}"
                header = str(i) if (i // 2) % 2 == 0 else None
                st.write("churn.yaml", churn_route(backend, header))
                want = f"backend-{(i // 2 + 1) % 2}"

                def switched():
                    status, body, headers = probe.get("churn.bench")
                    got = {k.lower(): v for k, v in headers.items()}.get("x-churn")
                    return status == 200 and backend_of(body) == want and got == header

                took = wait_for(switched, 30)
                kind = "edit"
            stamps.append((wrote, None if took is None else wrote + took))
            if took is None:
                missed[kind] += 1
            else:
                lat[kind].append(took)
            time.sleep(0.2)
        cpu1 = (h.cpu_seconds(st.switchyard.pid), h.cpu_seconds(envoy) if envoy else 0.0)
        m1 = st.metrics()
        time.sleep(0.5)
        outcomes = traffic.finish()
        requests = sum(sum(v.values()) for v in outcomes.values())
        ok = sum(v.get("200", 0) for v in outcomes.values())
        pushed = (sum(v for k, v in m1.items() if k.startswith("switchyard_xds_push_bytes_total"))
                  - sum(v for k, v in m0.items() if k.startswith("switchyard_xds_push_bytes_total")))
        both = lat["add"] + lat["edit"]
        split = breakdown(log_events(st.dir / "switchyard.log"), stamps)
        return {
            "routes": routes,
            "changes": changes,
            "loaded_and_served_s": round(served_s, 2),
            "rss_loaded": rss,
            "add": h.summary_ms(lat["add"]),
            "edit": h.summary_ms(lat["edit"]),
            "change": h.summary_ms(both),
            "change_latencies_ms": [round(1000 * x, 2) for x in both],
            "missed": dict(missed),
            "breakdown_mean": split,
            "xds_bytes_per_change": round(pushed / changes) if changes else None,
            # CPU over the changes / changes; Envoy's includes serving the traffic.
            "cpu_s_per_change": {"controller": round((cpu1[0] - cpu0[0]) / changes, 4),
                                 "envoy": round((cpu1[1] - cpu0[1]) / changes, 4)},
            "traffic": {"requests": requests, "non_200": requests - ok, "detail": outcomes},
            # The controller's own work per change (translate + xDS build, its
            # metrics); the rest of a change's latency is the file watch, the
            # push, and Envoy decoding and applying the RouteConfiguration.
            "controller_ms_per_change": round(1000 * sum(m1.get(k, 0) - m0.get(k, 0) for k in (
                "switchyard_translate_seconds_sum", "switchyard_xds_build_seconds_sum")) / changes, 3) if changes else None,
            "xds_nacks": sum(v for k, v in m1.items() if k.startswith("switchyard_xds_nacks_total")),
        }


def atscale(sizes, changes=20):
    out = []
    for n in sizes:
        print(f"   {n} routes ...", flush=True)
        r = one_size(n, changes)
        out.append(r)
        print(f"   {n} routes: change mean {r['change'].get('mean_ms')} ms, add {r['add'].get('mean_ms')} ms, "
              f"edit {r['edit'].get('mean_ms')} ms, {r['traffic']['requests']} requests, "
              f"{r['traffic']['non_200']} non-200, Envoy {r['rss_loaded']['envoy_mib']} MiB", flush=True)
    base = out[0]["change"].get("mean_ms") if out else None
    for r in out:
        m = r["change"].get("mean_ms")
        r["ratio_to_smallest"] = round(m / base, 2) if base and m else None
    return {"sizes": out}
