#!/usr/bin/env python3
"""A tiny load-balancer controller for the local test cluster, standing in
for what a cloud provider or MetalLB does for `type: LoadBalancer` Services:

- it gives each such Service an address from a pool (sticky: an address the
  Service already reports in `status.loadBalancer.ingress` is kept), puts the
  address on a host interface (as MetalLB's L2 mode announces it), and writes
  `status.loadBalancer.ingress` through the status subresource;
- it forwards TCP connections to `<address>:<port>` to the Service's
  backends, as the cloud load balancer plus kube-proxy would: the ready
  endpoints of its EndpointSlices when there are any, else every Node's
  InternalIP at the port's `targetPort` (a hostNetwork DaemonSet, such as
  Switchyard's Envoy, listens on the node's own address; in the local cluster
  the Envoy of the e2e tests is a host process, so there are no endpoints).

Only TCP ports are forwarded (UDP ports get the address, no forwarding; logged).
Services with a `spec.loadBalancerClass` other than `--class` (when given) are
left alone, as a second load-balancer implementation would be.

    e2e/lbfiller.py --pool 10.245.0.0/28 [--interface lo] [--class NAME]

It runs until SIGTERM/SIGINT, then removes the addresses it added (the
ingress it wrote stays, as a real load balancer's would until deleted).
Used by e2e/tests/test_address_modes_kube.py and `make run-kube`.
"""

import argparse
import asyncio
import ipaddress
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = os.environ.get("KUBECTL", str(ROOT / "e2e" / "bin" / "kubectl"))


def log(*a):
    print("lbfiller:", *a, file=sys.stderr, flush=True)


async def kubectl_json(*args):
    p = await asyncio.create_subprocess_exec(KUBECTL, *args, "-o", "json", stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
    out, err = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return json.loads(out)


async def kubectl(*args):
    p = await asyncio.create_subprocess_exec(KUBECTL, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await p.communicate()
    if p.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out


def ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


class Forwarder:
    """Listens on (address, port) and relays each connection to one of the
    targets (round robin; the next one when a connect fails)."""

    def __init__(self, address, port):
        self.address, self.port = address, port
        self.targets = []
        self.next = 0
        self.server = None

    async def start(self):
        self.server = await asyncio.start_server(self.handle, self.address, self.port, reuse_address=True)

    async def handle(self, reader, writer):
        targets = list(self.targets)
        for i in range(len(targets)):
            host, port = targets[(self.next + i) % len(targets)]
            try:
                up_r, up_w = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            except (OSError, asyncio.TimeoutError):
                continue
            self.next = (self.next + i + 1) % len(targets)
            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
            return
        log(f"{self.address}:{self.port}: no target answered ({targets})")
        writer.close()

    def close(self):
        if self.server:
            self.server.close()


class Filler:
    def __init__(self, pool, interface, lb_class):
        self.pool = [str(a) for a in ipaddress.ip_network(pool).hosts()] or [str(ipaddress.ip_network(pool).network_address)]
        self.interface = interface
        self.lb_class = lb_class
        self.assigned = {}      # (ns, name) -> address
        self.forwarders = {}    # (ns, name) -> {(port, target_port): Forwarder}
        self.added = set()      # addresses we put on the interface

    def ours(self, svc):
        spec = svc.get("spec") or {}
        if spec.get("type") != "LoadBalancer":
            return False
        cls = spec.get("loadBalancerClass")
        return cls is None or cls == self.lb_class

    def address_for(self, key, svc):
        if key in self.assigned:
            return self.assigned[key]
        taken = set(self.assigned.values())
        requested = (svc.get("spec") or {}).get("loadBalancerIP")
        reported = [i.get("ip") for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []]
        for want in [requested, *reported]:
            if want and want in self.pool and want not in taken:
                self.assigned[key] = want
                return want
        if requested:
            log(f"{key[0]}/{key[1]}: loadBalancerIP {requested} is not in the pool; not assigned")
            return None
        free = next((a for a in self.pool if a not in taken), None)
        if free is None:
            log(f"{key[0]}/{key[1]}: pool exhausted")
            return None
        self.assigned[key] = free
        return free

    def announce(self, address):
        if address in self.added:
            return
        r = ip("addr", "add", f"{address}/32", "dev", self.interface, check=False)
        if r.returncode != 0 and "File exists" not in r.stderr:
            raise RuntimeError(f"ip addr add {address}: {r.stderr.strip()}")
        self.added.add(address)

    def withdraw(self, address):
        if address in self.added:
            ip("addr", "del", f"{address}/32", "dev", self.interface, check=False)
            self.added.discard(address)

    async def sync(self):
        services = (await kubectl_json("get", "services", "-A"))["items"]
        slices = (await kubectl_json("get", "endpointslices", "-A"))["items"]
        nodes = (await kubectl_json("get", "nodes"))["items"]
        node_ips = [a["address"] for n in nodes for a in (n.get("status") or {}).get("addresses") or []
                    if a.get("type") == "InternalIP"]
        live = set()
        for svc in services:
            if not self.ours(svc):
                continue
            key = (svc["metadata"]["namespace"], svc["metadata"]["name"])
            live.add(key)
            address = self.address_for(key, svc)
            if address is None:
                continue
            self.announce(address)
            await self.forward(key, address, svc, slices, node_ips)
            want = [{"ip": address, "ipMode": "VIP"}]
            have = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if [i.get("ip") for i in have] != [address]:
                await kubectl("patch", "service", key[1], "-n", key[0], "--subresource=status", "--type=merge",
                              "-p", json.dumps({"status": {"loadBalancer": {"ingress": want}}}))
                log(f"{key[0]}/{key[1]}: ingress {address}")
        for key in set(self.assigned) - live:
            address = self.assigned.pop(key)
            for f in self.forwarders.pop(key, {}).values():
                f.close()
            if address not in self.assigned.values():
                self.withdraw(address)
            log(f"{key[0]}/{key[1]}: released {address}")

    async def forward(self, key, address, svc, slices, node_ips):
        current = self.forwarders.setdefault(key, {})
        wanted = {}
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("protocol", "TCP") != "TCP":
                continue
            target = p.get("targetPort", p["port"])
            endpoints = self.endpoints(key, p, slices)
            if endpoints:
                targets = endpoints
            elif isinstance(target, int):
                targets = [(n, target) for n in node_ips]
            else:
                targets = []
            wanted[p["port"]] = targets
        for port in set(current) - set(wanted):
            current.pop(port).close()
        for port, targets in wanted.items():
            if port not in current:
                f = Forwarder(address, port)
                try:
                    await f.start()
                except OSError as e:
                    log(f"{key[0]}/{key[1]}: cannot listen on {address}:{port}: {e}")
                    continue
                current[port] = f
            current[port].targets = targets

    @staticmethod
    def endpoints(key, port, slices):
        out = []
        for s in slices:
            labels = s["metadata"].get("labels") or {}
            if s["metadata"]["namespace"] != key[0] or labels.get("kubernetes.io/service-name") != key[1]:
                continue
            ports = [sp["port"] for sp in s.get("ports") or [] if sp.get("name", "") == port.get("name", "")]
            for e in s.get("endpoints") or []:
                if (e.get("conditions") or {}).get("ready") is False:
                    continue
                out += [(a, sp) for a in e.get("addresses") or [] for sp in ports]
        return out

    def cleanup(self):
        for fs in self.forwarders.values():
            for f in fs.values():
                f.close()
        for a in list(self.added):
            self.withdraw(a)


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", required=True, help="CIDR the addresses come from, e.g. 10.245.0.0/28")
    ap.add_argument("--interface", default="lo", help="host interface the addresses are put on")
    ap.add_argument("--class", dest="lb_class", default=None,
                    help="loadBalancerClass handled besides Services without one")
    ap.add_argument("--interval", type=float, default=0.3)
    args = ap.parse_args()
    filler = Filler(args.pool, args.interface, args.lb_class)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log(f"serving LoadBalancer Services from {args.pool} on {args.interface}")
    try:
        while not stop.is_set():
            try:
                await filler.sync()
            except Exception as e:  # keep going: the API server may be restarting
                log(f"sync failed: {e}")
            try:
                await asyncio.wait_for(stop.wait(), args.interval)
            except asyncio.TimeoutError:
                pass
    finally:
        filler.cleanup()
        log("stopped")


if __name__ == "__main__":
    asyncio.run(main())
