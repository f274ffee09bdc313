#!/usr/bin/env bash
# `make run`: echo backends + switchyard standalone (with a supervised Envoy)
# on examples/quickstart, then the curl lines to try. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${CARGO_TARGET_DIR:-target}/release
ENVOY=.venv/bin/envoy
[ -x "$ENVOY" ] || { echo "Envoy not installed: run 'make envoy'" >&2; exit 1; }
RUN_DIR=${RUN_DIR:-$(mktemp -d /tmp/switchyard-run.XXXXXX)}
mkdir -p "$RUN_DIR"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'echo; echo "Stopping."; exit 130' INT TERM

for port in 8080 9001 9002 18000 18001 19000; do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "127.0.0.1:$port is already in use (another 'make run'?); stop that first." >&2
    exit 1
  fi
done

"$BIN/switchyard-echo" --listen 127.0.0.1:9001 --name echo-a >"$RUN_DIR/echo-a.log" 2>&1 & pids+=($!)
"$BIN/switchyard-echo" --listen 127.0.0.1:9002 --name echo-b >"$RUN_DIR/echo-b.log" 2>&1 & pids+=($!)
"$BIN/switchyard" standalone --config-dir examples/quickstart --status-dir "$RUN_DIR/status" \
  --envoy "$ENVOY" --envoy-work-dir "$RUN_DIR/envoy" 2>"$RUN_DIR/switchyard.log" & pids+=($!)

echo "Starting Switchyard + Envoy (logs: $RUN_DIR/switchyard.log) ..."
for _ in $(seq 1 150); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Host: a.example.com' http://127.0.0.1:8080/ || true)
  [ "$code" = 200 ] && break
  sleep 0.2
done
if [ "${code:-}" != 200 ]; then
  echo "Gateway did not come up; last log lines:" >&2
  tail -20 "$RUN_DIR/switchyard.log" >&2
  exit 1
fi
cat <<MSG

Switchyard is serving examples/quickstart through Envoy on 127.0.0.1:8080.
Try (each answer is JSON naming the backend that served it):

  curl -s -H 'Host: a.example.com' http://127.0.0.1:8080/          # host → echo-a
  curl -s http://127.0.0.1:8080/b/hello                             # path prefix → echo-b
  curl -s -H 'x-canary: true' http://127.0.0.1:8080/                # header → echo-b
  for i in \$(seq 20); do curl -s http://127.0.0.1:8080/split | grep -o 'echo-.'; done | sort | uniq -c   # 80/20
  curl -si http://127.0.0.1:8080/old/page | grep -i -E '^(HTTP|location)'   # 301 → /new/page
  curl -si http://127.0.0.1:8080/api/users | grep -i -E 'x-served-by|"path"'  # rewritten to /users

Status of every object:   ls $RUN_DIR/status/*/*/
Switchyard admin:         curl -s http://127.0.0.1:18001/debug/nodes
Envoy admin:              curl -s http://127.0.0.1:19000/config_dump | head
Edit examples/quickstart/*.yaml and re-run a curl: changes apply in milliseconds.
Press Ctrl-C to stop.
MSG
# Runs until Ctrl-C, or until one of the processes exits.
wait -n "${pids[@]}" || true
echo "A process exited; stopping. Logs are in $RUN_DIR." >&2
