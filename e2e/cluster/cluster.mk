# Local Kubernetes cluster from real parts (see e2e/cluster/*.sh).
.PHONY: cluster-build cluster-up cluster-down cluster-test

cluster-build:
	e2e/cluster/build.sh
	$(CARGO) build --release --bin switchyard-kubelet --bin switchyard-echo

cluster-up: cluster-build
	e2e/cluster/up.sh

cluster-down:
	e2e/cluster/down.sh

# Smoke test: cluster up → Deployment of 2 echo Pods → EndpointSlice → HTTP to each Pod → cluster down clean.
cluster-test: cluster-up envoy
	$(VENV)/bin/python -m pytest -v e2e/cluster/test_cluster_smoke.py; rc=$$?; e2e/cluster/down.sh; exit $$rc
