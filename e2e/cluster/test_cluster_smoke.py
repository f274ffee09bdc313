"""Smoke test of the local cluster: real etcd, kube-apiserver,
kube-controller-manager and the process kubelet. A Deployment of two echo
Pods behind a Service gets an EndpointSlice listing both Pod IPs, and each
Pod answers HTTP from the host with its own name."""

import json
import os
import subprocess
import time
import urllib.request
from pathlib import Path

E2E = Path(__file__).resolve().parents[1]
KUBECTL = str(E2E / "bin" / "kubectl")
ENV = dict(os.environ, KUBECONFIG=str(E2E / "run" / "kubeconfig"))

MANIFEST = """
apiVersion: v1
kind: Namespace
metadata: {name: smoke}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: smoke}
spec:
  replicas: 2
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: switchyard.dev/switchyard-echo:dev
        args: ["--listen", "0.0.0.0:8080"]
        env:
        - name: POD_NAME
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: smoke}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def kubectl(*args, stdin=None):
    return subprocess.run([KUBECTL, *args], input=stdin, capture_output=True, text=True, env=ENV, check=True).stdout


def wait(pred, timeout, what):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = pred()
            if last:
                return last
        except subprocess.CalledProcessError as e:
            last = e.stderr
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: {last}")


def test_deployment_endpoints_and_pod_traffic():
    kubectl("apply", "-f", "-", stdin=MANIFEST)
    try:
        def ready_pods():
            pods = json.loads(kubectl("get", "pods", "-n", "smoke", "-l", "app=echo", "-o", "json"))["items"]
            ready = [p for p in pods if any(c["type"] == "Ready" and c["status"] == "True"
                                            for c in p.get("status", {}).get("conditions", []))]
            return ready if len(ready) == 2 else None

        pods = wait(ready_pods, 120, "2 Ready echo Pods")
        ips = {p["status"]["podIP"]: p["metadata"]["name"] for p in pods}

        def slice_ips():
            slices = json.loads(kubectl("get", "endpointslices", "-n", "smoke", "-l", "kubernetes.io/service-name=echo", "-o", "json"))["items"]
            found = {a for s in slices for e in (s.get("endpoints") or []) if e.get("conditions", {}).get("ready")
                     for a in e["addresses"]}
            return found if found == set(ips) else None

        wait(slice_ips, 60, "EndpointSlice listing both Pod IPs")
        for ip, name in ips.items():
            with urllib.request.urlopen(f"http://{ip}:8080/hello", timeout=5) as r:
                body = json.load(r)
            assert body["name"] == name, (ip, body)
    finally:
        kubectl("delete", "namespace", "smoke", "--wait=false")
