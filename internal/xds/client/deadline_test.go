package client_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"

	"github.com/amesh-dev/amesh/internal/xds/client"
)

// deadlineADS reports whether each Delta stream it accepts carries a deadline.
type deadlineADS struct {
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	deadline chan bool
}

func (d deadlineADS) DeltaAggregatedResources(s discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	_, has := s.Context().Deadline()
	d.deadline <- has
	<-s.Context().Done()
	return nil
}

// A caller's deadline (the demo's -duration, a test's timeout) ends the stream from the
// client's side only: sent to the server as grpc-timeout, it would make the server
// cancel the stream at the same instant, and the client could take that for a lost
// stream and log a reconnect as it stops.
func TestStreamCarriesNoDeadline(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ads := deadlineADS{deadline: make(chan bool, 1)}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, ads)
	go srv.Serve(ln)
	defer srv.Stop()

	c, err := client.New(client.Config{Server: ln.Addr().String(), Node: testNode(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	select {
	case has := <-ads.deadline:
		if has {
			t.Error("the server sees the caller's deadline on the stream")
		}
	case <-time.After(mustHappen):
		t.Fatal("no stream reached the server")
	}
	cancel()
	<-done
}
