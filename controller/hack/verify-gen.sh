#!/usr/bin/env bash
# Fails if the committed generated files (deepcopy, CRD, ClusterRole, plugin-sync
# protobuf) differ from what the generators produce now. For CI; builds the pinned
# generators once (cached under $HOME/.cache/amesh-gen).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash controller/hack/gen.sh
bash scripts/gen-proto.sh
paths=(controller/api config/crd config/rbac/role.yaml api/pluginsync)
if ! git diff --exit-code -- "${paths[@]}"; then
  echo "generated files are stale: run controller/hack/gen.sh and scripts/gen-proto.sh" >&2
  exit 1
fi
if [[ -n "$(git status --porcelain --untracked-files=all -- "${paths[@]}")" ]]; then
  git status --short -- "${paths[@]}" >&2
  echo "generators produced files that are not committed" >&2
  exit 1
fi
echo "generated files are up to date"
