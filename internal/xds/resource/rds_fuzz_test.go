package resource

import (
	"math"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// rdsShapes are route configurations with what Envoy rejects beyond the protos'
// rules, and what it accepts although Go's regexp does not: the seeds of
// FuzzDecodeRouteConfig.
func rdsShapes() []*routev3.RouteConfiguration {
	route := func(name string, m *routev3.RouteMatch, a *routev3.RouteAction) *routev3.Route {
		if m == nil {
			m = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		}
		if a.ClusterSpecifier == nil {
			a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "c"}
		}
		return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: a}}
	}
	regex := func(re string) *routev3.RouteMatch {
		return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
	}
	weighted := func(n int, w uint32) *routev3.RouteAction {
		wc := &routev3.WeightedCluster{}
		for i := range n {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: "c" + strings.Repeat("x", i), Weight: wrapperspb.UInt32(w)})
		}
		return &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}
	}
	rc := func(domains [][]string, routes ...*routev3.Route) *routev3.RouteConfiguration {
		out := &routev3.RouteConfiguration{Name: "80"}
		for i, d := range domains {
			out.VirtualHosts = append(out.VirtualHosts, &routev3.VirtualHost{Name: "vh" + strings.Repeat("i", i), Domains: d, Routes: routes})
		}
		return out
	}
	one := [][]string{{"a", "*.a", "a.*"}}
	var out []*routev3.RouteConfiguration
	for _, re := range []string{`/api/(unclosed`, `a{1001}`, `(a{100}){100}`, `\C+`, `/\p{Old_Italic}`, `\p{greek}`, `(?P<名>x)`, `[\C]`, `\pL`} {
		out = append(out, rc(one, route("r", regex(re), &routev3.RouteAction{})))
	}
	for _, d := range []*durationpb.Duration{{Seconds: -1}, {Seconds: 3, Nanos: 2e9}, {Seconds: 1 << 62}, {Seconds: maxDurationSeconds, Nanos: 999999999}, {Nanos: 1}} {
		out = append(out, rc(one, route("t", nil, &routev3.RouteAction{Timeout: d})))
	}
	out = append(out,
		rc(one, route("w", nil, weighted(2, math.MaxUint32))),
		rc(one, route("w", nil, weighted(3, 0))),
		rc(one, route("w", nil, weighted(25, 7))),
		rc([][]string{{"a"}, {"A"}}, route("r", nil, &routev3.RouteAction{})),
		rc([][]string{{"*"}, {"*"}}, route("r", nil, &routev3.RouteAction{})),
		rc([][]string{{"*.a"}, {"*.b"}, {"b.*"}}, route("r", nil, &routev3.RouteAction{})),
	)
	return out
}

// Decoding a route configuration never panics, decides the same serially and on
// every core, and accepts only what passes Validate.
func FuzzDecodeRouteConfig(f *testing.F) {
	for _, rc := range rdsShapes() {
		b, err := proto.Marshal(rc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	in := NewInterner() // shared, as the client shares one between its decodes
	f.Fuzz(func(t *testing.T, b []byte) {
		decode := func(min int) (*Decoded, error) {
			return DecodeBytes(RouteConfigType, b, "", DecodeOptions{Intern: in, ParallelRDSMin: min})
		}
		serial, serr := decode(math.MaxInt)
		parallel, perr := decode(1)
		switch {
		case (serr == nil) != (perr == nil):
			t.Fatalf("serial decode: %v; parallel: %v", serr, perr)
		case serr != nil:
			if serr.Error() != perr.Error() {
				t.Fatalf("serial decode: %v; parallel: %v", serr, perr)
			}
			return
		}
		s, p := serial.Msg.(*RouteConfig), parallel.Msg.(*RouteConfig)
		if !s.Equal(p) {
			t.Fatal("serial and parallel decodes differ")
		}
		m, err := s.Message()
		if err != nil {
			t.Fatal(err)
		}
		if err := Validate(m); err != nil {
			t.Fatalf("accepted, but: %v", err)
		}
	})
}
