#!/bin/sh
# The sidecar's entrypoint: APISIX's config.yaml comes from the injection template
# (AMESH_APISIX_CONFIG, rendered from the amesh chart's values); without it the image's default
# stays. `apisix init` turns it into nginx.conf; nginx then runs in the foreground as PID 1, so
# the image's STOPSIGNAL (SIGQUIT: graceful shutdown) reaches it.
#
# AMESH_SOCKET_DIR is where the HTTP server listens on unix sockets behind the capture ports (a
# volume that outlives the container): nginx removes its sockets when it stops, but not after a
# crash, and then could not listen there again.
set -eu
APISIX_HOME=/usr/local/apisix
if [ -n "${AMESH_APISIX_CONFIG:-}" ]; then
	printf '%s\n' "$AMESH_APISIX_CONFIG" > "$APISIX_HOME/conf/config.yaml"
fi
if [ -n "${AMESH_SOCKET_DIR:-}" ]; then
	rm -f "$AMESH_SOCKET_DIR"/*.sock
fi
cd "$APISIX_HOME"
/usr/bin/apisix init
exec /usr/local/openresty/bin/openresty -p "$APISIX_HOME" -g 'daemon off;'
