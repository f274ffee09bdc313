"""Envoy observability end to end, with a real standalone Switchyard and the
real Envoy it supervises: the Prometheus stats listener (--envoy-stats-port,
only /stats/prometheus and /ready), clean stat tags (Gateway listener and
backend names without dots or slashes), one JSON access-log line per request
with the documented fields, and every metric name the alert rules and the
Grafana dashboard use is exported (docs/observability.md)."""

import http.client
import json
import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import yaml

import harness
from conftest import start_stack

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "switchyard-rules.yaml"
DASHBOARD = ROOT / "deploy" / "monitoring" / "grafana-dashboard.json"

# Access-log fields every HTTP line carries (src/xds/build/access_log.rs).
HTTP_LOG_FIELDS = {
    "start_time", "method", "path", "authority", "protocol", "response_code", "response_flags",
    "response_code_details", "duration_ms", "upstream_service_time_ms", "upstream_cluster", "upstream_host",
    "upstream_transport_failure_reason", "route_name", "bytes_received", "bytes_sent", "request_id",
    "user_agent", "downstream_remote_address", "requested_server_name", "filter_chain", "gateway", "listener",
}

# Controller metrics only a Kubernetes-mode controller exports, with why.
KUBE_ONLY = {
    "switchyard_leader": "the Lease exists in Kubernetes mode only",
    "switchyard_status_write_errors_total": "standalone writes status files, never patches the API server",
}


def self_signed(directory, name, host):
    """A self-signed certificate and key (PEM) for `host`."""
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-days", "30", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


def _indent(text, n=4):
    return "".join(" " * n + line + "\n" for line in text.splitlines())


def _configure(stack, g):
    stack.start_backends()
    g.tls_port = harness.free_port()
    crt, key = self_signed(stack.dir, "obs", "secure.obs.test")
    g.crt = crt
    base = harness.gateway_manifests(stack.gw_port, [("svc-0", stack.backend_ports[0]),
                                                     ("svc-1", stack.backend_ports[1])])
    # A second, HTTPS listener on the same Gateway (its filter chain has a name of its own).
    base = base.replace(
        "allowedRoutes: {namespaces: {from: All}}}\n",
        "allowedRoutes: {namespaces: {from: All}}}\n"
        f"  - {{name: https, port: {g.tls_port}, protocol: HTTPS, hostname: secure.obs.test, "
        "tls: {mode: Terminate, certificateRefs: [{name: obs-cert}]}}\n", 1)
    secret = ("apiVersion: v1\nkind: Secret\nmetadata: {name: obs-cert, namespace: default}\ntype: kubernetes.io/tls\n"
              f"stringData:\n  tls.crt: |\n{_indent(crt.read_text())}  tls.key: |\n{_indent(key.read_text())}")
    routes = "---\n".join([
        harness.route_manifest("web", "web.obs.test", "svc-0"),
        # A dotted route name and hostname: neither may leak into stat names.
        harness.route_manifest("api.v1", "api.obs.test", "svc-1"),
        harness.route_manifest("secure", "secure.obs.test", "svc-1"),
        # Unresolved backend: Envoy answers 500 (a 5xx for the counters).
        harness.route_manifest("broken", "broken.obs.test", "no-such-svc"),
    ])
    # A TCP listener with a TCPRoute to a raw TCP echo backend.
    g.tcp_port, g.tcp_backend = harness.free_port(), harness.free_port()
    stack.procs.append(subprocess.Popen([str(harness.ECHO), "--tcp", f"127.0.0.1:{g.tcp_backend}", "--name", "tcp-obs"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    assert harness.wait_port("127.0.0.1", g.tcp_backend)
    base = base.replace("  - {name: https,", f"  - {{name: raw, port: {g.tcp_port}, protocol: TCP}}\n  - {{name: https,", 1)
    tcp = ("apiVersion: v1\nkind: Service\nmetadata: {name: tcp-obs, namespace: default}\n"
           "spec: {ports: [{name: p, port: 7000}]}\n---\n"
           "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: tcp-obs-1, namespace: default, "
           "labels: {kubernetes.io/service-name: tcp-obs}}\naddressType: IPv4\n"
           f"ports: [{{name: p, port: {g.tcp_backend}}}]\nendpoints: [{{addresses: [127.0.0.1]}}]\n---\n"
           "apiVersion: gateway.networking.k8s.io/v1alpha2\nkind: TCPRoute\nmetadata: {name: raw, namespace: default}\n"
           "spec:\n  parentRefs: [{name: bench, sectionName: raw}]\n  rules: [{backendRefs: [{name: tcp-obs, port: 7000}]}]\n")
    stack.write("base.yaml", base + "---\n" + secret + "---\n" + tcp)
    stack.write("routes.yaml", routes)
    # Flush Envoy's access log every 200 ms instead of every 10 s.
    stack.extra_args += ["--envoy-extra-arg=--file-flush-interval-msec", "--envoy-extra-arg=200"]
    stack.start_switchyard()
    g.wait_for("web.obs.test", timeout=30)


@pytest.fixture(scope="module")
def obs(request):
    yield from start_stack(request, configure=_configure, backends=2, debounce_ms=5)


def _http(port, path, method="GET", host="127.0.0.1", headers=None):
    c = http.client.HTTPConnection(host, port, timeout=5)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read().decode(errors="replace")
    c.close()
    return r.status, body


def _https(g, host, path):
    import ssl
    ctx = ssl.create_default_context(cafile=str(g.crt))
    c = http.client.HTTPSConnection("127.0.0.1", g.tls_port, timeout=5, context=ctx)
    c.sock = ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", g.tls_port), timeout=5),
                             server_hostname=host)
    c.request("GET", path, headers={"Host": host})
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def _traffic(g):
    """Requests that make every counter and histogram the rules use exist."""
    for _ in range(5):
        assert g.get("web.obs.test")[0] == 200
        assert g.get("api.obs.test")[0] == 200
        assert g.get("broken.obs.test")[0] == 500
        assert g.get("nothing.obs.test")[0] == 404
    assert g.wait_for("secure.obs.test", timeout=10) and _https(g, "secure.obs.test", "/") == 200


def _scrape(g, path="/stats/prometheus"):
    status, body = _http(g.stack.envoy_stats, path)
    assert status == 200, body[:500]
    return body


def _samples(text):
    """{metric name: [label dicts]} of a Prometheus text exposition."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m[3] or ""))
        out.setdefault(m[1], []).append(labels)
    return out


def test_stats_listener_serves_prometheus_and_nothing_else(obs):
    _traffic(obs)
    port = obs.stack.envoy_stats
    body = _scrape(obs)
    assert "# TYPE envoy_http_downstream_rq_xx counter" in body
    # /ready for probes; every other admin path is refused, whatever the method.
    status, text = _http(port, "/ready")
    assert (status, text.strip()) == (200, "LIVE")
    for method, path in [("GET", "/stats"), ("GET", "/config_dump"), ("POST", "/quitquitquit"),
                         ("POST", "/stats/prometheus"), ("GET", "/"), ("POST", "/drain_listeners")]:
        assert _http(port, path, method)[0] == 404, (method, path)
    # Envoy is still up after the refused /quitquitquit.
    assert _http(port, "/ready")[0] == 200
    # The listener is on every address (a Pod IP in Kubernetes), not only loopback.
    assert _http(port, "/stats/prometheus", host="127.0.0.3")[0] == 200


def test_stat_tags_name_gateway_listener_and_backend_cleanly(obs):
    _traffic(obs)
    samples = _samples(_scrape(obs))
    port = obs.stack.gw_port
    prefixes = {s.get("envoy_http_conn_manager_prefix") for s in samples["envoy_http_downstream_rq_xx"]}
    # <namespace>_<gateway>_<port>; the HTTPS filter chain adds its listener's name.
    assert f"default_bench_{port}" in prefixes, prefixes
    assert f"default_bench_{obs.tls_port}_https" in prefixes, prefixes
    ok = [s for s in samples["envoy_http_downstream_rq_xx"]
          if s.get("envoy_http_conn_manager_prefix") == f"default_bench_{port}"]
    assert {s["envoy_response_code_class"] for s in ok} >= {"2", "4", "5"}
    clusters = {s.get("envoy_cluster_name") for s in samples["envoy_cluster_upstream_rq_time_bucket"]}
    assert {"default_svc-0_80", "default_svc-1_80"} <= clusters, clusters
    # No hostname or dotted route name spilled into a metric name (Envoy's tag
    # extraction splits at dots); our stat names carry no dot or slash.
    for name, series in samples.items():
        assert "obs_test" not in name and "api_v1" not in name, name
        for labels in series:
            for k in ("envoy_http_conn_manager_prefix", "envoy_cluster_name", "envoy_tcp_prefix"):
                v = labels.get(k, "")
                assert "/" not in v and "." not in v, (name, k, v)


def _access_lines(g):
    lines = []
    for line in (g.stack.dir / "switchyard.log").read_text(errors="replace").splitlines():
        start, end = line.find('{"'), line.rfind("}")
        if start < 0 or end < start:
            continue
        try:
            doc = json.loads(line[start:end + 1])
        except ValueError:
            continue
        if isinstance(doc, dict) and "response_code" in doc:
            lines.append(doc)
    return lines


def _wait_access(g, pred, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = [d for d in _access_lines(g) if pred(d)]
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no access-log line matched within {timeout}s:\n{g.log_tail(20)}")


def test_every_request_has_one_json_access_log_line(obs):
    probe = f"/probe-{uuid.uuid4().hex}?q=1"
    status, _, _ = obs.get("web.obs.test", probe, headers={"User-Agent": "obs-test/1"})
    assert status == 200
    [line] = _wait_access(obs, lambda d: d.get("path") == probe)
    assert HTTP_LOG_FIELDS <= set(line), HTTP_LOG_FIELDS - set(line)
    port = obs.stack.gw_port
    assert line["gateway"] == "default/bench"
    assert line["listener"] == f"default/bench/{port}"
    assert line["method"] == "GET" and line["authority"] == "web.obs.test"
    assert line["response_code"] == 200 and line["protocol"] == "HTTP/1.1"
    assert line["route_name"] == "HTTPRoute/default/web/rule/0/match/0"
    assert line["upstream_cluster"] == "default/svc-0/80"
    assert line["upstream_host"] == f"127.0.0.1:{obs.stack.backend_ports[0]}"
    assert line["user_agent"] == "obs-test/1"
    assert line["request_id"], line
    assert isinstance(line["duration_ms"], (int, float)) and line["bytes_sent"] > 0
    assert line["downstream_remote_address"].startswith("127.0.0.1:")
    # A 500 from an unresolved backend says so.
    probe = f"/probe-{uuid.uuid4().hex}"
    assert obs.get("broken.obs.test", probe)[0] == 500
    [bad] = _wait_access(obs, lambda d: d.get("path") == probe)
    assert bad["response_code"] == 500 and bad["route_name"] == "HTTPRoute/default/broken/rule/0/match/0"
    assert bad["response_code_details"] == "cluster_not_found" and bad["response_flags"] == "NC", bad
    # The HTTPS listener's line names its filter chain and the SNI.
    probe = f"/probe-{uuid.uuid4().hex}"
    assert _https(obs, "secure.obs.test", probe) == 200
    [tls] = _wait_access(obs, lambda d: d.get("path") == probe)
    assert tls["listener"] == f"default/bench/{obs.tls_port}" and tls["requested_server_name"] == "secure.obs.test"
    assert tls["filter_chain"] == "https", tls


# ---- every metric name the rules and the dashboard use is exported ----

_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


def metric_names(expr):
    """Metric names of a PromQL expression: label matchers, groupings and
    label arguments removed; Grafana's $__ variables dropped."""
    e = re.sub(r"\{[^}]*\}", "", expr)
    e = _GROUPING.sub("", e)
    e = re.sub(r'"[^"]*"', "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    return {n for n in re.findall(r"\b((?:switchyard|envoy)_[a-z0-9_]+)\b", e)}


def used_metric_names():
    names = set()
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            names |= metric_names(rule["expr"])
    dash = json.loads(DASHBOARD.read_text())
    for p in dash["panels"]:
        for t in p.get("targets", []):
            names |= metric_names(t["expr"])
    return names


def test_metric_name_parser():
    assert metric_names('sum by (envoy_cluster_name, le) (rate(envoy_cluster_upstream_rq_time_bucket'
                        '{envoy_cluster_name!~"xds_cluster"}[5m]))') == {"envoy_cluster_upstream_rq_time_bucket"}
    assert metric_names('x{kind="HTTPRoute"} == 1 and on() count(switchyard_status_condition'
                        '{reason="envoy_x"})') == {"switchyard_status_condition"}
    names = used_metric_names()
    assert {"switchyard_status_condition", "envoy_http_downstream_rq_xx", "switchyard_translate_seconds_bucket"} <= names
    assert not {n for n in names if n in ("envoy_cluster_name", "envoy_http_conn_manager_prefix",
                                          "envoy_response_code_class", "envoy_listener_address")}


def _controller_families(text):
    return set(re.findall(r"^# TYPE (\S+) \S+", text, re.M))


def test_every_metric_used_by_rules_and_dashboard_is_exported(obs):
    _traffic(obs)
    envoy = set(_samples(_scrape(obs)))
    status, controller = _http(obs.stack.admin_port, "/metrics")
    assert status == 200
    families = _controller_families(controller)
    src = "\n".join(p.read_text() for p in (ROOT / "src").rglob("*.rs"))
    missing = []
    for name in sorted(used_metric_names()):
        if name.startswith("envoy_"):
            if name not in envoy:
                missing.append(name)
            continue
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name in families or base in families:
            continue
        if name in KUBE_ONLY:
            # Not exported here, but the code that exports it must exist.
            assert f'"{name}"' in src, f"{name} ({KUBE_ONLY[name]}) is not defined in src/"
            continue
        missing.append(name)
    assert not missing, f"metrics used by deploy/monitoring but not exported: {missing}"


def test_tcp_connections_have_an_access_log_line(obs):
    import socket
    deadline, got = time.time() + 20, b""
    while time.time() < deadline and b"tcp-obs" not in got:
        try:
            with socket.create_connection(("127.0.0.1", obs.tcp_port), timeout=2) as c:
                got = c.recv(64)
                c.sendall(b"ping\n")
                got += c.recv(64)
        except OSError:
            time.sleep(0.2)
    assert b"tcp-obs" in got, got
    lines = _wait_access_tcp(obs)
    line = lines[-1]
    assert line["gateway"] == "default/bench" and line["listener"] == f"default/bench/{obs.tcp_port}"
    assert line["upstream_cluster"] == "default/tcp-obs/7000"
    assert line["upstream_host"] == f"127.0.0.1:{obs.tcp_backend}"
    assert line["bytes_received"] >= 5 and line["bytes_sent"] >= 5, line
    assert "response_code" not in line


def _wait_access_tcp(g, timeout=20):
    listener = f"default/bench/{g.tcp_port}"
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = []
        for line in (g.stack.dir / "switchyard.log").read_text(errors="replace").splitlines():
            start = line.find('{"')
            if start >= 0 and f'"listener":"{listener}"' in line:
                found.append(json.loads(line[start:line.rfind("}") + 1]))
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"no TCP access-log line within {timeout}s:\n{g.log_tail(20)}")


@pytest.fixture(scope="module")
def quiet(request):
    """A stack started with --envoy-access-log=false."""
    yield from start_stack(request, backends=2, debounce_ms=5, extra_args=[
        "--envoy-access-log=false", "--envoy-extra-arg=--file-flush-interval-msec", "--envoy-extra-arg=200"])


def test_access_log_can_be_turned_off(quiet):
    probe = f"/probe-{uuid.uuid4().hex}"
    quiet.stack.write("r.yaml", harness.route_manifest("web", "web.obs.test", "svc-0"))
    quiet.wait_for("web.obs.test", timeout=10)
    assert quiet.get("web.obs.test", probe)[0] == 200
    status, dump = _http(quiet.stack.envoy_admin, "/config_dump?resource=dynamic_listeners")
    assert status == 200 and "http_connection_manager" in dump
    assert "access_log" not in dump and "StdoutAccessLog" not in dump
    time.sleep(1.0)  # several flush intervals
    assert probe not in (quiet.stack.dir / "switchyard.log").read_text(errors="replace")
