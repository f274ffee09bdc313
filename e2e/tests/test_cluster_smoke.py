"""Smoke test of the local Kubernetes cluster built from real parts (etcd,
kube-apiserver, kube-controller-manager, Switchyard's process kubelet).

cluster up (or reuse) → Deployment of 2 switchyard-echo Pods + Service →
EndpointSlice lists both Pod IPs → HTTP from the host to each Pod IP answers
with that Pod's name → delete → the Pods' netns/veths are gone → cluster down
leaves nothing behind (only when this test brought the cluster up, or when
SWITCHYARD_CLUSTER_TEST=1, as `make cluster-test` sets).

Skipped when the cluster binaries are not built (`make cluster-build`).
"""

import json
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
E2E = ROOT / "e2e"
BIN = E2E / "bin"
KUBECONFIG = E2E / "run" / "kubeconfig"
KUBECTL = str(BIN / "kubectl")
KUBELET = Path(os.environ.get("KUBELET", Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "switchyard-kubelet"))
NS = "cluster-smoke"

MANIFEST = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: echo
        image: switchyard-echo:dev
        args: ["--listen", "0.0.0.0:8080"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports: [{{containerPort: 8080, name: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{name: http, port: 80, targetPort: http}}]
"""

needs_binaries = pytest.mark.skipif(
    not all((BIN / b).exists() for b in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl"))
    or not KUBELET.exists() or os.geteuid() != 0,
    reason="cluster binaries not built (make cluster-build) or not root",
)


def sh(*args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


def kubectl(*args, stdin=None, check=True):
    r = subprocess.run([KUBECTL, "--request-timeout=20s", *args], input=stdin, capture_output=True, text=True,
                       env=dict(os.environ, KUBECONFIG=str(KUBECONFIG)), timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def wait(pred, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (AssertionError, OSError, ValueError) as e:
            last = e
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


def host_leftovers():
    """Cluster traces on the host: Pod netns, veths, the bridge, their mounts, processes."""
    netns = [l.split()[0] for l in sh("ip", "netns", "list").stdout.splitlines() if l.startswith("sy-")]
    links = [l.split(": ")[1].split("@")[0] for l in sh("ip", "-o", "link", "show").stdout.splitlines()
             if l.split(": ")[1].startswith(("syv", "sybr0"))]
    mounts = [l.split()[1] for l in Path("/proc/mounts").read_text().splitlines()
              if "/netns/sy-" in l.split()[1] or str(E2E / "run") in l.split()[1]]
    procs = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            exe = os.readlink(p / "exe")
        except OSError:
            continue
        if exe.startswith(str(BIN) + "/") or exe == str(KUBELET):
            procs.append(f"{p.name}:{exe}")
    return {k: v for k, v in dict(netns=netns, links=links, mounts=mounts, processes=procs).items() if v}


def pod_netns():
    return [l.split()[0] for l in sh("ip", "netns", "list").stdout.splitlines() if l.startswith("sy-")]


@pytest.fixture(scope="module")
def cluster():
    was_up = KUBECONFIG.exists() and sh(KUBECTL, f"--kubeconfig={KUBECONFIG}", "--request-timeout=5s",
                                        "get", "--raw", "/readyz").returncode == 0
    t = time.time()
    r = sh(str(E2E / "cluster" / "up.sh"), timeout=240)
    assert r.returncode == 0, f"cluster up failed:\n{r.stdout}\n{r.stderr}"
    print(f"\n{r.stdout.strip()} [{time.time() - t:.1f} s]")
    yield
    if was_up and os.environ.get("SWITCHYARD_CLUSTER_TEST") != "1":
        return  # someone else's cluster: leave it running
    r = sh(str(E2E / "cluster" / "down.sh"), timeout=120)
    assert r.returncode == 0, f"cluster down failed:\n{r.stdout}\n{r.stderr}"
    left = host_leftovers()
    assert not left, f"cluster down left behind: {left}"
    assert not (E2E / "run").exists()


@needs_binaries
def test_deployment_endpointslice_and_pod_traffic(cluster):
    kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s")
    netns_before = set(pod_netns())
    kubectl("apply", "-f", "-", stdin=MANIFEST)
    try:
        def ready_pods():
            pods = json.loads(kubectl("get", "pods", "-n", NS, "-l", "app=echo", "-o", "json"))["items"]
            ready = [p for p in pods if p["metadata"].get("deletionTimestamp") is None
                     and any(c["type"] == "Ready" and c["status"] == "True"
                             for c in p.get("status", {}).get("conditions", []))]
            return ready if len(ready) == 2 else None

        pods = wait(ready_pods, 90, "2 Ready echo Pods")
        ips = {p["status"]["podIP"]: p["metadata"]["name"] for p in pods}
        assert len(ips) == 2, f"Pods share an IP: {ips}"
        assert all(ip.startswith("10.244.0.") for ip in ips), ips
        assert all(p["spec"]["nodeName"] == "e2e-node" for p in pods)

        def slice_ips():
            slices = json.loads(kubectl("get", "endpointslices", "-n", NS,
                                        "-l", "kubernetes.io/service-name=echo", "-o", "json"))["items"]
            found = {a for s in slices for e in (s.get("endpoints") or [])
                     if e.get("conditions", {}).get("ready") for a in e["addresses"]}
            ports = {p.get("port") for s in slices for p in (s.get("ports") or [])}
            return found if found == set(ips) and ports == {8080} else None

        wait(slice_ips, 60, "an EndpointSlice listing both Pod IPs with port 8080")

        for ip, name in ips.items():
            def answer():
                with urllib.request.urlopen(f"http://{ip}:8080/smoke", timeout=3) as r:
                    return json.load(r)
            body = wait(answer, 10, f"HTTP answer from {ip}")
            assert body["name"] == name, (ip, body)

        # Each Pod has its own netns; deleting the Deployment removes them.
        ours = set(pod_netns()) - netns_before
        assert len(ours) == 2, f"expected one netns per Pod, got {ours}"
    finally:
        kubectl("delete", "namespace", NS, "--wait=false", check=False)
    wait(lambda: not kubectl("get", "pods", "-n", NS, "-o", "name", check=False).strip(), 60,
         "the Pods to be deleted")
    wait(lambda: not (set(pod_netns()) & ours), 20, "the Pods' netns to be removed")
    for ip in ips:
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://{ip}:8080/", timeout=1)


@needs_binaries
def test_unknown_image_is_reported_not_hung(cluster):
    kubectl("delete", "pod", "unmapped", "-n", "default", "--ignore-not-found", "--wait=true", "--timeout=30s")
    kubectl("run", "unmapped", "-n", "default", "--image=example.com/nothing:1", "--restart=Never")
    try:
        def waiting_reason():
            p = json.loads(kubectl("get", "pod", "unmapped", "-n", "default", "-o", "json"))
            for cs in p.get("status", {}).get("containerStatuses") or []:
                w = (cs.get("state") or {}).get("waiting") or {}
                if w.get("reason") == "ImageNotMapped":
                    return w
            return None

        w = wait(waiting_reason, 30, "waiting reason ImageNotMapped")
        assert "example.com/nothing:1" in w["message"]
    finally:
        kubectl("delete", "pod", "unmapped", "-n", "default", "--wait=true", "--timeout=30s", check=False)


LOGS_POD = f"""
apiVersion: v1
kind: Pod
metadata: {{name: echo-logs, namespace: default, labels: {{app: echo-logs}}}}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: echo-logs
    image: registry.k8s.io/gateway-api/echo-basic:v1.5.1
    env:
    - {{name: HTTP_PORT, value: "3000"}}
    - name: POD_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    ports: [{{containerPort: 3000}}]
"""


@needs_binaries
def test_kubectl_logs_through_the_kubelet(cluster):
    """`kubectl logs` reaches the process kubelet through the API server
    (pods/log → https://<InternalIP>:<daemonEndpoints port>/containerLogs,
    certificates verified both ways) and honours the options the
    conformance suite's mirror tests use (sinceTime) and the usual ones."""
    node = json.loads(kubectl("get", "node", "e2e-node", "-o", "json"))
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] == 10250, node["status"]
    assert {"type": "InternalIP", "address": "10.244.0.1"} in node["status"]["addresses"]

    kubectl("delete", "pod", "echo-logs", "-n", "default", "--ignore-not-found", "--wait=true", "--timeout=30s")
    kubectl("apply", "-f", "-", stdin=LOGS_POD)
    try:
        def ip():
            p = json.loads(kubectl("get", "pod", "echo-logs", "-n", "default", "-o", "json"))
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in p.get("status", {}).get("conditions", []))
            return p["status"].get("podIP") if ready else None

        pod_ip = wait(ip, 60, "the echo-basic Pod Ready")
        # What echo-basic prints at start-up is there.
        wait(lambda: "Starting server, listening on port 3000" in kubectl("logs", "echo-logs", "-n", "default"),
             20, "echo-basic's start-up line in kubectl logs")
        before = time.time()
        time.sleep(1.1)  # sinceTime has 1 s granularity
        marker = f"/smoke-logs-{int(before)}"
        for i in range(3):
            with urllib.request.urlopen(f"http://{pod_ip}:3000{marker}?n={i}", timeout=3) as r:
                assert r.status == 200
        # The line conformance/utils/http/mirror.go looks for, found with
        # sinceTime as DumpEchoLogs asks for it.
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(before + 1))
        recent = wait(lambda: (lambda out: out if out.count(marker) == 3 else None)(
            kubectl("logs", "echo-logs", "-n", "default", f"--since-time={since}")), 10, "3 echoed requests")
        lines = [l for l in recent.splitlines() if l]
        assert all(marker in l for l in lines), f"sinceTime let older lines through: {lines}"
        assert lines[0].startswith(f"Echoing back request made to {marker}?n=0 to client ("), lines
        # --since (sinceSeconds) long enough includes the start-up line too.
        assert "Starting server" in kubectl("logs", "echo-logs", "-n", "default", "--since=1h")
        # Timestamps: RFC 3339, the real kubelet's prefix.
        stamped = kubectl("logs", "echo-logs", "-n", "default", "--timestamps", "--tail=1").splitlines()
        assert len(stamped) == 1 and stamped[0].endswith(f"{marker}?n=2 to client (10.244.0.1:" +
                                                         stamped[0].rsplit(":", 1)[1]), stamped
        ts = stamped[0].split(" ", 1)[0]
        assert ts.startswith(time.strftime("%Y-%m-%dT", time.gmtime())) and ts.endswith("Z"), ts
        assert kubectl("logs", "echo-logs", "-n", "default", "--limit-bytes=8") == "Starting"
        # No earlier run: --previous is an error, as with a real kubelet.
        r = subprocess.run([KUBECTL, "logs", "echo-logs", "-n", "default", "--previous"], capture_output=True,
                           text=True, env=dict(os.environ, KUBECONFIG=str(KUBECONFIG)), timeout=30)
        assert r.returncode != 0 and "previous terminated container" in r.stderr, r.stderr
        # follow: a request made while following shows up in the stream.
        follow = subprocess.Popen([KUBECTL, "logs", "-f", "echo-logs", "-n", "default", "--tail=0"],
                                  stdout=subprocess.PIPE, text=True, env=dict(os.environ, KUBECONFIG=str(KUBECONFIG)))
        killer = threading.Timer(15, follow.kill)  # bounds the readline below
        killer.start()
        try:
            time.sleep(1)
            urllib.request.urlopen(f"http://{pod_ip}:3000/followed", timeout=3).read()
            line = follow.stdout.readline()
            assert line.startswith("Echoing back request made to /followed to client"), line
        finally:
            killer.cancel()
            follow.kill()
            follow.wait()
    finally:
        kubectl("delete", "pod", "echo-logs", "-n", "default", "--wait=true", "--timeout=30s", check=False)
