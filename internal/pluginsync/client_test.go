package pluginsync

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/internal/overlay"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeController streams the sets sent on its channel to whoever watches.
type fakeController struct {
	pb.UnimplementedPluginSyncServer
	sets    chan *pb.ConfigSet
	watches chan watchCall
}

type watchCall struct {
	req  *pb.WatchRequest
	auth []string
}

func (f *fakeController) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.ConfigSet]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.watches <- watchCall{req: req, auth: md.Get("authorization")}
	for {
		select {
		case s := <-f.sets:
			if err := stream.Send(s); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// startController serves a fake controller on addr ("" = a new port).
func startController(t *testing.T, addr string) (*fakeController, *grpc.Server, string) {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeController{sets: make(chan *pb.ConfigSet), watches: make(chan watchCall, 10)}
	srv := grpc.NewServer()
	pb.RegisterPluginSyncServer(srv, f)
	go srv.Serve(lis) //nolint:errcheck // returns when stopped
	return f, srv, lis.Addr().String()
}

func set(version uint64, names ...string) *pb.ConfigSet {
	s := &pb.ConfigSet{Version: version}
	for _, n := range names {
		s.Configs = append(s.Configs, &pb.PluginConfig{Namespace: "ns", Name: n, Generation: 1,
			Plugins: []*pb.Plugin{{Name: "cors", ConfigJson: []byte(`{"max_age":5}`)}}})
	}
	return s
}

// waitSet waits until the client publishes a set for which ok holds.
func waitSet(t *testing.T, c *Client, ok func(overlay.Set) bool) overlay.Set {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		s, changed := c.Current()
		if ok(s) {
			return s
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("no matching set; last %+v", s)
		}
	}
}

func version(v uint64) func(overlay.Set) bool {
	return func(s overlay.Set) bool { return s.Version == v }
}

func waitWatch(t *testing.T, f *fakeController) watchCall {
	t.Helper()
	select {
	case w := <-f.watches:
		return w
	case <-time.After(20 * time.Second):
		t.Fatal("client did not open a stream")
		return watchCall{}
	}
}

func run(t *testing.T, opts Options) *Client {
	t.Helper()
	opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	c := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c
}

func TestReceivesSetsWithIdentityAndToken(t *testing.T) {
	f, srv, addr := startController(t, "")
	defer srv.Stop()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("sa-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := run(t, Options{Addr: addr, Namespace: "default", Pod: "reviews-1", TokenFile: tok})
	w := waitWatch(t, f)
	if w.req.GetNamespace() != "default" || w.req.GetPod() != "reviews-1" {
		t.Errorf("request %v, want default/reviews-1", w.req)
	}
	if len(w.auth) != 1 || w.auth[0] != "Bearer sa-token" {
		t.Errorf("authorization %q, want Bearer sa-token", w.auth)
	}
	f.sets <- set(1, "a", "b")
	got := waitSet(t, c, version(1))
	if len(got.Configs) != 2 || got.Configs[1].Name != "b" || string(got.Configs[0].Plugins[0].Config) != `{"max_age":5}` {
		t.Errorf("set %+v", got)
	}
	// Versions are compared as numbers: 10 is newer than 9, 9 after 10 is ignored.
	f.sets <- set(9, "a")
	waitSet(t, c, version(9))
	f.sets <- set(10, "x")
	f.sets <- set(9, "stale")
	f.sets <- set(11, "y")
	got = waitSet(t, c, func(s overlay.Set) bool { return s.Version >= 10 })
	if got.Version == 10 {
		got = waitSet(t, c, func(s overlay.Set) bool { return s.Version != 10 })
	}
	if got.Version != 11 || got.Configs[0].Name != "y" {
		t.Errorf("after a stale set: %+v, want version 11", got)
	}
}

func TestKeepsLastSetAndReconnects(t *testing.T) {
	// The client starts before any controller exists.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c := run(t, Options{Addr: addr, Namespace: "ns", Pod: "p"})

	f, srv, _ := startController(t, addr)
	waitWatch(t, f)
	f.sets <- set(5, "a")
	waitSet(t, c, version(5))
	if !c.Connected() {
		t.Error("not connected after receiving a set")
	}

	// The controller goes away: the set stays.
	_, changed := c.Current()
	srv.Stop()
	select {
	case <-changed:
		t.Fatal("set changed after the controller stopped")
	case <-time.After(100 * time.Millisecond):
	}
	if s, _ := c.Current(); s.Version != 5 || len(s.Configs) != 1 {
		t.Fatalf("set after controller stop %+v", s)
	}
	for deadline := time.Now().Add(20 * time.Second); c.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("still connected after the controller stopped")
		}
	}

	// A new controller (versions restart) is picked up on a new stream.
	f, srv, _ = startController(t, addr)
	defer srv.Stop()
	waitWatch(t, f)
	f.sets <- set(1)
	if s := waitSet(t, c, version(1)); len(s.Configs) != 0 {
		t.Errorf("set from the new controller %+v", s)
	}
}

func TestConvertDropsInvalidPlugins(t *testing.T) {
	msg := &pb.ConfigSet{Version: 3, Configs: []*pb.PluginConfig{{
		Namespace: "ns", Name: "c", Priority: 2, Scope: &pb.Scope{Ports: []uint32{9080}, Direction: pb.Direction_DIRECTION_INBOUND},
		Plugins: []*pb.Plugin{
			{Name: "cors", ConfigJson: []byte(`[1]`)},
			{Name: "", ConfigJson: []byte(`{}`)},
			{Name: "gzip"},
			{Name: "limit-count", ConfigJson: []byte(`{"count":1}`), Override: true},
		},
	}}}
	s, errs := Convert(msg)
	if len(errs) != 2 {
		t.Errorf("errors %v, want 2", errs)
	}
	want := overlay.Config{Namespace: "ns", Name: "c", Priority: 2, Scope: overlay.Scope{Ports: []uint32{9080}},
		Plugins: []overlay.Plugin{{Name: "gzip", Config: []byte(`{}`)}, {Name: "limit-count", Config: []byte(`{"count":1}`), Override: true}}}
	if len(s.Configs) != 1 || s.Version != 3 {
		t.Fatalf("set %+v", s)
	}
	got := s.Configs[0]
	if got.Name != want.Name || got.Priority != want.Priority || got.Scope.Ports[0] != 9080 || len(got.Plugins) != 2 ||
		got.Scope.Direction != overlay.DirectionInbound ||
		got.Plugins[0].Name != "gzip" || string(got.Plugins[0].Config) != "{}" || !got.Plugins[1].Override {
		t.Errorf("config %+v, want %+v", got, want)
	}
}
