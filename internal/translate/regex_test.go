package translate

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// RE2's \C (one byte) is PCRE's \C, in byte and UTF mode alike.
func TestPCREAnyByte(t *testing.T) {
	for re, want := range map[string]string{
		`/b/\C+`:   `\A(?:\/b\/(?:\C)+)\z`,
		`\C.`:      `(*UTF)\A(?:\C[^\n])\z`,
		`(\C)\pL`:  `\A(?:(?:\C)`, // followed by the letters, in UTF mode
		`x|\C|[y]`: `\A(?:(?:x|\C|y))\z`,
	} {
		got, err := pcreAnchored(re)
		if err != nil {
			t.Fatalf("%s: %v", re, err)
		}
		if !strings.Contains(got, want) {
			t.Errorf("%s: %s, want %s in it", re, got, want)
		}
	}
}

// A regex RE2 does not compile reaches translation only from unvalidated input (the
// client NACKs it): its route matches nothing and the routes after it keep theirs.
func TestInvalidRegexMatchesNothing(t *testing.T) {
	hdr := toCluster("bad-header", prefix("/"))
	hdr.Match.Headers = []*routev3.HeaderMatcher{{Name: "x-v", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `a{1001}`}}}}}}
	rc := &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
		{Name: "bad-path", Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `/api/(unclosed`}}},
			Action: toCluster("", nil).Action},
		hdr,
		toCluster("api", prefix("/api")),
		toCluster("rest", prefix("/")),
	}}}}
	objs, rep := translateRC(t, rc, []*clusterv3.Cluster{staticCluster("c")}...)
	ar := newAPISIXRouter(t, objs)
	for path, want := range map[string]string{"/api/(unclosed": "api", "/api/x": "api", "/": "rest", "/x": "rest"} {
		got := ar.match(t, request{host: "h", path: path, method: "GET", port: "80", headers: map[string]string{"x-v": "a"}})
		if r := jsonOf(t, objs, "/routes/"+got); r["name"] != want {
			t.Errorf("%s: APISIX picks %v, want route %s", path, r["name"], want)
		}
	}
	n := 0
	for _, e := range rep {
		if e.Severity == report.Invalid && strings.Contains(e.Message, "the route matches nothing") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d routes reported as matching nothing, want 2: %v", n, rep)
	}
}
