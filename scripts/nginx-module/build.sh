#!/usr/bin/env bash
# Build amesh's nginx modules (nginx/original_dst, nginx/upstream_tls) as dynamic modules
# for the installed Debian nginx, once per nginx version and module source.
#
#   MOD_DIR="$(bash scripts/nginx-module/build.sh)"   # last stdout line: dir with the .so files
#
# The directory holds ngx_http_amesh_original_dst_module.so,
# ngx_stream_amesh_original_dst_module.so (the stream one needs Debian's
# ngx_stream_module.so loaded before it), ngx_http_amesh_upstream_tls_module.so and
# ngx_stream_amesh_upstream_tls_module.so (which needs it too).
# Progress goes to stderr.
#
# A dynamic module loads only into the nginx it was configured for: same version, same
# --with-compat signature. Debian's nginx-dev ships that nginx's configure, headers and flags
# (conf_flags) and is pinned to the installed nginx's exact version, so the module is built
# with them. Builds are cached under $AMESH_CACHE/nginx-module/<nginx version>-<source hash>/
# and serialized with flock; a cached build costs a few milliseconds.
#
# Env:
#   AMESH_CACHE    cache root (default $HOME/.cache/amesh)
set -euo pipefail

cd "$(dirname "$0")/../.."
MOD="$PWD/nginx/original_dst"
TLSMOD="$PWD/nginx/upstream_tls"
SRC=/usr/share/nginx/src
SOS=(ngx_http_amesh_original_dst_module.so ngx_stream_amesh_original_dst_module.so ngx_http_amesh_upstream_tls_module.so ngx_stream_amesh_upstream_tls_module.so)

all_built() { local so; for so in "${SOS[@]}"; do [[ -f "$OUT/$so" ]] || return 1; done; }
log() { echo "[nginx-module] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ -f "$SRC/conf_flags" ]] || die "$SRC/conf_flags missing: install nginx-dev (bash scripts/install-test-deps.sh)"
ngx_ver="$(dpkg-query -W -f='${Version}' nginx 2>/dev/null)" || die "Debian's nginx is not installed"
dev_ver="$(dpkg-query -W -f='${Version}' nginx-dev 2>/dev/null)" || die "nginx-dev is not installed"
[[ "$ngx_ver" == "$dev_ver" ]] || die "nginx $ngx_ver and nginx-dev $dev_ver differ: a module built from these headers would not load"

hash="$(cat "$0" "$MOD"/config "$MOD"/*.[ch] "$TLSMOD"/config "$TLSMOD"/*.[ch] | sha256sum | cut -c1-12)"
ROOT="${AMESH_CACHE:-$HOME/.cache/amesh}/nginx-module"
OUT="$ROOT/$ngx_ver-$hash"
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9

if all_built; then
  log "already built for nginx $ngx_ver: $OUT"
  echo "$OUT"
  exit 0
fi

log "building for nginx $ngx_ver from $MOD"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cp -r "$SRC/." "$tmp/"
# shellcheck disable=SC1091
source "$tmp/conf_flags"   # NGX_CONF_FLAGS: the installed nginx's configure arguments
(
  cd "$tmp"
  # Stream is a dynamic module in Debian, not in conf_flags; configuring it only makes its
  # headers part of the build. Debian's is built with stream SSL (nginx -V), which the
  # stream module's TLS peer variables need. The compiler flags are Debian's hardening
  # flags.
  ./configure "${NGX_CONF_FLAGS[@]}" --with-stream=dynamic --with-stream_ssl_module \
    --with-cc-opt="-g -O2 -fstack-protector-strong -Wformat -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2" \
    --with-ld-opt="-Wl,-z,relro -Wl,-z,now -fPIC" \
    --add-dynamic-module="$MOD" --add-dynamic-module="$TLSMOD" >configure.log 2>&1 || { tail -30 configure.log >&2; exit 1; }
  # Only this addon's targets: nginx-dev has headers, not the sources of nginx's own modules.
  make -f objs/Makefile -j2 "${SOS[@]/#/objs/}" >make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
) || die "build failed"
mkdir -p "$OUT.tmp"
cp "${SOS[@]/#/$tmp/objs/}" "$OUT.tmp/"
rm -rf "$OUT" && mv "$OUT.tmp" "$OUT"
log "built $OUT"
echo "$OUT"
