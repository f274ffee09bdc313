"""Shadowed rules, standalone mode with a real Envoy: a rule that can never
match is reported as a `notes:` entry next to its route's status, in the log
and by the gauge `switchyard_shadowed_rules`; its conditions stay as the
spec defines them. When an edit makes the rule reachable, all of it goes.
"""

import time

import yaml

from conftest import name_of, route

HOST = "shadow.test"

# Routes without creationTimestamp tie on age: namespace/name decides, so
# shadow-a (older by name) wins every request both accept.
FIRST = route("shadow-a", HOST, """\
  - matches: [{path: {type: PathPrefix, value: /x}, headers: [{name: x-team, value: a}]}]
    backendRefs: [{name: svc-0, port: 80}]
""")

NOTE = ("rule 0 (match 0) can never match: HTTPRoute default/shadow-a rule 0 match 0 "
        f"(hostname {HOST}) always wins")


def second(headers):
    """shadow-b: rule 0 repeats shadow-a's match (`/x/` is `/x` after normalisation,
    header names are case-insensitive) with `headers` added; rule 1 is its own."""
    return route("shadow-b", HOST, f"""\
  - matches: [{{path: {{type: PathPrefix, value: /x/}}, headers: [{headers}]}}]
    backendRefs: [{{name: svc-1, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /y}}}}]
    backendRefs: [{{name: svc-1, port: 80}}]
""")


def gauge(gw):
    return gw.stack.metrics().get("switchyard_shadowed_rules")


def wait_until(pred, what, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what} within {timeout}s")


def test_a_shadowed_rule_is_noted_counted_and_logged_until_an_edit_frees_it(gw):
    gw.write("shadow-a.yaml", FIRST)
    gw.write("shadow-b.yaml", second("{name: X-Team, value: a}"))
    # Envoy serves both routes; rule 0 of shadow-b never gets a request.
    gw.wait_for(HOST, "/y", lambda s, b, h: name_of(b) == "backend-1")
    for _ in range(5):
        s, b, _ = gw.get(HOST, "/x/page", {"x-team": "a"})
        assert s == 200 and name_of(b) == "backend-0", (s, b)

    text = gw.wait_status("HTTPRoute", "shadow-b", "can never match")
    doc = yaml.safe_load(text)
    assert doc["notes"] == [NOTE], text
    # Not a condition: the route's conditions are the spec's.
    conds = {c["type"]: c for p in doc["status"]["parents"] for c in p["conditions"]}
    assert conds["Accepted"]["status"] == "True" and conds["ResolvedRefs"]["status"] == "True", text
    assert "notes" not in gw.status_obj("HTTPRoute", "shadow-a"), "the winner has nothing to be told"
    assert wait_until(lambda: gauge(gw) == 1, "switchyard_shadowed_rules == 1")
    log = (gw.stack.dir / "switchyard.log").read_text(errors="replace")
    warned = [line for line in log.splitlines() if "shadowed rule" in line]
    assert len(warned) == 1 and "shadow-b" in warned[0] and NOTE in warned[0], warned

    # A reload that changes nothing else keeps one warning (not one per translation).
    gw.write("unrelated.yaml", route("shadow-other", "other.shadow.test", """\
  - backendRefs: [{name: svc-0, port: 80}]
"""))
    gw.wait_for("other.shadow.test")
    log = (gw.stack.dir / "switchyard.log").read_text(errors="replace")
    assert sum("shadowed rule" in line for line in log.splitlines()) == 1

    # One more header: shadow-b's rule is more specific, sorts first and wins.
    gw.write("shadow-b.yaml", second("{name: x-team, value: a}, {name: x-canary, value: \"1\"}"))
    gw.wait_for(HOST, "/x/page", lambda s, b, h: name_of(b) == "backend-1",
                headers={"x-team": "a", "x-canary": "1"})
    wait_until(lambda: "notes" not in gw.status_obj("HTTPRoute", "shadow-b"),
               "the note to disappear from shadow-b's status file")
    assert wait_until(lambda: gauge(gw) == 0, "switchyard_shadowed_rules == 0")
    s, b, _ = gw.get(HOST, "/x/page", {"x-team": "a"})
    assert s == 200 and name_of(b) == "backend-0"
    log = (gw.stack.dir / "switchyard.log").read_text(errors="replace")
    assert any("no longer shadowed" in line and "shadow-b" in line for line in log.splitlines())
