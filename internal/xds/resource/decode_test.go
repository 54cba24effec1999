package resource_test

import (
	"errors"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// clientOpts decode as the xDS client does: with one interning table for every
// resource.
var clientOpts = resource.DecodeOptions{Intern: resource.NewInterner()}

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestDecodeValid(t *testing.T) {
	for _, tc := range []struct {
		typeURL  string
		msg      proto.Message
		name     string
		wantDeps []string
	}{
		{resource.ClusterType, xdstest.EDSCluster("outbound|9080||a"), "outbound|9080||a", []string{"outbound|9080||a"}},
		{resource.ClusterType, xdstest.StaticCluster("BlackHoleCluster"), "BlackHoleCluster", nil},
		{resource.EndpointType, xdstest.Endpoints("outbound|9080||a", "10.0.0.1:9080"), "outbound|9080||a", nil},
		{resource.RouteConfigType, xdstest.RouteConfig("9080", "c"), "9080", nil},
		{resource.ListenerType, xdstest.Listener("l", 9080, []string{"9080", "8080", "9080"}, "default"), "l", []string{"8080", "9080", "default"}},
		{resource.ListenerType, xdstest.ListenerWithFilters("inbound", 15006, xdstest.HCMInline("inbound|19080||", "inbound|19080||")), "inbound", nil},
	} {
		d, err := resource.Decode(tc.typeURL, mustAny(t, tc.msg), "")
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		want := resource.AsStored(tc.msg)
		if d.Name != tc.name || !resource.Equal(d.Msg, want) || strings.Join(d.Deps, ",") != strings.Join(tc.wantDeps, ",") {
			t.Errorf("%s: got name %q deps %v", tc.name, d.Name, d.Deps)
		}
		if b, _ := proto.Marshal(tc.msg); d.Hash != resource.Hash(mustAny(t, tc.msg).GetValue()) || len(b) == 0 {
			t.Errorf("%s: hash is not the hash of the bytes", tc.name)
		}
	}
}

// An EDS cluster with a service_name different from its name depends on that name.
func TestClusterEDSName(t *testing.T) {
	c := xdstest.EDSCluster("outbound|9080||a")
	c.EdsClusterConfig.ServiceName = "svc-a"
	d, err := resource.Decode(resource.ClusterType, mustAny(t, c), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Deps) != 1 || d.Deps[0] != "svc-a" {
		t.Errorf("deps %v, want [svc-a]", d.Deps)
	}
}

// Errors name the resource and the problem.
func TestDecodeErrors(t *testing.T) {
	broken := xdstest.ListenerWithFilters("0.0.0.0_8080", 8080, xdstest.HCMWithoutRoutes())
	emptyRDS := xdstest.Listener("l", 80, []string{""}, "")
	defaultBroken := xdstest.Listener("d", 80, nil, "")
	defaultBroken.DefaultFilterChain = &listenerv3.FilterChain{Name: "fallback", Filters: []*listenerv3.Filter{xdstest.HCMWithoutRoutes()}}
	for _, tc := range []struct {
		name     string
		typeURL  string
		any      *anypb.Any
		announce string
		want     []string
	}{
		{"no routes", resource.ListenerType, mustAny(t, broken), "", []string{`listener "0.0.0.0_8080"`, "filter chain chain", "RouteSpecifier"}},
		{"default chain", resource.ListenerType, mustAny(t, defaultBroken), "", []string{`listener "d"`, "filter chain fallback"}},
		{"empty rds name", resource.ListenerType, mustAny(t, emptyRDS), "", []string{`listener "l"`, "rds without route_config_name"}},
		{"invalid cluster", resource.ClusterType, mustAny(t, xdstest.InvalidCluster("c")), "", []string{`cluster "c"`, "ConnectTimeout"}},
		{"wrong type", resource.ClusterType, mustAny(t, xdstest.RouteConfig("r", "c")), "r", []string{`cluster "r"`, "RouteConfiguration"}},
		{"name mismatch", resource.ClusterType, mustAny(t, xdstest.StaticCluster("a")), "b", []string{`cluster "b"`, `named "a"`}},
		{"garbage", resource.EndpointType, &anypb.Any{TypeUrl: resource.EndpointType, Value: []byte{0xff, 0xff}}, "x", []string{`cluster load assignment "x"`}},
		{"no name", resource.RouteConfigType, mustAny(t, xdstest.RouteConfig("", "c")), "", []string{"<unnamed>", "no name"}},
		{"nil", resource.ListenerType, nil, "l", []string{`listener "l"`, "no resource body"}},
	} {
		_, err := resource.Decode(tc.typeURL, tc.any, tc.announce)
		var re *resource.Error
		if !errors.As(err, &re) {
			t.Errorf("%s: error %v is not a *resource.Error", tc.name, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not mention %q", tc.name, err, w)
			}
		}
	}
}

// A Resource wrapper (SotW with TTL) is unwrapped.
func TestUnwrap(t *testing.T) {
	inner := mustAny(t, xdstest.StaticCluster("a"))
	w := mustAny(t, &discoveryv3.Resource{Name: "a", Resource: inner})
	got, err := resource.Unwrap(w)
	if err != nil || !proto.Equal(got, inner) {
		t.Fatalf("Unwrap: %v, %v", got, err)
	}
	if got, _ := resource.Unwrap(inner); got != inner {
		t.Error("Unwrap changed a plain Any")
	}
}
