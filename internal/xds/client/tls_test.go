package client_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// TLS verified against the mesh root, with a bearer token from a file: a wrong token
// is rejected with a clear error, and the rotated (re-read) file is picked up on the
// next attempt.
func TestTLSWithToken(t *testing.T) {
	srv := newServer(t, xdstest.Options{TLS: true, Token: "good-token"})
	basicMesh(t, srv)
	tokenFile := filepath.Join(t.TempDir(), "istio-token")
	if err := os.WriteFile(tokenFile, []byte("stale-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := startClient(t, srv, client.Delta, func(cfg *client.Config) {
		cfg.TLS = &client.TLSConfig{CAFile: srv.CAFile(), TokenFile: tokenFile}
	})
	waitStatus(t, c, func(st client.Status) bool { return strings.Contains(st.LastError, "rejected our credentials") })
	if st := c.Status(); st.Ready {
		t.Fatal("ready with a rejected token")
	}

	// Rotate the token: the next attempt reads the new file.
	if err := os.WriteFile(tokenFile, []byte("good-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
}

// A server certificate that does not chain to the configured root is a TLS error.
func TestTLSUnknownAuthority(t *testing.T) {
	srv := newServer(t, xdstest.Options{TLS: true})
	other := newServer(t, xdstest.Options{TLS: true}) // a different CA
	c := startClient(t, srv, client.SotW, func(cfg *client.Config) {
		cfg.TLS = &client.TLSConfig{CAFile: other.CAFile()}
	})
	waitStatus(t, c, func(st client.Status) bool { return strings.Contains(st.LastError, "TLS failure") })
}

// Nothing listening at the address: the error says so.
func TestWrongAddress(t *testing.T) {
	srv := newServer(t, xdsOpts())
	srv.Stop()
	c := startClient(t, srv, client.Delta, nil)
	waitStatus(t, c, func(st client.Status) bool { return strings.Contains(st.LastError, "cannot connect") })
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]client.Config{
		"no server":   {Node: testNode()},
		"no node":     {Server: "127.0.0.1:1"},
		"bad proto":   {Server: "127.0.0.1:1", Node: testNode(), Protocol: "rest"},
		"missing CA":  {Server: "127.0.0.1:1", Node: testNode(), TLS: &client.TLSConfig{CAFile: "/nonexistent/root.pem"}},
		"tls on unix": {Server: "unix:///tmp/x", Node: testNode(), TLS: &client.TLSConfig{}},
	} {
		if _, err := client.New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}
