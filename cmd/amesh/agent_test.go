package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// setPodEnv gives the agent the identity the downward API would.
func setPodEnv(t *testing.T) {
	t.Setenv("POD_NAME", "productpage-v1-test")
	t.Setenv("POD_NAMESPACE", "default")
	t.Setenv("INSTANCE_IP", "127.0.0.10")
	t.Setenv("AMESH_LABELS_FILE", filepath.Join(t.TempDir(), "no-labels"))
	t.Setenv("AMESH_CONFIG_FILE", "")
	t.Setenv("AMESH_STATUS_ADDR", "")
	t.Setenv("AMESH_XDS_ADDRESS", "")
	t.Setenv("AMESH_WORKLOAD_CERT_DIR", filepath.Join(t.TempDir(), "no-certs"))
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stopAgent cancels the agent's context and checks that it exits cleanly.
func stopAgent(t *testing.T, cancel context.CancelFunc, done <-chan int, stderr *syncBuffer) {
	t.Helper()
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("agent exited %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop after cancel")
	}
}

// waitFile waits until the file at path satisfies ok (the agent writes it from
// another goroutine; each write is atomic, so every read is a complete file).
func waitFile(t *testing.T, path string, timeout time.Duration, ok func([]byte) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, err := os.ReadFile(path)
		if err == nil && ok(b) {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not reach the expected state within %s; last content:\n%s", path, timeout, b)
		}
		<-tick.C
	}
}

// TestAgent runs `amesh agent` against the fake control plane serving the recorded
// istiod resources, checks the file and the status server, then removes an endpoint
// and checks the file follows.
func TestAgent(t *testing.T) {
	setPodEnv(t)
	res, err := dump.LoadDir(istiodDir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := xdstest.New(xdstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	for typ, msgs := range map[string][]proto.Message{
		resource.ListenerType:    toMessages(res.Listeners),
		resource.RouteConfigType: toMessages(res.RouteConfigs),
		resource.ClusterType:     toMessages(res.Clusters),
		resource.EndpointType:    toMessages(res.Endpoints),
	} {
		srv.Set(typ, msgs...)
	}

	ctx, cancel := withContext(t)
	out := filepath.Join(t.TempDir(), "apisix.yaml")
	statusAddr := freeAddr(t)
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"agent", "-xds-address", srv.Addr(), "-xds-protocol", "sotw", "-output", out,
			"-status-addr", statusAddr, "-log-level", "warn", "-window", "5ms"}, stdout, stderr)
	}()
	stdout.waitFor(t, "keeping it in sync", 30*time.Second)

	first, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseConfig(t, first, "yaml")
	if len(cfg["routes"]) == 0 || !bytes.Contains(first, []byte(`"127.0.0.23"`)) {
		t.Fatalf("first file lacks routes or the endpoint 127.0.0.23:\n%s", first)
	}
	base := "http://" + statusAddr
	if code, _ := httpGet(t, base+"/ready"); code != 200 {
		t.Errorf("/ready = %d after the first write", code)
	}
	_, metrics := httpGet(t, base+"/metrics")
	for _, want := range []string{`amesh_xds_connection_state{state="connected"} 1`, `amesh_apisix_batches_total 1`, `amesh_apisix_config_version 1`, `amesh_xds_acks_total{type="cds"}`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if _, objs := httpGet(t, base+"/debug/apisix?kind=routes"); !strings.Contains(objs, `"/routes/`) {
		t.Errorf("/debug/apisix?kind=routes = %s", objs)
	}

	// A pod goes away: every load assignment loses 127.0.0.23.
	var changed []proto.Message
	for _, cla := range res.Endpoints {
		cla = proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
		for _, loc := range cla.GetEndpoints() {
			var kept []*endpointv3.LbEndpoint
			for _, lb := range loc.GetLbEndpoints() {
				if lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() != "127.0.0.23" {
					kept = append(kept, lb)
				}
			}
			loc.LbEndpoints = kept
		}
		changed = append(changed, cla)
	}
	srv.Set(resource.EndpointType, changed...)
	second := waitFile(t, out, 30*time.Second, func(b []byte) bool { return !bytes.Contains(b, []byte(`"127.0.0.23"`)) })
	if !bytes.Contains(second, []byte(`"127.0.0.22"`)) || !strings.HasSuffix(string(second), "#END\n") {
		t.Errorf("file after the endpoint removal:\n%s", second)
	}
	if _, metrics := httpGet(t, base+"/metrics"); !strings.Contains(metrics, "amesh_apisix_config_version 2\n") {
		t.Errorf("config version after one change is not 2:\n%s", metrics)
	}

	stopAgent(t, cancel, done, stderr)
	if s := stderr.String(); strings.Contains(s, "level=ERROR") {
		t.Errorf("agent logged errors:\n%s", s)
	}
}

func toMessages[M proto.Message](ms []M) []proto.Message {
	out := make([]proto.Message, len(ms))
	for i, m := range ms {
		out[i] = m
	}
	return out
}

func TestAgentUnreachable(t *testing.T) {
	setPodEnv(t)
	addr := freeAddr(t) // nothing listens there
	code, _, stderr := runCmd("agent", "-xds-address", addr, "-output", filepath.Join(t.TempDir(), "apisix.yaml"),
		"-status-addr", "off", "-startup-timeout", "1500ms", "-log-level", "error")
	assertOneLineError(t, code, stderr, "amesh agent: ", addr)
	if !strings.Contains(stderr, "cannot connect") && !strings.Contains(stderr, "connection refused") {
		t.Errorf("error does not say why: %s", stderr)
	}
}

func TestAgentBadConfig(t *testing.T) {
	setPodEnv(t)
	dir := t.TempDir()
	for _, c := range []struct {
		name    string
		args    []string
		mention string
	}{
		{"bad protocol", []string{"-xds-protocol", "grpc"}, "grpc"},
		{"bad address", []string{"-xds-address", "istiod-without-port"}, "istiod-without-port"},
		{"missing config file", []string{"-config", filepath.Join(dir, "nope.yaml")}, "nope.yaml"},
		{"output dir cannot be made", []string{"-xds-address", "127.0.0.1:1", "-output", filepath.Join(regularFile(t), "conf", "apisix.yaml")}, "conf"},
		{"bad format", []string{"-format", "toml"}, "toml"},
		{"bad window", []string{"-window", "forever"}, "forever"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, _, stderr := runCmd(append([]string{"agent", "-status-addr", "off"}, c.args...)...)
			assertOneLineError(t, code, stderr, "amesh agent: ", c.mention)
		})
	}
	t.Run("no pod identity", func(t *testing.T) {
		t.Setenv("POD_NAME", "")
		code, _, stderr := runCmd("agent", "-status-addr", "off")
		assertOneLineError(t, code, stderr, "amesh agent: ", "POD_NAME")
	})
	// Everything that is wrong is said at once, each on its own line, so that a user
	// does not fix one setting per attempt.
	t.Run("several problems", func(t *testing.T) {
		t.Setenv("POD_NAME", "")
		t.Setenv("POD_NAMESPACE", "")
		t.Setenv("INSTANCE_IP", "")
		out := filepath.Join(dir, "never", "apisix.yaml")
		code, _, stderr := runCmd("agent", "-status-addr", "off", "-window", "forever", "-xds-protocol", "grpc", "-output", out)
		want := "amesh agent: 3 problems:\n" +
			"  bootstrap: AMESH_XDS_PROTOCOL=\"grpc\": want \"delta\" or \"sotw\"\n" +
			"  bootstrap: POD_NAME and POD_NAMESPACE must be set: the pod's name and namespace (downward API metadata.name, metadata.namespace; any names work outside Kubernetes)\n" +
			"  config: AMESH_COALESCE_WINDOW=\"forever\": want a duration in (0, 1m], e.g. 20ms\n"
		if code != 1 || stderr != want {
			t.Errorf("exit %d, stderr:\n%s\nwant:\n%s", code, stderr, want)
		}
		if _, err := os.Stat(filepath.Dir(out)); err == nil {
			t.Error("the output directory was made although the configuration is wrong")
		}
	})
}

// regularFile returns the path of a new regular file (a directory cannot be made under it).
func regularFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
