// Command bench measures amesh at mesh scale: `go run ./bench` (or `make bench`) prints a
// table for meshes of 1,000 / 5,000 / 10,000 services (internal/meshgen: Istio's shapes,
// listener per port, vhost per service, 3 routes, 3 clusters of 10 endpoints each) served
// by the fake control plane (internal/xdstest) over gRPC on loopback, for amesh's pipeline
// (xDS client + translate + agent) and for the floor (xDS client + naive encode only):
//
//   - first: time from starting the client to the first complete config written
//   - heap (after GC) and RSS of the data-plane process, after the first config and updates
//   - dict: keys, key+value bytes and an estimate of nginx slab memory for them
//   - update p50/p99: one endpoint changed at the control plane → batch written (the
//     version bump), wall clock across the two processes
//   - identical push: writes and version bumps after the control plane resends everything
//
// With -istiod it also measures amesh against a real istiod (test/istiod/harness). With
// -plugins f it also measures amesh with amesh-controller configured (amesh+ctl): the
// controller's plugin configs as the agent's second input, selecting a fraction f of the services.
//
// Each data plane runs in a child process (this binary with -child) so that its heap and RSS
// are its own.
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	var (
		child    = flag.Bool("child", false, "internal: run as the measured data plane")
		mode     = flag.String("mode", "amesh", "child: amesh or floor")
		addr     = flag.String("addr", "", "child: xDS server address")
		proto    = flag.String("proto", "delta", "ADS protocol: delta or sotw")
		window   = flag.Duration("window", 20*time.Millisecond, "agent coalescing window")
		services = flag.String("services", "1000,5000,10000", "comma-separated mesh sizes")
		updates  = flag.Int("updates", 200, "one-endpoint updates per run (for p50/p99; with fewer than 100, p99 is the maximum)")
		istiod   = flag.Bool("istiod", false, "also measure against a real istiod (needs scripts/{kube,istiod}/build.sh)")
		istiodN  = flag.String("istiod-services", "1000", "mesh sizes for the real-istiod runs")
		plugins  = flag.Float64("plugins", 0, "also run amesh with a controller configured whose plugin configs select this fraction of the services (0: no such run)")
		ctl      = flag.Bool("controller", false, "child: give the agent a controller plugin input; the first stdin line is its config set")
		subsets  = flag.Int("subsets", 0, "fake control plane: DestinationRule subsets per service, each an extra cluster with its own 10 endpoints (0: the issue's shape, one cluster per service)")
	)
	flag.Parse()
	if *child {
		if err := runChild(*mode, *addr, *proto, *window, *ctl); err != nil {
			fmt.Fprintln(os.Stderr, "bench child:", err)
			os.Exit(1)
		}
		return
	}
	sizes, err := parseSizes(*services)
	if err != nil {
		fatal(err)
	}
	if *plugins < 0 || *plugins > 1 {
		fatal(fmt.Errorf("-plugins %v: want a fraction between 0 and 1", *plugins))
	}
	cfg := runConfig{proto: *proto, window: *window, updates: *updates, subsets: *subsets, plugins: *plugins}
	fmt.Printf("amesh scale benchmark: %s, ADS %s, window %v, %d updates per run, %d subset clusters per service (fake control plane)", machine(), cfg.proto, cfg.window, cfg.updates, cfg.subsets)
	if cfg.plugins > 0 {
		fmt.Printf(", controller plugin configs on %g of the services (%s)", cfg.plugins, ctlMode)
	}
	fmt.Print("\n\n")
	var rows []row
	for _, n := range sizes {
		r, err := fakeRuns(n, cfg)
		if err != nil {
			fatal(err)
		}
		rows = append(rows, r...)
		fmt.Fprintf(os.Stderr, "bench: %d services done\n", n)
	}
	if *istiod {
		isizes, err := parseSizes(*istiodN)
		if err != nil {
			fatal(err)
		}
		for _, n := range isizes {
			r, err := istiodRun(n, cfg)
			if err != nil {
				fatal(err)
			}
			rows = append(rows, r...)
		}
	}
	printTable(os.Stdout, rows, cfg)
}

func parseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad mesh size %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}
