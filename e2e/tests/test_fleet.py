"""`switchyard fleet` end to end: switchyard standalone serving a real,
supervised Envoy whose xDS connection runs through a TCP relay on loopback
that the test can hold (a network partition between Envoy and the control
plane), and the gRPC admin API (--admin-grpc-listen) read by the CLI.

- `fleet status` lists the Envoy with every type ACKed at the served version;
- `fleet config NODE` shows the route we configured;
- `fleet drift NODE` finds no drift, then, with the relay held and a route
  changed, names the route table Envoy has not received (exit 1), and is
  clean again once the relay is released and Envoy has caught up."""

import json
import socket
import subprocess
import threading
import time

import pytest

import harness
from conftest import route, start_stack

ROOT = harness.ROOT


class Relay:
    """Forwards TCP connections from a loopback port to `target`; `hold()`
    stops moving bytes in both directions (they wait in the kernel buffers)
    until `release()`."""

    def __init__(self, target):
        self.target = target
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = False
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait(60)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def hold(self):
        self.flowing.clear()

    def release(self):
        self.flowing.set()

    def close(self):
        self.closed = True
        self.flowing.set()
        self.sock.close()
        for c in self.conns:
            c.close()


def _configure(stack, g):
    """Backends, a route, and switchyard whose supervised Envoy reaches xDS
    through the relay (a bootstrap template with the relay's port)."""
    stack.relay = Relay(stack.xds_port)
    template = (ROOT / "envoy-bootstrap/bootstrap.yaml").read_text().replace("${XDS_PORT}", str(stack.relay.port))
    (stack.dir / "bootstrap-relay.yaml").write_text(template)
    stack.start_backends()
    stack.write("base.yaml", harness.gateway_manifests(
        stack.gw_port, [("svc-0", stack.backend_ports[0]), ("svc-1", stack.backend_ports[1])]))
    stack.write("route.yaml", route("shop", "shop.fleet.test", _rules("/cart", "svc-0")))
    args = [str(harness.SWITCHYARD), "standalone", "--config-dir", str(stack.config), "--status-dir", str(stack.status),
            "--xds-listen", f"127.0.0.1:{stack.xds_port}", "--admin-listen", f"127.0.0.1:{stack.admin_port}",
            "--admin-grpc-listen", f"127.0.0.1:{stack.admin_grpc_port}",
            "--envoy", str(harness.envoy_binary()), "--envoy-admin", f"127.0.0.1:{stack.envoy_admin}",
            "--envoy-work-dir", str(stack.dir / "envoy"), "--bootstrap", str(stack.dir / "bootstrap-relay.yaml"),
            "--debounce-ms", "5"]
    stack.switchyard = subprocess.Popen(args, stdout=stack.log, stderr=stack.log)
    stack.procs.append(stack.switchyard)
    assert harness.wait_port("127.0.0.1", stack.admin_grpc_port), "the gRPC admin API did not start"
    assert harness.wait_port("127.0.0.1", stack.envoy_admin, 30), "envoy admin did not start"
    g.wait_for("shop.fleet.test", "/cart", timeout=30)


def _rules(path, svc):
    return f"  - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n    backendRefs: [{{name: {svc}, port: 80}}]\n"


@pytest.fixture(scope="module")
def fleet(request):
    gen = start_stack(request, configure=_configure, backends=2)
    g = next(gen)
    try:
        yield g
    finally:
        g.stack.relay.close()
        next(gen, None)


def node_id(g):
    return f"switchyard-standalone-{g.stack.envoy_admin}"


def fleet_cli(g, *args, check=True):
    p = subprocess.run([str(harness.SWITCHYARD), "fleet", *args, "--admin", f"127.0.0.1:{g.stack.admin_grpc_port}"],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, f"fleet {args} exited {p.returncode}: {p.stdout}\n{p.stderr}"
    return p


def status_json(g):
    return json.loads(fleet_cli(g, "status", "-o", "json").stdout)


def wait_synced(g, timeout=20):
    """Until the node runs the served version for every type it subscribed to."""
    deadline = time.time() + timeout
    while True:
        st = status_json(g)
        nodes = [n for n in st["nodes"] if n["nodeId"] == node_id(g)]
        if nodes and nodes[0]["types"] and all(t["state"] == "SYNCED" for t in nodes[0]["types"].values()):
            return st, nodes[0]
        if time.time() > deadline:
            raise AssertionError(f"node never synced: {json.dumps(st, indent=1)}")
        time.sleep(0.1)


def drift(g):
    return subprocess.run([str(harness.SWITCHYARD), "fleet", "drift", node_id(g), "--admin",
                           f"127.0.0.1:{g.stack.admin_grpc_port}", "--envoy-admin",
                           f"http://127.0.0.1:{g.stack.envoy_admin}", "-o", "json"],
                          capture_output=True, text=True, timeout=60)


def test_status_lists_the_envoy_with_its_acked_versions(fleet):
    st, node = wait_synced(fleet)
    served = fleet.stack.admin_json("/debug/snapshot")["version"]
    assert st["snapshotVersion"] == served
    assert node["protocol"] == "Delta"
    assert node["gateways"] == ["default/bench"]
    assert {"cds", "eds", "lds", "rds"} <= set(node["types"]), node
    for t in node["types"].values():
        assert t["ackedVersion"] == served, node
    text = fleet_cli(fleet, "status").stdout
    header, row = text.splitlines()[:2]
    assert header.split()[:4] == ["NODE", "CLUSTER", "GATEWAYS", "PROTOCOL"], text
    assert row.split()[0] == node_id(fleet) and f"SYNCED ({served})" in row, text


def test_config_shows_the_route_we_configured(fleet):
    wait_synced(fleet)
    doc = json.loads(fleet_cli(fleet, "config", node_id(fleet), "--type", "rds", "-o", "json").stdout)
    assert set(doc["resources"]) == {"rds"}
    text = json.dumps(doc["resources"]["rds"])
    assert "shop.fleet.test" in text and "/cart" in text, text
    everything = fleet_cli(fleet, "config", node_id(fleet), "-o", "json").stdout
    assert "PRIVATE KEY" not in everything
    missing = fleet_cli(fleet, "config", "no-such-node", check=False)
    assert missing.returncode != 0 and "no connected node" in missing.stderr


def test_drift_names_what_envoy_has_not_received(fleet):
    st, _ = wait_synced(fleet)
    clean = drift(fleet)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    rds = json.loads(fleet_cli(fleet, "config", node_id(fleet), "--type", "rds", "-o", "json").stdout)
    route_tables = {r["name"] for r in rds["resources"]["rds"]}

    relay = fleet.stack.relay
    relay.hold()
    try:
        fleet.write("route.yaml", route("shop", "shop.fleet.test", _rules("/basket", "svc-0")))
        deadline = time.time() + 20
        while status_json(fleet)["snapshotVersion"] <= st["snapshotVersion"]:
            assert time.time() < deadline, "the route change was never translated"
            time.sleep(0.05)
        report = drift(fleet)
        assert report.returncode == 1, report.stdout + report.stderr
        r = json.loads(report.stdout)
        changed = {(d["type"], d["name"]) for d in r["different"]}
        assert any(t == "rds" and n in route_tables for t, n in changed), r
        rds_diff = next(d for d in r["different"] if d["type"] == "rds")
        assert any("routes" in p for p in rds_diff["paths"]), rds_diff
        stale = [t for t in status_json(fleet)["nodes"][0]["types"].values() if t["state"] != "SYNCED"]
        assert stale, "fleet status should show the node behind"
        # The old route still answers: Envoy really runs the old configuration.
        assert fleet.get("shop.fleet.test", "/cart")[0] == 200
    finally:
        relay.release()
    wait_synced(fleet)
    fleet.wait_for("shop.fleet.test", "/basket", timeout=10)
    after = drift(fleet)
    assert after.returncode == 0, after.stdout + after.stderr
    assert json.loads(after.stdout)["different"] == []
