"""`switchyard certgen --kubernetes-namespace` against the local cluster's real
API server: it creates the CA, server and Envoy Secrets the deploy/ manifests
mount, keeps them on a re-run, re-issues the leaves under the same CA with
--rotate; a controller serving the server Secret's files accepts an Envoy
using the Envoy Secret's files (and the probe with that identity sees the
whole fleet)."""

import base64
import json
import os
import subprocess

import pytest

import kubestack as ks

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))
NS = "certgen-e2e"
PROBE = ks.SWITCHYARD.parent / "switchyard-xds-probe"


def certgen(*extra):
    env = dict(os.environ, KUBECONFIG=str(ks.KUBECONFIG))
    r = subprocess.run([str(ks.SWITCHYARD), "certgen", f"--kubernetes-namespace={NS}",
                        "--server-name=localhost", "--server-name=127.0.0.1", "--client=envoy=fleet", *extra],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def secret(name):
    s = ks.get("secret", name, NS)
    return s["type"], {k: base64.b64decode(v).decode() for k, v in s["data"].items()}


def to_dir(path, data):
    path.mkdir(parents=True, exist_ok=True)
    for k, v in data.items():
        (path / k).write_text(v)
    return path


@pytest.fixture(scope="module")
def cluster():
    print("\n" + ks.cluster_up())
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", timeout=70)
    ks.kubectl("create", "namespace", NS)
    yield
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=false", check=False)


def test_certgen_creates_keeps_and_rotates_the_secrets(cluster, tmp_path):
    out = certgen()
    assert "created CA Secret" in out and "created Secret" in out, out
    t_ca, ca = secret("switchyard-xds-ca")
    t_srv, srv = secret("switchyard-xds-server")
    t_env, env = secret("switchyard-xds-envoy")
    assert t_ca == "Opaque" and set(ca) == {"ca.crt", "ca.key"}
    assert t_srv == t_env == "kubernetes.io/tls"
    assert set(srv) == set(env) == {"ca.crt", "tls.crt", "tls.key"}
    assert srv["ca.crt"] == env["ca.crt"] == ca["ca.crt"]

    # Again: nothing re-issued.
    out = certgen()
    assert "reused CA Secret" in out and "re-issued" not in out and "created" not in out, out
    assert secret("switchyard-xds-server")[1] == srv

    # --rotate: new leaves, same CA.
    out = certgen("--rotate")
    assert out.count("re-issued Secret") == 2, out
    _, srv2 = secret("switchyard-xds-server")
    _, env2 = secret("switchyard-xds-envoy")
    assert srv2["tls.crt"] != srv["tls.crt"] and env2["tls.crt"] != env["tls.crt"]
    assert srv2["ca.crt"] == ca["ca.crt"]

    # The Secrets work together: a controller with the server Secret's files
    # serves a client holding the Envoy Secret's files.
    server_dir = to_dir(tmp_path / "server", srv2)
    envoy_dir = to_dir(tmp_path / "envoy", env2)
    ctl = ks.Controller(tmp_path, "certgen-e2e", "127.0.3.0/24", extra=[f"--xds-tls-dir={server_dir}"])
    ctl.start()
    try:
        ks.wait(ctl.ready, 60, "the controller to be ready")
        r = subprocess.run([str(PROBE), "--server", f"127.0.0.1:{ctl.xds_port}", "--tls-dir", str(envoy_dir),
                            "--wait-ms", "1500"], capture_output=True, text=True, timeout=30)
        res = json.loads(r.stdout)
        assert res["connected"] and res["responses"] >= 1, res
        # A client with the old (pre-rotation) Envoy certificate still chains to the same CA.
        old_dir = to_dir(tmp_path / "envoy-old", env)
        r = subprocess.run([str(PROBE), "--server", f"127.0.0.1:{ctl.xds_port}", "--tls-dir", str(old_dir),
                            "--wait-ms", "500"], capture_output=True, text=True, timeout=30)
        assert json.loads(r.stdout)["connected"]
    finally:
        ctl.kill()
