"""Supervision of the local Envoy fails loudly and heals what can heal, end
to end with the real binaries: an Envoy that cannot start or keeps crashing
makes /readyz fail and switchyard exit non-zero; a listener whose port was
busy is delivered again once the port is free; a restarted switchyard adopts
the running Envoy (no refused connection), from any working directory."""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

import harness
from conftest import start_stack


def standalone_args(stack, envoy, *extra):
    return [str(harness.SWITCHYARD), "standalone", "--config-dir", str(stack.config), "--status-dir", str(stack.status),
            "--xds-listen", f"127.0.0.1:{stack.xds_port}", "--admin-listen", f"127.0.0.1:{stack.admin_port}",
            "--admin-grpc-listen", f"127.0.0.1:{stack.admin_grpc_port}",
            "--envoy", str(envoy), "--envoy-admin", f"127.0.0.1:{stack.envoy_admin}",
            "--envoy-stats-port", str(stack.envoy_stats),
            "--envoy-work-dir", str(stack.dir / "envoy"), "--debounce-ms", "5", *extra]


def readyz(stack):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.admin_port}/readyz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def alive(pid):
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except OSError:
        return False


def test_envoy_that_cannot_start_fails_the_process():
    with harness.Stack(backends=0) as stack:
        stack.write("base.yaml", harness.gateway_manifests(stack.gw_port, []))
        p = subprocess.run(standalone_args(stack, stack.dir / "no-such-envoy"), capture_output=True, text=True,
                           timeout=30, cwd="/")
        assert p.returncode != 0
        assert "starting Envoy" in p.stderr and "no-such-envoy" in p.stderr, p.stderr[-2000:]


def test_crash_looping_envoy_fails_readyz_then_the_process():
    with harness.Stack(backends=0) as stack:
        stack.write("base.yaml", harness.gateway_manifests(stack.gw_port, []))
        fake = stack.dir / "crashing-envoy"
        fake.write_text("#!/bin/sh\necho '[2026-11-29 10:00:00.000][1][critical][main] "
                        "[source/server/server.cc:1] error initializing configuration: boom' >&2\nexit 1\n")
        fake.chmod(0o755)
        p = subprocess.Popen(standalone_args(stack, fake, "--envoy-max-failed-starts", "4"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        seen = set()
        deadline = time.time() + 20
        while p.poll() is None and time.time() < deadline:
            seen.add(readyz(stack))
            time.sleep(0.05)
        _, err = p.communicate(timeout=10)
        assert p.returncode not in (0, None), err[-2000:]
        assert "giving up" in err and "boom" in err, err[-2000:]
        assert 503 in seen and 200 not in seen, seen


def _bind_retry(stack, g):
    stack.start_backends()
    stack.busy_port = harness.free_port()
    stack.write("base.yaml", harness.gateway_manifests(
        stack.gw_port, [("svc-0", stack.backend_ports[0]), ("svc-1", stack.backend_ports[1])]))
    stack.write("route.yaml", harness.route_manifest("r", "a.example.com", "svc-0"))
    stack.start_switchyard()
    g.wait_for("a.example.com", timeout=30)


@pytest.fixture(scope="module")
def busy(request):
    yield from start_stack(request, configure=_bind_retry, backends=2, debounce_ms=5)


def test_listener_on_a_busy_port_is_retried_once_the_port_is_free(busy):
    stack = busy.stack
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    blocker.bind(("127.0.0.1", stack.busy_port))
    blocker.listen(1)
    try:
        stack.write("second.yaml", f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: second, namespace: default}}
spec:
  gatewayClassName: switchyard
  addresses: [{{type: IPAddress, value: 127.0.0.1}}]
  listeners:
  - {{name: http, port: {stack.busy_port}, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}
""")
        busy.wait_condition("Gateway", "second", "Programmed", status="False", timeout=15)
        assert "rejected" in busy.status_doc("Gateway", "second")
        # The other Gateway keeps serving meanwhile.
        assert busy.get("a.example.com")[0] == 200
    finally:
        blocker.close()
    t0 = time.time()
    busy.wait_condition("Gateway", "second", "Programmed", status="True", timeout=20)
    # Envoy listens there now: an unknown host gets Envoy's 404.
    deadline = time.time() + 5
    while True:
        try:
            c = socket.create_connection(("127.0.0.1", stack.busy_port), timeout=2)
            c.sendall(b"GET / HTTP/1.1\r\nHost: nothing.test\r\nConnection: close\r\n\r\n")
            assert c.recv(100).startswith(b"HTTP/1.1 404")
            c.close()
            break
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.1)
    assert time.time() - t0 < 20
    assert stack.metrics().get('switchyard_xds_nack_retries_total{type="lds"}', 0) >= 1


def test_restarted_switchyard_adopts_the_running_envoy(request):
    stack = harness.Stack(backends=2)
    try:
        stack.start_backends()
        stack.write("base.yaml", harness.gateway_manifests(
            stack.gw_port, [("svc-0", stack.backend_ports[0]), ("svc-1", stack.backend_ports[1])]))
        stack.write("route.yaml", harness.route_manifest("r", "a.example.com", "svc-0"))
        envoy = harness.envoy_binary()
        first = subprocess.Popen(standalone_args(stack, envoy, "--keep-envoy-on-exit"), stdout=stack.log, stderr=stack.log,
                                 cwd="/")  # the built-in bootstrap: no repository files needed
        stack.procs.append(first)
        gw = harness.Client(stack.gw_port, timeout=5)
        deadline = time.time() + 30
        while gw.get("a.example.com")[0] != 200:
            assert time.time() < deadline, "the first switchyard never served"
            time.sleep(0.1)
        envoy_pids = [pid for pid in harness.child_pids(first.pid)
                      if "envoy" in open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")]
        assert len(envoy_pids) == 1
        finish = harness.load("127.0.0.1", stack.gw_port, "a.example.com", threads=2)
        try:
            time.sleep(0.3)
            first.terminate()
            assert first.wait(timeout=5) == 0
            assert alive(envoy_pids[0]), "--keep-envoy-on-exit stopped Envoy"
            second = subprocess.Popen(standalone_args(stack, envoy), stdout=stack.log, stderr=stack.log, cwd="/tmp")
            stack.procs.append(second)
            deadline = time.time() + 15
            assert harness.wait_port("127.0.0.1", stack.admin_port), "the second switchyard did not start"
            while not stack.admin_json("/debug/nodes"):
                assert time.time() < deadline, "Envoy did not reconnect to the new switchyard"
                time.sleep(0.1)
            time.sleep(0.5)
        finally:
            results = finish()
        assert set(results) == {200}, results
        assert alive(envoy_pids[0]), "the adopted Envoy is gone"
        second.terminate()
        assert second.wait(timeout=10) == 0
        deadline = time.time() + 5
        while time.time() < deadline:
            if not alive(envoy_pids[0]):
                break
            time.sleep(0.1)
        else:
            pytest.fail("the adopting switchyard did not stop Envoy on exit")
    finally:
        stack.stop()
        for pid in locals().get("envoy_pids", []):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        if not request.session.testsfailed:
            stack.cleanup()
