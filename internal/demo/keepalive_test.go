package demo

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"

	"github.com/amesh-dev/amesh/internal/xds/client"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var statusURL = regexp.MustCompile(`Status server: (http://[0-9.:]+)/`)

// metric returns the line of the Prometheus text at url that starts with name.
func metric(t *testing.T, url, name string) string {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, name) {
			return l
		}
	}
	t.Fatalf("no %s in /metrics:\n%s", name, b)
	return ""
}

// TestDemoStaysConnected leaves the demo running for five minutes, as a user who
// started it would: the agent's keepalive pings (every 30s) must not make the control
// plane close the stream, which grpc.NewServer's default enforcement does after three
// pings (every ~90s of quiet).
func TestDemoStaysConnected(t *testing.T) {
	t.Parallel()
	const quiet = 5 * time.Minute
	out := &notifyBuffer{changed: make(chan struct{}, 1)}
	logs := &lockedBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{Dir: t.TempDir(), Out: out, ChangeAfter: time.Millisecond, StatusAddr: "127.0.0.1:0",
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	}()
	waitLiveChange(t, out, done, 60*time.Second)
	m := statusURL.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no status server address in:\n%s", out.String())
	}
	url := m[1]

	end := time.After(quiet)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-end:
			running = false
		case err := <-done:
			t.Fatalf("demo ended early: %v", err)
		case <-tick.C:
		}
		if got := metric(t, url, "amesh_xds_reconnects_total"); got != "amesh_xds_reconnects_total 0" {
			t.Fatalf("the agent reconnected while the demo sat idle: %s\nlogs:\n%s", got, logs)
		}
	}
	if got := metric(t, url, `amesh_xds_connection_state{state="connected"}`); !strings.HasSuffix(got, " 1") {
		t.Errorf("after %s: %s", quiet, got)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") {
			t.Errorf("warning while idle: %s", l)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
}

// TestKeepaliveEnforcement shows that the control plane's keepalive policy is what
// keeps the stream up: a client pinging at gRPC's shortest interval (10s) stays
// connected to the demo's control plane, and is sent away by a server with
// grpc.NewServer's default policy within a few pings.
func TestKeepaliveEnforcement(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name      string
		opts      []grpc.ServerOption
		reconnect bool
	}{{"demo policy", []grpc.ServerOption{keepalivePolicy}, false}, {"grpc default", nil, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cp, err := startControlPlane(ctx, "", c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer cp.Stop()
			mesh, err := sampleMesh()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cp.Push(ctx, mesh); err != nil {
				t.Fatal(err)
			}
			cl, err := client.New(client.Config{
				Server: cp.Addr(), Node: &corev3.Node{Id: "sidecar~127.0.0.10~demo.default~default.svc.cluster.local"},
				KeepaliveTime: 10 * time.Second, Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			runDone := make(chan error, 1)
			go func() { runDone <- cl.Run(ctx) }()
			defer func() {
				cancel()
				<-runDone
			}()
			// Strikes start at the second ping (10s apart, the default policy wants 5
			// minutes) and the third strike ends the stream: 30-40s after connecting.
			// Five pings without it show the policy holds.
			deadline := time.Now().Add(55 * time.Second)
			for time.Now().Before(deadline) && cl.Status().Reconnects == 0 {
				time.Sleep(500 * time.Millisecond)
			}
			st := cl.Status()
			if got := st.Reconnects > 0; got != c.reconnect {
				t.Errorf("reconnected: %v, want %v (last error %q)", got, c.reconnect, st.LastError)
			}
			if c.reconnect && !strings.Contains(st.LastError, "too_many_pings") {
				t.Errorf("the stream ended with %q, not the server's GOAWAY too_many_pings", st.LastError)
			}
		})
	}
}
