# amesh — see README.md. Every target works on a fresh Debian machine with Go 1.26.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/amesh-dev/amesh/internal/version.Version=$(VERSION)

.PHONY: all build amesh libxds controller controller-image demo test unit lint bench bench-istiod e2e proto generate clean

all: build

build: amesh libxds controller

amesh:
	$(GO) build -ldflags "$(LDFLAGS)" -o build/amesh ./cmd/amesh

libxds:
	CGO_ENABLED=1 $(GO) build -buildmode=c-shared -ldflags "$(LDFLAGS)" -o build/libxds.so ./cmd/libxds

controller:
	cd controller && $(GO) build -ldflags "$(LDFLAGS)" -o ../build/amesh-controller ./cmd/amesh-controller

# The controller's container image, ghcr.io/amesh-dev/amesh-controller:$(VERSION)
# (images are named $(IMAGE_REPO)/<component>:<version>; see controller/Dockerfile).
IMAGE_REPO ?= ghcr.io/amesh-dev
controller-image:
	docker build -f controller/Dockerfile -t $(IMAGE_REPO)/amesh-controller:$(VERSION) .

# Regenerate the pluginsync gRPC code and the controller's deepcopy/CRD/RBAC files.
proto:
	bash scripts/gen-proto.sh

generate: proto
	bash controller/hack/gen.sh

# The demo: an embedded control plane serving Istio-shaped xDS, the agent, a live change.
demo:
	$(GO) run ./cmd/amesh demo

# Everything CI runs: dependencies, lint, unit and integration tests (real nginx, real
# istiod, real kube-apiserver). Heavy builds are cached under $$HOME/.cache.
test:
	bash scripts/test.sh

# Only the fast Go tests of the main module.
unit:
	$(GO) test -race -shuffle=on ./...

lint:
	bash scripts/lint.sh

# Only the real-istiod tier (builds and caches kube-apiserver and istiod first).
e2e:
	bash scripts/kube/build.sh >/dev/null
	bash scripts/istiod/build.sh >/dev/null
	bash scripts/istiod/build.sh pilot-agent >/dev/null
	bash scripts/nginx-module/build.sh >/dev/null
	$(GO) test -race -count=1 -v ./test/istiod/...

# Scale benchmarks: fake control plane at 1,000 / 5,000 / 10,000 services (BENCHMARKS.md).
bench:
	$(GO) run ./bench

# The same plus real istiod at 1,000 and 5,000 services.
bench-istiod:
	bash scripts/kube/build.sh >/dev/null
	bash scripts/istiod/build.sh >/dev/null
	$(GO) run ./bench -istiod -istiod-services 1000,5000

clean:
	rm -rf build
