"""bench/atscale.py's breakdown of a change (from the ADS server's push/ACK
log lines) and the targets and section bench/report.py renders from it (pure
code: no processes)."""

import atscale  # bench/, on sys.path through conftest
import report

LOG = """\
2026-11-30T03:52:09.827692Z DEBUG switchyard::xds::server: xDS push node=n type_url=type.googleapis.com/envoy.config.listener.v3.Listener version="1" nonce="3" resources=1 removed=0 bytes=1799
2026-11-30T03:52:13.535350Z DEBUG switchyard::xds::server: xDS push node=n type_url=type.googleapis.com/envoy.config.route.v3.RouteConfiguration version="2" nonce="5" resources=1 removed=0 bytes=168392
2026-11-30T03:52:13.535400Z DEBUG switchyard::xds::server: ACK node=n type_url="type.googleapis.com/envoy.config.listener.v3.Listener" version=1 nonce=3
2026-11-30T03:52:13.575350Z DEBUG switchyard::xds::server: ACK node=n type_url="type.googleapis.com/envoy.config.route.v3.RouteConfiguration" version=2 nonce=5
2026-11-30T03:52:14.000000Z  INFO switchyard::standalone: something else
"""


def test_breakdown_splits_a_change_at_the_push_and_the_ack(tmp_path):
    log = tmp_path / "switchyard.log"
    log.write_text(LOG)
    events = atscale.log_events(log)
    # Only RouteConfiguration lines count.
    assert [(kind, nonce) for _, kind, nonce in events] == [("push", 5), ("ack", 5)]
    push, ack = events[0][0], events[1][0]
    wrote = push - 0.010
    served = ack + 0.002
    parts = atscale.breakdown(events, [(wrote, served), (ack + 5, None)])
    assert parts == {"controller_ms": 10.0, "envoy_apply_ms": 40.0, "after_ack_ms": 2.0}
    # A change with no push after it (or never served) has no breakdown.
    assert atscale.breakdown(events, [(ack + 1, ack + 2)]) == {"controller_ms": None, "envoy_apply_ms": None,
                                                               "after_ack_ms": None}


def size(routes, mean, envoy_ms, non_200):
    return {"routes": routes, "changes": 20, "change": {"n": 20, "mean_ms": mean, "p50_ms": mean, "max_ms": 2 * mean},
            "breakdown_mean": {"controller_ms": 5.0, "envoy_apply_ms": envoy_ms, "after_ack_ms": 0.5},
            "xds_bytes_per_change": routes * 170, "traffic": {"requests": 1000, "non_200": non_200},
            "rss_loaded": {"controller_mib": 50.0, "envoy_mib": 70.0}, "ratio_to_smallest": round(mean / 8.0, 2)}


def test_targets_compare_each_size_with_the_smallest_and_count_failed_requests():
    at = {"sizes": [size(100, 8.0, 3.0, 0), size(10000, 11.0, 6.0, 0), size(50000, 300.0, 280.0, 2)]}
    scale = [{"routes": 50000, "full_ms": 450.0, "controller_rss_mib": 700.0}]
    rows = {r[0]: r for r in report.atscale_targets(at, scale)}
    r10 = rows["Propagation per change at 10,000 routes, mean (÷ the figure at 100 routes)"]
    assert r10[3] == report.MET and "1.4 ×" in r10[2] and "100 routes: 8.00 ms" in r10[2]
    r50 = rows["Propagation per change at 50,000 routes, mean (÷ the figure at 100 routes)"]
    assert r50[3] == report.MISSED and "37.5 ×" in r50[2] and "280.0 ms" in r50[2]
    assert rows["Route changes under traffic at 10,000 routes, non-200 responses"][3] == report.MET
    assert rows["Full translation at 50,000 routes (translate + xDS build)"][3] == report.MET
    assert rows["Controller RSS at 50,000 routes"][3] == report.MISSED
    # Without the scenario every row says so rather than passing.
    assert all(r[3] == report.UNMEASURED for r in report.atscale_targets(None, None))


def test_section_lists_every_size_with_its_breakdown(tmp_path):
    res = {"date": "2026-11-30", "machine": {"cores": 2},
           "scenarios": {"atscale": {"sizes": [size(100, 8.0, 3.0, 0), size(1000, 30.0, 25.0, 1)]}}}
    text = report.section_atscale(res["scenarios"]["atscale"], "results/atscale.png")
    assert "| 1,000 | 30.00 ms | 30.00 ms | 60.00 ms | 3.8 × | 5.00 ms | 25.00 ms | 0.50 ms | 166 KiB | 1 / 1,000 |" in text
    assert "![Propagation per change over configuration size](results/atscale.png)" in text
    assert report.plot_atscale(res, tmp_path / "a.png") and (tmp_path / "a.png").stat().st_size > 0
