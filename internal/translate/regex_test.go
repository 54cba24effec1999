package translate

import (
	"regexp"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// The emitted PCRE is the plainest spelling of the RE2 regex: no doubled anchors, no
// groups that precedence does not need, no escapes on characters PCRE takes literally.
func TestPCREAnchoredIsPlain(t *testing.T) {
	for re2, want := range map[string]string{
		`^(yes|true)$`:            `\A(?:yes|true)\z`,
		`yes|true`:                `\A(?:yes|true)\z`,
		`/api/v[0-9]+/reviews/.*`: `(*UTF)\A/api/v[0-9]+/reviews/[^\n]*\z`,
		`^/static/`:               `\A/static/\z`,
		`/a$`:                     `\A/a\z`,
		`(ab)+c?`:                 `\A(?:ab)+c?\z`,
		`(ab|cd)*`:                `\A(?:ab|cd)*\z`,
		`x{2,3}`:                  `\Ax{2,3}\z`,
		`a.b`:                     `(*UTF)\Aa[^\n]b\z`,
		`a\.b\+c\{1\}`:            `\Aa\.b\+c\{1\}\z`,
		`[-/.:]+`:                 `\A[\--\/\:]+\z`,
		`(?i)ab`:                  `\A(?i:AB)\z`,
		`(?:(?:a))*`:              `\Aa*\z`,
		`^$`:                      `\A\z`,
		`(^a)(b$)`:                `\Aab\z`,
		`a^b`:                     `\Aa\Ab\z`,
		`a*?`:                     `\Aa*?\z`,
		`\bword\b`:                `\A\bword\b\z`,
		`k=v&x,y;z#@!~%'"<>`:      "\\Ak=v&x,y;z#@!~%'\"<>\\z",
		`(?s:.)`:                  `(*UTF)\A(?s:.)\z`,
		`ab|^cd$`:                 `\A(?:ab|\Acd\z)\z`,
		`(a(b|c))`:                `\Aa[b-c]\z`,
	} {
		got, err := pcreAnchored(re2)
		if err != nil {
			t.Errorf("%s: %v", re2, err)
			continue
		}
		if got != want {
			t.Errorf("%s: emitted %s, want %s", re2, got, want)
		}
	}
}

// Simpler is only kept where it means the same: the emitted PCRE (run with Go's engine,
// which reads this subset alike) accepts exactly the strings RE2 matches whole.
func TestPCREAnchoredMatchesLikeRE2(t *testing.T) {
	regexes := []string{`^(yes|true)$`, `/api/v[0-9]+/reviews/.*`, `(ab)+c?`, `(ab|cd)*`, `x{2,3}`, `a.b`,
		`[-/.:]+`, `(?i)ab`, `^$`, `(^a)(b$)`, `ab|^cd$`, `a*?b`, `(a(b|c))`, `\bword\b`, `k=v&x`, `[^/]+/[a-c]{1,2}`}
	subjects := []string{"", "yes", "true", "yest", "/api/v1/reviews/x", "/api/v/reviews/", "ab", "abab", "ababc", "abc",
		"ac", "aab", "xx", "xxx", "xxxx", "a.b", "a\nb", "-/.:", "AB", "Ab", "cd", "abcd", "b", "aab", "word", "k=v&x", "x/a", "x/abc", "/a"}
	for _, re2 := range regexes {
		whole := regexp.MustCompile(`^(?:` + re2 + `)$`)
		pcre, err := pcreAnchored(re2)
		if err != nil {
			t.Fatal(err)
		}
		got := regexp.MustCompile(strings.TrimPrefix(pcre, "(*UTF)"))
		for _, s := range subjects {
			if whole.MatchString(s) != got.MatchString(s) {
				t.Errorf("%s as %s: %q matches %v, RE2 says %v", re2, pcre, s, got.MatchString(s), whole.MatchString(s))
			}
		}
	}
}

// RE2's \C (one byte) is PCRE's \C, in byte and UTF mode alike.
func TestPCREAnyByte(t *testing.T) {
	for re, want := range map[string]string{
		`/b/\C+`:   `\A/b/\C+\z`,
		`\C.`:      `(*UTF)\A\C[^\n]\z`,
		`(\C)\pL`:  `(*UTF)\A\C[`, // followed by the letters
		`x|\C|[y]`: `\A(?:x|\C|y)\z`,
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
