#!/bin/sh
# Helm post-renderer for Dagster's chart with deploy/k8s/values.yaml: reads the rendered manifests on
# stdin, writes them on stdout with deploy/k8s/post-render/kustomization.yaml applied (the daemon's
# JSON log option). Needs kubectl (its built-in kustomize). Used as
#   helm upgrade --install quantlake dagster/dagster ... -f deploy/k8s/values.yaml --post-renderer deploy/k8s/post-render.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/post-render/kustomization.yaml" "$work/"
cat > "$work/chart.yaml"
kubectl kustomize "$work"
