"""Kubernetes mode on the local cluster (issue #15 item 4): real etcd,
kube-apiserver and kube-controller-manager, the process kubelet, `switchyard
controller` and an Envoy started like the DaemonSet (e2e/kubestack.py).

- **API write → served**: HTTPRoutes created one at a time by an API client
  (one keep-alive HTTPS connection, not a `kubectl` start-up per route); each
  timed from the POST until Envoy answers 200 from the echo Pod.
- **Status writes per route**: the controller's HTTPRoute status writes over
  the whole run, divided by the routes (target ≤ 1).
- **Restart**: the controller is stopped and started again with every route
  in place; time until it reports all of them Accepted (its own
  `switchyard_routes_accepted`), and the status writes it makes (target 0:
  nothing changed).
"""

import base64
import http.client
import json
import signal
import ssl
import sys
import tempfile
import time
from pathlib import Path

import yaml

import harness as h

sys.path.insert(0, str(h.ROOT / "e2e"))
import kubestack as ks  # noqa: E402

NS = "bench-kube"
CLASS = "bench-kube"
CONTROLLER = "switchyard.dev/bench-kube"
LEASE = "bench-kube"
POOL = "127.0.4.0/24"
PORT = 8090


class Api:
    """A minimal Kubernetes API client over one keep-alive connection."""

    def __init__(self, kubeconfig):
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        cluster = cfg["clusters"][0]["cluster"]
        user = cfg["users"][0]["user"]
        self.dir = Path(tempfile.mkdtemp(prefix="bench-kube-api-"))
        for key, name in (("certificate-authority-data", "ca.crt"), ("client-certificate-data", "tls.crt"),
                          ("client-key-data", "tls.key")):
            src = cluster if key.startswith("certificate-authority") else user
            (self.dir / name).write_bytes(base64.b64decode(src[key]))
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        ctx.load_cert_chain(str(self.dir / "tls.crt"), str(self.dir / "tls.key"))
        host, _, port = cluster["server"].removeprefix("https://").partition(":")
        self.conn = http.client.HTTPSConnection(host, int(port or 443), context=ctx, timeout=30)

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        raw = r.read()
        return r.status, (json.loads(raw) if raw else None)


def route(i):
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": f"r{i}", "namespace": NS},
        "spec": {"parentRefs": [{"name": "bench"}], "hostnames": [f"r{i}.kube.bench"],
                 "rules": [{"backendRefs": [{"name": "echo", "port": 80}]}]},
    }


BASE = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: {CLASS}}}
spec: {{controllerName: {CONTROLLER}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
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
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: {NS}}}
spec:
  gatewayClassName: {CLASS}
  listeners: [{{name: http, port: {PORT}, protocol: HTTP}}]
"""


def controller_args():
    # kubestack's Controller pins --address-mode=VirtualIP: addresses from POOL (loopback, this host).
    return [f"--controller-name={CONTROLLER}", f"--lease-name={LEASE}"]


def accepted(c):
    return ks.metric(c.metrics(), "switchyard_routes_accepted", kind="HTTPRoute")


def kube_bench(routes):
    reason = ks.available()
    if reason is not None:
        return {"skipped": reason}
    print(ks.cluster_up(), flush=True)
    ks.install_gateway_class()  # also the namespace of the Lease (a fresh cluster has none)
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=120s", timeout=130)
    ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    ks.kubectl("apply", "-f", "-", stdin=BASE)
    ks.kubectl("rollout", "status", "deployment/echo", "-n", NS, "--timeout=90s", timeout=100)
    stack = ks.KubeStack(POOL)
    api = Api(ks.KUBECONFIG)
    try:
        c = stack.controller("bench-a", lease_secs=4, extra=controller_args())
        envoy = stack.envoy(c)
        ks.wait(c.is_leader, 30, "the controller to hold its lease")
        gw = ks.wait(lambda: (lambda g: g if (g.get("status") or {}).get("addresses") else None)(
            ks.get("gateway", "bench", NS)), 60, "an address on Gateway bench")
        addr = gw["status"]["addresses"][0]["value"]
        writes0 = ks.metric(c.metrics(), "switchyard_status_writes_total", kind="HTTPRoute")
        latencies, errors = [], 0
        path = f"/apis/gateway.networking.k8s.io/v1/namespaces/{NS}/httproutes"
        wall0 = time.perf_counter()
        for i in range(routes):
            t0 = time.perf_counter()
            status, body = api.request("POST", path, route(i))
            if status not in (200, 201):
                raise RuntimeError(f"POST HTTPRoute r{i}: {status} {body}")
            while True:
                code, _, _ = get(addr, f"r{i}.kube.bench")
                if code == 200:
                    latencies.append(time.perf_counter() - t0)
                    break
                if code not in (404, 0):
                    errors += 1
                if time.perf_counter() - t0 > 30:
                    errors += 1
                    break
                time.sleep(0.0005)
        wall = time.perf_counter() - wall0
        ks.wait(lambda: accepted(c) >= routes, 120, f"{routes} routes Accepted")
        time.sleep(3)  # late status writes count too
        writes = ks.metric(c.metrics(), "switchyard_status_writes_total", kind="HTTPRoute") - writes0
        # Restart with everything in place (SIGTERM, as a rolling update does).
        c.kill(signal.SIGTERM)
        t0 = time.perf_counter()
        c2 = stack.controller("bench-a", lease_secs=4, extra=controller_args())
        # The Lease of the killed process runs out first (lease_secs); measured from when this one leads.
        ks.wait(c2.is_leader, 30, "the restarted controller to lead")
        t_lead = time.perf_counter()
        ks.wait(lambda: accepted(c2) >= routes, 60, f"{routes} routes Accepted after the restart", interval=0.01)
        t_accepted = time.perf_counter()
        time.sleep(5)
        restart_writes = ks.metric(c2.metrics(), "switchyard_status_writes_total")
        return {
            "routes": routes,
            "api_write_to_served": h.summary_ms(latencies),
            "api_write_to_served_by_hundred": [h.summary_ms(latencies[k:k + 100])
                                               for k in range(0, len(latencies), 100)],
            "errors": errors,
            "wall_s": round(wall, 2),
            "status_writes_httproute": writes,
            "status_writes_per_route": round(writes / routes, 3),
            "restart": {
                "to_leader_s": round(t_lead - t0, 2),
                "leader_to_all_accepted_s": round(t_accepted - t_lead, 3),
                "start_to_all_accepted_s": round(t_accepted - t0, 2),
                "status_writes": restart_writes,
            },
            "controller_rss_mib": round(h.rss_kib(c2.proc.pid) / 1024, 1),
            "envoy_rss_mib": round(h.rss_kib(envoy.proc.pid) / 1024, 1),
        }
    finally:
        stack.stop()
        ks.kubectl("delete", "namespace", NS, "--wait=false", "--ignore-not-found", check=False)
        ks.kubectl("delete", "gatewayclass", CLASS, "--ignore-not-found", check=False)
        ks.kubectl("delete", "lease", LEASE, "-n", ks.LEASE_NAMESPACE, "--ignore-not-found", check=False)


_CONNS = {}


def get(addr, host):
    """(status, body, None) of GET / on the Gateway; status 0 when the connection failed."""
    c = _CONNS.get(addr)
    if c is None:
        c = _CONNS[addr] = http.client.HTTPConnection(addr, PORT, timeout=5)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        return r.status, r.read(), None
    except (OSError, http.client.HTTPException):
        c.close()
        _CONNS.pop(addr, None)
        return 0, b"", None
