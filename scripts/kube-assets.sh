#!/usr/bin/env bash
# Prints the directory holding kube-apiserver and etcd for controller-runtime's envtest
# (use as KUBEBUILDER_ASSETS), building or installing them when missing:
#
#   export KUBEBUILDER_ASSETS="$(bash scripts/kube-assets.sh)"
#
# An existing KUBEBUILDER_ASSETS with both binaries is used as is; otherwise the
# project's cached build (scripts/kube/build.sh: kube-apiserver from the Go module proxy,
# Debian's etcd) is located or made. Idempotent; a second run takes well under a second.
set -euo pipefail
if [[ -n "${KUBEBUILDER_ASSETS:-}" && -x "$KUBEBUILDER_ASSETS/kube-apiserver" && -x "$KUBEBUILDER_ASSETS/etcd" ]]; then
  echo "$KUBEBUILDER_ASSETS"
  exit 0
fi
dir="$(bash "$(dirname "$0")/kube/build.sh" | tail -n1)"
[[ -x "$dir/kube-apiserver" && -x "$dir/etcd" ]] || { echo "kube-assets: no binaries in $dir" >&2; exit 1; }
echo "$dir"
