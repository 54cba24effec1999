#!/usr/bin/env bash
# Regenerates the controller's generated files (committed): deepcopy functions in
# api/v1alpha1, the CRD YAML in ../config/crd and the ClusterRole in ../config/rbac, with controller-gen built from the Go
# module proxy at a pinned version into a cache folder.
set -euo pipefail
cd "$(dirname "$0")/.."

CONTROLLER_TOOLS_VERSION=v0.23.0
BIN="${GEN_BIN:-$HOME/.cache/amesh-gen/bin}"
CG="$BIN/controller-gen-$CONTROLLER_TOOLS_VERSION"
if [[ ! -x "$CG" ]]; then
  mkdir -p "$BIN"
  tmp="$(mktemp -d)"
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "sigs.k8s.io/controller-tools/cmd/controller-gen@$CONTROLLER_TOOLS_VERSION"
  mv "$tmp/controller-gen" "$CG"
  rmdir "$tmp"
fi

"$CG" object paths=./api/...
"$CG" crd paths=./api/... output:crd:artifacts:config=../config/crd
"$CG" rbac:roleName=amesh-controller paths=./internal/... output:rbac:artifacts:config=../config/rbac
echo "generated api/v1alpha1/zz_generated.deepcopy.go, config/crd and config/rbac/role.yaml" >&2
