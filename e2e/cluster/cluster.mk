# Local Kubernetes cluster from real parts (etcd, kube-apiserver,
# kube-controller-manager, Switchyard's process kubelet); see e2e/cluster/*.sh.
# Included from the top-level Makefile.
.PHONY: cluster-build cluster-up cluster-down cluster-test

CLUSTER_PYTHON ?= $(if $(wildcard $(VENV)/bin/python),$(VENV)/bin/python,python3)

# Go binaries from the module proxy into e2e/bin (seconds when cached), and the
# process kubelet plus the echo backend: exactly the `make build` command (the
# same profile and the same feature set, dev-dependencies included through the
# examples), so a fresh machine compiles every crate once and `make test`
# finds them built.
cluster-build:
	e2e/cluster/build.sh
	$(CARGO) build --release --bins --examples

# Starts the cluster (or reuses a healthy one); prints how long it took.
# Writes e2e/run/kubeconfig.
cluster-up: cluster-build
	e2e/cluster/up.sh

# Stops everything and removes processes, netns, veths, bridge, mounts, e2e/run.
cluster-down:
	e2e/cluster/down.sh

# Smoke test: Deployment of 2 echo Pods + Service → EndpointSlice → HTTP to
# each Pod IP → delete → cluster down clean.
cluster-test: cluster-build
	SWITCHYARD_CLUSTER_TEST=1 $(CLUSTER_PYTHON) -m pytest -v -rA -p no:cacheprovider e2e/tests/test_cluster_smoke.py
