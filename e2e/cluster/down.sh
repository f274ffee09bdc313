#!/usr/bin/env bash
# Stops the local cluster and removes every process, network namespace, veth,
# bridge, mount and file it created, even after a failed or interrupted run.
# Idempotent: on a machine without a cluster it does nothing and succeeds.
#
# Processes are found by pid file first, then (fallback) by executable path:
# only binaries from this checkout's e2e/bin and target/*/switchyard-kubelet,
# never by a broad name. A cluster that another checkout of this repository
# started on this machine (same bridge, ports, node) is stopped too, through
# that checkout's run directory: its kubelet and etcd name it on their command
# lines (--run-dir, --data-dir), and only processes whose command line names
# it are signalled.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
E2E=$(dirname "$HERE")
ROOT=$(dirname "$E2E")
RUN=${RUN:-$E2E/run}
BIN=$E2E/bin
BRIDGE=${BRIDGE:-sybr0}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
t0=$(date +%s)

if [ -z "${CLUSTER_LOCK_HELD:-}" ]; then
  LOCK=${TMPDIR:-/tmp}/switchyard-cluster-$(echo "$E2E" | cksum | cut -d' ' -f1).lock
  exec 9>"$LOCK"
  flock -w 300 9 || { echo "cluster-down: another cluster-up/down holds $LOCK" >&2; exit 1; }
fi

# Running (a zombie waiting for PID 1 to reap it counts as gone).
alive() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
wait_gone() { # seconds (may be fractional), pids...
  local n; n=$(awk -v s="$1" 'BEGIN { print int(s * 10) }'); shift
  local p any
  for ((i = 0; i < n; i++)); do
    any=
    for p in "$@"; do alive "$p" && any=1; done
    [ -z "$any" ] && return 0
    sleep 0.1
  done
}
pidfile() { [ -f "$RUN/pids/$1.pid" ] && cat "$RUN/pids/$1.pid"; }

# e2e/bin may be a symlink (shared between checkouts): the kernel reports
# the resolved path.
BIN_REAL=$(readlink -f "$BIN" 2>/dev/null || echo "$BIN")
KUBELET_REAL=$(readlink -f "${KUBELET:-/nonexistent}" 2>/dev/null || true)
# Is this PID one of this checkout's cluster binaries (by executable path)?
is_ours() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}  # a binary rebuilt under the running process
  case $exe in
    "$BIN"/etcd|"$BIN"/kube-apiserver|"$BIN"/kube-controller-manager|"$BIN"/echo-basic|"$BIN"/coredns) return 0 ;;
    "$BIN_REAL"/etcd|"$BIN_REAL"/kube-apiserver|"$BIN_REAL"/kube-controller-manager) return 0 ;;
    "$BIN_REAL"/echo-basic|"$BIN_REAL"/coredns) return 0 ;;
    "$TARGET"/*/switchyard-kubelet) return 0 ;;
  esac
  [ -n "$KUBELET_REAL" ] && [ "$exe" = "$KUBELET_REAL" ] && return 0
  return 1
}
# Is this PID a cluster component whose command line names run directory $2?
of_run() {
  local exe
  exe=$(readlink "/proc/$1/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}  # a binary rebuilt under the running process
  case ${exe##*/} in
    etcd|kube-apiserver|kube-controller-manager|switchyard-kubelet) ;;
    *) return 1 ;;
  esac
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -q "^$2/"
}
# Run directories of clusters other checkouts started here: from the command
# lines of kubelets on our bridge and of etcds on our client port.
foreign_runs() {
  local p exe args r
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    exe=${exe% (deleted)}
    args=$(tr '\0' '\n' <"$p/cmdline" 2>/dev/null) || continue
    r=
    case ${exe##*/} in
      switchyard-kubelet)
        echo "$args" | grep -qx -- "$BRIDGE" || continue
        r=$(echo "$args" | grep -A1 -x -- --run-dir | tail -n1) ;;
      etcd)
        echo "$args" | grep -q -- "127.0.0.1:${ETCD_PORT:-23790}$" || continue
        r=$(echo "$args" | grep -A1 -x -- --data-dir | tail -n1) ;;
      *) continue ;;
    esac
    r=${r%/*}
    case $r in */e2e/run) [ "$r" != "$RUN" ] && echo "$r" ;; esac
  done | sort -u
}
ours() {
  local p
  for p in /proc/[0-9]*; do { is_ours "${p#/proc/}" || of_run "${p#/proc/}" "$RUN"; } && echo "${p#/proc/}"; done
}
# A PID from a pid file, if it still runs one of our binaries (never a reused PID).
# (A kubelet binary from elsewhere, KUBELET=..., names our run directory.)
pidfile() {
  local p; [ -f "$RUN/pids/$1.pid" ] && p=$(cat "$RUN/pids/$1.pid") && { is_ours "$p" || of_run "$p" "$RUN"; } && echo "$p"
}

# 0. Another checkout's cluster: its kubelet first (it stops its Pods), then
#    the rest, each only if its command line names that run directory.
for other in $(foreign_runs); do
  echo "cluster-down: stopping the cluster started from $other" >&2
  ps_of() { local f=$other/pids/$1.pid p; [ -f "$f" ] && p=$(cat "$f") && of_run "$p" "$other" && echo "$p"; }
  if k=$(ps_of kubelet) && alive "$k"; then kill -TERM "$k" 2>/dev/null; wait_gone 12 "$k"; fi
  op=()
  for name in kubelet kube-controller-manager kube-apiserver etcd; do
    p=$(ps_of $name) && alive "$p" && op+=("$p") && kill -TERM "$p" 2>/dev/null
  done
  # Without pid files: whatever still names that run directory.
  for p in /proc/[0-9]*; do of_run "${p#/proc/}" "$other" && op+=("${p#/proc/}") && kill -TERM "${p#/proc/}" 2>/dev/null; done
  if [ ${#op[@]} -gt 0 ]; then
    wait_gone 3 "${op[@]}"
    for p in "${op[@]}"; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
    wait_gone 2 "${op[@]}"
  fi
  for f in "$other"/pods/*/*.pid; do
    [ -f "$f" ] || continue
    read -r p exe <"$f"
    [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] && kill -KILL "$p" 2>/dev/null
  done
  grep -E " $other/" /proc/mounts 2>/dev/null | awk '{print $2}' | sort -r | xargs -r -n1 umount -l 2>/dev/null
done

# 1. The kubelet first: on SIGTERM it stops its Pods and removes their netns.
if k=$(pidfile kubelet) && alive "$k"; then
  kill -TERM "$k" 2>/dev/null
  wait_gone 12 "$k"
fi
# 2. The control plane, all at once (its state is discarded anyway).
cp=()
for name in kubelet kube-controller-manager kube-apiserver etcd; do
  p=$(pidfile $name) && alive "$p" && cp+=("$p") && { kill -TERM -- "-$p" 2>/dev/null || kill -TERM "$p" 2>/dev/null; }
done
if [ ${#cp[@]} -gt 0 ]; then
  wait_gone 1.5 "${cp[@]}"
  for p in "${cp[@]}"; do alive "$p" && { kill -KILL -- "-$p" 2>/dev/null; kill -KILL "$p" 2>/dev/null; }; done
  wait_gone 2 "${cp[@]}"
fi
# 3. Fallback: anything of ours still running (lost pid files, crashed scripts).
left=$(ours)
if [ -n "$left" ]; then
  # shellcheck disable=SC2086
  kill -TERM $left 2>/dev/null; wait_gone 3 $left
  # shellcheck disable=SC2086
  kill -KILL $left 2>/dev/null; wait_gone 2 $left
fi
# 4. Pod processes: those recorded by the kubelet, then whatever runs in a
#    Pod network namespace (sy-*).
for f in "$RUN"/pods/*/*.pid; do
  [ -f "$f" ] || continue
  read -r p exe <"$f"
  [ "$(readlink "/proc/$p/exe" 2>/dev/null)" = "$exe" ] && kill -KILL "$p" 2>/dev/null
done
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^sy-'); do
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  ip netns delete "$ns" 2>/dev/null || umount -l "/run/netns/$ns" 2>/dev/null
  rm -f "/run/netns/$ns"
done
# 5. Links: Pod veths (syv*), then the bridge.
for v in $(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^syv'); do
  ip link delete "$v" 2>/dev/null
done
ip link show "$BRIDGE" >/dev/null 2>&1 && ip link delete "$BRIDGE" 2>/dev/null
# 6. Mounts: netns bind mounts left behind, anything mounted under the run dir.
grep -E " (/run|/var/run)/netns/sy-| $RUN/" /proc/mounts 2>/dev/null | awk '{print $2}' | sort -r \
  | xargs -r -n1 umount -l 2>/dev/null
if [ -f "$RUN/unmount-run-netns" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
  umount /run/netns 2>/dev/null
  while mountpoint -q /run/netns 2>/dev/null; do umount /run/netns 2>/dev/null || break; done
fi
# 7. Mount points the kubelet had to create on the host (only if still empty).
if [ -f "$RUN/created-paths" ]; then
  sort -ru "$RUN/created-paths" | while read -r p; do
    [ -n "$p" ] || continue
    if [ -d "$p" ]; then find "$p" -depth -type d -empty -delete 2>/dev/null
    elif [ -f "$p" ] && [ ! -s "$p" ]; then rm -f "$p"
    fi
  done
fi
rm -rf "$RUN"

# Report what is left (nothing, normally).
problems=()
[ -n "$(ours)" ] && problems+=("processes: $(ours | tr '\n' ' ')")
ip netns list 2>/dev/null | grep -q '^sy-' && problems+=("netns: $(ip netns list | grep '^sy-' | tr '\n' ' ')")
ip -o link show 2>/dev/null | grep -qE ': (syv|'"$BRIDGE"')' && problems+=("links left")
if [ ${#problems[@]} -gt 0 ]; then
  echo "cluster down INCOMPLETE: ${problems[*]}" >&2
  exit 1
fi
echo "cluster down ($(( $(date +%s) - t0 )) s)"
