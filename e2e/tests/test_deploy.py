"""Checks of deploy/: every kustomize resource parses, the bootstrap copies
equal envoy-bootstrap/bootstrap.yaml, the DaemonSets fill in every placeholder
of the bootstrap, the vendored CRDs are the v1.6.1 bundle; then the kustomize
base and the Helm chart are rendered with the real tools (kubectl kustomize,
helm template) and validated by the local cluster's API server (server-side
dry run). The Envoy the Kubernetes e2e tests run is started from the rendered
DaemonSet (e2e/kubestack.py)."""

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e"))
BOOTSTRAP = (ROOT / "envoy-bootstrap" / "bootstrap.yaml").read_text()
PLACEHOLDERS = set(re.findall(r"\$\{([A-Z_]+)\}", BOOTSTRAP))


def test_bootstrap_has_the_documented_placeholders():
    assert PLACEHOLDERS == {"NODE_ID", "NODE_CLUSTER", "GATEWAYS", "ADS_API_TYPE", "XDS_HOST", "XDS_PORT",
                            "ADMIN_ADDRESS", "ADMIN_PORT"}


def test_kustomize_base_parses_and_matches_the_bootstrap():
    base = ROOT / "deploy" / "kustomize" / "base"
    k = yaml.safe_load((base / "kustomization.yaml").read_text())
    kinds = []
    for r in k["resources"]:
        for doc in yaml.safe_load_all((base / r).read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], (r, doc)
            kinds.append(doc["kind"])
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Role", "Deployment", "Service", "DaemonSet",
            "GatewayClass"} <= set(kinds), kinds
    gen = k["configMapGenerator"][0]["files"][0].split("=", 1)[1]
    assert (base / gen).read_text() == BOOTSTRAP, "deploy/kustomize/base copy of the bootstrap is stale"
    daemonset = next(d for d in yaml.safe_load_all((base / "envoy.yaml").read_text()) if d["kind"] == "DaemonSet")
    script = " ".join(daemonset["spec"]["template"]["spec"]["initContainers"][0]["args"])
    missing = {p for p in PLACEHOLDERS if "${" + p + "}" not in script}
    assert not missing, f"init container leaves placeholders unfilled: {missing}"


def test_helm_chart_matches_the_bootstrap_and_fills_every_placeholder():
    chart = ROOT / "deploy" / "helm" / "switchyard"
    assert (chart / "files" / "bootstrap.yaml").read_text() == BOOTSTRAP, "helm chart copy of the bootstrap is stale"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["controller"]["replicas"] == 2
    template = (chart / "templates" / "envoy.yaml").read_text()
    missing = {p for p in PLACEHOLDERS if "${" + p + "}" not in template}
    assert not missing, f"helm DaemonSet leaves placeholders unfilled: {missing}"


def test_controller_rbac_is_least_privilege():
    docs = list(yaml.safe_load_all((ROOT / "deploy" / "kustomize" / "base" / "rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        verbs = set(rule["verbs"])
        writes = verbs & {"create", "update", "patch", "delete", "deletecollection"}
        if writes:
            # Only status subresources, Events, and one CRD read are allowed beyond reads.
            assert all(r.endswith("/status") or r == "events" for r in rule["resources"]), rule
        assert "*" not in rule["resources"] and "*" not in verbs, rule
    assert not any("secrets" in r["resources"] and set(r["verbs"]) - {"get", "list", "watch"} for r in role["rules"])


def test_vendored_crds_are_the_v1_6_1_bundle():
    for channel in ("standard", "experimental"):
        files = sorted((ROOT / "deploy" / "crds" / channel).glob("gateway.networking.k8s.io_*.yaml"))
        crds = [d for f in files for d in yaml.safe_load_all(f.read_text()) if d and d["kind"] == "CustomResourceDefinition"]
        kinds = {c["spec"]["names"]["kind"] for c in crds}
        assert {"GatewayClass", "Gateway", "HTTPRoute", "GRPCRoute", "ReferenceGrant", "BackendTLSPolicy",
                "ListenerSet", "TLSRoute", "TCPRoute", "UDPRoute"} <= kinds, (channel, kinds)
        for c in crds:
            ann = c["metadata"]["annotations"]
            assert ann["gateway.networking.k8s.io/bundle-version"] == "v1.6.1", c["metadata"]["name"]
            assert ann["gateway.networking.k8s.io/channel"] == channel, c["metadata"]["name"]


# --- Rendered with the real tools and validated by the local cluster's API server ---

def _cluster():
    import kubestack as ks
    reason = ks.available()
    if reason or not (ks.BIN / "helm").exists():
        pytest.skip(reason or "helm not built (make cluster-build)")
    ks.cluster_up()
    ks.install_gateway_class()
    return ks


def _kinds(docs):
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def _server_dry_run(ks, docs):
    out = ks.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.count("(server dry run)") == len(docs), out


def test_kustomize_base_renders_and_the_api_server_accepts_it():
    ks = _cluster()
    docs = ks.rendered_kustomize()
    _server_dry_run(ks, docs)
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    assert ds["spec"]["template"]["spec"]["hostNetwork"] is True
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert cm["data"]["bootstrap.yaml"] == BOOTSTRAP
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2


def test_helm_chart_renders_like_kustomize_and_the_api_server_accepts_it():
    import subprocess
    ks = _cluster()
    r = subprocess.run([str(ks.BIN / "helm"), "template", "switchyard", str(ROOT / "deploy" / "helm" / "switchyard"),
                        "--namespace", "switchyard-system", "--set", "controller.replicas=3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    _server_dry_run(ks, docs)
    # The chart installs what the kustomize base installs (the namespace comes from `helm install -n`).
    kustomize_kinds = {k for k, _ in _kinds(ks.rendered_kustomize())} - {"Namespace"}
    assert {k for k, _ in _kinds(docs)} >= kustomize_kinds, (_kinds(docs), kustomize_kinds)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 3
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    init_env = {e["name"]: e.get("value") for e in ds["spec"]["template"]["spec"]["initContainers"][0]["env"]}
    assert init_env["ADS_API_TYPE"] == "DELTA_GRPC" and init_env["XDS_PORT"] == "18000", init_env
