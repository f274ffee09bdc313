#!/usr/bin/env bash
# Copies the CRDs the Helm chart installs into deploy/helm/switchyard/crds/
# (Helm reads only files inside the chart): the Gateway API v1.6.1
# experimental channel exactly as deploy/crds/experimental/kustomization.yaml
# lists it, plus Switchyard's own CRDs (deploy/crds/switchyard/*.yaml) when
# that directory exists. e2e/tests/test_deploy.py fails when the copies are
# stale; run this after changing deploy/crds.
#
# Helm installs crds/ on `helm install` only: it never upgrades or deletes
# them (docs/install.md#upgrades-and-crds).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(dirname "$HERE")/helm/switchyard/crds
rm -rf "$OUT"
mkdir -p "$OUT"
sed -n 's/^- \(.*\.yaml\)$/\1/p' "$HERE/experimental/kustomization.yaml" | while read -r f; do
  cp "$HERE/experimental/$f" "$OUT/$f"
done
if [ -d "$HERE/switchyard" ]; then
  for f in "$HERE"/switchyard/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || cp "$f" "$OUT/$(basename "$f")"
  done
fi
echo "chart CRDs updated: $(ls "$OUT" | wc -l) files in ${OUT#"$(dirname "$(dirname "$HERE")")/"}"
