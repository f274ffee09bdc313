"""Fleet fan-out (issue #15 item 3): one snapshot served to many nodes.

`switchyard standalone` serves a configuration of ROUTES HTTPRoutes to its
supervised Envoy, a second real Envoy (same bootstrap, another node id), and
N simulated nodes (`switchyard-xds-fanout`: one connection and ADS stream
each, delta or state of the world, wildcard on every type, ACK at once).
Then routes are added one at a time; for each, the time from the file write
until every simulated node has ACKed a response carrying the new hostname,
and until both real Envoys run the snapshot that followed (the controller's
node registry, admin gRPC ListNodes) and the new host answers 200 through
Envoy. Controller memory and CPU are read before and after the nodes connect
and over the changes, per node.
"""

import json
import subprocess
import time
from pathlib import Path

import yaml

import harness as h

FANOUT = h.TARGET / "switchyard-xds-fanout"


def second_envoy(st, node_id):
    """Starts another Envoy from the supervised one's bootstrap: its own node
    id, admin and stats ports; it binds the same listeners (SO_REUSEPORT)."""
    boot = yaml.safe_load((st.dir / "envoy" / "bootstrap.yaml").read_text())
    first_id = boot["node"]["id"]
    admin, stats = h.free_port(), h.free_port()
    text = (st.dir / "envoy" / "bootstrap.yaml").read_text()
    text = text.replace(str(st.envoy_admin), str(admin)).replace(str(st.envoy_stats), str(stats))
    boot = yaml.safe_load(text)
    boot["node"]["id"] = node_id
    path = st.dir / "envoy-2.yaml"
    path.write_text(yaml.safe_dump(boot))
    log = open(st.dir / "envoy-2.log", "w")
    p = subprocess.Popen([str(h.envoy_binary()), "-c", str(path), "--use-dynamic-base-id", "--log-level", "warn"],
                         stdout=log, stderr=log)
    st.procs.append(p)
    assert h.wait_port("127.0.0.1", admin, 30), "second Envoy admin did not start"
    return p, first_id, admin


def route(name, host):
    """An HTTPRoute on the synthetic configuration's Gateway (run.synthetic_config)."""
    return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: team-0}}\n"
            f"spec:\n  parentRefs: [{{name: gw-0, namespace: infra}}]\n  hostnames: [{host}]\n"
            "  rules: [{backendRefs: [{name: svc-0, port: 80}]}]\n")


def read_event(proc, want, timeout):
    """The next JSON line from the fanout client with `event` in `want`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fanout client exited: {proc.stderr.read()[-2000:]}")
        ev = json.loads(line)
        if ev.get("event") in want:
            return ev
        if ev.get("event") in ("failed", "error"):
            raise RuntimeError(f"fanout client: {ev}")
    raise RuntimeError(f"no {want} from the fanout client in {timeout} s")


def wait_accepted(st, routes, timeout=300):
    from run import accepted_routes  # noqa: PLC0415 (run.py imports this module)
    deadline = time.time() + timeout
    while accepted_routes(st) < routes and time.time() < deadline:
        time.sleep(0.05)


def one(nodes, protocol, routes, changes):
    from run import synthetic_config  # noqa: PLC0415
    with h.Stack(backends=2, delta=(protocol == "delta")) as st:
        synthetic_config(st, routes, gateways=1)
        st.start_switchyard()
        wait_accepted(st, routes)
        envoy2, envoy1_id, envoy2_admin = second_envoy(st, "bench-envoy-2")
        time.sleep(1)
        pid = st.switchyard.pid
        rss_before = h.rss_kib(pid)
        cpu_before = h.cpu_seconds(pid)
        t0 = time.time()
        client = subprocess.Popen(
            [str(FANOUT), "--server", f"127.0.0.1:{st.xds_port}", "--nodes", str(nodes), "--protocol", protocol,
             "--admin-grpc", f"127.0.0.1:{st.admin_grpc_port}", "--watch-nodes", f"{envoy1_id},bench-envoy-2"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        st.procs.append(client)
        synced = read_event(client, ("synced", "timeout"), 300)
        connect_s = time.time() - t0
        time.sleep(2)
        rss_connected = h.rss_kib(pid)
        cpu_connected = h.cpu_seconds(pid)
        c = h.Client(st.gw_port)
        results = []
        cpu_changes0 = h.cpu_seconds(pid)
        for i in range(changes):
            host = f"fanout-{i}.bench"
            client.stdin.write(f"wait {host} 30000\n")
            client.stdin.flush()
            read_event(client, ("armed",), 30)
            t_write = time.perf_counter()
            st.write(f"fanout-{i}.yaml", route(f"fanout-{i}", host))
            ev = read_event(client, ("converged",), 60)
            # Through Envoy (either of the two: they share the port).
            served = None
            while time.perf_counter() - t_write < 30:
                status, _, _ = c.get(host)
                if status == 200:
                    served = time.perf_counter() - t_write
                    break
                time.sleep(0.001)
            ev["served_ms"] = round(1000 * served, 2) if served is not None else None
            results.append(ev)
            time.sleep(0.2)
        cpu_changes = h.cpu_seconds(pid) - cpu_changes0
        m = st.metrics()
        client.stdin.write("quit\n")
        client.stdin.flush()
        all_ms = [r["all_ms"] for r in results if r.get("all_ms") is not None]
        watched = [r["watched_ms"] for r in results if r.get("watched_ms") is not None]
        return {
            "nodes": nodes,
            "protocol": protocol,
            "routes": routes,
            "real_envoys": 2,
            "initial_sync": {**synced, "wall_s": round(connect_s, 2)},
            "controller_rss_mib": {"before_nodes": round(rss_before / 1024, 1),
                                   "with_nodes": round(rss_connected / 1024, 1)},
            "controller_rss_kib_per_node": round((rss_connected - rss_before) / nodes, 1),
            "controller_cpu_s_initial_sync": round(cpu_connected - cpu_before, 2),
            "controller_cpu_ms_per_node_per_change": round(1000 * cpu_changes / changes / (nodes + 2), 3),
            "changes": changes,
            "all_nodes_acked_ms": h.summary_ms([x / 1000 for x in all_ms]) if all_ms else None,
            "real_envoys_acked_ms": h.summary_ms([x / 1000 for x in watched]) if watched else None,
            "missing_nodes": sum(r.get("missing", 0) for r in results),
            "served_ms": h.summary_ms([r["served_ms"] / 1000 for r in results if r["served_ms"] is not None]),
            "xds_push_bytes_total": sum(v for k, v in m.items() if k.startswith("switchyard_xds_push_bytes_total")),
            "xds_nacks": sum(v for k, v in m.items() if k.startswith("switchyard_xds_nacks_total")),
            "per_change": results,
        }


def fanout(node_counts, protocols, routes=1000, changes=10):
    return [one(n, p, routes, changes) for n in node_counts for p in protocols]
