#!/usr/bin/env bash
# Builds the local cluster's binaries from the Go module proxy into e2e/bin:
#   etcd                      go.etcd.io/etcd/server/v3 v3.6.x        (etcd/go.mod)
#   kube-apiserver,
#   kube-controller-manager,
#   kubectl                   k8s.io/kubernetes v1.36.x + staging     (k8s/go.mod)
#   echo-basic                sigs.k8s.io/gateway-api/conformance     (echo-basic/go.mod)
#   coredns                   github.com/coredns/coredns, 4 plugins   (coredns/main.go)
#   helm                      helm.sh/helm/v3 v3.22.x                 (helm/go.mod), renders deploy/helm
#   promtool                  github.com/prometheus/prometheus v0.316.0 (promtool/go.mod), checks and
#                             unit-tests deploy/monitoring's alert rules
#   dashcheck                 github.com/grafana/grafana-foundation-sdk/go v0.0.22 (dashcheck/): strict
#                             decode of deploy/monitoring's Grafana dashboard
#   umoci                     github.com/opencontainers/umoci v0.6.0 (umoci/go.mod): builds and unpacks
#                             the controller's OCI image layout without a daemon (make image-oci)
# Debian's kubernetes-client is v1.20 (16 minors behind the API server), so
# kubectl is built from the same module as the control plane.
#
# With arguments, only the binaries named (e.g. `build.sh umoci` for make image-oci).
#
# Go's module and build caches live in the home directory, so a second run only
# relinks what changed (seconds). A binary newer than its go.mod/go.sum is kept.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$(dirname "$HERE")/bin
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
NICE=${NICE:-nice -n 15}
mkdir -p "$BIN"

# The version the k8s wrapper module pins, stamped into the binaries so that
# /version and `kubectl version` say v1.36.x instead of v0.0.0-master.
K8S_VERSION=$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$HERE/k8s/go.mod")
K8S_MINOR=$(echo "$K8S_VERSION" | cut -d. -f2)
K8S_LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  K8S_LDFLAGS+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$K8S_MINOR"
  K8S_LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

fresh() { # binary, module dir: is the binary newer than the module's files and this script?
  [ -x "$BIN/$1" ] && [ "$BIN/$1" -nt "$HERE/build.sh" ] && [ -z "$(find "$HERE/$2" -newer "$BIN/$1" -print -quit)" ]
}

ONLY=" $* "
build() { # binary name, module dir, package, [ldflags]
  local name=$1 dir=$2 pkg=$3 ldflags=${4:--s -w}
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then
    return
  fi
  if fresh "$name" "$dir"; then
    echo "  $name: up to date"
    return
  fi
  local t=$(date +%s)
  (cd "$HERE/$dir" && $NICE "$GO" build -p 2 -ldflags "$ldflags" -o "$BIN/$name.tmp" "$pkg")
  mv -f "$BIN/$name.tmp" "$BIN/$name"
  echo "  $name: built in $(( $(date +%s) - t )) s"
}

t0=$(date +%s)
echo "building cluster binaries into $BIN"
build etcd etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s k8s.io/kubernetes/cmd/kube-apiserver "$K8S_LDFLAGS"
build kube-controller-manager k8s k8s.io/kubernetes/cmd/kube-controller-manager "$K8S_LDFLAGS"
build kubectl k8s k8s.io/kubernetes/cmd/kubectl "$K8S_LDFLAGS"
build echo-basic echo-basic sigs.k8s.io/gateway-api/conformance/echo-basic
build coredns coredns switchyard.dev/e2e/cluster/coredns
build helm helm helm.sh/helm/v3/cmd/helm
# Only rule checks and rule unit tests are needed: no service-discovery plugins
# (remove_all_sd drops the cloud SDKs, most of promtool's build time).
GOFLAGS="${GOFLAGS:-} -tags=remove_all_sd" build promtool promtool github.com/prometheus/prometheus/cmd/promtool
build dashcheck dashcheck switchyard.dev/e2e/cluster/dashcheck
build umoci umoci github.com/opencontainers/umoci/cmd/umoci
rm -f "$BIN/server" "$BIN/v3"  # names an unqualified `go build` of etcd used to produce
echo "cluster binaries ready ($(( $(date +%s) - t0 )) s)"
