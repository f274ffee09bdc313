"""`make run-kube` (scripts/run-kube.py) prints lines that work: the script is
started as a user starts it, its output is parsed, and every kubectl, curl and
`switchyard fleet status` line it printed is run as printed (after the export
line it printed) on this machine; the curl lines are also run from inside a
Pod's network namespace (the Gateway address is not a loopback address). Then
Ctrl-C: the script stops its processes, deletes the quickstart namespace and
leaves the cluster up."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import kubestack as ks

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))


def _sh(export, line, netns=None):
    cmd = ["bash", "-o", "pipefail", "-c", f"{export}\n{line}"]
    if netns:
        cmd = ["ip", "netns", "exec", netns] + cmd
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd="/")


def _check_curl(line, out):
    expected = line.split("# →", 1)[1].split()[0]
    if expected.startswith("echo-"):
        body = json.loads(out)
        assert body["pod"].startswith(expected + "-"), (line, body["pod"])
        if "/api/users" in line:
            assert body["path"] == "/users" and body["headers"]["X-Via"] == ["switchyard"], body
    else:
        assert expected in out.split("\n", 1)[0], (line, out)
        assert re.search(r"(?im)^location: \S+/new/page", out), (line, out)


def _pod_netns(ip):
    """The process kubelet's network namespace (sy-...) holding `ip`."""
    for name in (l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
                 .stdout.splitlines() if l.startswith("sy-")):
        addrs = subprocess.run(["ip", "netns", "exec", name, "ip", "-4", "-o", "addr"], capture_output=True,
                               text=True).stdout
        if f" {ip}/" in addrs:
            return name
    return None


def test_run_kube_prints_lines_that_work(tmp_path):
    # This test process holds the cluster lock (as every kube test does); the script under test
    # takes a lock file of its own, so it neither waits for us nor races another run.
    print(ks.cluster_up())
    env = dict(os.environ, RUN_DIR=str(tmp_path / "run"),
               SWITCHYARD_CLUSTER_LOCK=str(tmp_path / "cluster.lock"))
    proc = subprocess.Popen([str(PYTHON), "-u", str(ROOT / "scripts" / "run-kube.py")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    lines, ready = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("Press Ctrl-C"):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert ready.wait(240) and proc.poll() is None, "\n".join(lines)
        text = "\n".join(lines)
        export = next(l.strip() for l in lines if l.startswith("  export KUBECONFIG="))
        kubectl = [l.strip() for l in lines if l.startswith("  kubectl ")]
        curls = [l.strip() for l in lines if l.startswith("  curl ")]
        fleet = [l.strip() for l in lines if " fleet status " in l]
        assert len(kubectl) >= 4 and len(curls) >= 4 and len(fleet) == 1, text
        addr = re.search(r"Envoy at (\S+):(\d+),", text).group(1)
        assert not addr.startswith("127."), f"the Gateway address must be reachable off the node: {addr}"
        for line in kubectl:
            r = _sh(export, line)
            assert r.returncode == 0 and r.stdout.strip(), (line, r.stdout, r.stderr)
            if line.startswith("kubectl get gateway demo"):
                row = r.stdout.splitlines()[1].split()
                assert row[0] == "demo" and row[2] == addr and row[3] == "True", r.stdout
            if "jsonpath" in line:
                assert r.stdout.split() == ["Accepted", "ResolvedRefs"], r.stdout
        for line in curls:
            r = _sh(export, line)
            assert r.returncode == 0, (line, r.stdout, r.stderr)
            _check_curl(line, r.stdout)
        r = _sh(export, fleet[0])
        assert r.returncode == 0 and "quickstart/demo" in r.stdout and "SYNCED" in r.stdout, (r.stdout, r.stderr)
        # From a Pod's network namespace (another node's view of the Gateway address).
        pod = json.loads(ks.kubectl("get", "pods", "-n", "quickstart", "-l", "app=echo-b", "-o", "json"))["items"][0]
        netns = _pod_netns(pod["status"]["podIP"])
        assert netns, f"no network namespace holds {pod['status']['podIP']}"
        for line in curls:
            r = _sh(export, line, netns=netns)
            assert r.returncode == 0, (netns, line, r.stdout, r.stderr)
            _check_curl(line, r.stdout)
        # Ctrl-C: processes stopped, quickstart deleted, cluster left up.
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(60) == 0, "\n".join(lines)
        time.sleep(0.2)
        tail = "\n".join(lines[-4:])
        assert "Stopping." in tail and "make cluster-down" in tail, tail
        r = subprocess.run(["curl", "-s", "-m", "2", f"http://{addr}:8080/"], capture_output=True)
        assert r.returncode != 0, "Envoy still answers after Ctrl-C"
        ns = ks.get("namespace", "quickstart")
        assert ns is None or ns["metadata"].get("deletionTimestamp"), ns
        assert "ok" in ks.kubectl("get", "--raw", "/readyz"), "the cluster stays up"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(60)
        ks.kubectl("delete", "namespace", "quickstart", "--ignore-not-found", "--wait=false", check=False)
        sys.stdout.write("\n".join(lines[-40:]) + "\n")
