"""bench/compare.py's figures (ratio peer ÷ Switchyard) and the side-by-side
section bench/report.py renders from a compare result (pure code: no processes)."""

import json

import compare  # bench/, on sys.path through conftest
import compare_report
import report


def side(levels, bulk_s, non_200, cpu, rss):
    res = {"controller_cpu_s": cpu, "envoy_cpu_s": 1.0, "controller_peak_rss_mib": rss, "envoy_peak_rss_mib": 60.0,
           "wall_s": 10.0}
    return {
        "propagation": {"levels": [{"in_place": n, "added": 2, "latency": {"n": 2, "mean_ms": m, "max_ms": 2 * m},
                                    "latencies_ms": [m, 2 * m], "responses_while_coming_up": {"404": 3, "503": e},
                                    "error_responses": e, "timeouts": 0} for n, m, e in levels],
                        "resources": res},
        "bulk": {"routes": 1000, "write_s": 0.1, "all_answer_s": bulk_s, "answered": 1000 if bulk_s else 10,
                 "timeout_s": 60, "resources": res},
        "churn": {"flips": 4, "requests": 100, "non_200": non_200, "detail": {"200": 100 - non_200},
                  "switch_visible": {"mean_ms": 10.0, "max_ms": 20.0}, "resources": res},
    }


def result():
    sy = side([(0, 10.0, 0), (100, 12.0, 0)], 0.5, 0, 2.0, 40.0)
    eg = side([(0, 4000.0, 7), (100, 9000.0, 9)], None, 3, 300.0, 200.0)
    probes = {"propagation": {"switchyard": sy["propagation"], "envoy-gateway": eg["propagation"]},
              "bulk": {"1000": {"switchyard": sy["bulk"], "envoy-gateway": eg["bulk"]}},
              "churn": {"switchyard": sy["churn"], "envoy-gateway": eg["churn"]}}
    kube = {"routes": 5, "switchyard": {"routes": 5, "api_write_to_served": {"mean_ms": 20.0, "max_ms": 40.0},
                                        "status_writes_per_route": 1.0, "restart": {"status_writes": 0}},
            "envoy-gateway": {"skipped": "ports [18000] in use"}}
    return {"date": "2026-11-30", "machine": {"cores": 2, "loadavg_at_start": "1 / 1 / 1", "loadavg_at_end": "2 / 2 / 2",
                                              "envoy": "abc/1.40.0/Clean/RELEASE/BoringSSL"},
            "params": {"levels": [0, 100], "per_level": 2, "bulk": [1000], "flips": 4},
            "setup": {"switchyard": {"mode": "standalone"},
                      "envoy-gateway": {"version": "v1.9.1", "mode": "File + Host", "command": "envoy-gateway server",
                                        "config_file": "kind: EnvoyGateway\n", "envoy": "1.40.0"}},
            "probes": probes, "kube_mode": kube, "figures": compare.figures(probes, kube)}


def figure(res, probe, prefix):
    return next(f for f in res["figures"] if f["probe"] == probe and f["figure"].startswith(prefix))


def test_figures_are_peer_over_switchyard_and_missing_values_have_no_ratio():
    res = result()
    mean0 = figure(res, "propagation", "added route → 200, mean, 0 in place")
    assert (mean0["switchyard"], mean0["peer"], mean0["ratio"]) == (10.0, 4000.0, 400.0)
    mean100 = figure(res, "propagation", "added route → 200, mean, 100 in place")
    assert mean100["ratio"] == round(9000.0 / 12.0, 2)
    errors = figure(res, "propagation", "error answers (not 200/404) while routes came up, 0 in place")
    assert (errors["switchyard"], errors["peer"], errors["ratio"]) == (0, 7, None)  # no ratio over zero
    bulk = figure(res, "bulk", "1,000 routes")
    # The peer did not finish within its 60 s: the timeout bounds its figure and the ratio from below.
    assert (bulk["switchyard"], bulk["peer"], bulk["ratio"]) == (0.5, "> 60 (10 of 1,000 answered)", "> 120")
    cpu = figure(res, "resources", "controller CPU")
    assert (cpu["switchyard"], cpu["peer"], cpu["ratio"]) == (6.0, 900.0, 150.0)  # summed over 3 probes
    rss = figure(res, "resources", "controller peak RSS")
    assert (rss["switchyard"], rss["peer"], rss["ratio"]) == (40.0, 200.0, 5.0)
    kube = figure(res, "kube", "API write → served, mean")
    assert (kube["switchyard"], kube["peer"], kube["ratio"]) == (20.0, None, None)


def test_section_renders_setup_figures_detail_and_why_a_side_did_not_run(tmp_path):
    res = result()
    text = compare_report.section(res, "bench/results/compare-x.json", "results/compare-propagation.png")
    assert "## Side by side with Envoy Gateway" in text
    assert "| propagation | added route → 200, mean, 0 in place (ms) | 10.00 | 4,000 | 400× |" in text
    assert "1 / 1 / 1 at the start and 2 / 2 / 2 at the end" in text
    assert "not all within 60 s (10 answered)" in text
    assert "| > 60 (10 of 1,000 answered) | > 120× |" in text
    assert "503: 7" in text
    assert "not run: ports [18000] in use" in text
    assert "```yaml\nkind: EnvoyGateway\n```" in text
    assert compare_report.plot(res, tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 0


def test_report_takes_the_newest_compare_file_and_never_a_compare_file_as_the_main_result(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    (results / "2026-11-29.json").write_text(json.dumps({"date": "2026-11-29", "machine": {}, "scenarios": {}}))
    (results / "compare-2026-11-30.json").write_text(json.dumps(result()))
    monkeypatch.setattr(report, "RESULTS", results)
    assert report.newest_result().name == "2026-11-29.json"
    src, res = compare_report.load(results)
    assert src.name == "compare-2026-11-30.json" and res["date"] == "2026-11-30"
