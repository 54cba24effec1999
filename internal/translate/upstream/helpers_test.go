package upstream

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// mustValid encodes u and checks it against APISIX's schema.
func mustValid(t testing.TB, u *apisix.Upstream) []byte {
	t.Helper()
	b, err := apisix.Encode(u)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.Validate(apisix.Key(apisix.KindUpstreams, u.ID), b); err != nil {
		t.Fatalf("invalid upstream: %v\n%s", err, b)
	}
	return b
}

// ep is an endpoint ip:port with a weight (0: unset) and health status.
func ep(ip string, port uint32, weight uint32, hs corev3.HealthStatus) *endpointv3.LbEndpoint {
	e := &endpointv3.LbEndpoint{
		HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
			}}},
		}},
		HealthStatus: hs,
	}
	if weight > 0 {
		e.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return e
}

func group(priority, weight uint32, eps ...*endpointv3.LbEndpoint) *endpointv3.LocalityLbEndpoints {
	g := &endpointv3.LocalityLbEndpoints{Priority: priority, LbEndpoints: eps}
	if weight > 0 {
		g.LoadBalancingWeight = wrapperspb.UInt32(weight)
	}
	return g
}

func cla(name string, groups ...*endpointv3.LocalityLbEndpoints) *resource.LoadAssignment {
	return resource.FromCLA(claProto(name, groups...))
}

// claProto is cla as the Envoy message, for a cluster's inline load_assignment.
func claProto(name string, groups ...*endpointv3.LocalityLbEndpoints) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: groups}
}

// hasEntry reports whether es has an entry for field with severity sev whose message
// contains substr.
func hasEntry(es []report.Entry, field string, sev report.Severity, substr string) bool {
	for _, e := range es {
		if e.Field == field && e.Severity == sev && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}
