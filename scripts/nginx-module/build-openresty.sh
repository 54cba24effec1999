#!/usr/bin/env bash
# Build amesh's nginx modules (nginx/original_dst, nginx/upstream_tls) as dynamic modules
# for an OpenResty build such as APISIX's runtime, from the source of the same OpenResty
# release.
#
#   MOD_DIR="$(bash scripts/nginx-module/build-openresty.sh OPENRESTY_SRC [OUT])"
#
# OPENRESTY_SRC is an unpacked OpenResty release (openresty-X.Y.Z.W/ with configure and
# bundle/); it is configured in a copy and left as it is. The last stdout line is the directory
# holding ngx_http_amesh_original_dst_module.so, ngx_stream_amesh_original_dst_module.so,
# ngx_http_amesh_upstream_tls_module.so and ngx_stream_amesh_upstream_tls_module.so:
# OUT, or a cache directory $AMESH_CACHE/nginx-module/<release>-<hash> keyed by the module's
# source and the release's nginx headers (which hold every structure the modules use). Progress
# goes to stderr.
#
# A dynamic module loads only into an nginx of the same version configured with a compatible
# signature: --with-compat (which apisix-runtime uses) makes the signature independent of the
# other options, so only the release must match. --with-stream gives the stream module its
# headers, --with-stream_ssl_module its TLS peer variables (apisix-runtime has stream SSL),
# --with-http_v2_module lets HTTP/2 streams share one lookup. Only the modules are compiled
# (`make modules`), not nginx; OpenResty's configure still builds its LuaJIT.
#
# Env:
#   AMESH_CACHE    cache root (default $HOME/.cache/amesh)
#   JOBS           parallel jobs (default: nproc)
set -euo pipefail

here="$(cd "$(dirname "$0")/../.." && pwd)"
MOD="$here/nginx/original_dst"
TLSMOD="$here/nginx/upstream_tls"
SOS=(ngx_http_amesh_original_dst_module.so ngx_stream_amesh_original_dst_module.so ngx_http_amesh_upstream_tls_module.so ngx_stream_amesh_upstream_tls_module.so)
JOBS="${JOBS:-$(nproc)}"

all_built() { local so; for so in "${SOS[@]}"; do [[ -f "$OUT/$so" ]] || return 1; done; }
log() { echo "[nginx-module] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 OPENRESTY_SRC [OUT]"
SRC="$(cd "$1" && pwd)" || die "no directory $1"
[[ -x "$SRC/configure" && -d "$SRC/bundle" ]] || die "$SRC is not an unpacked OpenResty release (configure, bundle/)"
ngx_src=("$SRC"/bundle/nginx-[0-9]*)
[[ ${#ngx_src[@]} -eq 1 && -d "${ngx_src[0]}" ]] || die "$SRC/bundle has no single nginx-* directory"
release="$(basename "$SRC")"

if [[ $# -eq 2 ]]; then
  OUT="$2"
else
  hash="$( (cat "$here/scripts/nginx-module/build-openresty.sh" "$MOD"/config "$MOD"/*.[ch] "$TLSMOD"/config "$TLSMOD"/*.[ch]; find "${ngx_src[0]}/src" -name '*.h' | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-12)"
  ROOT="${AMESH_CACHE:-$HOME/.cache/amesh}/nginx-module"
  OUT="$ROOT/$release-$hash"
  mkdir -p "$ROOT"
  exec 9>"$ROOT/.lock"
  flock 9
  if all_built; then
    log "already built for $release: $OUT"
    echo "$OUT"
    exit 0
  fi
fi

log "building for $release from $MOD (about two minutes: OpenResty's configure builds LuaJIT)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$SRC" && tar cf - --exclude=./build .) | tar xf - -C "$tmp"
(
  cd "$tmp"
  ./configure --with-compat --with-stream --with-stream_ssl_module --with-http_v2_module \
    --add-dynamic-module="$MOD" --add-dynamic-module="$TLSMOD" -j"$JOBS" >configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }
  cd build/nginx-[0-9]*
  make -j"$JOBS" modules >make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
) || die "build failed"
mkdir -p "$OUT.tmp"
for so in "${SOS[@]}"; do
  cp "$tmp"/build/nginx-[0-9]*/objs/"$so" "$OUT.tmp/"
done
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
log "built $OUT"
echo "$OUT"
