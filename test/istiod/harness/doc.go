// Package harness runs a real control plane on loopback for amesh's end-to-end tests and
// benchmarks: Debian's etcd, a kube-apiserver built from k8s.io/kubernetes, and an unmodified
// istiod (pilot-discovery) in Kubernetes mode. Binaries come from scripts/kube/build.sh and
// scripts/istiod/build.sh; nothing is downloaded here except the istio module's CRD manifest
// (through the Go module cache).
//
// It deliberately talks to the API server with plain REST+JSON (net/http and sigs.k8s.io/yaml)
// instead of client-go, so no Kubernetes client library enters amesh's main module.
//
// Every process listens on 127.0.0.1 only, on ports picked at start, so several harnesses (and
// other engineers' tests) can run side by side.
package harness
