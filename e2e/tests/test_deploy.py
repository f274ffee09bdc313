"""Checks of the deploy/ manifests that need no cluster: every kustomize
resource parses, the bootstrap copies equal envoy-bootstrap/bootstrap.yaml,
and the DaemonSets fill in every placeholder of the bootstrap. (Rendering with
kubectl kustomize / helm against a real API server is part of the cluster
tests.)"""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
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
