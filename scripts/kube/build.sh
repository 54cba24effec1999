#!/usr/bin/env bash
# Provide a kube-apiserver (built from k8s.io/kubernetes via the Go module proxy) and an etcd
# (Debian's etcd-server, installed with apt when missing) for amesh's real-istiod test tier.
#
#   KUBE_ASSETS_DIR="$(bash scripts/kube/build.sh)"   # last stdout line: dir with both binaries
#
# Progress goes to stderr. Binaries are cached under $AMESH_CACHE/kube/k8s-<version>/ and kept
# when `kube-apiserver --version` already matches, so a second run costs well under a second.
# Builds are serialized with flock. The directory works as KUBEBUILDER_ASSETS for envtest, too.
#
# Env:
#   AMESH_CACHE    cache root (default $HOME/.cache/amesh)
#   K8S_VERSION    kube-apiserver version (default 1.37.2)
#
# Cost on a 2-core machine: 10-25 min with cold Go caches (~2,100 packages to compile; +1 GB
# module cache, +3 GB build cache, linker peak RSS ~2.3 GB); ~15 s when the Go build cache is
# warm (link only). Progress (packages compiled) is printed every minute.
set -euo pipefail
source "$(dirname "$0")/../go-progress.sh"

K8S_VERSION="${K8S_VERSION:-1.37.2}"
K8S_VERSION="${K8S_VERSION#v}"
ROOT="${AMESH_CACHE:-$HOME/.cache/amesh}/kube"
BIN="$ROOT/k8s-$K8S_VERSION"
SRC="$ROOT/src/k8s-$K8S_VERSION/kube-apiserver"

log() { echo "[kube] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH (need Go >= 1.26)"
IFS=. read -r major minor patch <<<"$K8S_VERSION"
[[ "$major" == 1 && -n "$minor" && -n "$patch" ]] || die "bad K8S_VERSION=$K8S_VERSION"
# k8s.io/kubernetes requires its staging modules (k8s.io/api, ...) as v0.0.0 and replaces them
# with ./staging; the published copies of the same release are v0.<minor>.<patch>.
STAGING="v0.$minor.$patch"

mkdir -p "$BIN" "$SRC"
exec 9>"$ROOT/.lock"
flock 9

export GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0 GOOS=linux
unset GOARCH || true

# ---- etcd: Debian's etcd-server (3.4.x) is enough for a test API server.
if ! command -v etcd >/dev/null; then
  log "installing Debian etcd-server with apt"
  command -v apt-get >/dev/null || die "etcd missing and apt-get not available"
  apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >&2 \
    || die "apt-get install etcd-server failed"
  # The tests start their own etcd; the system's must not start at the next boot.
  bash "$(dirname "$0")/../no-autostart.sh" etcd || die "cannot disable etcd.service"
fi
ln -sfn "$(command -v etcd)" "$BIN/etcd"
log "etcd: $("$BIN/etcd" --version 2>/dev/null | head -1)"

# ---- kube-apiserver
if [[ -x "$BIN/kube-apiserver" ]] && "$BIN/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes v$K8S_VERSION"; then
  log "kube-apiserver v$K8S_VERSION already built"
else
  log "building kube-apiserver v$K8S_VERSION; cold Go caches: 10-25 min on 2 cores, warm: ~15 s"
  t0=$SECONDS
  # kubernetes' go.mod (not its source) tells us the go/godebug lines and the staging modules.
  tmp="$(mktemp -d)"   # outside any module, so no go.mod is touched
  gomod="$(cd "$tmp" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" \
           | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
  rmdir "$tmp"
  [[ -f "$gomod" ]] || die "cannot download k8s.io/kubernetes@v$K8S_VERSION"
  mapfile -t staging < <(awk '/^[[:space:]]*k8s\.io\/[^ ]+ v0\.0\.0$/ {print $1}' "$gomod" | sort -u)
  ((${#staging[@]} > 10)) || die "no staging modules found in $gomod"
  # A wrapper main module: `go install k8s.io/kubernetes/cmd/kube-apiserver@v...` refuses modules
  # with replace directives, so we require kubernetes and pin its staging modules ourselves.
  {
    printf 'module amesh.test/kube-apiserver\n\n%s\n\n' "$(grep -m1 '^go [0-9]' "$gomod")"
    grep -m1 '^godebug ' "$gomod" || true
    printf '\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$K8S_VERSION"
    for m in "${staging[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$STAGING"; done
    printf ')\n'
  } > "$SRC/go.mod"
  # The same main as kubernetes' cmd/kube-apiserver.
  cat > "$SRC/main.go" <<'GO'
// Command kube-apiserver is kubernetes' cmd/kube-apiserver, built from the published module.
package main

import (
	"os"
	_ "time/tzdata"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() { os.Exit(cli.Run(app.NewAPIServerCommand())) }
GO
  rm -f "$SRC/go.sum"
  ldflags="-s -w"
  for kv in "gitVersion=v$K8S_VERSION" gitMajor=1 "gitMinor=$minor" gitTreeState=clean \
            "gitCommit=module-v$K8S_VERSION"; do
    ldflags+=" -X k8s.io/component-base/version.$kv -X k8s.io/client-go/pkg/version.$kv"
  done
  # -mod=mod resolves and downloads exactly what the build compiles. `go mod tidy` also
  # fetched the modules that only tests of dependencies need (about 40 % more module
  # zips); the binary is the same byte for byte.
  total="$(cd "$SRC" && go list -mod=mod -deps . | wc -l)" || die "go list failed in $SRC"
  log "$total packages in kube-apiserver's build graph"
  vlog="$(mktemp)"
  go_progress_start kube "$total" "$vlog"
  trap 'go_progress_stop; rm -f "$vlog"' EXIT
  if ! (cd "$SRC" && go build -mod=mod -v -trimpath -ldflags "$ldflags" -o "$BIN/kube-apiserver.tmp" . 2>"$vlog"); then
    tail -n 40 "$vlog" >&2   # the errors come last
    die "go build failed"
  fi
  go_progress_stop
  log "compiled $(grep -cv '^go: ' "$vlog") packages (the others came from the Go build cache)"
  mv -f "$BIN/kube-apiserver.tmp" "$BIN/kube-apiserver"
  log "built $BIN/kube-apiserver in $((SECONDS - t0))s ($(du -h "$BIN/kube-apiserver" | cut -f1))"
fi
"$BIN/kube-apiserver" --version >&2 || die "kube-apiserver does not run"
echo "$BIN"
