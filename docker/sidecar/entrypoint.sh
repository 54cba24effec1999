#!/bin/sh
# The sidecar's entrypoint: APISIX's config.yaml comes from the injection template
# (AMESH_APISIX_CONFIG, rendered from the amesh chart's values); without it the image's default
# stays. `apisix init` turns it into nginx.conf; nginx then runs in the foreground as PID 1, so
# the image's STOPSIGNAL (SIGQUIT: graceful shutdown) reaches it.
set -eu
APISIX_HOME=/usr/local/apisix
if [ -n "${AMESH_APISIX_CONFIG:-}" ]; then
	printf '%s\n' "$AMESH_APISIX_CONFIG" > "$APISIX_HOME/conf/config.yaml"
fi
cd "$APISIX_HOME"
/usr/bin/apisix init
exec /usr/local/openresty/bin/openresty -p "$APISIX_HOME" -g 'daemon off;'
