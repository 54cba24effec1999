package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/amesh-dev/amesh/internal/demo"
	"github.com/amesh-dev/amesh/internal/sink/file"
)

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", stderr)
	dir := fs.String("dir", "", "write apisix.yaml into this directory and keep it (default: a temporary directory, removed at exit)")
	format := fs.String("format", "yaml", "standalone file format: yaml or json")
	protocol := fs.String("xds-protocol", "delta", "xDS protocol between agent and control plane: delta or sotw")
	duration := fs.Duration("duration", 0, "stop after this long (default: run until Ctrl-C)")
	changeAfter := fs.Duration("change-after", 2*time.Second, "pause before the live change")
	statusAddr := fs.String("status-addr", "", "serve the status endpoints on this address, e.g. 127.0.0.1:15029 (default: off)")
	listen := fs.String("listen", "", "control plane address, e.g. 127.0.0.1:15010 (default: a free loopback port)")
	logLevel := logLevelFlag(fs, "warn")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: amesh demo [flags]")
		fmt.Fprintln(fs.Output(), "\nServes a sample Istio mesh from an embedded xDS control plane, runs the agent against it")
		fmt.Fprintln(fs.Output(), "over gRPC on loopback, shows the APISIX configuration it writes, then applies a live change.")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return fail(stderr, "demo", err)
	}
	f, err := file.ParseFormat(*format)
	if err != nil {
		return fail(stderr, "demo", err)
	}
	if *protocol != "delta" && *protocol != "sotw" {
		return fail(stderr, "demo", fmt.Errorf("bad -xds-protocol %q (want delta or sotw)", *protocol))
	}
	if *dir != "" {
		if err := os.MkdirAll(*dir, 0o755); err != nil {
			return fail(stderr, "demo", fmt.Errorf("-dir %s: %w", *dir, err))
		}
	}
	err = demo.Run(ctx, demo.Options{
		Dir: *dir, Format: f, Protocol: *protocol, Duration: *duration, ChangeAfter: *changeAfter,
		StatusAddr: *statusAddr, Out: stdout, Logger: log, ListenAddr: *listen, Command: invocation(),
	})
	if err != nil {
		return fail(stderr, "demo", err)
	}
	fmt.Fprintln(stdout, "Demo finished.")
	return 0
}

// invocation is how the user ran this binary, for commands the demo prints: "go run"
// builds into a temporary directory, whose path would be useless to repeat.
func invocation() string {
	if strings.Contains(os.Args[0], "go-build") {
		return "go run ./cmd/amesh"
	}
	return os.Args[0]
}
