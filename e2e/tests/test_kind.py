"""What can be checked here of the kind path (`make e2e-kind`, which needs
Docker and does not run on this machine): the script parses and names only
files that exist, the CI workflow parses and runs `make e2e-kind`, and the
Helm values for kind render and are accepted by an API server (server-side dry
run on the local cluster)."""

import re
import subprocess
from pathlib import Path

import pytest
import yaml

import kubestack as ks

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "e2e" / "kind" / "run.sh"
VALUES = ROOT / "e2e" / "kind" / "values.yaml"
WORKFLOW = ROOT / ".github" / "workflows" / "e2e-kind.yml"


def test_script_parses_and_uses_the_shared_paths():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = SCRIPT.read_text()
    # Every repository path it names exists.
    for rel in set(re.findall(r"\b((?:e2e|deploy)/[\w./-]+)", text)):
        rel = rel.rstrip(".")
        if "$" not in rel and not rel.startswith("e2e/run") and not rel.startswith("e2e/bin/"):
            assert (ROOT / rel).exists(), rel
    # It installs as docs/install.md says and runs the shared suites against the external cluster.
    for needed in ("kubectl apply --server-side -k deploy/crds/experimental",
                   "helm upgrade --install switchyard deploy/helm/switchyard -n switchyard-system --create-namespace",
                   "-f e2e/kind/values.yaml", "SWITCHYARD_E2E_KUBECONFIG", "e2e/tests/test_external.py",
                   "e2e/conformance/run.py check --external", "image IMAGE=", "kind load docker-image"):
        assert needed in " ".join(text.replace("\\\n", " ").split()), needed
    install = (ROOT / "docs" / "install.md").read_text()
    assert "kubectl apply --server-side -k deploy/crds/experimental" in install


def test_makefile_target_runs_the_script():
    make = (ROOT / "Makefile").read_text()
    assert re.search(r"^e2e-kind:.*\n\te2e/kind/run\.sh$", make, re.M), "make e2e-kind → e2e/kind/run.sh"
    r = subprocess.run(["make", "-n", "-C", str(ROOT), "e2e-kind"], capture_output=True, text=True)
    assert r.returncode == 0 and "e2e/kind/run.sh" in r.stdout, r.stdout + r.stderr


def test_workflow_parses_and_runs_make_e2e_kind_on_push():
    wf = yaml.safe_load(WORKFLOW.read_text())
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads the key `on` as True
    assert "push" in on, on
    steps = [s for job in wf["jobs"].values() for s in job["steps"]]
    assert any(s.get("run", "").strip() == "make e2e-kind" for s in steps), steps
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    go = next(s for s in steps if s.get("uses", "").startswith("actions/setup-go@"))
    assert (ROOT / go["with"]["go-version-file"]).exists()


def test_kind_values_render_and_the_api_server_accepts_them():
    helm = ROOT / "e2e" / "bin" / "helm"
    reason = ks.external_available()
    if reason or not helm.exists():
        pytest.skip(reason or "helm not built (make cluster-build)")
    print(ks.cluster_up())
    # As e2e/kind/run.sh installs it (NodeAddresses: Gateways get the kind node's address).
    r = subprocess.run([str(helm), "template", "switchyard", str(ROOT / "deploy" / "helm" / "switchyard"),
                        "-n", "switchyard-system", "-f", str(VALUES), "--set",
                        "controller.image=ghcr.io/switchyard-dev/switchyard:0.1.0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    out = ks.kubectl("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump_all(docs))
    assert out.count("(server dry run)") == len(docs), out
    values = yaml.safe_load(VALUES.read_text())
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == values["controller"]["replicas"] == 1
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    envoy = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "envoy")
    assert envoy["image"] == values["envoy"]["image"]
    chart_values = yaml.safe_load((ROOT / "deploy" / "helm" / "switchyard" / "values.yaml").read_text())
    for key in values["controller"]:
        assert key in chart_values["controller"], f"e2e/kind/values.yaml sets controller.{key}, the chart has none"
    container = yaml.safe_dump(dep["spec"]["template"]["spec"]["containers"][0])
    assert "NodeAddresses" in container, container
    for key in values["envoy"]:
        assert key in chart_values["envoy"], f"e2e/kind/values.yaml sets envoy.{key}, the chart has none"
