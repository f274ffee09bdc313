"""Fault suite, standalone mode: what an operator's mistakes, an editor's
non-atomic save or a hostile directory do to a running instance with a real
Envoy (issue 14, "Why"). Each test runs its own stack on loopback and keeps
a steady request loop against a route of an unrelated healthy file: where the
old configuration should keep serving, no request may fail; where it should
not, the documented error must appear (status/errors.yaml, /debug/snapshot).
"""

import os
import signal
import time

import pytest

import harness
from conftest import name_of, route, start_stack

# Limits (README, standalone section): settle delay for vanished objects.
SETTLE = 0.5


@pytest.fixture
def fgw(request):
    """A fresh stack per test (some tests restart or stop switchyard)."""
    yield from start_stack(request, backends=2, debounce_ms=5)


def healthy(gw):
    """An unrelated healthy file and route: healthy.test → backend-0."""
    gw.write("healthy.yaml", route("healthy", "healthy.test", "  - backendRefs: [{name: svc-0, port: 80}]\n"))
    gw.wait_for("healthy.test", pred=lambda s, b, h: name_of(b) == "backend-0")


def errors_text(gw):
    p = gw.stack.status / "errors.yaml"
    try:
        return p.read_text(errors="replace")
    except OSError:
        return ""


def wait_errors(gw, pred, timeout=5.0):
    """Waits until errors.yaml satisfies `pred`; returns (text, seconds waited)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        text = errors_text(gw)
        if pred(text):
            return text, time.time() - t0
        time.sleep(0.02)
    raise AssertionError(f"errors.yaml never matched within {timeout}s:\n{errors_text(gw)}")


def under_load(gw, hosts, threads=2):
    """Starts request loops against each host; returns finish() → {host: Counter}."""
    finishers = {h: harness.load(gw.addr, gw.stack.gw_port, h, threads) for h in hosts}
    return lambda: {h: f() for h, f in finishers.items()}


def assert_all_ok(results):
    for host, counts in results.items():
        assert sum(counts.values()) > 20, (host, counts)
        assert set(counts) == {200}, f"failed requests on {host}: {counts}"


def test_restart_with_a_broken_file_serves_its_saved_last_good_version(fgw):
    healthy(fgw)
    fgw.write("keep.yaml", route("keep", "keep.test", "  - backendRefs: [{name: svc-1, port: 80}]\n"))
    fgw.wait_for("keep.test", pred=lambda s, b, h: name_of(b) == "backend-1")
    fgw.write("keep.yaml", "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: [broken\n")
    wait_errors(fgw, lambda t: "keep.yaml" in t)
    assert name_of(fgw.get("keep.test")[1]) == "backend-1"
    saved = list((fgw.stack.status / "last-good").glob("*.yaml"))
    assert len(saved) == 3, saved  # base, healthy, keep

    # Restart switchyard (Envoy goes with it) while keep.yaml is still broken.
    sy = fgw.stack.switchyard
    sy.send_signal(signal.SIGTERM)
    sy.wait(timeout=10)
    fgw.stack.start_switchyard()
    # The first answer Envoy gives for keep.test is the saved version's, never a 404.
    first = fgw.wait_for("keep.test", pred=lambda s, b, h: s is not None, timeout=30)
    assert first[0] == 200 and name_of(first[1]) == "backend-1", first
    assert name_of(fgw.get("healthy.test")[1]) == "backend-0"
    text, _ = wait_errors(fgw, lambda t: "keep.yaml" in t)
    assert "using_last_good: true" in text and "saved in" in text, text
    snap = fgw.stack.admin_json("/debug/snapshot")
    assert any(e["file"].endswith("keep.yaml") and e["using_last_good"] for e in snap["errors"]), snap["errors"]


def test_nesting_bomb_and_symlink_loops_are_refused_quickly_while_traffic_flows(fgw):
    healthy(fgw)
    finish = under_load(fgw, ["healthy.test"])
    try:
        # 200 KB of nested '[' (blocked the reload loop for 135 s before).
        t0 = time.time()
        fgw.write("bomb.yaml", route("bomb", "bomb.test", "  - backendRefs: [{name: svc-1, port: 80}]\n")
                  + "---\na: " + "[" * 200_000 + "\n")
        text, waited = wait_errors(fgw, lambda t: "bomb.yaml" in t and "nested deeper than" in t)
        assert waited < 3, waited
        # Two directory symlink loops (never finished and grew to 445 MB before).
        loops = fgw.stack.config / "loops"
        loops.mkdir()
        os.symlink("..", loops / "up")
        os.symlink("../loops", loops / "again")
        text, waited = wait_errors(fgw, lambda t: t.count("symlink loop") >= 2)
        assert waited < 3, waited
        # The loop is free: an edit elsewhere applies at once.
        t0 = time.time()
        fgw.write("after.yaml", route("after", "after.test", "  - backendRefs: [{name: svc-1, port: 80}]\n"))
        fgw.wait_for("after.test", pred=lambda s, b, h: name_of(b) == "backend-1", timeout=3)
        assert time.time() - t0 < 3
        rss_mib = harness.rss_kib(fgw.stack.switchyard.pid) / 1024
        assert rss_mib < 200, f"switchyard RSS {rss_mib:.0f} MiB"
        snap = fgw.stack.admin_json("/debug/snapshot")
        assert any("symlink loop" in e["message"] for e in snap["errors"]), snap["errors"]
    finally:
        results = finish()
    assert_all_ok(results)
    assert fgw.get("bomb.test")[0] == 404, "a refused file serves nothing"

    # SIGTERM while a reload is busy with a large file: exits within ~1 s.
    big = "".join(f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{k: '{'x' * 200}'}}\n---\n"
                  for i in range(20_000))
    fgw.write("big.yaml", big)
    time.sleep(0.05)
    sy = fgw.stack.switchyard
    t0 = time.time()
    sy.send_signal(signal.SIGTERM)
    sy.wait(timeout=10)
    took = time.time() - t0
    assert took < 1.5, f"exit took {took:.2f}s after SIGTERM"
    print(f"SIGTERM → exit (Envoy stopped too): {took * 1000:.0f} ms")


def test_truncate_then_write_fails_no_request(fgw):
    healthy(fgw)
    versions = [route("trunc", "trunc.test", f"  - backendRefs: [{{name: svc-{i % 2}, port: 80}}]\n") for i in range(6)]
    fgw.write("trunc.yaml", versions[0])
    fgw.wait_for("trunc.test", pred=lambda s, b, h: name_of(b) == "backend-0")
    finish = under_load(fgw, ["healthy.test", "trunc.test"])
    try:
        path = fgw.stack.config / "trunc.yaml"
        for i, text in enumerate(versions[1:], 1):
            # Not atomic: truncate, let switchyard see the empty file, then write.
            with open(path, "w") as f:
                f.flush()
                time.sleep(0.15)
                f.write(text)
            fgw.wait_for("trunc.test", pred=lambda s, b, h, i=i: name_of(b) == f"backend-{i % 2}", timeout=3)
        time.sleep(SETTLE + 0.2)
    finally:
        results = finish()
    assert_all_ok(results)


def test_an_object_defined_twice_is_reported_and_survives_deleting_either_file(fgw):
    healthy(fgw)
    dup = lambda svc: route("dup", "dup.test", f"  - backendRefs: [{{name: {svc}, port: 80}}]\n")  # noqa: E731
    fgw.write("dup-a.yaml", dup("svc-0"))
    fgw.write("dup-b.yaml", dup("svc-1"))
    text, _ = wait_errors(fgw, lambda t: "dup-a.yaml" in t and "dup-b.yaml" in t)
    assert "HTTPRoute default/dup is defined in 2 files" in text, text
    fgw.wait_for("dup.test", pred=lambda s, b, h: name_of(b) == "backend-0")  # the first by path
    finish = under_load(fgw, ["healthy.test", "dup.test"])
    try:
        fgw.remove("dup-a.yaml")
        fgw.wait_for("dup.test", pred=lambda s, b, h: name_of(b) == "backend-1", timeout=3)
        wait_errors(fgw, lambda t: "dup" not in t)
        fgw.write("dup-a.yaml", dup("svc-0"))
        fgw.wait_for("dup.test", pred=lambda s, b, h: name_of(b) == "backend-0", timeout=3)
        fgw.remove("dup-b.yaml")
        time.sleep(SETTLE + 0.3)
        assert name_of(fgw.get("dup.test")[1]) == "backend-0"
    finally:
        results = finish()
    assert_all_ok(results)


def test_hostile_names_are_refused_and_nothing_is_written_outside_the_status_dir(fgw):
    healthy(fgw)
    hostile = {
        "dotdot": '"../../escape"', "slash": '"a/b"', "parent": '".."', "nul": '"a\\0b"',
        "long": "a" * 300, "unicode": '"日本"', "upper": "Escape",
    }
    finish = under_load(fgw, ["healthy.test"])
    try:
        for f, name in hostile.items():
            fgw.write(f"hostile-{f}.yaml", route("x", "hostile.test", "  - backendRefs: [{name: svc-1, port: 80}]\n")
                      .replace("name: x,", f"name: {name},"))
        fgw.write("hostile-ns.yaml", route("x", "hostile.test", "  - backendRefs: [{name: svc-1, port: 80}]\n")
                  .replace("namespace: default", 'namespace: "../.."'))
        text, _ = wait_errors(fgw, lambda t: t.count("hostile-") >= len(hostile) + 1)
    finally:
        results = finish()
    assert_all_ok(results)
    assert text.count("field `metadata.name`") == len(hostile), text
    assert "field `metadata.namespace`" in text, text
    assert "\0" not in text
    assert fgw.get("hostile.test")[0] == 404
    outside = [p for p in fgw.stack.dir.rglob("*")
               if p.is_file() and ("escape" in p.name.lower() or p.name in ("b.yaml", "日本.yaml"))]
    assert not outside, outside
    status_files = [p.relative_to(fgw.stack.status) for p in fgw.stack.status.rglob("*.yaml")]
    assert all(len(p.parts) == 1 or p.parts[0] == "last-good" or (len(p.parts) == 3 and ".." not in p.parts)
               for p in status_files), status_files
