package client_test

// What Envoy rejects beyond the protos' own rules is NACKed with a precise detail, and
// the last good state stays: nothing is published for the rejected response, the
// translated output of the configuration is unchanged, and other resources keep
// being accepted (an endpoint change of another service after the NACK).

import (
	"math"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

const (
	clusterA = "outbound|9080||a.default.svc.cluster.local"
	clusterB = "outbound|9090||b.default.svc.cluster.local"
)

// routesA is route configuration "9080": one virtual host for a's domains with the
// given routes, and one for b.
func routesA(routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: "9080", VirtualHosts: []*routev3.VirtualHost{
		{Name: "a", Domains: []string{"a.default.svc.cluster.local", "a"}, Routes: routes},
		{Name: "b", Domains: []string{"b.default.svc.cluster.local", "b"}, Routes: []*routev3.Route{routeTo("b", "/", clusterB, nil)}},
	}}
}

// routeTo is a prefix route to cluster with action a (nil: a plain one).
func routeTo(name, prefix, cluster string, a *routev3.RouteAction) *routev3.Route {
	if a == nil {
		a = &routev3.RouteAction{}
	}
	if a.ClusterSpecifier == nil {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: cluster}
	}
	return &routev3.Route{Name: name, Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: a}}
}

func regexRoute(name, re string) *routev3.Route {
	r := routeTo(name, "", clusterA, nil)
	r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
	return r
}

// verdictMesh serves two services a and b behind listeners 9080 and 9090.
func verdictMesh(srv *xdstest.Server) {
	srv.Set(resource.ClusterType, xdstest.EDSCluster(clusterA), xdstest.EDSCluster(clusterB))
	srv.Set(resource.EndpointType, xdstest.Endpoints(clusterA, "10.0.0.1:9080"), xdstest.Endpoints(clusterB, "10.0.0.2:9090"))
	srv.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""), xdstest.Listener("0.0.0.0_9090", 9090, []string{"9090"}, ""))
	srv.Set(resource.RouteConfigType, routesA(routeTo("api", "/api", clusterA, nil), routeTo("default", "/", clusterA, nil)),
		xdstest.RouteConfig("9090", clusterB))
}

var verdictCounts = counts{2, 2, 2, 2}

// translated translates a snapshot from scratch.
func translated(t *testing.T, s *resource.State) map[string][]byte {
	t.Helper()
	res := translate.New(translate.Options{}).Translate(s)
	objs := map[string][]byte{}
	res.Changes.ApplyTo(objs)
	if len(objs) == 0 {
		t.Fatal("empty translation")
	}
	return objs
}

// expectNACK pushes a bad update over protocol p and checks Envoy's verdict: a NACK of
// typeURL naming every want, nothing published, the same output, and an unrelated
// change accepted afterwards.
func expectNACK(t *testing.T, p client.Protocol, typeURL string, push func(*xdstest.Server) error, want ...string) {
	t.Helper()
	srv := newServer(t, xdsOpts())
	verdictMesh(srv)
	c := startClient(t, srv, p, nil)
	good := waitSnapshot(t, c, hasCounts(verdictCounts))
	before := translated(t, good)

	mark := srv.Mark()
	if err := push(srv); err != nil {
		t.Fatal(err)
	}
	nack, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool { return r.IsNACK() })
	if err != nil {
		t.Fatal(err)
	}
	if nack.TypeURL() != typeURL {
		t.Errorf("NACK of %s, want %s", nack.TypeURL(), typeURL)
	}
	for _, w := range want {
		if !strings.Contains(nack.ErrorDetail(), w) {
			t.Errorf("error_detail %q does not mention %q", nack.ErrorDetail(), w)
		}
	}
	if st := c.Status(); st.Seq != good.Seq {
		t.Fatalf("a snapshot was published for the rejected response (seq %d, last good %d)", st.Seq, good.Seq)
	}

	// Another service's endpoints change: accepted, and only b's upstream differs.
	if err := srv.Update(xdstest.Endpoints(clusterB, "10.0.0.3:9090")); err != nil {
		t.Fatal(err)
	}
	next := waitSnapshot(t, c, func(s *resource.State) bool { return s.Seq > good.Seq })
	if !next.RouteConfigs["9080"].Equal(good.RouteConfigs["9080"]) || !proto.Equal(next.Listeners["0.0.0.0_9080"], good.Listeners["0.0.0.0_9080"]) {
		t.Error("the rejected update leaked into the snapshot")
	}
	after := translated(t, next)
	changed := 0
	for k, v := range before {
		if string(after[k]) != string(v) {
			changed++
			if !strings.Contains(k, "9090__b") {
				t.Errorf("%s changed after the NACK", k)
			}
		}
	}
	if changed == 0 || len(after) != len(before) {
		t.Errorf("%d objects changed (of %d, now %d): the endpoint change of b did not show", changed, len(before), len(after))
	}
}

// An invalid regex (Envoy: RE2 does not compile it) anywhere in a route
// configuration is NACKed; before, the route answered 500 on /* and took the
// routes after it.
func TestNACKInvalidRegex(t *testing.T) {
	header := routeTo("h", "/", clusterA, nil)
	header.Match.Headers = []*routev3.HeaderMatcher{{Name: "x-v", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `a{1001}`}}}}}}
	for _, p := range protocols {
		t.Run(string(p)+"/path", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, func(srv *xdstest.Server) error {
				return srv.Update(routesA(routeTo("v2", "/v2", clusterA, nil), regexRoute("bad", `/api/(unclosed`), routeTo("default", "/", clusterA, nil)))
			}, `route configuration "9080"`, `virtual_hosts["a"].routes["bad"].match.safe_regex`, `regex "/api/(unclosed" does not compile in RE2`, "missing closing )")
		})
		t.Run(string(p)+"/header", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, func(srv *xdstest.Server) error {
				return srv.Update(routesA(header, routeTo("default", "/", clusterA, nil)))
			}, `routes["h"].match.headers["x-v"].string_match.safe_regex`, "invalid repeat count")
		})
		t.Run(string(p)+"/go-only-class", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, func(srv *xdstest.Server) error {
				return srv.Update(routesA(regexRoute("greek", `/\p{greek}+`)))
			}, "invalid character class range")
		})
	}
}

// What C++ RE2 compiles and Go's regexp rejects is accepted and translated.
func TestACKRE2OnlySyntax(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			verdictMesh(srv)
			c := startClient(t, srv, p, nil)
			good := waitSnapshot(t, c, hasCounts(verdictCounts))
			mark := srv.Mark()
			if err := srv.Update(routesA(regexRoute("any-byte", `/b/\C+`), regexRoute("script", `/\p{Old_Italic}+`),
				regexRoute("name", `/(?P<ид>[0-9]+)`), routeTo("default", "/", clusterA, nil))); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c, func(s *resource.State) bool { return s.Seq > good.Seq })
			for _, r := range srv.Requests()[mark:] {
				if r.IsNACK() {
					t.Fatalf("NACK: %s", r.ErrorDetail())
				}
			}
			objs := translated(t, s)
			var texts []string
			for k, v := range objs {
				if strings.HasPrefix(k, "/routes/") {
					texts = append(texts, string(v))
				}
			}
			all := strings.Join(texts, "\n")
			for _, want := range []string{`\\A/b/\\C+\\z`, `"name":"script"`, `"name":"name"`} {
				if !strings.Contains(all, want) {
					t.Errorf("no route with %s in the output", want)
				}
			}
			if strings.Contains(all, "fault-injection") && strings.Contains(all, "invalid regex") {
				t.Error("a regex RE2 compiles was treated as invalid")
			}
		})
	}
}

// Duplicate domains across the virtual hosts of a route configuration (compared in
// lower case) and a second "*" are NACKed, with Envoy's wording.
func TestNACKDuplicateDomains(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p)+"/domain", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, func(srv *xdstest.Server) error {
				rc := routesA(routeTo("default", "/", clusterA, nil))
				rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "a-again", Domains: []string{"A.default.svc.cluster.local"},
					Routes: []*routev3.Route{routeTo("other", "/", clusterB, nil)}})
				return srv.Update(rc)
			}, "only unique values for domains are permitted: duplicate entry of domain a.default.svc.cluster.local in route 9080")
		})
		t.Run(string(p)+"/star", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, func(srv *xdstest.Server) error {
				rc := routesA(routeTo("default", "/", clusterA, nil))
				for _, vh := range rc.VirtualHosts {
					vh.Domains = append(vh.Domains, "*")
				}
				return srv.Update(rc)
			}, "only a single wildcard domain is permitted in route 9080")
		})
	}
}

// A response naming a resource twice is NACKed: Envoy's details in Delta; in SotW
// for every kind (Envoy's wording for listeners and clusters).
func TestNACKDuplicateNames(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p)+"/route-config", func(t *testing.T) {
			want := "duplicate name 9080 found among added/updated resources"
			if p == client.SotW {
				want = "duplicate route configuration 9080 found"
			}
			expectNACK(t, p, resource.RouteConfigType, func(srv *xdstest.Server) error {
				srv.InjectNext(resource.RouteConfigType, routesA(routeTo("second-copy", "/", clusterB, nil)))
				return srv.Update(routesA(routeTo("first-copy", "/", clusterA, nil)))
			}, want)
		})
		t.Run(string(p)+"/listener", func(t *testing.T) {
			want := "duplicate name 0.0.0.0_9080 found among added/updated resources"
			if p == client.SotW {
				want = "duplicate listener 0.0.0.0_9080 found"
			}
			expectNACK(t, p, resource.ListenerType, func(srv *xdstest.Server) error {
				srv.InjectNext(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"other"}, ""))
				return srv.Update(xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, "default"))
			}, want)
		})
	}
}

// Durations out of Envoy's range are NACKed wherever they are (route timeouts,
// retry timeouts, cluster settings), not read as "no timeout" or 3 s or passed on
// to overflow nginx.
func TestNACKInvalidDurations(t *testing.T) {
	withTimeout := func(d *durationpb.Duration) func(*xdstest.Server) error {
		return func(srv *xdstest.Server) error {
			return srv.Update(routesA(routeTo("slow", "/", clusterA, &routev3.RouteAction{Timeout: d})))
		}
	}
	for _, p := range protocols {
		for _, tc := range []struct {
			name string
			push func(*xdstest.Server) error
			typ  string
			want []string
		}{
			{"negative", withTimeout(&durationpb.Duration{Seconds: -1}), resource.RouteConfigType,
				[]string{`routes["slow"].route.timeout: invalid duration (seconds: -1, nanos: 0): expected a positive duration`}},
			{"bad-nanos", withTimeout(&durationpb.Duration{Seconds: 3, Nanos: 2_000_000_000}), resource.RouteConfigType,
				[]string{"route.timeout: invalid duration (seconds: 3, nanos: 2000000000): out of range"}},
			{"2^62s", withTimeout(&durationpb.Duration{Seconds: 1 << 62}), resource.RouteConfigType,
				[]string{"route.timeout: invalid duration (seconds: 4611686018427387904, nanos: 0): out of range"}},
			{"per-try", func(srv *xdstest.Server) error {
				return srv.Update(routesA(routeTo("r", "/", clusterA, &routev3.RouteAction{RetryPolicy: &routev3.RetryPolicy{
					NumRetries: wrapperspb.UInt32(2), PerTryTimeout: &durationpb.Duration{Seconds: 1, Nanos: -1}}})))
			}, resource.RouteConfigType, []string{"route.retry_policy.per_try_timeout: invalid duration"}},
			{"cluster", func(srv *xdstest.Server) error {
				// Valid for the proto (at most 10,000 years), not for Envoy (the
				// duration in nanoseconds must fit an int64).
				c := xdstest.EDSCluster(clusterA)
				c.ConnectTimeout = &durationpb.Duration{Seconds: 10_000_000_000}
				return srv.Update(c)
			}, resource.ClusterType, []string{`cluster "` + clusterA + `"`, "connect_timeout: invalid duration (seconds: 10000000000, nanos: 0): out of range"}},
		} {
			t.Run(string(p)+"/"+tc.name, func(t *testing.T) { expectNACK(t, p, tc.typ, tc.push, tc.want...) })
		}
	}
}

// Weighted clusters adding up to more than 2^32-1, or to 0, are NACKed, as Envoy does.
func TestNACKWeightOverflow(t *testing.T) {
	split := func(ws ...uint32) func(*xdstest.Server) error {
		return func(srv *xdstest.Server) error {
			wc := &routev3.WeightedCluster{}
			for i, w := range ws {
				c := clusterA
				if i%2 == 1 {
					c = clusterB
				}
				wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(w)})
			}
			return srv.Update(routesA(routeTo("split", "/", "", &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}})))
		}
	}
	for _, p := range protocols {
		t.Run(string(p)+"/overflow", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, split(math.MaxUint32, 1),
				`routes["split"].route.weighted_clusters: the sum of the weights of the weighted clusters (4294967296) exceeds 4294967295`)
		})
		t.Run(string(p)+"/zero", func(t *testing.T) {
			expectNACK(t, p, resource.RouteConfigType, split(0, 0), "must be greater than 0")
		})
	}
}
