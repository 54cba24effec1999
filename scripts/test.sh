#!/usr/bin/env bash
# The test command (`make test`): installs what the tests need, then runs every tier.
# Heavy builds (istiod, kube-apiserver) are cached under $HOME/.cache, so only the
# first run on a machine pays for them.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
t0=$SECONDS
step() { echo; echo "== [$(date +%H:%M:%S) +$((SECONDS - t0))s] $*"; }

step "test dependencies (nginx, lua-nginx-module, etcd)"
bash scripts/install-test-deps.sh

step "kube-apiserver and etcd (cached under \$HOME/.cache/amesh/kube; cold build 10-25 min)"
bash scripts/kube/build.sh >/dev/null

step "istiod, unmodified (cached under \$HOME/.cache/amesh/istiod; cold build 10-25 min)"
bash scripts/istiod/build.sh >/dev/null

step "pilot-agent, unmodified (same module and Go build cache as istiod; a few minutes after it)"
bash scripts/istiod/build.sh pilot-agent >/dev/null

step "original-destination nginx module for Debian's nginx (cached under \$HOME/.cache/amesh/nginx-module)"
bash scripts/nginx-module/build.sh >/dev/null

step "lint (gofmt, go vet, staticcheck)"
bash scripts/lint.sh

step "the commands the READMEs and docs/ show (scripts/check-docs.sh)"
bash scripts/check-docs.sh

step "main module: unit tests, real nginx (test/nginx), real istiod (test/istiod), all -race"
go test -race -shuffle=on -count=1 -timeout 20m ./...

step "controller module: envtest against a real kube-apiserver + etcd (-race)"
KUBEBUILDER_ASSETS="$(bash scripts/kube-assets.sh)"
export KUBEBUILDER_ASSETS
(cd controller && go test -race -shuffle=on -count=1 -timeout 20m ./...)

step "install module: the Helm chart, Istio's injection with its template, server-side dry run (-race)"
(cd test/install && go test -race -shuffle=on -count=1 -timeout 20m ./...)
