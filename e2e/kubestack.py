"""Switchyard in Kubernetes mode on the local cluster (e2e/cluster), for the
end-to-end tests (e2e/tests/test_kube.py) and `make conformance`.

Processes run on this machine the way the deploy/ manifests run them in a
cluster: `switchyard controller` with the API server's kubeconfig (one or more
replicas, each its own xDS/admin port and Lease identity), and Envoy started
like the DaemonSet: its bootstrap is rendered by the DaemonSet's own init
container script, taken from `kubectl kustomize deploy/kustomize/base`, with
the host network (Gateway addresses from the controller's --address-pool,
bound on loopback).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
E2E = ROOT / "e2e"
BIN = E2E / "bin"
RUN = E2E / "run"
# An external cluster that already runs Switchyard (installed by Helm, e.g. by
# `make e2e-kind`): the tests that can target one (e2e/tests/test_external.py,
# test_deploy.py, e2e/conformance/run.py --external) use its kubeconfig and
# start no local cluster. Deliberately not $KUBECONFIG: a test run must never
# pick up whatever cluster the shell points at.
EXTERNAL_KUBECONFIG = os.environ.get("SWITCHYARD_E2E_KUBECONFIG")
KUBECONFIG = Path(EXTERNAL_KUBECONFIG) if EXTERNAL_KUBECONFIG else RUN / "kubeconfig"
KUBECTL = BIN / "kubectl"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
SWITCHYARD = TARGET / "release" / "switchyard"
KUBELET = Path(os.environ.get("KUBELET", TARGET / "release" / "switchyard-kubelet"))
ENVOY = ROOT / ".venv" / "bin" / "envoy"
NODE = "e2e-node"
LEASE_NAMESPACE = "switchyard-system"
CONTROLLER_NAME = "switchyard.dev/gateway-controller"


def available():
    """Why the cluster stack cannot run here, or None when it can."""
    if EXTERNAL_KUBECONFIG:
        return "SWITCHYARD_E2E_KUBECONFIG is set: tests run against that external cluster, not the local one"
    missing = [str(p) for p in (BIN / "etcd", BIN / "kube-apiserver", BIN / "kube-controller-manager", KUBECTL,
                                KUBELET, SWITCHYARD, ENVOY) if not p.exists()]
    if missing:
        return f"not built: {', '.join(missing)} (make build envoy cluster-build)"
    if os.geteuid() != 0:
        return "the local cluster needs root (network namespaces, bridge)"
    return None


def external_available():
    """Why the tests that target an external cluster cannot run, or None."""
    if not KUBECTL.exists():
        return f"not built: {KUBECTL} (e2e/cluster/build.sh kubectl helm)"
    if not EXTERNAL_KUBECONFIG and available():
        return available()
    return None


def kubectl(*args, stdin=None, check=True, timeout=60):
    r = subprocess.run([str(KUBECTL), "--request-timeout=20s", *args], input=stdin, capture_output=True, text=True,
                       env=dict(os.environ, KUBECONFIG=str(KUBECONFIG)), timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr.strip()}")
    return r.stdout


def get(kind, name, namespace=None):
    """The object as a dict, or None when it does not exist."""
    ns = ["-n", namespace] if namespace else []
    out = kubectl("get", kind, name, *ns, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def wait(pred, timeout, what, interval=0.1):
    """Polls `pred` until it returns something truthy; returns that."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
            if last:
                return last
        except (AssertionError, OSError, ValueError, subprocess.TimeoutExpired) as e:
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CLUSTER_LOCK = None


def cluster_up():
    """Starts the local cluster (or reuses a healthy one). The process then
    holds an exclusive lock on it until it exits: two test runs (e.g. from two
    work trees) would otherwise start two controllers that fight over the
    same Gateways and statuses."""
    global _CLUSTER_LOCK
    if EXTERNAL_KUBECONFIG:
        return f"external cluster (SWITCHYARD_E2E_KUBECONFIG={EXTERNAL_KUBECONFIG})"
    if _CLUSTER_LOCK is None:
        import fcntl
        _CLUSTER_LOCK = open(os.environ.get("SWITCHYARD_CLUSTER_LOCK", "/tmp/switchyard-cluster.lock"), "w")
        fcntl.flock(_CLUSTER_LOCK, fcntl.LOCK_EX)
    r = subprocess.run([str(E2E / "cluster" / "up.sh")], capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise AssertionError(f"cluster up failed:\n{r.stdout}\n{r.stderr}")
    return r.stdout.strip()


def install_gateway_class():
    """The GatewayClass and namespace from deploy/kustomize/base."""
    base = ROOT / "deploy" / "kustomize" / "base"
    kubectl("apply", "-f", str(base / "namespace.yaml"), "-f", str(base / "gatewayclass.yaml"))


def rendered_kustomize():
    """`kubectl kustomize deploy/kustomize/base` as a list of objects."""
    return [d for d in yaml.safe_load_all(kubectl("kustomize", str(ROOT / "deploy" / "kustomize" / "base"))) if d]


_CERTS = None


def xds_certs():
    """The xDS mTLS certificates of test controllers and Envoys (made once per
    process by `switchyard certgen`: server for localhost, Envoy as fleet)."""
    global _CERTS
    if _CERTS is None:
        out = RUN / "xds-certs"
        subprocess.run([str(SWITCHYARD), "certgen", "--out", str(out), "--client", "envoy=fleet"],
                       check=True, capture_output=True, timeout=30)
        _CERTS = out
    return _CERTS


def render_bootstrap(out_dir, xds_port, admin_port, node=NODE, api_type=None, gateways="", stats_port=None):
    """Renders Envoy's bootstrap exactly as the DaemonSet's init container does:
    its script and env come from the rendered kustomize base, the template
    from the generated ConfigMap. Only what differs on a test machine is set:
    the xDS address (the controller's port on loopback instead of its Service
    name), Envoy's admin and stats ports (a free one unless given), and
    optionally the ADS flavour and Gateways.
    Returns (bootstrap path, the DaemonSet's Envoy container args)."""
    docs = rendered_kustomize()
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "template")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == cm_name)
    out_dir = Path(out_dir)
    (out_dir / "template").mkdir(parents=True, exist_ok=True)
    (out_dir / "rendered").mkdir(parents=True, exist_ok=True)
    for key, text in cm["data"].items():
        (out_dir / "template" / key).write_text(text)
    script = " ".join(init["args"]).replace("/template/", f"{out_dir}/template/").replace(
        "/rendered/", f"{out_dir}/rendered/")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    for e in init.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "spec.nodeName":
            env[e["name"]] = node
    env.update(XDS_HOST="127.0.0.1", XDS_PORT=str(xds_port), ADMIN_PORT=str(admin_port), GATEWAYS=gateways,
               STATS_PORT=str(stats_port or free_port()),
               XDS_SERVER_NAME="localhost", XDS_TLS_SDS_DIR=str(out_dir / "rendered"),
               XDS_TLS_DIR=str(xds_certs() / "envoy"))
    if api_type:
        env["ADS_API_TYPE"] = api_type
    subprocess.run(init["command"] + [script], env=env, check=True, timeout=30)
    envoy = next(c for c in pod["containers"] if c["name"] == "envoy")
    args = [a.replace("/rendered/", f"{out_dir}/rendered/") for a in envoy["args"]]
    return out_dir / "rendered" / "bootstrap.yaml", args


def http_get(url, timeout=2):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def metric(text, name, **labels):
    """Sum of a Prometheus series (all label sets matching `labels`)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series != name and not series.startswith(name + "{"):
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            total += float(value)
    return total


class Controller:
    """One `switchyard controller` replica."""

    def __init__(self, workdir, identity, address_pool, lease_secs=15, extra=(), address_mode="VirtualIP"):
        self.workdir = Path(workdir)
        self.identity = identity
        # The controller's default mode is LoadBalancer; these tests run
        # Envoy on the host with Gateway addresses from the pool (VirtualIP),
        # unless a test asks for another mode (docs/networking.md).
        self.address_mode = address_mode
        self.address_pool = address_pool
        self.lease_secs = lease_secs
        self.extra = list(extra)
        self.xds_port = free_port()
        self.admin_port = free_port()
        self.admin_grpc_port = free_port()
        self.log = self.workdir / f"controller-{identity}.log"
        self.proc = None

    def start(self):
        args = [str(SWITCHYARD), "controller", f"--xds-listen=127.0.0.1:{self.xds_port}",
                f"--admin-listen=127.0.0.1:{self.admin_port}",
                f"--admin-grpc-listen=127.0.0.1:{self.admin_grpc_port}",
                f"--address-mode={self.address_mode}", f"--address-pool={self.address_pool}",
                f"--lease-namespace={LEASE_NAMESPACE}", f"--identity={self.identity}",
                f"--lease-duration-secs={self.lease_secs}", *self.extra]
        if not any(a.startswith(("--xds-tls-dir", "--xds-insecure")) for a in self.extra):
            args.append(f"--xds-tls-dir={xds_certs() / 'server'}")
        env = dict(os.environ, KUBECONFIG=str(KUBECONFIG), SWITCHYARD_LOG=os.environ.get("SWITCHYARD_LOG", "info"))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        wait(lambda: self.running() and self.get("/healthz") is not None, 20, f"controller {self.identity} to listen")
        return self

    def running(self):
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"controller {self.identity} exited: {self.log_tail()}")
        return True

    def get(self, path):
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def ready(self):
        try:
            self.get("/readyz")
            return True
        except OSError:
            return False

    def metrics(self):
        return self.get("/metrics")

    def status_writes(self):
        return metric(self.metrics(), "switchyard_status_writes_total")

    def is_leader(self):
        return metric(self.metrics(), "switchyard_leader") == 1

    def kill(self, sig=signal.SIGKILL):
        """Sends `sig` and waits; a process that outlives 15 s gets SIGKILL (and the test fails)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"controller {self.identity} ignored signal {sig} for 15 s")

    def log_tail(self, n=40):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""


class Envoy:
    """One Envoy of the fleet, started like the DaemonSet starts it."""

    def __init__(self, workdir, controller, name="envoy", api_type=None):
        self.workdir = Path(workdir) / name
        self.name = name
        self.admin_port = free_port()
        self.stats_port = free_port()
        self.bootstrap, self.args = render_bootstrap(self.workdir, controller.xds_port, self.admin_port,
                                                     api_type=api_type, stats_port=self.stats_port)
        self.log = self.workdir / "envoy.log"
        self.proc = None

    def start(self):
        # Several Envoys share this host in tests: each gets its own shared-memory base id.
        args = [str(ENVOY), *self.args, "--use-dynamic-base-id"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait(lambda: self.alive() and self.admin("/ready") is not None, 30, f"{self.name} admin")
        return self

    def alive(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text(errors='replace')[-3000:]}")
        return True

    def admin(self, path):
        return http_get(f"http://127.0.0.1:{self.admin_port}{path}")

    def stats(self, *names):
        """Counter values by name (0 when absent)."""
        out = {}
        text = self.admin("/stats?filter=" + "|".join(n.replace(".", r"\.") for n in names))
        for line in text.splitlines():
            k, _, v = line.partition(": ")
            out[k] = int(v) if v.strip().isdigit() else v
        return {n: out.get(n, 0) for n in names}

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


class KubeStack:
    """The cluster plus controller replicas and an Envoy, torn down together."""

    def __init__(self, address_pool, workdir=None):
        self.address_pool = address_pool
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="switchyard-kube-"))
        self.controllers = []
        self.envoys = []

    def controller(self, identity, **kw):
        c = Controller(self.workdir, identity, self.address_pool, **kw)
        self.controllers.append(c)
        return c.start()

    def envoy(self, controller, name="envoy", **kw):
        e = Envoy(self.workdir, controller, name=name, **kw)
        self.envoys.append(e)
        return e.start()

    def stop(self):
        for e in self.envoys:
            e.stop()
        for c in self.controllers:
            c.kill(signal.SIGTERM)

    def diagnostics(self):
        out = [f"workdir: {self.workdir}"]
        for c in self.controllers:
            state = "running" if c.proc and c.proc.poll() is None else f"exited {c.proc.returncode if c.proc else '-'}"
            out += [f"--- controller {c.identity} ({state}), last lines of {c.log}", c.log_tail(30)]
        for e in self.envoys:
            if e.log.exists():
                out += [f"--- {e.name}: last lines of {e.log}",
                        "\n".join(e.log.read_text(errors="replace").splitlines()[-15:])]
        return "\n".join(out)


class ClientNetns:
    """A network namespace of its own for test clients: "a request from
    outside Envoy's network namespace". A veth pair (host side 10.246.x.1/30,
    namespace side .2) with a default route to the host, so the namespace
    reaches the node's addresses, addresses put on the host (VIPs, load
    balancer addresses) and, through the host, the Pod bridge."""

    def __init__(self, name="syclient", subnet=0):
        self.name = name
        self.veth = f"{name[:10]}-h"
        self.host_ip = f"10.246.{subnet}.1"
        self.ip = f"10.246.{subnet}.2"

    def __enter__(self):
        self.close()
        for cmd in (["ip", "netns", "add", self.name],
                    ["ip", "link", "add", self.veth, "type", "veth", "peer", "name", "eth0", "netns", self.name],
                    ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.veth],
                    ["ip", "link", "set", self.veth, "up"],
                    ["ip", "-n", self.name, "addr", "add", f"{self.ip}/30", "dev", "eth0"],
                    ["ip", "-n", self.name, "link", "set", "eth0", "up"],
                    ["ip", "-n", self.name, "link", "set", "lo", "up"],
                    ["ip", "-n", self.name, "route", "add", "default", "via", self.host_ip]):
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        subprocess.run(["ip", "link", "delete", self.veth], capture_output=True, timeout=10)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, timeout=10)

    def curl(self, url, host=None, timeout=3):
        """(HTTP status, body) of a GET from inside the namespace; status 0 when it failed."""
        args = ["ip", "netns", "exec", self.name, "curl", "-sS", "-m", str(timeout), "-o", "-",
                "-w", "\n%{http_code}", url]
        if host:
            args[5:5] = ["-H", f"Host: {host}"]
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout + 5)
        body, _, code = r.stdout.rpartition("\n")
        return (int(code) if code.isdigit() else 0), body


class LbFiller:
    """e2e/lbfiller.py as a process: gives LoadBalancer Services an address
    from `pool` and forwards to their backends (see its docstring)."""

    def __init__(self, pool, workdir, lb_class=None):
        self.args = [sys.executable, str(E2E / "lbfiller.py"), f"--pool={pool}"]
        if lb_class:
            self.args.append(f"--class={lb_class}")
        self.log = Path(workdir) / "lbfiller.log"
        self.proc = None

    def start(self):
        env = dict(os.environ, KUBECONFIG=str(KUBECONFIG), KUBECTL=str(BIN / "kubectl"))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT, env=env)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self, n=20):
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:]) if self.log.exists() else ""
