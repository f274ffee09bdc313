"""Kubernetes-mode faults on the local cluster (e2e/cluster, real etcd and
kube-apiserver): the API server stopped for a while, and a leader paused past
its Lease. Both check what the API server ends up holding, not only what
the controller says about itself.

- API server stopped (killed, then started again with the same command line
  after SWITCHYARD_APISERVER_DOWN_SECS, default 60): Envoy keeps serving
  the last configuration (every request of a load loop answers 200), the
  controller recovers without a restart (same process, re-takes its Lease,
  serves a new route), and rewrites nothing it need not (no status patch,
  no resourceVersion change, no listener or cluster churn in Envoy).
- API server frozen (SIGSTOP for SWITCHYARD_APISERVER_FREEZE_SECS, default
  15): requests hang instead of failing. The leader's renewals are bounded by
  their own timeout, so it steps down at its renew deadline (not after the
  client's ~295 s), Envoy keeps serving, and after SIGCONT the leader takes
  its Lease back and rewrites nothing.
- Leader paused (SIGSTOP) past its Lease: the standby takes over and writes
  its own status; after SIGCONT the old leader writes nothing (resourceVersion
  of the Gateway and the route unchanged, its write counter unchanged) until
  it legitimately re-acquires the Lease (the standby shuts down), and then
  it writes again.

Skipped when the cluster binaries are not built or not running as root.
The whole file takes about 3 minutes with the default outage.
"""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

import kubestack as ks

NS = "kube-faults"
POOL_A = "127.0.3.0/24"
POOL_B = "127.0.4.0/24"
LEASE_SECS = 4
DOWN_SECS = float(os.environ.get("SWITCHYARD_APISERVER_DOWN_SECS", "60"))
FREEZE_SECS = float(os.environ.get("SWITCHYARD_APISERVER_FREEZE_SECS", "15"))
HOST = "faults.example.com"

pytestmark = pytest.mark.skipif(ks.available() is not None, reason=str(ks.available()))

OBJECTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: switchyard-echo:dev
        args: ["--listen", "0.0.0.0:8080"]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        ports: [{{containerPort: 8080, name: http}}]
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
metadata: {{name: faults, namespace: {NS}}}
spec:
  gatewayClassName: switchyard
  listeners:
  - {{name: http, port: 80, protocol: HTTP}}
"""


def route(name, host):
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {NS}}}
spec:
  parentRefs: [{{name: faults}}]
  hostnames: [{host}]
  rules:
  - backendRefs: [{{name: echo, port: 80}}]
"""


def cond(obj, ctype):
    """Our condition `ctype` of a Gateway or of a route's entry for our controller."""
    st = (obj or {}).get("status") or {}
    if "parents" in st:
        st = next((p for p in st["parents"] if p.get("controllerName") == ks.CONTROLLER_NAME), {})
    return next((c for c in st.get("conditions") or [] if c["type"] == ctype), None)


def is_true(obj, ctype):
    c = cond(obj, ctype)
    return c is not None and c["status"] == "True" and c.get("observedGeneration") == obj["metadata"]["generation"]


def gateway():
    return ks.get("gateway", "faults", NS)


def address(gw):
    addrs = ((gw or {}).get("status") or {}).get("addresses") or []
    return addrs[0]["value"] if addrs else None


def versions():
    """resourceVersions of every object whose status we write here."""
    return {k: (ks.get(*k) or {}).get("metadata", {}).get("resourceVersion") for k in
            (("gateway", "faults", NS), ("httproute", "app", NS), ("gatewayclass", "switchyard", None))}


def settle(controllers, secs=6.0, timeout=45):
    """Waits until no status write happened for `secs` (API server's resourceVersions and the
    controllers' counters both still); `secs` exceeds the Programmed grace (5 s), after which
    a leader without ACKs writes Pending."""
    deadline = time.time() + timeout
    last = None
    since = time.time()
    while time.time() < deadline:
        now = (versions(), tuple(c.status_writes() for c in controllers))
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= secs:
            return now
        time.sleep(0.3)
    raise AssertionError(f"status did not settle within {timeout}s: {last}")


def get(addr, host):
    import http.client
    c = http.client.HTTPConnection(addr, 80, timeout=5)
    try:
        c.request("GET", "/", headers={"Host": host})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


@pytest.fixture(scope="module")
def cluster():
    print("\n" + ks.cluster_up())
    ks.install_gateway_class()
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s", timeout=100)
    ks.kubectl("apply", "-f", "-", stdin=OBJECTS)
    ks.kubectl("apply", "-f", "-", stdin=route("app", HOST))
    ks.kubectl("rollout", "status", "deployment/echo", "-n", NS, "--timeout=90s", timeout=100)
    yield
    # Waited for: a Gateway of ours left behind would get an address (and
    # status writes) from the next tests' controllers.
    ks.kubectl("delete", "namespace", NS, "--ignore-not-found", "--wait=true", "--timeout=90s", check=False,
               timeout=100)


@pytest.fixture
def stack(cluster):
    ks.kubectl("delete", "lease", "switchyard-controller", "-n", ks.LEASE_NAMESPACE, "--ignore-not-found")
    s = ks.KubeStack(POOL_A)
    try:
        yield s
    except BaseException:
        print(s.diagnostics())
        raise
    finally:
        for c in s.controllers:
            if c.proc and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGCONT)
        s.stop()


# --- the API server, stopped and started again with its own command line ---

def _apiserver_pid():
    return int((ks.RUN / "pids" / "kube-apiserver.pid").read_text().strip())


def stop_apiserver():
    """Stops kube-apiserver (SIGTERM, then SIGKILL); returns how to start it again."""
    pid = _apiserver_pid()
    proc = Path(f"/proc/{pid}")
    assert os.readlink(proc / "exe") == str(ks.BIN / "kube-apiserver"), "pid file does not name our kube-apiserver"
    cmd = [a.decode() for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
    env = dict(e.decode().split("=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
    cwd = os.readlink(proc / "cwd")
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 15
    while time.time() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    return cmd, env, cwd


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def start_apiserver(cmd, env, cwd):
    """Starts kube-apiserver as e2e/cluster/up.sh does (own session, log, pid file) and waits for /readyz."""
    log = open(ks.RUN / "logs" / "kube-apiserver.log", "ab")
    p = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                         start_new_session=True)
    (ks.RUN / "pids" / "kube-apiserver.pid").write_text(f"{p.pid}\n")
    ks.wait(lambda: ks.kubectl("get", "--raw", "/readyz", check=False, timeout=25).strip() == "ok", 120,
            "kube-apiserver /readyz after the restart", interval=0.5)
    return p


def test_apiserver_stopped_envoy_serves_controller_recovers_rewrites_nothing(stack):
    a = stack.controller("fault-a", lease_secs=LEASE_SECS)
    envoy = stack.envoy(a)
    ks.wait(a.is_leader, 15, "fault-a to lead")
    gw = ks.wait(lambda: (lambda g: g if is_true(g, "Programmed") and address(g) else None)(gateway()), 40,
                 "Gateway Programmed (Envoy ACKed) with an address")
    addr = address(gw)
    ks.wait(lambda: get(addr, HOST) == 200, 15, f"{HOST} served at {addr}")
    ks.wait(lambda: is_true(ks.get("httproute", "app", NS), "Accepted"), 15, "route Accepted")
    before_rv, before_writes = settle([a])
    churn = ("listener_manager.listener_modified", "listener_manager.listener_removed",
             "listener_manager.listener_added", "cluster_manager.cluster_modified",
             "cluster_manager.cluster_removed")
    stats_before = envoy.stats(*churn)
    errors_before = ks.metric(a.metrics(), "switchyard_watch_errors_total")
    pid_before = a.proc.pid

    import harness
    finish = harness.load(addr, 80, HOST, 2)
    restart = None
    try:
        restart = stop_apiserver()
        t0 = time.time()  # the API server process is gone
        # Down: no API server at all; the controller steps down (it cannot renew).
        ks.wait(lambda: not a.is_leader(), 2 * LEASE_SECS, "fault-a to step down while the API server is down")
        stepped_down = time.time() - t0
        time.sleep(max(0.0, DOWN_SECS - (time.time() - t0)))
        down = time.time() - t0
        during = sum(finish.results.values())
        a.running()
        t1 = time.time()
        start_apiserver(*restart)
        restart = None
        back = time.time() - t1
        ks.wait(a.is_leader, 30, "fault-a to re-take its Lease after the API server came back")
        ks.wait(a.ready, 10, "fault-a ready")
        # Past the Programmed grace and a relist: any unneeded write shows.
        time.sleep(7)
    finally:
        if restart is not None:
            start_apiserver(*restart)
        counts = finish()
    assert a.proc.pid == pid_before and a.proc.poll() is None, "the controller was restarted"
    assert during > 100, f"only {during} requests while the API server was down"
    assert set(counts) == {200}, f"non-200 responses while the API server was down: {dict(counts)}"
    assert ks.metric(a.metrics(), "switchyard_watch_errors_total") > errors_before, \
        "the controller never noticed the API server was gone"
    after_rv, after_writes = settle([a])
    assert after_writes == before_writes, f"status rewritten after the outage ({before_writes} → {after_writes})"
    assert after_rv == before_rv, f"objects changed across the outage: {before_rv} → {after_rv}"
    assert envoy.stats(*churn) == stats_before, "Envoy's listeners or clusters changed (config flap)"

    # Recovered: a change made now is served and reported.
    ks.kubectl("apply", "-f", "-", stdin=route("after", "after.example.com"))
    ks.wait(lambda: get(addr, "after.example.com") == 200, 10, "a route created after the outage to be served")
    ks.wait(lambda: is_true(ks.get("httproute", "after", NS), "Accepted"), 10, "the new route Accepted")
    ks.kubectl("delete", "httproute", "after", "-n", NS)
    print(f"\nAPI server down {down:.0f} s (restart took {back:.1f} s); leader not leading "
          f"{stepped_down:.1f} s after the API server was gone (it stops during the API server's own shutdown); "
          f"{sum(counts.values())} requests, all 200; no status write, no Envoy churn")


def test_apiserver_frozen_leader_steps_down_on_time(stack):
    a = stack.controller("freeze-a", lease_secs=LEASE_SECS)
    stack.envoy(a)
    ks.wait(a.is_leader, 15, "freeze-a to lead")
    gw = ks.wait(lambda: (lambda g: g if is_true(g, "Programmed") and address(g) else None)(gateway()), 40,
                 "Gateway Programmed")
    addr = address(gw)
    ks.wait(lambda: get(addr, HOST) == 200, 15, f"{HOST} served")
    before_rv, before_writes = settle([a])
    pid = _apiserver_pid()
    assert os.readlink(f"/proc/{pid}/exe") == str(ks.BIN / "kube-apiserver")
    import harness
    finish = harness.load(addr, 80, HOST, 2)
    try:
        os.kill(pid, signal.SIGSTOP)
        t0 = time.time()
        try:
            # Renewals hang: only their own timeout ends them. Renew deadline 2/3 of the lease.
            ks.wait(lambda: not a.is_leader(), 2 * LEASE_SECS, "freeze-a to step down while renewals hang")
            stepped_down = time.time() - t0
            time.sleep(max(0.0, FREEZE_SECS - (time.time() - t0)))
        finally:
            os.kill(pid, signal.SIGCONT)
        ks.wait(a.is_leader, 30, "freeze-a to re-take its Lease after the API server thawed")
        time.sleep(2)
    finally:
        counts = finish()
    assert set(counts) == {200}, f"non-200 responses while the API server was frozen: {dict(counts)}"
    after_rv, after_writes = settle([a])
    assert after_writes == before_writes and after_rv == before_rv, "status rewritten after the freeze"
    assert stepped_down < LEASE_SECS, f"stepped down only {stepped_down:.1f} s into the freeze (lease {LEASE_SECS} s)"
    print(f"\nAPI server frozen {FREEZE_SECS:.0f} s: leader stepped down after {stepped_down:.1f} s "
          f"(renew deadline {LEASE_SECS * 2 / 3:.1f} s); {sum(counts.values())} requests, all 200; nothing rewritten")


def test_paused_leader_writes_nothing_until_it_reacquires(stack):
    a = stack.controller("pause-a", lease_secs=LEASE_SECS)
    stack.envoy(a)
    ks.wait(a.is_leader, 15, "pause-a to lead")
    ks.wait(lambda: (lambda g: is_true(g, "Programmed") and address(g))(gateway()), 40, "Gateway Programmed")
    settle([a])
    # The standby has another address pool and no Envoy: its status differs
    # from the leader's (address, Programmed), so a stale write would show.
    b = ks.Controller(stack.workdir, "pause-b", POOL_B, lease_secs=LEASE_SECS)
    stack.controllers.append(b)
    b.start()
    ks.wait(b.ready, 30, "pause-b ready")
    assert not b.is_leader() and b.status_writes() == 0

    writes_a = a.status_writes()
    a.proc.send_signal(signal.SIGSTOP)
    paused = time.time()
    try:
        ks.wait(b.is_leader, 4 * LEASE_SECS, "pause-b to take the Lease from the paused leader")
        took = time.time() - paused
        ks.wait(lambda: (address(gateway()) or "").startswith("127.0.4."), 10, "pause-b's address in the status")
        lease = json.loads(ks.kubectl("get", "lease", "switchyard-controller", "-n", ks.LEASE_NAMESPACE, "-o", "json"))
        assert lease["spec"]["holderIdentity"] == "pause-b", lease["spec"]
        rv, _ = settle([b])  # (the paused replica's admin endpoint cannot answer)
        held_by_b = gateway()
    finally:
        a.proc.send_signal(signal.SIGCONT)
    resumed = time.time()
    # The old leader runs again with a view of the world it would change
    # (its own address and Programmed=True); it must write nothing.
    time.sleep(3 * LEASE_SECS)
    assert a.running()
    assert not a.is_leader(), "the resumed replica claims the Lease"
    assert a.status_writes() == writes_a, "the resumed replica wrote status after losing the Lease"
    assert versions() == rv, "an object changed after the old leader resumed"
    assert address(gateway()) == address(held_by_b)
    log = a.log.read_text(errors="replace")
    assert "leadership changed" in log and "leader=false" in log, a.log_tail()

    # Legitimately back: the standby leaves (releasing the Lease) and the
    # old leader takes over and writes its own status again.
    b.kill(signal.SIGTERM)
    ks.wait(a.is_leader, 3 * LEASE_SECS, "pause-a to re-acquire the Lease")
    ks.wait(lambda: (address(gateway()) or "").startswith("127.0.3."), 15, "pause-a's address written again")
    assert a.status_writes() > writes_a
    print(f"\npaused leader: standby led {took:.1f} s after SIGSTOP (lease {LEASE_SECS} s); "
          f"resumed leader wrote nothing for {time.time() - resumed:.0f} s until it re-acquired")
