// Package demo is `amesh demo`: an embedded xDS control plane serves a sample mesh in
// the exact shapes istiod sends (recorded from a real istiod), the amesh agent connects
// to it over gRPC on loopback exactly as it would to istiod, and writes APISIX's
// standalone file. The demo prints what it wrote, then pushes a live change (a canary
// weight shift and a pod going away) and shows the incremental update and the version
// bump. Nothing needs root or leaves loopback.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/status"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/version"
	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
)

// Options configure Run.
type Options struct {
	// Dir receives apisix.yaml (or apisix.json); empty means a temporary directory
	// that is removed at the end.
	Dir    string
	Format file.Format // default YAML
	// Protocol is "delta" (default, as istiod prefers) or "sotw".
	Protocol string
	// ChangeAfter is the pause between the first configuration and the live change.
	ChangeAfter time.Duration
	// Duration ends the demo that long after it started (0: run until ctx is done).
	Duration time.Duration
	// StatusAddr, when set, serves the status endpoints there (e.g. 127.0.0.1:15029).
	StatusAddr string
	// Out receives the human-readable story; Logger the agent's logs.
	Out    io.Writer
	Logger *slog.Logger
	// Timeout bounds each wait for the agent (first config, live change). Default 30s.
	Timeout time.Duration
	// ListenAddr is where the control plane listens; default a free loopback port.
	ListenAddr string
	// Command is how the user runs amesh ("amesh", "go run ./cmd/amesh"), for the
	// printed command that connects another agent; default "amesh".
	Command string
}

// Run runs the demo until ctx is done or opts.Duration has passed. It returns nil on
// such a normal end, and an error when a step fails.
func Run(ctx context.Context, opts Options) (err error) {
	if opts.Format == "" {
		opts.Format = file.YAML
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Duration)
		defer cancel()
	}
	out := opts.Out

	mesh, err := sampleMesh()
	if err != nil {
		return err
	}
	changed, err := liveChange(mesh)
	if err != nil {
		return err
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "amesh-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	path := filepath.Join(dir, "apisix."+string(opts.Format))

	// The control plane, serving the mesh as istiod would.
	cpCtx, stopCP := context.WithCancel(context.Background())
	defer stopCP()
	cp, err := startControlPlane(cpCtx, opts.ListenAddr, keepalivePolicy)
	if err != nil {
		return err
	}
	defer cp.Stop()
	v, err := cp.Push(ctx, mesh)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "Control plane: serving the sample mesh (%d listeners, %d route configs, %d clusters, %d endpoint sets; version %s) on %s\n",
		len(mesh.Listeners), len(mesh.RouteConfigs), len(mesh.Clusters), len(mesh.Endpoints), v, cp.Addr())

	// The agent: the same pipeline as libxds.so, with the file sink.
	boot, err := bootstrap.FromEnviron([]string{
		"AMESH_XDS_ADDRESS=" + cp.Addr(),
		"AMESH_XDS_PROTOCOL=" + firstNonEmpty(opts.Protocol, bootstrap.ProtocolDelta),
		"POD_NAME=productpage-v1-demo", "POD_NAMESPACE=default", "INSTANCE_IP=127.0.0.10",
		"ISTIO_META_CLUSTER_ID=Kubernetes", "AMESH_LABELS_FILE=/nonexistent",
	})
	if err != nil {
		return err
	}
	ccfg := client.ConfigFrom(boot)
	ccfg.Logger = opts.Logger
	cl, err := client.New(ccfg)
	if err != nil {
		return err
	}
	fsink, err := file.New(file.Options{Path: path, Format: opts.Format, Logger: opts.Logger})
	if err != nil {
		return err
	}
	sink := &notifySink{Sink: fsink, applied: make(chan struct{}, 1)}
	newTr := func() agent.Translator { return translate.New(translate.Options{}) }
	ag := agent.New(cl, newTr, sink, agent.Options{Logger: opts.Logger})

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	for _, f := range []func(context.Context) error{cl.Run, ag.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f(runCtx)
		}()
	}
	if opts.StatusAddr != "" {
		srv, err := status.Start(opts.StatusAddr, status.Handler(status.ForPipeline(version.String(), cl, ag), opts.Logger), opts.Logger)
		if err != nil {
			return err
		}
		defer srv.Close(context.Background())
		fmt.Fprintf(out, "Status server: http://%s/ (/metrics, /debug/apisix, /debug/report, /debug/xds)\n", srv.Addr())
	}
	fmt.Fprintf(out, "Agent: connected over %s xDS; writing %s\n\n", ccfg.Protocol, path)

	// 1. The first configuration.
	if err := waitFor(ctx, opts.Timeout, ag.ReadyC(), func() string {
		return fmt.Sprintf("the agent wrote no configuration (xDS: %s %s)", cl.Status().State, cl.Status().LastError)
	}); err != nil {
		return ignoreDone(ctx, err)
	}
	first := sink.Objects()
	fmt.Fprintf(out, "== APISIX configuration, version %d: %s\n\n", fsink.Version(), counts(first))
	writeSummary(out, first, ag.Report())

	// 2. The live change.
	select {
	case <-ctx.Done():
		return ignoreDone(ctx, ctx.Err())
	case <-time.After(opts.ChangeAfter):
	}
	// A fresh translator's first change set is its complete output.
	expected := translate.New(translate.Options{}).Translate(changed.Snapshot()).Changes.Put
	before, beforeVersion := sink.Objects(), fsink.Version()
	if v, err = cp.Push(ctx, changed); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n== Live change (control plane version %s): reviews canary v2 20%% -> %d%%, pod %s removed\n", v, canaryWeight, removedEndpoint)
	deadline := time.After(opts.Timeout)
	for !maps.EqualFunc(sink.Objects(), expected, bytesEqual) {
		select {
		case <-ctx.Done():
			return ignoreDone(ctx, ctx.Err())
		case <-deadline:
			return fmt.Errorf("the agent did not apply the live change within %s (xDS: %s; objects still different: %s)",
				opts.Timeout, cl.Status().State, differing(sink.Objects(), expected))
		case <-sink.applied:
		}
	}
	after := sink.Objects()
	fmt.Fprintf(out, "APISIX configuration version %d -> %d (%s); changed objects:\n", beforeVersion, fsink.Version(), counts(after))
	writeChanges(out, before, after)

	fmt.Fprintf(out, "\nThe file stays in sync with the control plane; Ctrl-C to stop.\n")
	fmt.Fprintf(out, "Connect an agent of your own to this control plane, in another terminal:\n  %s\n",
		AgentCommand(firstNonEmpty(opts.Command, "amesh"), cp.Addr(), ccfg.Protocol, filepath.Join(os.TempDir(), "amesh-agent", "apisix.yaml")))
	<-ctx.Done()
	return ignoreDone(ctx, ctx.Err())
}

// AgentCommand is the shell command that runs `amesh agent` (as command) against the
// control plane at addr, writing output. The identity is made up: the demo's control
// plane serves every node the same mesh, and INSTANCE_IP defaults to the host's address.
// No istio-agent writes a workload certificate here, so the agent watches none, as the
// demo's own translation has none.
func AgentCommand(command, addr string, protocol client.Protocol, output string) string {
	return fmt.Sprintf("POD_NAME=my-pod POD_NAMESPACE=default %s agent -xds-address %s -xds-protocol %s -output %s -status-addr off -workload-cert-dir off",
		command, addr, protocol, output)
}

// notifySink signals every successful Apply, so the demo waits on a channel rather
// than polling the file. Objects (the file sink's) are those of the last successful
// Apply.
type notifySink struct {
	*file.Sink
	applied chan struct{}
}

func (s *notifySink) Apply(ctx context.Context, cs apisix.ChangeSet) error {
	err := s.Sink.Apply(ctx, cs)
	if err == nil {
		select {
		case s.applied <- struct{}{}:
		default:
		}
	}
	return err
}

func waitFor(ctx context.Context, timeout time.Duration, ch <-chan struct{}, why func() string) error {
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		return fmt.Errorf("%s within %s", why(), timeout)
	}
}

// ignoreDone turns the end of the demo's context (Ctrl-C or -duration) into success.
func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return err
}

func counts(objects map[string][]byte) string {
	n := map[apisix.Kind]int{}
	for k := range objects {
		n[apisix.KindOf(k)]++
	}
	return fmt.Sprintf("%d routes, %d upstreams, %d stream routes", n[apisix.KindRoutes], n[apisix.KindUpstreams], n[apisix.KindStreamRoutes])
}

// differing names up to 3 keys whose objects differ between a and b.
func differing(a, b map[string][]byte) string {
	var keys []string
	for k := range a {
		if !bytesEqual(a[k], b[k]) {
			keys = append(keys, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > 3 {
		keys = append(keys[:3], "...")
	}
	return strings.Join(keys, ", ")
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}
