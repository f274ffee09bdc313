#!/usr/bin/env bash
# Starts a local Kubernetes cluster from real parts, as processes on this
# machine: etcd, kube-apiserver, kube-controller-manager and Switchyard's
# process kubelet (switchyard-kubelet), then installs the Gateway API v1.6.1
# experimental-channel CRDs and waits until they are Established.
#
# Writes the admin kubeconfig to e2e/run/kubeconfig. Idempotent: a healthy
# cluster started by this script, from this checkout, with the same kubelet
# binary and settings is reused; anything else (including a cluster another
# checkout started on this machine, found by down.sh) is torn down and started
# afresh. Every wait is bounded; on a timeout the relevant log's tail is printed.
#
# The kubelet serves container logs (pods/log, `kubectl logs`) over HTTPS on
# KUBELET_PORT with a serving certificate from the cluster CA; the API server
# reaches it at the Node's InternalIP, verifies that certificate and
# authenticates with a client certificate the kubelet checks.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
E2E=$(dirname "$HERE")
ROOT=$(dirname "$E2E")
RUN=${RUN:-$E2E/run}
BIN=$E2E/bin
PKI=$RUN/pki
LOGS=$RUN/logs
PIDS=$RUN/pids
KUBECONFIG=$RUN/kubeconfig
export KUBECONFIG
BRIDGE=${BRIDGE:-sybr0}
BRIDGE_IP=${BRIDGE_IP:-10.244.0.1}
POD_CIDR=${POD_CIDR:-10.244.0.0/24}
API_PORT=${API_PORT:-6443}
ETCD_PORT=${ETCD_PORT:-23790}
NODE=${NODE:-e2e-node}
KUBELET_PORT=${KUBELET_PORT:-10250}
GATEWAY_API_VERSION=${GATEWAY_API_VERSION:-v1.6.1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
KUBELET=${KUBELET:-$TARGET/release/switchyard-kubelet}
ECHO=${ECHO:-$TARGET/release/switchyard-echo}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
t0=$(date +%s.%N)

# One up/down at a time per checkout (parallel test sessions).
LOCK=${TMPDIR:-/tmp}/switchyard-cluster-$(echo "$E2E" | cksum | cut -d' ' -f1).lock
exec 9>"$LOCK"
flock -w 300 9 || { echo "cluster-up: another cluster-up/down holds $LOCK" >&2; exit 1; }

kubectl() { "$BIN/kubectl" --request-timeout=20s "$@"; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }'; }
alive() { # name: its process runs (zombies count as exited)
  local st
  [ -f "$PIDS/$1.pid" ] || return 1
  st=$(sed 's/.*) //' "/proc/$(cat "$PIDS/$1.pid")/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
node_ready() {
  [ "$(kubectl get node "$NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

# A rebuilt binary shows as "(deleted)" behind the running process: start afresh.
current() { ! readlink "/proc/$(cat "$PIDS/$1.pid")/exe" 2>/dev/null | grep -q '(deleted)$'; }
# What the running cluster was started with; another kubelet binary (e.g.
# KUBELET pointing at another checkout's) or other settings mean a restart.
# Bump the version when the flags below change incompatibly.
SETTINGS="v2 kubelet=$(readlink -f "$KUBELET" 2>/dev/null || echo "$KUBELET") port=$KUBELET_PORT node=$NODE bridge=$BRIDGE_IP"
same_settings() { [ "$(cat "$RUN/settings" 2>/dev/null)" = "$SETTINGS" ]; }

# Switchyard's own CRD (GatewayClassConfig, deploy/crds/switchyard):
# idempotent, also on a reused cluster (it may predate the CRD).
switchyard_crds() {
  kubectl apply --server-side --force-conflicts -k "$ROOT/deploy/crds/switchyard" >>"$LOGS/crds.log" 2>&1 \
    && kubectl wait --for condition=Established --timeout=60s crd/gatewayclassconfigs.gateway.switchyard.dev >>"$LOGS/crds.log" 2>&1
}

if [ -f "$KUBECONFIG" ] && same_settings && alive etcd && alive kube-apiserver && alive kube-controller-manager && alive kubelet \
    && current kubelet && current kube-apiserver && kubectl get --raw /readyz >/dev/null 2>&1 && node_ready; then
  mkdir -p "$LOGS"
  switchyard_crds || { echo "applying the Switchyard CRD failed: see $LOGS/crds.log" >&2; exit 1; }
  printf 'cluster already up (reused, %.1f s); export KUBECONFIG=%s\n' "$(elapsed)" "$KUBECONFIG"
  exit 0
fi
CLUSTER_LOCK_HELD=1 "$HERE/down.sh" >/dev/null 2>&1 || true

for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run make cluster-build (e2e/cluster/build.sh)" >&2; exit 1; }
done
[ -x "$KUBELET" ] || { echo "missing $KUBELET: cargo build --bin switchyard-kubelet" >&2; exit 1; }
[ -x "$ECHO" ] && ln -sf "$ECHO" "$BIN/switchyard-echo"
mkdir -p "$PKI" "$LOGS" "$PIDS"
# iproute2 turns /run/netns into a mount point on first use; if that happens
# because of us, down.sh undoes it.
mountpoint -q /run/netns 2>/dev/null || touch "$RUN/unmount-run-netns"

fail() { # message, log name
  echo "cluster-up: $1" >&2
  [ -n "${2:-}" ] && [ -f "$LOGS/$2.log" ] && { echo "--- tail of $LOGS/$2.log" >&2; tail -n 30 "$LOGS/$2.log" >&2; }
  echo "(cluster left as is for inspection; make cluster-down cleans up)" >&2
  exit 1
}
start() { # name, command...
  local name=$1; shift
  # Only stdin/stdout/stderr are passed on: a daemon that inherited a lock's
  # descriptor (ours, fd 9, or that of a `flock LOCKFILE up.sh` around us)
  # would hold that lock for as long as the cluster runs.
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-"
    done
    exec setsid "$@"
  ) >"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}
wait_for() { # description, seconds, log name, command...
  local what=$1 secs=$2 log=$3; shift 3
  local deadline=$(( $(date +%s) + secs ))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -ge "$deadline" ] && fail "timed out after ${secs}s waiting for $what" "$log"
    alive "$log" || fail "$log exited while waiting for $what" "$log"
    sleep 0.2
  done
}

# --- PKI (openssl): CA, API server serving cert, admin client cert, SA keys ---
openssl_q() { openssl "$@" 2>/dev/null; }
cert() { # name, subject, extensions
  openssl_q req -new -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr"
  printf '%s\n' "$3" >"$PKI/$1.ext"
  openssl_q x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -out "$PKI/$1.crt" -extfile "$PKI/$1.ext"
}
openssl_q req -x509 -new -newkey rsa:2048 -nodes -keyout "$PKI/ca.key" -subj "/CN=switchyard-e2e-ca" \
  -days 3650 -sha256 -out "$PKI/ca.crt"
cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:$BRIDGE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=kubernetes-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
# The kubelet port: its serving certificate (for the address the API server
# dials, the Node's InternalIP) and the API server's client certificate.
cert kubelet "/O=system:nodes/CN=system:node:$NODE" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$BRIDGE_IP,IP:127.0.0.1,DNS:$NODE,DNS:localhost"
cert apiserver-kubelet-client "/O=kube-apiserver-kubelet-client/CN=kube-apiserver-kubelet-client" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
openssl_q genrsa -out "$PKI/sa.key" 2048
openssl_q rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
for f in apiserver admin kubelet apiserver-kubelet-client; do
  [ -s "$PKI/$f.crt" ] || fail "generating certificates failed ($f)"
done
[ -s "$PKI/sa.pub" ] || fail "generating certificates failed (sa)"
chmod 600 "$PKI"/*.key

b64() { base64 -w0 <"$1"; }
umask 077
cat >"$KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
- name: switchyard-e2e
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: switchyard-e2e
  context: {cluster: switchyard-e2e, user: admin}
current-context: switchyard-e2e
KC
umask 022

# --- Pod network: the bridge the process kubelet plugs Pods into ------------
ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip -4 -o addr show dev "$BRIDGE" | grep -q " $BRIDGE_IP/" || ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
ip link set "$BRIDGE" up

# --- etcd, on loopback --------------------------------------------------------
PEER_PORT=$((ETCD_PORT + 10))
start etcd "$BIN/etcd" --name e2e --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "e2e=http://127.0.0.1:$PEER_PORT" --listen-metrics-urls "" \
  --unsafe-no-fsync --quota-backend-bytes 2147483648 --log-level warn
wait_for etcd 30 etcd curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver -----------------------------------------------------------
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$BRIDGE_IP" \
  --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode Node,RBAC \
  --disable-admission-plugins ServiceAccount \
  --kubelet-preferred-address-types InternalIP \
  --kubelet-certificate-authority "$PKI/ca.crt" \
  --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
  --allow-privileged=true --profiling=false --event-ttl 10m \
  --enable-priority-and-fairness=false
wait_for kube-apiserver 120 kube-apiserver kubectl get --raw /readyz

# --- kube-controller-manager ---------------------------------------------------
# Just what the conformance suite needs: Deployments → ReplicaSets → Pods,
# Services → EndpointSlices, namespace deletion, garbage collection, service
# accounts and their tokens. No nodelifecycle (the kubelet keeps the Node Ready
# anyway), no scheduler (the kubelet binds Pods itself).
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --controllers deployment-controller,replicaset-controller,endpointslice-controller,endpointslice-mirroring-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 \
  --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 --concurrent-service-endpoint-syncs 10
wait_for "the default ServiceAccount" 60 kube-controller-manager kubectl get serviceaccount default -n default

# --- process kubelet -------------------------------------------------------------
# An older kubelet binary (KUBELET from a checkout without log serving)
# knows none of the serving flags: it runs without them, kubectl logs aside.
serving=()
if "$KUBELET" --help 2>/dev/null | grep -q -- --tls-cert-file; then
  serving=(--port "$KUBELET_PORT" --tls-cert-file "$PKI/kubelet.crt" --tls-private-key-file "$PKI/kubelet.key"
           --client-ca-file "$PKI/ca.crt")
fi
start kubelet "$KUBELET" --kubeconfig "$KUBECONFIG" --node-name "$NODE" \
  --bridge "$BRIDGE" --bridge-ip "$BRIDGE_IP" --pod-cidr "$POD_CIDR" --run-dir "$RUN/pods" \
  --image-map "$HERE/images.yaml" --bin-dir "$BIN" "${serving[@]}"
wait_for "node $NODE Ready" 60 kubelet node_ready
echo "$SETTINGS" >"$RUN/settings"

# --- Gateway API CRDs (experimental channel), from deploy/crds -----------------
CRDS=$ROOT/deploy/crds/experimental
[ -d "$CRDS" ] || fail "Gateway API CRDs not found in $CRDS"
files=()
for f in "$CRDS"/gateway.networking*.yaml; do files+=(-f "$f"); done
kubectl apply --server-side --force-conflicts "${files[@]}" >"$LOGS/crds.log" 2>&1 || fail "applying CRDs" crds
names=$(kubectl get crd -o name | grep 'gateway\.networking\.' || true)
[ -n "$names" ] || fail "no Gateway API CRDs after apply" crds
# shellcheck disable=SC2086
kubectl wait --for condition=Established --timeout=60s $names >>"$LOGS/crds.log" 2>&1 \
  || fail "CRDs not Established within 60 s" crds
switchyard_crds || fail "applying the Switchyard CRD" crds

printf 'cluster up in %.1f s (%d Gateway API %s CRDs Established); export KUBECONFIG=%s\n' \
  "$(elapsed)" "$(echo "$names" | wc -w)" "$GATEWAY_API_VERSION" "$KUBECONFIG"
