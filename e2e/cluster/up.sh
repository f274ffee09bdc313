#!/usr/bin/env bash
# Starts a local Kubernetes control plane from real parts, as processes:
# etcd, kube-apiserver, kube-controller-manager, and Switchyard's process
# kubelet (switchyard-kubelet), then installs the Gateway API v1.6.1
# experimental CRDs and waits until they are Established.
#
# Writes $RUN/kubeconfig (admin). Idempotent: an already healthy cluster is
# reused. Everything lives under e2e/run; `down.sh` removes it all.
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
KUBELET=${KUBELET:-${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard-kubelet}
t0=$(date +%s)

kubectl() { "$BIN/kubectl" "$@"; }

healthy() { [ -f "$KUBECONFIG" ] && kubectl get --raw /readyz >/dev/null 2>&1; }

if healthy && [ -f "$PIDS/kubelet.pid" ] && kill -0 "$(cat "$PIDS/kubelet.pid")" 2>/dev/null; then
  echo "cluster already up ($KUBECONFIG)"
  exit 0
fi
"$HERE/down.sh" >/dev/null 2>&1 || true
for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run e2e/cluster/build.sh (make cluster-build)" >&2; exit 1; }
done
[ -x "$KUBELET" ] || { echo "missing $KUBELET: cargo build --release --bin switchyard-kubelet" >&2; exit 1; }
ln -sf "$(dirname "$KUBELET")/switchyard-echo" "$BIN/switchyard-echo"
mkdir -p "$PKI" "$LOGS" "$PIDS"

# --- PKI -------------------------------------------------------------------
cert() { # name, subject, [extensions file]
  openssl genrsa -out "$PKI/$1.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$1.key" -subj "$2" -out "$PKI/$1.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$1.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -out "$PKI/$1.crt" ${3:+-extfile "$3"} 2>/dev/null
}
if [ ! -f "$PKI/ca.crt" ]; then
  openssl genrsa -out "$PKI/ca.key" 2048 2>/dev/null
  openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=switchyard-e2e-ca" -days 3650 -out "$PKI/ca.crt" 2>/dev/null
  cat > "$PKI/apiserver.ext" <<EXT
subjectAltName = IP:127.0.0.1, IP:10.96.0.1, IP:$BRIDGE_IP, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage = serverAuth
EXT
  cert apiserver "/CN=kube-apiserver" "$PKI/apiserver.ext"
  printf 'extendedKeyUsage = clientAuth\n' > "$PKI/client.ext"
  cert admin "/O=system:masters/CN=admin" "$PKI/client.ext"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
b64() { base64 -w0 < "$1"; }
cat > "$KUBECONFIG" <<KC
apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(b64 "$PKI/admin.crt")
    client-key-data: $(b64 "$PKI/admin.key")
contexts:
- name: local
  context: {cluster: local, user: admin}
current-context: local
KC

# --- Pod network: a bridge the process kubelet plugs Pods into --------------
if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
fi
ip link set "$BRIDGE" up
sysctl -qw net.ipv4.ip_forward=1 || true

start() { # name, command...
  local name=$1; shift
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$PIDS/$name.pid"
}
wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what" >&2
  return 1
}

# --- etcd --------------------------------------------------------------------
start etcd "$BIN/etcd" --name e2e --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "e2e=http://127.0.0.1:$((ETCD_PORT + 10))" --unsafe-no-fsync --quota-backend-bytes 2147483648
wait_for etcd 30 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ----------------------------------------------------------
start kube-apiserver "$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
  --bind-address 127.0.0.1 --secure-port "$API_PORT" --advertise-address "$BRIDGE_IP" \
  --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/16 \
  --authorization-mode RBAC \
  --disable-admission-plugins ServiceAccount \
  --allow-privileged=true --profiling=false --event-ttl 10m
wait_for kube-apiserver 90 kubectl get --raw /readyz

# --- kube-controller-manager -------------------------------------------------
start kube-controller-manager "$BIN/kube-controller-manager" \
  --kubeconfig "$KUBECONFIG" --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
  --controllers deployment-controller,replicaset-controller,endpointslice-controller,endpointslice-mirroring-controller,namespace-controller,garbage-collector-controller,serviceaccount-controller,serviceaccount-token-controller \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port 0 --concurrent-deployment-syncs 10
wait_for "default ServiceAccount" 60 kubectl get serviceaccount default -n default

# --- process kubelet -----------------------------------------------------------
start kubelet "$KUBELET" --kubeconfig "$KUBECONFIG" --node-name e2e-node \
  --bridge "$BRIDGE" --bridge-ip "$BRIDGE_IP" --pod-cidr "$POD_CIDR" --run-dir "$RUN/pods" \
  --image-map "$HERE/images.yaml" --bin-dir "$BIN"
wait_for "node Ready" 60 bash -c "\"$BIN/kubectl\" get node e2e-node -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -q True"

# --- Gateway API CRDs (v1.6.1, experimental channel) -------------------------
CRDS=$(cd "$E2E/conformance" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api)/config/crd/experimental
kubectl apply --server-side -f "$CRDS" >/dev/null
kubectl wait --for condition=Established --timeout=60s crd -l gateway.networking.k8s.io/bundle-version >/dev/null 2>&1 \
  || kubectl wait --for condition=Established --timeout=60s crd --all >/dev/null

echo "cluster up in $(( $(date +%s) - t0 )) s; export KUBECONFIG=$KUBECONFIG"
