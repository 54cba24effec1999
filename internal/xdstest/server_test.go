package xdstest

import (
	"context"
	"io"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fetch opens a SotW stream, asks for all clusters and returns the names in the
// first response, or the stream error.
func fetch(t *testing.T, addr string) ([]string, error) {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	// A Send that returns io.EOF means the server already ended the stream (e.g. a
	// rejected token); gRPC delivers the stream's status through Recv then.
	if err := s.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType}); err != nil && err != io.EOF {
		return nil, err
	}
	resp, err := s.Recv()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, a := range resp.GetResources() {
		names = append(names, a.GetTypeUrl())
	}
	return names, nil
}

func TestServeRestartAndRecord(t *testing.T) {
	srv, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Set(resource.ClusterType, EDSCluster("a"), StaticCluster("b"))
	if got, err := fetch(t, srv.Addr()); err != nil || len(got) != 2 {
		t.Fatalf("fetch: %v %v", got, err)
	}
	addr := srv.Addr()
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != addr {
		t.Errorf("restart moved from %s to %s", addr, srv.Addr())
	}
	if err := srv.Remove(resource.ClusterType, "b"); err != nil {
		t.Fatal(err)
	}
	if got, err := fetch(t, srv.Addr()); err != nil || len(got) != 1 {
		t.Fatalf("after restart and remove: %v %v", got, err)
	}
	if reqs := srv.Requests(); len(reqs) != 2 || reqs[0].Stream == reqs[1].Stream || reqs[0].TypeURL() != resource.ClusterType {
		t.Errorf("requests %+v", reqs)
	}
	if rs := srv.Responses(); len(rs) != 2 || len(rs[1].Names) != 1 || rs[1].Names[0] != "a" {
		t.Errorf("responses %+v", rs)
	}
}

func TestTokenRejected(t *testing.T) {
	srv, err := New(Options{Token: "t"})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, err = fetch(t, srv.Addr())
	if status.Code(err) != codes.Unauthenticated {
		t.Errorf("stream without token: %v, want Unauthenticated", err)
	}
}
