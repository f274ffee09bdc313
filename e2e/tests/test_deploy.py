"""Checks of deploy/: every kustomize resource parses, the bootstrap copies
equal envoy-bootstrap/bootstrap.yaml, the DaemonSets fill in every placeholder
of the bootstrap, the vendored CRDs are the v1.6.1 bundle and the chart's
crds/ their copies; then the kustomize base and the Helm chart are rendered
with the real tools (kubectl kustomize, helm template) and validated by the
local cluster's API server (server-side dry run), and installed for real as
docs/install.md says (helm install --create-namespace, upgrade, uninstall;
kubectl apply --server-side -k deploy/kustomize/with-crds). With
SWITCHYARD_E2E_KUBECONFIG the same runs against that external cluster. The Envoy the Kubernetes e2e tests run is started from the rendered
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
                            "ADMIN_ADDRESS", "ADMIN_PORT", "XDS_SERVER_NAME", "XDS_TLS_SDS_DIR", "STATS_PORT"}
    for f in SDS_FILES:
        assert set(re.findall(r"\$\{([A-Z_]+)\}", (ROOT / "envoy-bootstrap" / f).read_text())) == {"XDS_TLS_DIR"}


SDS_FILES = ("xds-client-cert.sds.yaml", "xds-ca.sds.yaml")


def _xds_tls_wiring(docs, namespace="switchyard-system"):
    """Controller and Envoy mount the xDS certificates; the init container
    renders the SDS files; the certgen Job may write Secrets in its namespace only."""
    dep = next(d for d in docs if d["kind"] == "Deployment")
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    for obj, secret in ((dep, "switchyard-xds-server"), (ds, "switchyard-xds-envoy")):
        pod = obj["spec"]["template"]["spec"]
        vol = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret)
        main = next(c for c in pod["containers"] if c["name"] in ("controller", "envoy"))
        mount = next(m for m in main["volumeMounts"] if m["name"] == vol["name"])
        assert mount["mountPath"] == "/etc/switchyard/xds-tls" and mount.get("readOnly"), mount
    init = ds["spec"]["template"]["spec"]["initContainers"][0]
    script = " ".join(init["args"])
    for f in SDS_FILES:
        assert f"/template/$f" in script and f in script, script
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["XDS_TLS_DIR"] == "/etc/switchyard/xds-tls" and env["XDS_TLS_SDS_DIR"] == "/rendered"
    assert env["XDS_SERVER_NAME"] == f"switchyard-xds.{namespace}.svc"
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "switchyard-envoy-bootstrap")
    for f in SDS_FILES:
        assert cm["data"][f] == (ROOT / "envoy-bootstrap" / f).read_text()
    job = next(d for d in docs if d["kind"] == "Job")
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "certgen" and f"--kubernetes-namespace={namespace}" in args, args
    assert f"--server-name={env['XDS_SERVER_NAME']}" in args, args
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "switchyard-certgen")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]}]


def test_kustomize_base_parses_and_matches_the_bootstrap():
    base = ROOT / "deploy" / "kustomize" / "base"
    k = yaml.safe_load((base / "kustomization.yaml").read_text())
    kinds = []
    files = []
    for r in k["resources"]:
        if (base / r).is_dir():  # a kustomization of its own (deploy/crds/switchyard)
            sub = yaml.safe_load((base / r / "kustomization.yaml").read_text())
            files += [base / r / f for f in sub["resources"]]
        else:
            files.append(base / r)
    for f in files:
        for doc in yaml.safe_load_all(f.read_text()):
            assert doc["apiVersion"] and doc["kind"] and doc["metadata"]["name"], (f, doc)
            kinds.append(doc["kind"])
    assert {"Namespace", "ServiceAccount", "ClusterRole", "Role", "Deployment", "Service", "DaemonSet",
            "GatewayClass", "CustomResourceDefinition"} <= set(kinds), kinds
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
            # Only status subresources, Events, one CRD read, and the Services +
            # EndpointSlices of Gateways (create/patch/delete, never update) beyond reads.
            gateway_services = rule["resources"] in (["services"], ["endpointslices"])
            assert gateway_services or all(r.endswith("/status") or r == "events" for r in rule["resources"]), rule
            assert not gateway_services or verbs == {"create", "patch", "delete"}, rule
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
    reason = ks.external_available()
    if reason or not (ks.BIN / "helm").exists():
        pytest.skip(reason or "helm not built (make cluster-build)")
    ks.cluster_up()
    if not ks.EXTERNAL_KUBECONFIG:  # an external cluster has Switchyard installed already
        ks.install_gateway_class()
    return ks


def _kinds(docs):
    return sorted((d["kind"], d["metadata"]["name"]) for d in docs)


def _server_dry_run(ks, docs):
    # Server-side apply: the Gateway API CRDs exceed client-side apply's annotation limit.
    out = ks.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
                     stdin=yaml.safe_dump_all(docs))
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
    _xds_tls_wiring(docs)


def test_helm_chart_renders_like_kustomize_and_the_api_server_accepts_it():
    import subprocess
    ks = _cluster()
    # --include-crds: the chart's crds/ (GatewayClassConfig), which the kustomize base has too.
    r = subprocess.run([str(ks.BIN / "helm"), "template", "switchyard", str(ROOT / "deploy" / "helm" / "switchyard"),
                        "--namespace", "switchyard-system", "--set", "controller.replicas=3", "--include-crds"],
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
    _xds_tls_wiring(docs)


# --- Hardening: RBAC, securityContext, probes, drain (rendered kustomize base, its non-root overlay, Helm) ---

def _kubectl_kustomize(path):
    import subprocess
    kubectl = ROOT / "e2e" / "bin" / "kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not built (make cluster-build)")
    r = subprocess.run([str(kubectl), "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def _helm_template(*sets):
    import subprocess
    helm = ROOT / "e2e" / "bin" / "helm"
    if not helm.exists():
        pytest.skip("helm not built (make cluster-build)")
    args = [str(helm), "template", "switchyard", str(ROOT / "deploy" / "helm" / "switchyard"),
            "--namespace", "switchyard-system"]
    for s in sets:
        args += ["--set", s]
    r = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def _renderings():
    """(name, documents, Envoy runs non-root?) for every way deploy/ installs Switchyard."""
    return [
        ("kustomize base", _kubectl_kustomize(ROOT / "deploy" / "kustomize" / "base"), False),
        ("kustomize envoy-nonroot", _kubectl_kustomize(ROOT / "deploy" / "kustomize" / "envoy-nonroot"), True),
        ("helm", _helm_template(), False),
        ("helm privilegedPorts=false", _helm_template("envoy.privilegedPorts=false"), True),
    ]


def _assert_least_privilege(name, docs):
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    for rule in role["rules"]:
        verbs = set(rule["verbs"])
        assert "*" not in verbs and "*" not in rule["resources"], (name, rule)
        status = [r for r in rule["resources"] if r.endswith("/status")]
        if status:
            assert status == rule["resources"] and verbs == {"patch"}, (name, "status: patch only", rule)
        elif rule["resources"] == ["events"]:
            assert verbs == {"create", "patch"} and rule["apiGroups"] == ["events.k8s.io"], (name, rule)
        elif rule["resources"] == ["customresourcedefinitions"]:
            assert verbs == {"get"} and rule.get("resourceNames"), (name, rule)
        elif set(verbs) & {"create", "patch", "delete"}:
            # The Service + EndpointSlices each Gateway gets (provider/kube/infra.rs).
            assert rule["resources"] in (["services"], ["endpointslices"]), (name, rule)
            assert verbs == {"create", "patch", "delete"}, (name, "gateway services", rule)
        else:
            assert verbs <= {"get", "list", "watch"}, (name, "reads only", rule)
    lease_rules = [r for d in docs if d["kind"] == "Role" and d["metadata"]["name"] != "switchyard-certgen"
                   for r in d["rules"]]
    for r in lease_rules:
        assert r["resources"] == ["leases"], (name, r)
        assert set(r["verbs"]) == {"create"} or r.get("resourceNames") == ["switchyard-controller"], (name, r)
    # The certgen Job's Role: Secrets of its own namespace, no delete, no list/watch.
    certgen = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "switchyard-certgen"]
    assert len(certgen) == 1 and certgen[0]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]}], (name, certgen)
    # No other ClusterRole/Role and no binding to anything else.
    assert sum(d["kind"] == "ClusterRole" for d in docs) == 1 and sum(d["kind"] == "Role" for d in docs) == 2, name


def _assert_hardened(name, pod, container, non_root):
    sc = dict(pod.get("securityContext") or {}, **(container.get("securityContext") or {}))
    what = f"{name}: {container['name']}"
    assert sc.get("allowPrivilegeEscalation") is False, what
    assert sc.get("readOnlyRootFilesystem") is True, what
    assert sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", what
    caps = sc.get("capabilities") or {}
    assert caps.get("drop") == ["ALL"], what
    if non_root:
        assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 1) != 0, what
        assert not caps.get("add"), what
    else:
        # Root only to hold NET_BIND_SERVICE (ports < 1024 on the host network), nothing else.
        assert caps.get("add") == ["NET_BIND_SERVICE"], what
    assert not sc.get("privileged"), what


def test_rbac_and_pods_are_hardened_in_every_rendering():
    for name, docs, envoy_non_root in _renderings():
        _assert_least_privilege(name, docs)
        dep = next(d for d in docs if d["kind"] == "Deployment")
        pod = dep["spec"]["template"]["spec"]
        ctl = pod["containers"][0]
        _assert_hardened(name, pod, ctl, non_root=True)
        assert ctl["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert ctl["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        assert {"name": "tmp", "mountPath": "/tmp"} in ctl["volumeMounts"], name
        job = next(d for d in docs if d["kind"] == "Job")
        _assert_hardened(name, job["spec"]["template"]["spec"], job["spec"]["template"]["spec"]["containers"][0],
                         non_root=True)
        ds = next(d for d in docs if d["kind"] == "DaemonSet")
        pod = ds["spec"]["template"]["spec"]
        assert pod.get("automountServiceAccountToken") is False, name
        for init in pod["initContainers"]:
            _assert_hardened(name, pod, init, non_root=True)
        envoy = next(c for c in pod["containers"] if c["name"] == "envoy")
        _assert_hardened(name, pod, envoy, non_root=envoy_non_root)
        env = {e["name"]: e.get("value") for e in envoy.get("env") or []}
        if not envoy_non_root:
            assert envoy["securityContext"]["runAsUser"] == 0 and env.get("ENVOY_UID") == "0", name
        assert envoy["readinessProbe"]["httpGet"]["path"] == "/ready", name
        assert envoy["livenessProbe"]["httpGet"]["path"] == "/server_info", name
        # Writable paths are emptyDirs; the bootstrap is mounted read-only.
        mounts = {m["mountPath"]: m for m in envoy["volumeMounts"]}
        assert mounts["/rendered"].get("readOnly") is True and "/tmp" in mounts, name
        vols = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in vols["tmp"] and "emptyDir" in vols["rendered"], name
        # Graceful drain: preStop drains through the admin API (bash, no curl/wget in the
        # envoyproxy/envoy image), then sleeps past --drain-time-s; the grace period covers it.
        args = envoy["args"]
        drain = int(args[args.index("--drain-time-s") + 1])
        cmd = envoy["lifecycle"]["preStop"]["exec"]["command"]
        assert cmd[:2] == ["bash", "-c"], (name, cmd)
        assert "drain_listeners?graceful" in cmd[2] and "curl" not in cmd[2] and "wget" not in cmd[2], name
        sleep = int(re.search(r"sleep (\d+)\s*$", cmd[2]).group(1))
        assert sleep > drain, (name, sleep, drain)
        assert pod["terminationGracePeriodSeconds"] >= sleep + 10, name


def test_envoy_prestop_hook_drains_a_real_envoy(tmp_path):
    """Runs the DaemonSet's preStop command (its sleep shortened) against a real Envoy."""
    import socket
    import subprocess
    import time
    import urllib.request
    envoy_bin = ROOT / ".venv" / "bin" / "envoy"
    if not envoy_bin.exists():
        pytest.skip("no Envoy in .venv (make envoy)")

    def free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    admin, port = free_port(), free_port()
    (tmp_path / "envoy.yaml").write_text(f"""
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}}}
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h
          route_config:
            virtual_hosts:
            - {{name: a, domains: ["*"], routes: [{{match: {{prefix: /}}, direct_response: {{status: 200}}}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
""")
    ds = next(d for d in yaml.safe_load_all((ROOT / "deploy" / "kustomize" / "base" / "envoy.yaml").read_text())
              if d and d["kind"] == "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    script = container["lifecycle"]["preStop"]["exec"]["command"][2]
    script = script.replace("/dev/tcp/127.0.0.1/19000", f"/dev/tcp/127.0.0.1/{admin}")
    script = re.sub(r"sleep \d+\s*$", "sleep 0", script)
    proc = subprocess.Popen([str(envoy_bin), "-c", str(tmp_path / "envoy.yaml"), "--drain-time-s", "2",
                             "--drain-strategy", "gradual", "--use-dynamic-base-id"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def get(url):
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read().decode()

        deadline = time.time() + 20
        while True:
            try:
                if get(f"http://127.0.0.1:{port}/")[0] == 200:
                    break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.1)
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and r.stdout.startswith("HTTP/1.1 200"), (r.stdout, r.stderr)
        # Draining: still serving during --drain-time-s, then the listener stops.
        assert get(f"http://127.0.0.1:{port}/")[0] == 200
        deadline = time.time() + 10
        while "listener_manager.listener_stopped: 1" not in get(f"http://127.0.0.1:{admin}/stats")[1]:
            assert time.time() < deadline, "listener not stopped after the drain"
            time.sleep(0.2)
        with pytest.raises(OSError):
            get(f"http://127.0.0.1:{port}/")
    finally:
        proc.terminate()
        proc.wait(10)


def _helm(ks):
    return [str(ks.BIN / "helm"), "--kubeconfig", str(ks.KUBECONFIG)]


def _run(cmd, timeout=120):
    import subprocess
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (cmd, r.stdout, r.stderr)
    return r.stdout


def _crd_sources():
    """The files the chart's crds/ must hold: the experimental channel as its kustomization lists
    it, plus Switchyard's own CRDs (deploy/crds/switchyard) when present."""
    crds = ROOT / "deploy" / "crds"
    files = [crds / "experimental" / f
             for f in yaml.safe_load((crds / "experimental" / "kustomization.yaml").read_text())["resources"]]
    files += [f for f in sorted((crds / "switchyard").glob("*.yaml")) if f.name != "kustomization.yaml"]
    return files


def test_helm_chart_crds_are_the_synced_copies():
    out = ROOT / "deploy" / "helm" / "switchyard" / "crds"
    sources = _crd_sources()
    assert sorted(p.name for p in out.iterdir()) == sorted(f.name for f in sources), \
        "deploy/helm/switchyard/crds is stale: run deploy/crds/sync-chart.sh"
    for f in sources:
        assert (out / f.name).read_bytes() == f.read_bytes(), f"{f.name} is stale: run deploy/crds/sync-chart.sh"


def test_helm_install_upgrade_uninstall_on_a_fresh_namespace():
    """`helm install ... -n <namespace> --create-namespace` as docs/install.md says, against the local
    cluster: every object is created; `helm upgrade` changes them; `helm uninstall` removes them and
    leaves the CRDs (Helm's crds/ semantics). The GatewayClass and controllerName get test names so the
    other tests' `switchyard` class is left alone. (The controller and Envoy Pods do not start here:
    the process kubelet maps no binary to their images, e2e/cluster/images.yaml; they report
    ImageNotMapped.)"""
    ks = _cluster()
    ns, release, cls = "switchyard-helm-e2e", "sy-e2e", "switchyard-helm-e2e"
    helm = _helm(ks)
    chart = str(ROOT / "deploy" / "helm" / "switchyard")
    import subprocess
    subprocess.run(helm + ["uninstall", release, "-n", ns], capture_output=True, timeout=60)
    ks.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=70)
    assert ks.get("namespace", ns) is None
    # The chart installs the CRDs (crds/) before its templates; here they exist already, and Helm
    # skips existing CRDs (it never changes them), so the rendering is server-validated instead.
    crds = _run([str(ks.BIN / "helm"), "template", release, chart, "-n", ns, "--include-crds"])
    crd_docs = [d for d in yaml.safe_load_all(crds) if d and d["kind"] in
                ("CustomResourceDefinition", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")]
    assert len(crd_docs) == sum(len([d for d in yaml.safe_load_all(f.read_text()) if d]) for f in _crd_sources())
    out = ks.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-f", "-",
                     stdin=yaml.safe_dump_all(crd_docs))
    assert out.count("(server dry run)") == len(crd_docs), out
    common = ["--set", f"gatewayClass.name={cls}", "--set", "controller.controllerName=switchyard.dev/helm-e2e"]
    try:
        out = _run(helm + ["install", release, chart, "-n", ns, "--create-namespace", *common])
        assert "STATUS: deployed" in out, out
        assert ks.get("namespace", ns)
        for kind, name in (("deployment", "switchyard-controller"), ("daemonset", "switchyard-envoy"),
                           ("serviceaccount", "switchyard-controller"), ("role", "switchyard-leader-election"),
                           ("configmap", "switchyard-envoy-bootstrap"), ("service", "switchyard-xds"),
                           ("job", "switchyard-certgen-1")):
            assert ks.get(kind, name, ns), (kind, name)
        assert ks.get("clusterrole", f"switchyard-controller-{ns}")
        gc = ks.get("gatewayclass", cls)
        assert gc["spec"]["controllerName"] == "switchyard.dev/helm-e2e"
        dep = ks.get("deployment", "switchyard-controller", ns)
        assert dep["spec"]["replicas"] == 2
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        # The Lease lives in the release namespace (POD_NAMESPACE), where the Role grants it.
        assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
        gateways_crd = ks.get("crd", "gateways.gateway.networking.k8s.io")
        # Upgrade: new values reach the objects; the CRDs are not touched.
        out = _run(helm + ["upgrade", release, chart, "-n", ns, *common, "--set", "controller.replicas=1",
                           "--set", "controller.addressPool=10.244.0.1/32"])
        assert "REVISION: 2" in out, out
        dep = ks.get("deployment", "switchyard-controller", ns)
        assert dep["spec"]["replicas"] == 1
        env = {e["name"]: e for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["SWITCHYARD_ADDRESS_POOL"]["value"] == "10.244.0.1/32"
        assert ks.get("job", "switchyard-certgen-2", ns), "the certgen Job runs again on each revision"
        assert ks.get("crd", "gateways.gateway.networking.k8s.io")["metadata"]["resourceVersion"] == \
            gateways_crd["metadata"]["resourceVersion"]
        history = _run(helm + ["history", release, "-n", ns])
        assert "superseded" in history and "deployed" in history, history
        # Uninstall: the release's objects go; the CRDs stay.
        _run(helm + ["uninstall", release, "-n", ns, "--wait", "--timeout", "60s"])
        for kind, name in (("deployment", "switchyard-controller"), ("daemonset", "switchyard-envoy"),
                           ("service", "switchyard-xds")):
            assert ks.get(kind, name, ns) is None, (kind, name)
        assert ks.get("gatewayclass", cls) is None and ks.get("clusterrole", f"switchyard-controller-{ns}") is None
        assert ks.get("crd", "gateways.gateway.networking.k8s.io")
    finally:
        subprocess.run(helm + ["uninstall", release, "-n", ns], capture_output=True, timeout=60)
        ks.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)


def test_kustomize_with_crds_overlay_installs_for_real(tmp_path):
    """deploy/kustomize/with-crds (the base plus the CRDs): rendered, server-validated, then applied for
    real with `kubectl apply --server-side -k` as docs/install.md says, through a wrapper kustomization
    that only moves it to a test namespace and renames the cluster-scoped objects (GatewayClass,
    ClusterRole, ClusterRoleBinding) so the shared cluster's are left alone; then deleted."""
    import os
    ks = _cluster()
    overlay = ROOT / "deploy" / "kustomize" / "with-crds"
    docs = _kubectl_kustomize(overlay)
    kinds = [d["kind"] for d in docs]
    # The experimental channel, and Switchyard's own CRDs (through the base).
    sources = [d for f in _crd_sources() for d in yaml.safe_load_all(f.read_text()) if d]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert sorted(c["metadata"]["name"] for c in crds) == sorted(
        d["metadata"]["name"] for d in sources if d["kind"] == "CustomResourceDefinition")
    base = {(k, n) for k, n in _kinds(ks.rendered_kustomize())}
    assert base <= set(_kinds(docs)), "the overlay holds all of the base"
    assert kinds.count("GatewayClass") == 1
    out = ks.kubectl("apply", "--server-side", "--force-conflicts", "--dry-run=server", "-k", str(overlay))
    assert out.count("(server dry run)") == len(docs), out
    ns, cls = "switchyard-kust-e2e", "switchyard-kust-e2e"
    renames = [("GatewayClass", "switchyard", cls),
               ("ClusterRole", "switchyard-controller", "switchyard-controller-kust-e2e"),
               ("ClusterRoleBinding", "switchyard-controller", "switchyard-controller-kust-e2e")]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": ns,
        "resources": [os.path.relpath(overlay, tmp_path)],
        "patches": [{"target": {"kind": k, "name": old},
                     "patch": f'[{{"op": "replace", "path": "/metadata/name", "value": "{new}"}}]'}
                    for k, old, new in renames]}))
    ks.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=70)
    try:
        out = ks.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(tmp_path), timeout=120)
        assert "gatewayclass.gateway.networking.k8s.io/" + cls + " serverside-applied" in out, out
        for kind, name in (("deployment", "switchyard-controller"), ("daemonset", "switchyard-envoy"),
                           ("configmap", "switchyard-envoy-bootstrap"), ("service", "switchyard-xds"),
                           ("job", "switchyard-certgen")):
            assert ks.get(kind, name, ns), (kind, name)
        crb = ks.get("clusterrolebinding", "switchyard-controller-kust-e2e")
        assert crb["roleRef"]["name"] == "switchyard-controller-kust-e2e"
        assert crb["subjects"] == [{"kind": "ServiceAccount", "name": "switchyard-controller", "namespace": ns}]
        assert ks.get("gatewayclass", cls)["spec"]["controllerName"] == "switchyard.dev/gateway-controller"
        # A second apply (an upgrade with the same files) changes nothing and fails on nothing.
        again = ks.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(tmp_path), timeout=120)
        assert again.count("serverside-applied") == len(docs), again
    finally:
        for kind, _, new in renames:
            ks.kubectl("delete", kind.lower(), new, "--ignore-not-found", check=False)
        ks.kubectl("delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False)
