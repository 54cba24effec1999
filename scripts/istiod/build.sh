#!/usr/bin/env bash
# Build UNMODIFIED Istio binaries from the Go module proxy, once per machine.
#
#   ISTIOD_BIN="$(bash scripts/istiod/build.sh)"     # last stdout line = path of pilot-discovery
#   AGENT_BIN="$(bash scripts/istiod/build.sh pilot-agent)"   # the sidecar's istio-agent
#   bash scripts/istiod/build.sh pilot-discovery pilot-agent   # one path per line, in this order
#
# Arguments name commands of istio.io/istio/pilot/cmd (default: pilot-discovery, istiod).
# Progress goes to stderr. Binaries are cached under $AMESH_CACHE/istiod/<version>/ and kept
# when `<binary> version -s` already reports the expected build, so a second run costs well
# under a second. The missing ones are built by one `go install`, which compiles the
# packages they share once (pilot-agent adds ~85 packages to pilot-discovery's ~1,770).
# Builds are serialized with flock, so parallel callers wait for each other.
#
# Env:
#   AMESH_CACHE            cache root (default $HOME/.cache/amesh)
#   ISTIO_MODULE_VERSION   istio.io/istio version (default: the one amesh is tested against)
#
# Cost on a 2-core machine: 10-25 min with cold Go caches (module download ~1 GB, build cache a
# few GB, linker peak RSS ~2 GB); under a minute when the Go build cache is warm (link only).
# Progress (packages compiled) is printed every minute. Flags and tags match Istio's own
# Makefile (STANDARD_TAGS), so a warm cache from any other build of this version is reused.
set -euo pipefail
source "$(dirname "$0")/../go-progress.sh"

VER="${ISTIO_MODULE_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
REV="${VER##*-}"
ROOT="${AMESH_CACHE:-$HOME/.cache/amesh}/istiod"
OUT="$ROOT/$VER"
WANT="1.31-dev-${REV:0:8}"
NAMES=("$@")
[[ ${#NAMES[@]} -gt 0 ]] || NAMES=(pilot-discovery)

log() { echo "[istiod] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH (need Go >= 1.26)"
for n in "${NAMES[@]}"; do
  [[ "$n" =~ ^[a-z][a-z0-9-]*$ ]] || die "bad command name $n (want e.g. pilot-discovery, pilot-agent)"
done
mkdir -p "$OUT"
exec 9>"$ROOT/.lock"
flock 9

# `version -s` prints "client version: <buildVersion>".
missing=()
for n in "${NAMES[@]}"; do
  if [[ -x "$OUT/$n" ]] && "$OUT/$n" version -s 2>/dev/null | grep -qx "client version: $WANT"; then
    log "$n $WANT already built: $OUT/$n"
  else
    missing+=("$n")
  fi
done

if [[ ${#missing[@]} -gt 0 ]]; then
  # Build outside any module and isolated from the caller's Go settings (go.work, -mod=vendor).
  export GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0 GOOS=linux
  unset GOARCH || true
  TAGS=vtprotobuf,disable_pgv
  LDFLAGS="-s -w -X istio.io/istio/pkg/version.buildVersion=$WANT"
  LDFLAGS+=" -X istio.io/istio/pkg/version.buildGitRevision=$REV -X istio.io/istio/pkg/version.buildStatus=Clean"
  pkgs=()
  for n in "${missing[@]}"; do pkgs+=("istio.io/istio/pilot/cmd/$n@$VER"); done

  log "building ${pkgs[*]} (unmodified)"
  log "cold Go caches: 10-25 min on 2 cores; warm: under a minute"
  t0=$SECONDS
  tmp="$(mktemp -d)"
  vlog="$tmp/go-v.log"
  go_progress_start istiod "" "$vlog"
  trap 'go_progress_stop; rm -rf "$tmp"' EXIT
  # go install builds the module exactly as published (istio's go.mod has no replace
  # directives); several pkg@version of one module build in one invocation.
  if ! (cd "$tmp" && GOBIN="$tmp" go install -v -trimpath -tags="$TAGS" -ldflags "$LDFLAGS" "${pkgs[@]}" 2>"$vlog"); then
    tail -n 40 "$vlog" >&2   # the errors come last
    die "go install failed"
  fi
  go_progress_stop
  log "compiled $(grep -cv '^go: ' "$vlog") packages (the others came from the Go build cache)"
  for n in "${missing[@]}"; do
    mv -f "$tmp/$n" "$OUT/$n"
    "$OUT/$n" version -s 2>/dev/null >&2 || die "built $n does not run"
    log "built $OUT/$n in $((SECONDS - t0))s ($(du -h "$OUT/$n" | cut -f1))"
  done
fi
for n in "${NAMES[@]}"; do echo "$OUT/$n"; done
