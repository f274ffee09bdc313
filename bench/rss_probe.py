#!/usr/bin/env python3
"""Controller memory and full-translation time at N routes, alone (what
`bench/run.py`'s scale scenario measures, without the other sizes):

    .venv/bin/python bench/rss_probe.py 5000 50000
    SWITCHYARD_BIN=/path/to/other/switchyard .venv/bin/python bench/rss_probe.py 5000

Starts `switchyard standalone` with a real Envoy (bench/harness.py), writes
the synthetic configuration of the scale scenario, waits until every route
is Accepted, then reports the controller's RSS (VmRSS and VmHWM, the peak)
and the translate + xDS build seconds of its translations (controller
metrics)."""
import json
import sys
import time

import harness as h
from run import accepted_routes, synthetic_config


def status_kib(pid, field):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def probe(routes):
    with h.Stack(backends=2, extra_args=["--address-pool", "127.0.0.1/32"]) as st:
        synthetic_config(st, routes, gateways=1)
        t0 = time.time()
        st.start_switchyard()
        deadline = time.time() + 900
        while accepted_routes(st) < routes and time.time() < deadline:
            time.sleep(0.2)
        accepted_s = time.time() - t0
        time.sleep(3)
        m = st.metrics()
        pid = st.switchyard.pid
        envoy = st.envoy_pid()
        return {
            "routes": routes,
            "switchyard": str(h.SWITCHYARD),
            "time_to_all_accepted_s": round(accepted_s, 2),
            "controller_rss_mib": round(status_kib(pid, "VmRSS") / 1024, 1),
            "controller_peak_rss_mib": round(status_kib(pid, "VmHWM") / 1024, 1),
            "envoy_rss_mib": round(status_kib(envoy, "VmRSS") / 1024, 1) if envoy else None,
            "translations": m.get("switchyard_translate_seconds_count"),
            "translate_s_sum": m.get("switchyard_translate_seconds_sum"),
            "xds_build_s_sum": m.get("switchyard_xds_build_seconds_sum"),
        }


if __name__ == "__main__":
    for n in [int(a) for a in sys.argv[1:]] or [5000]:
        print(json.dumps(probe(n)), flush=True)
