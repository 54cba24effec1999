#!/usr/bin/env bash
# Leaves the given services, which the test scripts just installed with apt, disabled:
#
#   bash scripts/no-autostart.sh nginx etcd
#
# Debian's postinst enables a package's service (policy-rc.d only keeps it from starting
# during the install), so on a systemd machine the next boot would start a system nginx
# on port 80 and an etcd on 2379. The tests run their own instances and need neither.
# `systemctl disable` works on the unit files without a running systemd (and disables
# the SysV links too); a later upgrade of the package sees the service disabled and
# keeps it so.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
for svc in "$@"; do
  unit="$svc.service"
  if command -v systemctl >/dev/null; then
    $SUDO systemctl disable --quiet "$unit" >/dev/null 2>&1 || true
  elif command -v update-rc.d >/dev/null; then
    $SUDO update-rc.d "$svc" disable >/dev/null 2>&1 || true
  fi
  if compgen -G "/etc/systemd/system/*.wants/$unit" >/dev/null; then
    echo "no-autostart: $unit is still enabled" >&2
    exit 1
  fi
  echo "no-autostart: $unit installed, not enabled" >&2
done
