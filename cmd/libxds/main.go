// Command libxds is built with -buildmode=c-shared into libxds.so, the library APISIX's
// config_xds.lua loads (in its privileged agent process) to get its configuration
// from an Istio control plane through nginx shared dicts:
//
//	go build -buildmode=c-shared -o build/libxds.so ./cmd/libxds
//
// It exports one function, `void initial(void *config_zone, void *version_zone)`,
// which returns at once and runs the agent (xDS client → translation → shared-dict
// writes) in the background; see run.go. Configuration comes from the environment
// (internal/config/README.md).
//
// Host safety, since this runs inside nginx: every goroutine recovers panics; the
// package never uses os/signal, so the Go runtime installs handlers only for the
// synchronous signals, SIGPIPE and its preemption signal (SIGURG), and forwards
// those that arrive on nginx's own threads to nginx's handlers; SIGHUP, SIGQUIT,
// SIGTERM, SIGUSR1, SIGWINCH and SIGCHLD stay nginx's. Nothing is written to stdout.
package main

import "C"

import (
	"unsafe"
)

// initial is called by APISIX (or the test harness) with the zones of the shared
// dicts "xds-config" and "xds-config-version". A later call replaces the running
// agent with one writing to the new zones.
//
//export initial
func initial(configZone, versionZone unsafe.Pointer) {
	defer func() { _ = recover() }() // nothing may unwind into nginx
	start(configZone, versionZone)
}

func main() {}
