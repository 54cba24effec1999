package nginx

import (
	"fmt"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
)

func regexMatch(re string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}}
}

// Regexes in real APISIX match what Envoy's RE2 matches on the same path: RE2's \C
// is one byte whatever the bytes around it (alone or beside constructs that match
// characters, which put the PCRE in UTF mode), "." and negated classes one UTF-8
// character; a header regex of the plainest PCRE (^(yes|true)$) matches the whole
// value only. Paths go byte for byte (what nginx's $uri holds after decoding), and
// the expected routes are C++ RE2's answers (RE2::FullMatch). A route matching
// everything after them tells "no match" from an error.
func TestAPISIXRegex(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	var msgs []proto.Message
	var routes []*routev3.Route
	for i, r := range []struct {
		name string
		m    *routev3.RouteMatch
	}{
		{"bytes", regexMatch(`/b/\C+`)},
		{"two-bytes", regexMatch(`/c/\C\C`)},
		{"one-char", regexMatch(`/d/.`)},
		{"char-then-byte", regexMatch(`/e/.\C`)},
		{"not-a", regexMatch(`/f/[^a]`)},
		{"flag", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/h"}, Headers: []*routev3.HeaderMatcher{{
			Name: "x-flag", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: `^(yes|true)$`}}}}}}}},
		{"other", prefixMatch("/")},
	} {
		c := fmt.Sprintf("outbound|%d||%s.regex.test", port, r.name)
		msgs = append(msgs, edsCluster(c, startBackendAt(t, fmt.Sprintf("127.0.0.%d", 30+i), r.name, nil))...)
		routes = append(routes, toCluster(r.name, r.m, c, nil))
	}
	msgs = append(msgs, outbound(port, "regex"), routeConfig("regex", vhost("regex.test", routes...)))
	ap := startAPISIX(t, newXDS(t, resourcesOf(msgs...)), apisixOptions{Provider: "amesh", Workers: 1, Port: port})
	ap.waitServing()
	ap.waitCode(port, "regex.test", "/", 200)

	for path, want := range map[string]string{
		"/b/é": "bytes", "/b/abc": "bytes", "/b/日本": "bytes", "/b/": "other",
		"/c/é": "two-bytes", "/c/ab": "two-bytes", "/c/a": "other", "/c/€": "other", "/c/aé": "other",
		"/d/é": "one-char", "/d/a": "one-char", "/d/€": "one-char", "/d/ab": "other", "/d/é/": "other",
		"/e/éa": "char-then-byte", "/e/ab": "char-then-byte", "/e/é": "other", "/e/aé": "other", "/e/€": "other",
		"/f/é": "not-a", "/f/b": "not-a", "/f/a": "other", "/f/éé": "other",
	} {
		ans, err := ap.callRaw(port, "regex.test", path)
		if err != nil {
			t.Fatalf("GET %q: %v", path, err)
		}
		if ans.code != 200 || ans.body != want {
			t.Errorf("GET %q (% x) answers %d %q, want route %q", path, path, ans.code, ans.body, want)
		}
	}
	for _, h := range []struct {
		value string
		set   bool
		want  string
	}{
		{"yes", true, "flag"}, {"true", true, "flag"}, {"yess", true, "other"}, {"xyes", true, "other"},
		{"Yes", true, "other"}, {"no", true, "other"}, {"", true, "other"}, {"", false, "other"},
	} {
		var hdr []string
		if h.set {
			hdr = []string{"x-flag", h.value}
		}
		if ans := ap.mustCall(port, "regex.test", "/h", hdr...); ans.code != 200 || ans.body != h.want {
			t.Errorf("x-flag %q (sent: %v) answers %d %q, want route %q", h.value, h.set, ans.code, ans.body, h.want)
		}
	}
}
