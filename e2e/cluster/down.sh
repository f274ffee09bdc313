#!/usr/bin/env bash
# Stops the local cluster and removes every process, network namespace, veth,
# bridge and mount it created, even after a failed run. Idempotent.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
E2E=$(dirname "$HERE")
RUN=${RUN:-$E2E/run}
BRIDGE=${BRIDGE:-sybr0}

# Pods first (the kubelet's children), then the control plane.
for name in kubelet kube-controller-manager kube-apiserver etcd; do
  f=$RUN/pids/$name.pid
  [ -f "$f" ] && kill -TERM -- "-$(cat "$f")" 2>/dev/null
done
sleep 1
for name in kubelet kube-controller-manager kube-apiserver etcd; do
  f=$RUN/pids/$name.pid
  [ -f "$f" ] && kill -KILL -- "-$(cat "$f")" 2>/dev/null
done
# Fallback by pattern, in case pid files were lost.
pkill -KILL -f "$E2E/bin/(etcd|kube-apiserver|kube-controller-manager)" 2>/dev/null
pkill -KILL -f "switchyard-kubelet .*--node-name e2e-node" 2>/dev/null
# Pod processes run inside netns named sy-*; kill whatever is left in them.
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sy-'); do
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
  ip netns delete "$ns" 2>/dev/null
done
for v in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^syv'); do
  ip link delete "$v" 2>/dev/null
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" 2>/dev/null
# Secret/ConfigMap volume mounts of Pods.
if [ -d "$RUN/pods" ]; then
  grep " $RUN/pods" /proc/mounts | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
fi
rm -rf "$RUN"
echo "cluster down"
