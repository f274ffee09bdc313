#!/usr/bin/env python3
"""`make run-kube`: Kubernetes mode in one command, on the local cluster
(e2e/cluster: real etcd, kube-apiserver, kube-controller-manager and the
process kubelet), the way `make run` is standalone mode.

1. Starts the local cluster (or reuses a healthy one) and takes the cluster
   lock the e2e tests take, so no test controller fights this one.
2. Installs the Gateway API CRDs as docs/install.md does (server-side apply of
   deploy/crds/experimental, plus deploy/crds/switchyard when present), then
   the namespace and GatewayClass of deploy/kustomize/base.
3. Runs `switchyard controller` and an Envoy as processes on this machine,
   configured as the deploy/ manifests configure them (e2e/kubestack.py: the
   Envoy bootstrap is rendered by the DaemonSet's own init script, Envoy runs
   with the DaemonSet's arguments on the host network, xDS over mTLS).
   The GatewayClass uses the NodeAddresses address mode (docs/networking.md):
   Envoy listens on the node, and the Gateway's address is the Node's
   InternalIP (the bridge address 10.244.0.1, reachable from this machine and
   from every Pod). RUN_KUBE_ADDRESS_MODE=VirtualIP with RUN_KUBE_ADDRESS_POOL
   selects an address pool instead.
4. Applies examples/kube-quickstart (echo-basic backends as Pods, a Gateway, the
   quickstart's routes), waits until the Gateway is Programmed and a request
   through its address is answered, then prints kubectl and curl lines that
   work, and stays in the foreground until Ctrl-C.

On exit it stops its processes and deletes the quickstart namespace; the
cluster stays up (`make cluster-down` stops it).
"""

import json
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "e2e"))
import kubestack as ks  # noqa: E402

MODE = os.environ.get("RUN_KUBE_ADDRESS_MODE", "NodeAddresses")
POOL = os.environ.get("RUN_KUBE_ADDRESS_POOL", "10.244.0.1/32")
NS = "quickstart"
EXAMPLE = ROOT / "examples" / "kube-quickstart"


def say(*lines):
    print(*lines, sep="\n", flush=True)


def install_crds():
    """Server-side apply, as docs/install.md; waits until every CRD is Established."""
    out = ks.kubectl("apply", "--server-side", "--force-conflicts", "-k",
                     str(ROOT / "deploy" / "crds" / "experimental"), timeout=120)
    ours = ROOT / "deploy" / "crds" / "switchyard"
    if ours.is_dir():
        how = "-k" if (ours / "kustomization.yaml").exists() else "-f"
        out += ks.kubectl("apply", "--server-side", "--force-conflicts", how, str(ours), timeout=120)
    crds = [w.split()[0] for w in out.splitlines() if w.startswith("customresourcedefinition.")]
    if not crds:
        raise SystemExit(f"run-kube: no CRD applied:\n{out}")
    ks.kubectl("wait", "--for=condition=Established", "--timeout=60s", *crds, timeout=70)
    return len(crds)


def condition(obj, ctype):
    for c in (obj or {}).get("status", {}).get("conditions", []):
        if c["type"] == ctype:
            return c["status"] == "True" and c["observedGeneration"] == obj["metadata"]["generation"]
    return False


def route_ok(name):
    r = ks.get("httproute", name, NS)
    parents = (r or {}).get("status", {}).get("parents", [])
    return r if parents and all(condition({"status": p, "metadata": r["metadata"]}, t)
                                for p in parents for t in ("Accepted", "ResolvedRefs")) else None


def answered(url, host=None):
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    with urllib.request.urlopen(req, timeout=2) as r:
        return json.loads(r.read().decode()).get("pod", "")


def main():
    why = ks.available()
    if why:
        raise SystemExit(f"run-kube: {why}")
    say("Starting the local cluster (e2e/cluster/up.sh; waits while an e2e test run holds it) ...")
    say(ks.cluster_up())
    say(f"Installing the Gateway API CRDs (kubectl apply --server-side -k deploy/crds/experimental): "
        f"{install_crds()} Established")
    ks.install_gateway_class()
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s", timeout=100)
    # A Lease left by a controller that was killed would delay leadership by its duration.
    ks.kubectl("delete", "lease", "switchyard-controller", "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    workdir = Path(os.environ.get("RUN_DIR") or tempfile.mkdtemp(prefix="switchyard-run-kube-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = ks.KubeStack(POOL, workdir=workdir)
    stopping = []

    def stop(signum, _frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # also when started with SIGINT ignored (a background job)
    try:
        say(f"Starting switchyard controller and Envoy as the deploy/ manifests run them (logs: {workdir}) ...")
        ctl = stack.controller("run-kube", address_mode=MODE)
        envoy = stack.envoy(ctl)
        ks.wait(ctl.is_leader, 30, "the controller to hold the Lease")
        say(f"Applying {EXAMPLE.relative_to(ROOT)} (echo Pods, Gateway quickstart/demo, HTTPRoutes) ...")
        ks.kubectl("apply", "-f", str(EXAMPLE))
        for app in ("echo-a", "echo-b"):
            ks.kubectl("rollout", "status", f"deployment/{app}", "-n", NS, "--timeout=90s", timeout=100)
        gw = ks.wait(lambda: (lambda g: g if condition(g, "Programmed") and g["status"].get("addresses") else None)(
            ks.get("gateway", "demo", NS)), 60, "Gateway quickstart/demo Programmed with an address")
        for r in ("by-host", "main"):
            ks.wait(lambda: route_ok(r), 30, f"HTTPRoute {NS}/{r} Accepted and ResolvedRefs")
        addr = gw["status"]["addresses"][0]["value"]
        port = gw["spec"]["listeners"][0]["port"]
        base = f"http://{addr}:{port}"
        ks.wait(lambda: answered(base + "/", "a.example.com").startswith("echo-a-"), 30,
                f"an answer from echo-a through {base}")
        say("", f"Switchyard (Kubernetes mode) serves {EXAMPLE.relative_to(ROOT)} through Envoy at {addr}:{port},",
            "the address in Gateway quickstart/demo's status. In another shell:", "",
            f"  export KUBECONFIG={ks.KUBECONFIG} PATH={ks.BIN}:$PATH", "",
            "Status of the Gateway and its routes:",
            f"  kubectl get gateway demo -n {NS}                          # PROGRAMMED True, ADDRESS {addr}",
            f"  kubectl get httproute -n {NS}",
            f"  kubectl wait --for=condition=Programmed gateway/demo -n {NS} --timeout=10s",
            f"  kubectl get httproute main -n {NS} -o jsonpath='{{.status.parents[0].conditions[*].type}}{{\"\\n\"}}'",
            f"  kubectl get pods -n {NS} -o wide", "",
            "Requests (each answer is JSON naming the Pod that served it):",
            f"  curl -s -H 'Host: a.example.com' {base}/          # → echo-a",
            f"  curl -s {base}/b/hello                             # → echo-b",
            f"  curl -s -H 'x-canary: true' {base}/                # → echo-b",
            f"  curl -s {base}/api/users                           # → echo-a (path rewritten to /users)",
            f"  curl -si {base}/old/page | grep -i -E '^(HTTP|location)'   # → 301 /new/page", "",
            "The Envoy fleet as the controller sees it:",
            f"  {ks.SWITCHYARD} fleet status --admin 127.0.0.1:{ctl.admin_grpc_port}", "",
            "Edit examples/kube-quickstart/30-routes.yaml and kubectl apply -f it: served within milliseconds.",
            f"Controller admin: http://127.0.0.1:{ctl.admin_port}/metrics   Envoy admin: "
            f"http://127.0.0.1:{envoy.admin_port}/config_dump",
            "Press Ctrl-C to stop (the cluster stays up; `make cluster-down` stops it).")
        while True:
            ctl.running()
            envoy.alive()
            time.sleep(1)
    except KeyboardInterrupt:
        say("", "Stopping.")
    except AssertionError as e:
        say(f"run-kube: {e}", stack.diagnostics())
        return 1
    finally:
        stack.stop()
        ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)
        say(f"Controller and Envoy stopped; namespace {NS} deleted. Logs: {workdir}",
            "The local cluster is still up: `make cluster-down` stops it.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
