#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy into e2e/bin:
# etcd v3.6, kube-apiserver / kube-controller-manager / kubectl v1.36, and the
# conformance echo-basic backend (gateway-api v1.6.1). Go's build cache lives
# in the home directory, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")"
BIN=$(cd .. && pwd)/bin
mkdir -p "$BIN"
export GOFLAGS=${GOFLAGS:--mod=mod}
NICE=${NICE:-nice -n 10}

build() { # dir, packages...
  local dir=$1; shift
  (cd "$dir" && $NICE go build -o "$BIN/" "$@")
}

t0=$(date +%s)
build etcd go.etcd.io/etcd/server/v3
[ -x "$BIN/v3" ] && mv -f "$BIN/v3" "$BIN/etcd"
build k8s k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl
build ../conformance sigs.k8s.io/gateway-api/conformance/echo-basic
echo "cluster binaries ready in $BIN ($(( $(date +%s) - t0 )) s)"
