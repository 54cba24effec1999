#!/usr/bin/env bash
# gofmt, go vet and staticcheck over every Go module of the repository, and a syntax check
# of the Lua files (luajit -bl, when luajit is installed: scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
STATICCHECK_VERSION=v0.8.2
fail=0
for mod in $(git ls-files '*go.mod' | xargs -n1 dirname); do
  echo "== lint $mod"
  unformatted=$(cd "$mod" && gofmt -l $(git ls-files '*.go' | grep -v '^vendor/') 2>/dev/null || true)
  if [[ -n "$unformatted" ]]; then echo "gofmt: needs formatting:"; echo "$unformatted"; fail=1; fi
  (cd "$mod" && go vet ./...) || fail=1
  (cd "$mod" && go run honnef.co/go/tools/cmd/staticcheck@$STATICCHECK_VERSION ./...) || fail=1
done
if command -v luajit >/dev/null; then
  echo "== lint lua"
  for f in $(git ls-files '*.lua'); do
    luajit -bl "$f" >/dev/null || { echo "luajit: $f does not compile"; fail=1; }
  done
fi
exit $fail
