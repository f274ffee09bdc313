#!/usr/bin/env python3
"""Runs the official Gateway API conformance suite (v1.6.1, e2e/conformance)
against Switchyard on the local cluster (e2e/cluster) with a real Envoy.

    run.py full     every profile; writes e2e/conformance/report.yaml (the
                    suite's report) and passing.txt (the tests that passed:
                    the baseline). `make conformance`.
    run.py check    only the baseline's tests; fails when one of them fails
                    (a regression). `make conformance-check`, part of `make test`.

The controller and Envoy run as in e2e/kubestack.py (Envoy started like the
DaemonSet). With --external, the suite runs against the cluster of
SWITCHYARD_E2E_KUBECONFIG where Switchyard is already installed (`make
e2e-kind`: kind + helm install); nothing is started here. The suite infers the features to test from the GatewayClass's
status.supportedFeatures, i.e. exactly what Switchyard claims.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import kubestack as ks  # noqa: E402

PROFILES = "GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS,GATEWAY-TCP,GATEWAY-UDP"
POOL = "127.0.2.0/24"
USABLE_ADDRESS = "127.0.2.250"
UNUSABLE_ADDRESS = "192.0.2.10"
REPORT = HERE / "report.yaml"
BASELINE = HERE / "passing.txt"
# Failing tests wait for the suite's timeouts; these keep a full run under
# 30 min on 2 cores without making passing tests flaky (Switchyard programs
# a change in tens of milliseconds).
TIMEOUTS = ";".join(f"{k}:{v}" for k, v in {
    "MaxTimeToConsistency": 15, "HTTPRouteMustHaveCondition": 20, "TLSRouteMustHaveCondition": 20,
    "TCPRouteMustHaveCondition": 20, "UDPRouteMustHaveCondition": 20, "RouteMustHaveParents": 20,
    "HTTPRouteMustNotHaveParents": 20, "GatewayMustHaveCondition": 60, "GatewayStatusMustHaveListeners": 20,
    "GatewayListenersMustHaveConditions": 20, "ListenerSetMustHaveCondition": 30,
    "ListenerSetListenersMustHaveConditions": 20, "LatestObservedGenerationSet": 20, "DefaultTestTimeout": 30,
    # Waits for every Gateway of a namespace to be Programmed: a Gateway with
    # a listener protocol Switchyard does not implement (TCP, TLS, UDP) never
    # is, and each such test would wait the default 300 s.
    "NamespacesMustBeReady": 60, "GatewayMustHaveAddress": 60, "GWCMustBeAccepted": 60,
}.items())
TEST = "TestGatewayAPIConformance"
BASE_GATEWAYS = {"same-namespace", "same-namespace-with-https-listener", "all-namespaces", "backend-namespaces"}
LEFTOVER_KINDS = "gateways,httproutes,grpcroutes,tlsroutes,tcproutes,udproutes,referencegrants,listenersets," \
                 "backendtlspolicies"


def clean_leftovers():
    """Removes what an interrupted run left in the suite's namespaces (the
    base manifests stay, so their Pods need not start again). The suite's
    setup waits until every Gateway there is Programmed, which a leftover
    TCP Gateway never is."""
    out = json.loads(ks.kubectl("get", LEFTOVER_KINDS, "-A", "-o", "json"))
    stale = [o for o in out["items"] if o["metadata"]["namespace"].startswith("gateway-conformance-")
             and not (o["kind"] == "Gateway" and o["metadata"]["name"] in BASE_GATEWAYS)]
    for o in stale:
        ks.kubectl("delete", o["kind"].lower(), o["metadata"]["name"], "-n", o["metadata"]["namespace"],
                   "--ignore-not-found", "--wait=false")
    if stale:
        print(f"conformance: removed {len(stale)} objects left by an earlier run", flush=True)


def version():
    m = re.search(r'^version\s*=\s*"([^"]+)"', (ks.ROOT / "Cargo.toml").read_text(), re.M)
    return f"v{m[1]}" if m else "dev"


def go_test(args, log_path, run_regex=None):
    """Runs the suite; returns {test short name: pass|fail|skip} and the exit code."""
    go = os.environ.get("GO") or shutil.which("go") or "/usr/local/go/bin/go"
    cmd = [go, "test", "-json", "-count=1", "-timeout=120m", "-p=1",
           "-run", run_regex or f"^{TEST}$", ".", "-args", *args]
    env = dict(os.environ, KUBECONFIG=str(ks.KUBECONFIG))
    results = {}
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for line in proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                log.write(line)
                continue
            if ev.get("Action") == "output":
                log.write(ev.get("Output", ""))
            test = ev.get("Test", "")
            parts = test.split("/")
            if len(parts) == 2 and parts[0] == TEST and ev.get("Action") in ("pass", "fail", "skip"):
                results[parts[1]] = ev["Action"]
                mark = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}[ev["Action"]]
                if ev["Action"] != "skip":
                    print(f"  {mark} {parts[1]} ({ev.get('Elapsed', 0):.1f} s)", flush=True)
        proc.wait()
    return results, proc.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["full", "check"])
    ap.add_argument("--keep", action="store_true", help="leave the controller and Envoy running afterwards")
    ap.add_argument("--tests", help="check: these tests (comma-separated) instead of the baseline")
    ap.add_argument("--external", action="store_true",
                    help="Switchyard is installed in the cluster of SWITCHYARD_E2E_KUBECONFIG: start nothing")
    ap.add_argument("--usable-address", default=USABLE_ADDRESS,
                    help="GatewayStaticAddresses: an address the installed Envoys can serve")
    opts = ap.parse_args()
    if opts.external and not ks.EXTERNAL_KUBECONFIG:
        sys.exit("conformance: --external needs SWITCHYARD_E2E_KUBECONFIG (the cluster Switchyard is installed in)")
    reason = ks.external_available() if opts.external else ks.available()
    if reason:
        sys.exit(f"conformance: cannot run: {reason}")
    if opts.mode == "check" and not opts.tests and not BASELINE.exists():
        sys.exit(f"conformance: no baseline {BASELINE}; run `make conformance` first")

    t0 = time.time()
    print(ks.cluster_up(), flush=True)
    if not opts.external:
        ks.install_gateway_class()
    clean_leftovers()
    stack = ks.KubeStack(POOL)
    print(f"conformance: {'suite' if opts.external else 'controller, Envoy and suite'} logs in {stack.workdir}",
          flush=True)
    failed = []
    try:
        if not opts.external:
            # VirtualIP with the pool, explicitly (Envoy on this host binds
            # each Gateway's pool address).
            controller = stack.controller("conformance", address_mode="VirtualIP")
            stack.envoy(controller)
        ks.wait(lambda: any(c["type"] == "Accepted" and c["status"] == "True" for c in
                            (ks.get("gatewayclass", "switchyard").get("status") or {}).get("conditions", [])),
                30, "GatewayClass switchyard Accepted")
        # The suite removes its base resources afterwards, so that the cluster
        # is left as found (other tests' controllers would otherwise serve them).
        # GatewayStaticAddresses: usable = inside the pool Envoy binds,
        # unusable = outside it (docs/gateway-infrastructure.md).
        args = ["-gateway-class=switchyard", "-mode=default", f"-timeout-config-overrides={TIMEOUTS}",
                f"-usable-address={opts.usable_address}", f"-unusable-address={UNUSABLE_ADDRESS}"]
        log = stack.workdir / "conformance.log"
        if opts.mode == "full":
            args += [f"-conformance-profiles={PROFILES}", f"-report-output={REPORT}", "-organization=switchyard",
                     "-project=switchyard", "-url=https://github.com/switchyard-dev/switchyard",
                     f"-version={version()}", "-contact=@switchyard-dev/maintainers"]
            results, rc = go_test(args, log)
            if not results:
                sys.exit(f"conformance: the suite ran no test (exit {rc}); see {log}")
            passing = sorted(t for t, r in results.items() if r == "pass")
            BASELINE.write_text("# Conformance tests Switchyard passes (written by `make conformance`;\n"
                                "# `make conformance-check` fails when one of them fails).\n"
                                + "".join(f"{t}\n" for t in passing))
            counts = {a: sum(1 for r in results.values() if r == a) for a in ("pass", "fail", "skip")}
            print(f"conformance: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped "
                  f"or not supported in {time.time() - t0:.0f} s; report {REPORT}, baseline {BASELINE}; log {log}")
        else:
            baseline = opts.tests.split(",") if opts.tests else \
                [l.strip() for l in BASELINE.read_text().splitlines() if l.strip() and not l.startswith("#")]
            regex = f"^{TEST}$/^({'|'.join(re.escape(t) for t in baseline)})$"
            results, rc = go_test(args, log, run_regex=regex)
            failed = [t for t in baseline if results.get(t) != "pass"]
            newly = sorted(t for t, r in results.items() if r == "pass" and t not in baseline)
            print(f"conformance check: {len(baseline) - len(failed)}/{len(baseline)} baseline tests pass "
                  f"in {time.time() - t0:.0f} s; log {log}")
            if newly:
                print(f"  also passing (not in the baseline): {', '.join(newly)}")
            if failed:
                print(f"conformance check: REGRESSION: {', '.join(failed)} (see {log})")
    except BaseException:
        print(stack.diagnostics())
        raise
    finally:
        if not opts.keep:
            stack.stop()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
