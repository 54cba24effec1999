package client_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// bigRouteConfig is a valid route configuration named name of more than size bytes.
func bigRouteConfig(name, cluster string, size int) *routev3.RouteConfiguration {
	rc := xdstest.RouteConfig(name, cluster)
	vh := rc.VirtualHosts[0]
	for i := 0; proto.Size(rc) <= size; i++ {
		v := proto.Clone(vh).(*routev3.VirtualHost)
		v.Name = fmt.Sprintf("svc-%d.default.svc.cluster.local:9080", i)
		v.Domains = []string{fmt.Sprintf("svc-%d.default.svc.cluster.local", i), fmt.Sprintf("svc-%d", i)}
		rc.VirtualHosts = append(rc.VirtualHosts, v)
	}
	return rc
}

// A response over AMESH_XDS_MAX_MESSAGE_BYTES is refused as gRPC refuses any message
// over its receive limit (ResourceExhausted, the stream ends); the client says which
// variable to raise, keeps the last good state and publishes nothing for it, and takes
// the next response that fits.
func TestResponseOverMaxMessageSize(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			boot, err := bootstrap.FromEnviron([]string{
				"AMESH_XDS_ADDRESS=" + srv.Addr(), "AMESH_XDS_PROTOCOL=" + string(p), "AMESH_XDS_MAX_MESSAGE_BYTES=64KiB",
				"POD_NAME=app-1", "POD_NAMESPACE=default", "INSTANCE_IP=127.0.0.10", "AMESH_LABELS_FILE=/nonexistent",
			})
			if err != nil {
				t.Fatal(err)
			}
			c := startClient(t, srv, p, func(cfg *client.Config) {
				from := client.ConfigFrom(boot)
				cfg.MaxMessageBytes = from.MaxMessageBytes
			})
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			// Just under the limit passes (the response wraps the resource in a few
			// bytes more), so the limit is the variable's and not gRPC's 4 MiB default.
			fits := bigRouteConfig("9080", "outbound|9080||b", 60<<10)
			srv.Set(resource.RouteConfigType, fits)
			fitted := waitSnapshot(t, c, func(s *resource.State) bool { return s.RouteConfigs["9080"] != first.RouteConfigs["9080"] })

			before := dumpOf(t, c)
			srv.Set(resource.RouteConfigType, bigRouteConfig("9080", "outbound|9080||a", 64<<10))
			deadline := time.Now().Add(mustHappen)
			for st := c.Status(); st.Reconnects == before.Reconnects || st.LastError == ""; st = c.Status() {
				if time.Now().After(deadline) {
					t.Fatalf("the client did not refuse the oversized response: %+v", st)
				}
				time.Sleep(10 * time.Millisecond)
			}
			st := dumpOf(t, c)
			for _, want := range []string{"ResourceExhausted", "larger than max", bootstrap.EnvMaxMessageBytes} {
				if !strings.Contains(st.LastError, want) {
					t.Errorf("last error %q does not mention %q", st.LastError, want)
				}
			}
			if st.Seq != before.Seq {
				t.Errorf("a snapshot was published after the oversized response (seq %d -> %d)", before.Seq, st.Seq)
			}
			if st.Types[resource.RouteConfigType].ResourceVersion["9080"] != before.Types[resource.RouteConfigType].ResourceVersion["9080"] {
				t.Error("the oversized route configuration's version was accepted")
			}

			// A response that fits again is taken: the refusal only set the client back.
			srv.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", "outbound|9080||b"))
			s := waitSnapshot(t, c, func(s *resource.State) bool {
				return s.RouteConfigs["9080"] != fitted.RouteConfigs["9080"]
			})
			if s.Clusters["outbound|9080||a"] != first.Clusters["outbound|9080||a"] {
				t.Error("state unrelated to the refused response changed")
			}
		})
	}
}
