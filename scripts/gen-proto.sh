#!/usr/bin/env bash
# Regenerates the Go code of api/pluginsync from its .proto (committed; run after editing
# the .proto). protoc comes from Debian's protobuf-compiler; the Go plugins are built from
# the Go module proxy at pinned versions into a cache folder, so the output is reproducible.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.11          # google.golang.org/protobuf, matches go.mod
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2      # google.golang.org/grpc/cmd/protoc-gen-go-grpc
BIN="${GEN_BIN:-$HOME/.cache/amesh-gen/bin}"

if ! command -v protoc >/dev/null; then
  echo "installing protoc (Debian protobuf-compiler)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >&2
fi
mkdir -p "$BIN"
GOBIN="$BIN" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
GOBIN="$BIN" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"

PATH="$BIN:$PATH" protoc -I api \
  --go_out=api --go_opt=paths=source_relative \
  --go-grpc_out=api --go-grpc_opt=paths=source_relative \
  api/pluginsync/v1/pluginsync.proto
echo "generated api/pluginsync/v1" >&2
