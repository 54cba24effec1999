#!/usr/bin/env bash
# Installs what the nginx integration tests (test/nginx) need: Debian's nginx with
# lua-nginx-module and lua-resty-core (the FFI shdict API libxds.so writes through), and
# lua-cjson for the harness's JSON responses, luajit for the lint's Lua syntax check. The
# capture tests (test/capture) add nginx-dev (the installed nginx's headers and configure, to
# build the original-destination module), its stream module, a C compiler, and iproute2 and
# iptables for network namespaces with Istio's rules. Idempotent: installs only what is missing.
set -euo pipefail

pkgs=(nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-cjson luajit2
	nginx-dev libnginx-mod-stream gcc make iproute2 iptables)

missing=()
for p in "${pkgs[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "install-test-deps: all present (${pkgs[*]})"
	exit 0
fi

echo "install-test-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends keeps the footprint small; policy-rc.d stops the package
# from starting a system nginx that would hold port 80.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
	$SUDO chmod +x /usr/sbin/policy-rc.d
	trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The tests start their own nginx; the system's must not start at the next boot.
if [[ " ${missing[*]} " == *" nginx "* ]]; then
	bash "$(dirname "$0")/no-autostart.sh" nginx
fi
