#!/usr/bin/env bash
# Build an UNMODIFIED istiod (pilot-discovery) from the Go module proxy, once per machine.
#
#   ISTIOD_BIN="$(bash scripts/istiod/build.sh)"   # last stdout line = path of the binary
#   AGENT_BIN="$(bash scripts/istiod/build.sh pilot-agent)"   # the sidecar's istio-agent
#
# The argument names the command of istio.io/istio/pilot/cmd to build (default pilot-discovery);
# both share the module and the Go build cache, so the second costs a few minutes at most.
#
# Progress goes to stderr. The binary is cached under $AMESH_CACHE/istiod/<version>/ and kept
# when `pilot-discovery version` already reports the expected build, so a second run costs
# well under a second. Builds are serialized with flock, so parallel callers wait for each other.
#
# Env:
#   AMESH_CACHE            cache root (default $HOME/.cache/amesh)
#   ISTIO_MODULE_VERSION   istio.io/istio version (default: the one amesh is tested against)
#
# Cost on a 2-core machine: 10-25 min with cold Go caches (module download ~1 GB, build cache a
# few GB, linker peak RSS ~2 GB); under a minute when the Go build cache is warm (link only).
# Flags and tags match Istio's own Makefile (STANDARD_TAGS), so a warm cache from any other
# build of this version is reused.
set -euo pipefail

VER="${ISTIO_MODULE_VERSION:-v0.0.0-20260827124520-eed52ebb66ad}"
REV="${VER##*-}"
ROOT="${AMESH_CACHE:-$HOME/.cache/amesh}/istiod"
OUT="$ROOT/$VER"
CMD="${1:-pilot-discovery}"
case "$CMD" in pilot-discovery | pilot-agent) ;; *) echo "[istiod] ERROR: unknown command $CMD" >&2; exit 1 ;; esac
BIN="$OUT/$CMD"
WANT="1.31-dev-${REV:0:8}"

log() { echo "[istiod] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v go >/dev/null || die "go not found in PATH (need Go >= 1.26)"
mkdir -p "$OUT"
exec 9>"$ROOT/.lock"
flock 9

# `version -s` prints "client version: <buildVersion>".
if [[ -x "$BIN" ]] && "$BIN" version -s 2>/dev/null | grep -qx "client version: $WANT"; then
  log "$CMD $WANT already built: $BIN"
  echo "$BIN"
  exit 0
fi

# Build outside any module and isolated from the caller's Go settings (go.work, -mod=vendor).
export GOFLAGS=-buildvcs=false GOWORK=off CGO_ENABLED=0 GOOS=linux
unset GOARCH || true
TAGS=vtprotobuf,disable_pgv
LDFLAGS="-s -w -X istio.io/istio/pkg/version.buildVersion=$WANT"
LDFLAGS+=" -X istio.io/istio/pkg/version.buildGitRevision=$REV -X istio.io/istio/pkg/version.buildStatus=Clean"

log "building istio.io/istio/pilot/cmd/$CMD@$VER (unmodified)"
log "cold Go caches: 10-25 min on 2 cores; warm: under a minute"
t0=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# go install builds the module exactly as published (istio's go.mod has no replace directives).
# -x would be too chatty; print a heartbeat instead so a long build is visibly alive.
( while sleep 60; do log "... still building ($((SECONDS - t0))s)"; done ) &
beat=$!
trap 'kill $beat 2>/dev/null; rm -rf "$tmp"' EXIT
(cd "$tmp" && GOBIN="$tmp" go install -trimpath -tags="$TAGS" -ldflags "$LDFLAGS" \
  "istio.io/istio/pilot/cmd/$CMD@$VER") || die "go install failed"
mv -f "$tmp/$CMD" "$BIN"
log "built $BIN in $((SECONDS - t0))s ($(du -h "$BIN" | cut -f1))"
"$BIN" version -s 2>/dev/null >&2 || die "built binary does not run"
echo "$BIN"
