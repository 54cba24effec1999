package client_test

import (
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
)

// The client reaches istio-agent's local xDS proxy over a unix socket. The test
// bridges a socket to the fake server, as istio-agent does to istiod.
func TestUnixSocket(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	sock := filepath.Join(t.TempDir(), "XDS")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := lis.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				in.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(out, in); out.Close() }()
			go func() { defer wg.Done(); io.Copy(in, out); in.Close() }()
		}
	}()
	c := startClient(t, srv, client.SotW, func(cfg *client.Config) { cfg.Server = "unix://" + sock })
	waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
}
