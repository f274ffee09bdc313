"""deploy/monitoring: the alert rules (one source, copies in Helm and the
kustomize component kept equal), a runbook for every alert and every
runbook_url resolving to a file, the Grafana dashboard's structure, the
Prometheus Operator objects of Helm and kustomize matching the pods they
scrape, and promtool's own checks and unit tests (deploy/monitoring/tests)."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from test_deploy import _helm_template, _kubectl_kustomize

ROOT = Path(__file__).resolve().parents[2]
MON = ROOT / "deploy" / "monitoring"
RULES = MON / "switchyard-rules.yaml"
DASHBOARD = MON / "grafana-dashboard.json"
RUNBOOKS = ROOT / "docs" / "runbooks"
CHART_FILES = ROOT / "deploy" / "helm" / "switchyard" / "files"
COMPONENT = ROOT / "deploy" / "kustomize" / "components" / "monitoring"
RUNBOOK_URL = "https://github.com/switchyard-dev/switchyard/blob/main/docs/runbooks/{}.md"
PROMTOOL = Path(os.environ.get("PROMTOOL", ROOT / "e2e" / "bin" / "promtool"))
DASHCHECK = Path(os.environ.get("DASHCHECK", ROOT / "e2e" / "bin" / "dashcheck"))

ALERTS = {"HTTPRouteNotAccepted", "GatewayNotProgrammed", "GatewayHighErrorRate", "GatewayBackendHighLatency",
          "RouteResolvedRefsFalse", "ReferenceGrantRemovalCutTraffic", "EnvoyConfigRejected", "FleetNotConverged",
          "CertificateExpiringSoon", "CertificateExpired", "SwitchyardNoLeader", "StatusWritesFailing"}
GUIDES = {"README.md", "traffic-split-not-working.md", "502-503-from-the-gateway.md"}


def rules():
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_the_alerts_are_exactly_the_documented_ones_with_severity_and_for():
    rs = rules()
    names = [r["alert"] for r in rs]
    assert len(names) == len(set(names)), names
    assert set(names) == ALERTS
    for r in rs:
        assert r["labels"]["severity"] in ("warning", "critical"), r
        assert re.fullmatch(r"\d+[smh]", r["for"]), r
        assert r["annotations"]["summary"] and r["annotations"]["description"], r


def test_every_alert_has_a_runbook_and_every_runbook_url_resolves():
    for r in rules():
        url = r["annotations"]["runbook_url"]
        assert url == RUNBOOK_URL.format(r["alert"]), url
        path = ROOT / url.split("/blob/main/", 1)[1]
        assert path.is_file(), f"{r['alert']}: {url} names no file"
        text = path.read_text()
        assert text.startswith(f"# {r['alert']}\n"), path
        for section in ("## What it means", "## Confirm", "## Fix"):
            assert section in text, (path, section)
    # No runbook without an alert (besides the index and the troubleshooting guides).
    pages = {p.name for p in RUNBOOKS.glob("*.md")}
    assert pages - GUIDES == {f"{a}.md" for a in ALERTS}
    assert GUIDES <= pages


def test_runbook_links_resolve_and_the_index_lists_every_page():
    index = (RUNBOOKS / "README.md").read_text()
    for page in RUNBOOKS.glob("*.md"):
        if page.name != "README.md":
            assert f"({page.name})" in index, f"docs/runbooks/README.md does not link {page.name}"
        for target in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", page.read_text()):
            if not target.startswith("http"):
                assert (page.parent / target).resolve().is_file(), f"{page.name}: broken link {target}"


def test_helm_and_kustomize_copies_equal_the_sources():
    hint = "stale copy: run deploy/monitoring/sync.sh"
    assert (CHART_FILES / "switchyard-rules.yaml").read_text() == RULES.read_text(), hint
    assert (CHART_FILES / "grafana-dashboard.json").read_text() == DASHBOARD.read_text(), hint
    assert (COMPONENT / "grafana-dashboard.json").read_text() == DASHBOARD.read_text(), hint
    pr = yaml.safe_load((COMPONENT / "prometheusrule.yaml").read_text())
    assert pr["kind"] == "PrometheusRule" and pr["apiVersion"] == "monitoring.coreos.com/v1"
    assert pr["spec"] == yaml.safe_load(RULES.read_text()), hint


def test_dashboard_structure():
    d = json.loads(DASHBOARD.read_text())
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    ds_vars = [v for v in d["templating"]["list"] if v["type"] == "datasource"]
    assert [v["name"] for v in ds_vars] == ["datasource"] and ds_vars[0]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"panel {p['title']!r} overlaps another"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs)), p["title"]
        for t in p["targets"]:
            assert t["expr"].strip() and t["datasource"]["uid"] == "${datasource}", (p["title"], t)
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
    # What the issue asks the dashboard to show.
    exprs = " ".join(t["expr"] for p in d["panels"] for t in p.get("targets", []))
    for metric in ("switchyard_status_condition", "envoy_http_downstream_rq_xx", "envoy_cluster_upstream_rq_time_bucket",
                   "switchyard_xds_nacks_total", "switchyard_xds_nodes_not_converged",
                   "switchyard_certificate_expiry_timestamp_seconds", "switchyard_translate_seconds_bucket",
                   "switchyard_status_writes_total"):
        assert metric in exprs, metric


def test_dashboard_decodes_strictly_with_grafanas_schema_types():
    """The Grafana Foundation SDK's generated dashboard types (the dashboard
    schema): unknown fields, wrong types, missing required options or unknown
    panel kinds fail; built by e2e/cluster/build.sh (make cluster-build)."""
    assert DASHCHECK.exists(), f"dashcheck not built at {DASHCHECK}: make cluster-build"
    r = subprocess.run([str(DASHCHECK), str(DASHBOARD)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert ": ok (" in r.stdout, r.stdout
    # And the checker is not vacuous: an unknown field in a panel is refused.
    bad = json.loads(DASHBOARD.read_text())
    bad["panels"][1]["unknownField"] = True
    path = Path(os.environ.get("TMPDIR", "/tmp")) / "switchyard-bad-dashboard.json"
    path.write_text(json.dumps(bad))
    r = subprocess.run([str(DASHCHECK), str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "unknownField" in r.stderr, (r.returncode, r.stderr)


def _promtool(*args):
    if not PROMTOOL.exists():
        pytest.skip(f"promtool not built at {PROMTOOL} (make cluster-build)")
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=MON)


def test_promtool_checks_the_rules():
    r = _promtool("check", "rules", str(RULES))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in r.stdout, r.stdout


def test_promtool_unit_tests_fire_and_do_not_fire_every_alert():
    tests = sorted((MON / "tests").glob("*.yaml"))
    # Every alert is named by a test that expects it and by one that expects nothing.
    tested = " ".join(t.read_text() for t in tests)
    for a in ALERTS:
        cases = re.findall(rf"alertname: {a}\n\s+exp_alerts:(.*?)(?=\n\s+- eval_time|\n- interval|\Z)", tested, re.S)
        assert any(c.strip() == "[]" for c in cases), f"{a}: no test where it must not fire"
        assert any(c.strip().startswith("- exp_labels") for c in cases), f"{a}: no test where it fires"
    r = _promtool("test", "rules", *map(str, tests))
    assert r.returncode == 0, r.stdout + r.stderr


# ---- Prometheus Operator objects rendered by Helm and the kustomize component ----

def _pod_of(docs, name):
    obj = next(d for d in docs if d["kind"] in ("DaemonSet", "Deployment") and d["metadata"]["name"] == name)
    return obj["spec"]["template"]


def _check_monitoring_objects(docs, where):
    kinds = {d["kind"]: d for d in docs if d["apiVersion"].startswith("monitoring.coreos.com/")}
    assert set(kinds) == {"PodMonitor", "ServiceMonitor", "PrometheusRule"}, (where, set(kinds))
    # PodMonitor → the Envoy pods' stats port.
    pm = kinds["PodMonitor"]
    envoy = _pod_of(docs, "switchyard-envoy")
    sel = pm["spec"]["selector"]["matchLabels"]
    assert sel.items() <= envoy["metadata"]["labels"].items(), where
    [ep] = pm["spec"]["podMetricsEndpoints"]
    assert ep["path"] == "/stats/prometheus"
    container = next(c for c in envoy["spec"]["containers"] if c["name"] == "envoy")
    port = next(p for p in container["ports"] if p["name"] == ep["port"])
    init = envoy["spec"]["initContainers"][0]
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert str(port["containerPort"]) == env["STATS_PORT"], (where, port, env["STATS_PORT"])
    # ServiceMonitor → the metrics Service → the controller's admin port.
    sm = kinds["ServiceMonitor"]
    svc = next(d for d in docs if d["kind"] == "Service" and
               sm["spec"]["selector"]["matchLabels"].items() <= (d["metadata"].get("labels") or {}).items())
    [ep] = sm["spec"]["endpoints"]
    assert ep["path"] == "/metrics"
    sport = next(p for p in svc["spec"]["ports"] if p["name"] == ep["port"])
    ctrl = _pod_of(docs, "switchyard-controller")
    assert svc["spec"]["selector"].items() <= ctrl["metadata"]["labels"].items(), where
    cports = {p["name"]: p["containerPort"] for c in ctrl["spec"]["containers"] for p in c.get("ports", [])}
    assert sport["targetPort"] in cports and cports[sport["targetPort"]] == 18001, where
    # PrometheusRule = the rule file.
    assert kinds["PrometheusRule"]["spec"] == yaml.safe_load(RULES.read_text()), where
    # The dashboard ConfigMap for Grafana's sidecar.
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchyard-grafana-dashboard")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["switchyard.json"]) == json.loads(DASHBOARD.read_text())


def test_helm_monitoring_values_render_matching_objects():
    plain = _helm_template()
    assert not [d for d in plain if d["apiVersion"].startswith("monitoring.coreos.com/")]
    assert not [d for d in plain if d["metadata"]["name"] == "switchyard-grafana-dashboard"]
    docs = _helm_template("monitoring.podMonitor.enabled=true", "monitoring.serviceMonitor.enabled=true",
                          "monitoring.prometheusRule.enabled=true", "monitoring.grafanaDashboard.enabled=true",
                          "monitoring.prometheusRule.labels.release=kube-prometheus")
    _check_monitoring_objects(docs, "helm")
    pr = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert pr["metadata"]["labels"]["release"] == "kube-prometheus"
    # Another stats port flows into the bootstrap render and the container port.
    docs = _helm_template("monitoring.podMonitor.enabled=true", "monitoring.serviceMonitor.enabled=true",
                          "monitoring.prometheusRule.enabled=true", "monitoring.grafanaDashboard.enabled=true",
                          "envoy.statsPort=19101")
    _check_monitoring_objects(docs, "helm statsPort=19101")


def test_kustomize_monitoring_component_renders_matching_objects():
    docs = _kubectl_kustomize(ROOT / "deploy" / "kustomize" / "with-monitoring")
    _check_monitoring_objects(docs, "kustomize with-monitoring")
    base = _kubectl_kustomize(ROOT / "deploy" / "kustomize" / "base")
    assert not [d for d in base if d["apiVersion"].startswith("monitoring.coreos.com/")]
