"""Against a cluster where Switchyard is already installed (`make e2e-kind`:
kind + `helm install`), selected with SWITCHYARD_E2E_KUBECONFIG; skipped
otherwise (the local-cluster tests cover the same paths with their own
controller processes). A Gateway of the installed class `switchyard` gets an
address and Programmed=True, an HTTPRoute to echo Pods is Accepted with
ResolvedRefs, a request through the address reaches a Pod, and a route edit is
served. The backend is the upstream conformance echo-basic image, which kind
pulls from registry.k8s.io and the local cluster's process kubelet maps to
its binary (e2e/cluster/images.yaml), so this file also runs against the local
cluster with a controller and Envoy started by `make run-kube`."""

import json
import time
import urllib.error
import urllib.request

import pytest

import kubestack as ks

NS = "sy-external-e2e"
PORT = 8088

pytestmark = pytest.mark.skipif(not ks.EXTERNAL_KUBECONFIG or ks.external_available() is not None,
                                reason="only against an external cluster with Switchyard installed "
                                       "(SWITCHYARD_E2E_KUBECONFIG, make e2e-kind)")

APP = f"""
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
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: registry.k8s.io/gateway-api/echo-basic:v1.5.1
        env:
        - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
        - {{name: NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
        ports: [{{containerPort: 3000, name: http}}]
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
metadata: {{name: external, namespace: {NS}}}
spec:
  gatewayClassName: switchyard
  listeners:
  - {{name: http, port: {PORT}, protocol: HTTP}}
"""


def route(prefix):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: echo, namespace: {NS}}}
spec:
  parentRefs: [{{name: external}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
    backendRefs: [{{name: echo, port: 80}}]
"""


def true(obj, ctype):
    return any(c["type"] == ctype and c["status"] == "True" and c["observedGeneration"] == obj["metadata"]["generation"]
               for c in (obj or {}).get("status", {}).get("conditions", []))


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, json.loads(r.read().decode())
    except urllib.error.HTTPError as e:
        return e.code, None


def test_gateway_programmed_and_requests_reach_pods():
    print(ks.cluster_up())
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s", timeout=100)
    try:
        ks.kubectl("apply", "-f", "-", stdin=APP + "---" + route("/first"))
        ks.kubectl("rollout", "status", "deployment/echo", "-n", NS, "--timeout=180s", timeout=190)
        gw = ks.wait(lambda: (lambda g: g if true(g, "Programmed") and g["status"].get("addresses") else None)(
            ks.get("gateway", "external", NS)), 90, "Gateway external Programmed with an address")
        assert true(gw, "Accepted"), gw["status"]
        rt = ks.wait(lambda: (lambda r: r if r and r.get("status", {}).get("parents") and all(
            true({"status": p, "metadata": r["metadata"]}, t) for p in r["status"]["parents"]
            for t in ("Accepted", "ResolvedRefs")) else None)(ks.get("httproute", "echo", NS)), 60,
            "HTTPRoute echo Accepted and ResolvedRefs")
        assert rt["status"]["parents"][0]["controllerName"] == ks.CONTROLLER_NAME
        base = f"http://{gw['status']['addresses'][0]['value']}:{PORT}"
        pods = {p["metadata"]["name"] for p in json.loads(ks.kubectl("get", "pods", "-n", NS, "-l", "app=echo",
                                                                     "-o", "json"))["items"]}
        ks.wait(lambda: get(base + "/first/a")[0] == 200, 30, f"200 from {base}/first/a")
        seen = set()
        for _ in range(20):
            status, body = get(base + "/first/a")
            assert status == 200 and body["path"] == "/first/a" and body["namespace"] == NS, (status, body)
            seen.add(body["pod"])
        assert seen <= pods and seen, (seen, pods)
        # An edit is served: the old prefix stops matching, the new one answers.
        ks.kubectl("apply", "-f", "-", stdin=route("/second"))
        t0 = time.time()
        ks.wait(lambda: get(base + "/second/b")[0] == 200 and get(base + "/first/a")[0] == 404, 30,
                "the edited route served")
        print(f"route edit served in {time.time() - t0:.2f} s")
    finally:
        ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)
