#!/usr/bin/env bash
# `make e2e-kind`: Switchyard on a kind cluster, installed the way users
# install it, then the tests that can target an external cluster and the
# conformance baseline. For machines with Docker (and CI:
# .github/workflows/e2e-kind.yml). It has NOT been run where it was written
# (no Docker daemon there): everything it calls besides docker/kind is shared
# with the local-cluster path and tested there (make test).
#
#   1. kind create cluster (reused when it exists)       e2e/kind/cluster.yaml
#   2. make image (docker build of Dockerfile), kind load docker-image
#   3. kubectl apply --server-side -k deploy/crds/experimental (as docs/install.md)
#   4. helm upgrade --install ... -f e2e/kind/values.yaml --wait
#   5. pytest e2e/tests/test_external.py e2e/tests/test_deploy.py
#      with SWITCHYARD_E2E_KUBECONFIG (e2e/kubestack.py: no local cluster)
#   6. e2e/conformance/run.py check --external (the baseline of passing.txt)
#
# KIND_CLUSTER (switchyard-e2e), IMAGE (the Makefile's), KIND (a kind binary;
# else sigs.k8s.io/kind from the Go module proxy into $HOME/go/bin),
# KEEP_CLUSTER=1 leaves the cluster running.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CLUSTER=${KIND_CLUSTER:-switchyard-e2e}
IMAGE=${IMAGE:-ghcr.io/switchyard-dev/switchyard:0.1.0}
KIND_VERSION=v0.33.0
MAKE=${MAKE:-make}
PYTHON=.venv/bin/python

command -v docker >/dev/null || { echo "make e2e-kind: needs docker (kind runs its nodes as containers)" >&2; exit 1; }
KIND=${KIND:-$(command -v kind || true)}
if [ -z "$KIND" ]; then
  GOBIN=$HOME/go/bin go install "sigs.k8s.io/kind@$KIND_VERSION"
  KIND=$HOME/go/bin/kind
fi
# The same kubectl and helm as the local-cluster path (Go module proxy, e2e/bin).
e2e/cluster/build.sh kubectl helm

echo "== image $IMAGE (make image)"
$MAKE --no-print-directory image IMAGE="$IMAGE"

echo "== kind cluster $CLUSTER"
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$KIND" create cluster --name "$CLUSTER" --config e2e/kind/cluster.yaml --wait 120s
fi
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then "$KIND" delete cluster --name "$CLUSTER"; fi
}
trap cleanup EXIT
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"
mkdir -p e2e/run
export SWITCHYARD_E2E_KUBECONFIG=$ROOT/e2e/run/kind-$CLUSTER.kubeconfig
"$KIND" get kubeconfig --name "$CLUSTER" >"$SWITCHYARD_E2E_KUBECONFIG"
NODE_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")
kubectl() { e2e/bin/kubectl --kubeconfig "$SWITCHYARD_E2E_KUBECONFIG" "$@"; }
helm() { e2e/bin/helm --kubeconfig "$SWITCHYARD_E2E_KUBECONFIG" "$@"; }

echo "== install (docs/install.md): CRDs, then the chart"
crds=$( (kubectl apply --server-side -k deploy/crds/experimental -o name;
        kubectl apply --server-side -k deploy/crds/switchyard -o name) | grep '^customresourcedefinition')
# shellcheck disable=SC2086
kubectl wait --for condition=Established --timeout=60s $crds
helm upgrade --install switchyard deploy/helm/switchyard -n switchyard-system --create-namespace \
  -f e2e/kind/values.yaml --set controller.image="$IMAGE" \
  --wait --timeout 5m
kubectl wait --for=condition=Accepted gatewayclass/switchyard --timeout=60s
kubectl get pods -n switchyard-system -o wide

echo "== e2e tests that target an external cluster"
"$PYTHON" -m pytest -q -rA --timeout=300 e2e/tests/test_external.py e2e/tests/test_deploy.py

echo "== conformance baseline (e2e/conformance/passing.txt)"
"$PYTHON" e2e/conformance/run.py check --external --usable-address "$NODE_IP"
