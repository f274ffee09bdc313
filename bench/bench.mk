# Benchmarks (issue #5). Included from the top-level Makefile, which defines
# CARGO, VENV and the `envoy` target.
#
#   make bench        full suite (about 10 min on 2 quiet cores): scenarios + criterion microbenchmarks
#   make bench-quick  about a minute: small sizes, no criterion
#
# Both write bench/results/<date>[-quick].json, BENCHMARKS.md and
# bench/results/propagation.png. Run the full suite on a quiet machine: every
# number here is wall-clock on loopback and shares the CPU with whatever else runs.

CARGO ?= cargo
VENV ?= .venv
BENCH_PY := $(VENV)/bin/python
BENCH_DATE := $(shell date +%Y-%m-%d)

.PHONY: bench bench-quick bench-deps bench-micro

# Everything the suite needs, each step a no-op when already there.
bench-deps: envoy
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }; }
	@$(BENCH_PY) -c 'import matplotlib' 2>/dev/null || { \
	  echo "installing matplotlib into $(VENV)"; \
	  $(VENV)/bin/pip install -q --disable-pip-version-check matplotlib; }
	$(CARGO) build --release --bins --examples

# Criterion microbenchmarks of the pure stages (translate, build, decode).
bench-micro:
	$(CARGO) bench --bench translate

bench: bench-deps
	$(BENCH_PY) bench/run.py --out bench/results/$(BENCH_DATE).json
	$(CARGO) bench --bench translate
	$(BENCH_PY) bench/report.py --with-criterion bench/results/$(BENCH_DATE).json

bench-quick: bench-deps
	$(BENCH_PY) bench/run.py --quick --out bench/results/$(BENCH_DATE)-quick.json
	$(BENCH_PY) bench/report.py bench/results/$(BENCH_DATE)-quick.json

# ---------------------------------------------------------------- side by side with Envoy Gateway
# `make bench-compare` (issue #15 item 5; not part of `make test`): builds
# Envoy Gateway from the Go module proxy (the module wrapper in
# bench/compare/envoy-gateway pins the version; ~/go caches the build), then
# runs the same probes against Switchyard and Envoy Gateway standalone
# (bench/compare.py) and re-renders BENCHMARKS.md with a side-by-side section
# from the newest bench/results/compare-*.json. About 40 minutes on 2 cores
# (nearly all of it Envoy Gateway's); COMPARE_ARGS="--quick" takes a few, and
# e.g. COMPARE_ARGS="--levels 0,100 --bulk 1000" picks sizes.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
EG_MOD := bench/compare/envoy-gateway
EG_BIN := bench/compare/bin/envoy-gateway
EG_VERSION = $(shell awk '$$1 == "github.com/envoyproxy/gateway" {print $$2; exit} $$1 == "require" && $$2 == "github.com/envoyproxy/gateway" {print $$3; exit}' $(EG_MOD)/go.mod)
COMPARE_ARGS ?=

.PHONY: bench-compare bench-compare-deps

$(EG_BIN): $(EG_MOD)/go.mod $(EG_MOD)/go.sum $(EG_MOD)/tools.go
	@mkdir -p $(dir $(EG_BIN))
	cd $(EG_MOD) && nice -n 10 $(GO) build -p 2 \
	  -ldflags "-X github.com/envoyproxy/gateway/internal/cmd/version.envoyGatewayVersion=$(EG_VERSION)" \
	  -o $(CURDIR)/$(EG_BIN).tmp github.com/envoyproxy/gateway/cmd/envoy-gateway
	mv $(EG_BIN).tmp $(EG_BIN)

bench-compare-deps: bench-deps $(EG_BIN)

bench-compare: bench-compare-deps
	$(BENCH_PY) -u bench/compare.py $(COMPARE_ARGS) --out bench/results/compare-$(BENCH_DATE).json
	# Re-rendered from the newest full `make bench` result (by its dated name: a checkout's mtimes say nothing).
	$(BENCH_PY) bench/report.py $$(ls bench/results/20??-??-??.json | sort | tail -1)
