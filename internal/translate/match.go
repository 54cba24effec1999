package translate

// Route match conditions other than the path bucket: headers, query parameters, gRPC,
// and the path itself when it cannot be the route's uri. Every condition is a
// lua-resty-expr term over nginx variables. Literals are compared with "==" or escaped
// into an anchored PCRE; nothing from the xDS input is ever used as a regex unescaped.
//
// Semantics kept (Envoy HeaderUtility::matchHeaders): a missing header fails every
// string matcher and present_match=true, and passes present_match=false; invert_match
// negates the result only when the header is present; treat_missing_header_as_empty
// matches a missing header as "". lua-resty-expr's "==" and "~~" are false for a
// missing (nil) variable, and a "!" term is true for it, which is what the builders
// below rely on.

import (
	"fmt"
	"strings"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// pathKind is the kind of a route's path matcher.
type pathKind int

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSepPrefix
	pathUnsupported
)

// pathSpec is a route's path matcher.
type pathSpec struct {
	kind pathKind
	lit  string // literal for prefix/exact/sep-prefix, RE2 for regex
	ci   bool   // case-insensitive (prefix/exact/sep-prefix only)
}

func pathOf(m *routev3.RouteMatch) pathSpec {
	ci := m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		return pathSpec{kind: pathPrefix, lit: ps.Prefix, ci: ci && hasLetter(ps.Prefix)}
	case *routev3.RouteMatch_Path:
		return pathSpec{kind: pathExact, lit: ps.Path, ci: ci && hasLetter(ps.Path)}
	case *routev3.RouteMatch_SafeRegex:
		return pathSpec{kind: pathRegex, lit: ps.SafeRegex.GetRegex()}
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return pathSpec{kind: pathSepPrefix, lit: ps.PathSeparatedPrefix, ci: ci && hasLetter(ps.PathSeparatedPrefix)}
	}
	return pathSpec{kind: pathUnsupported}
}

func hasLetter(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i] | 0x20; c >= 'a' && c <= 'z' {
			return true
		}
	}
	return false
}

// pathVar returns the condition that matches exactly the paths of p, or nil when p
// matches every path.
func pathVar(p pathSpec) (apisix.Expr, error) {
	ci := ""
	if p.ci {
		ci = "(?i)"
	}
	switch p.kind {
	case pathPrefix:
		if p.lit == "" || p.lit == "/" {
			return nil, nil
		}
		return apisix.Expr{"uri", "~~", ci + `\A` + quoteLiteral(p.lit)}, nil
	case pathExact:
		if !p.ci {
			return apisix.Expr{"uri", "==", p.lit}, nil
		}
		return apisix.Expr{"uri", "~~", ci + `\A` + quoteLiteral(p.lit) + `\z`}, nil
	case pathSepPrefix:
		return apisix.Expr{"uri", "~~", ci + `\A` + quoteLiteral(p.lit) + `(?:/|\z)`}, nil
	case pathRegex:
		re, err := pcreAnchored(p.lit)
		if err != nil {
			return nil, err
		}
		return apisix.Expr{"uri", "~~", re}, nil
	}
	return nil, fmt.Errorf("path matcher is not supported")
}

// exprPresent is true when the variable exists (even if empty).
func exprPresent(v string) apisix.Expr { return apisix.Expr{v, "~~", `\A`} }

// headerVar maps an Envoy header name to the nginx variable holding it.
func headerVar(name string) (string, error) {
	switch name {
	case ":method":
		return "request_method", nil
	case ":authority", "host":
		return "http_host", nil
	case ":scheme":
		return "scheme", nil
	case ":path":
		return "request_uri", nil
	}
	if name == "" || strings.HasPrefix(name, ":") {
		return "", fmt.Errorf("pseudo-header %q has no nginx variable", name)
	}
	var b strings.Builder
	b.WriteString("http_")
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case c == '-':
			b.WriteByte('_')
		default:
			// nginx drops header names with '_' (underscores_in_headers off) and any
			// other character has no variable name.
			return "", fmt.Errorf("header name %q cannot be read from an nginx variable", name)
		}
	}
	return b.String(), nil
}

// stringTerm returns a term that is true when the (present) variable v satisfies sm and
// false when v is missing, and sm's verdict on the empty string.
func stringTerm(v string, sm *matcherv3.StringMatcher) (apisix.Expr, bool, error) {
	ci := ""
	if sm.GetIgnoreCase() {
		ci = "(?i)"
	}
	switch m := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		empty := m.Exact == ""
		if ci == "" || !hasLetter(m.Exact) {
			return apisix.Expr{v, "==", m.Exact}, empty, nil
		}
		return apisix.Expr{v, "~~", ci + `\A` + quoteLiteral(m.Exact) + `\z`}, empty, nil
	case *matcherv3.StringMatcher_Prefix:
		return apisix.Expr{v, "~~", ci + `\A` + quoteLiteral(m.Prefix)}, m.Prefix == "", nil
	case *matcherv3.StringMatcher_Suffix:
		return apisix.Expr{v, "~~", ci + quoteLiteral(m.Suffix) + `\z`}, m.Suffix == "", nil
	case *matcherv3.StringMatcher_Contains:
		return apisix.Expr{v, "~~", ci + quoteLiteral(m.Contains)}, m.Contains == "", nil
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := pcreAnchored(m.SafeRegex.GetRegex())
		if err != nil {
			return nil, false, err
		}
		return apisix.Expr{v, "~~", re}, re2MatchesEmpty(m.SafeRegex.GetRegex()), nil
	}
	return nil, false, fmt.Errorf("string matcher kind is not supported")
}

// not negates a term ("!" form), which is true for a missing variable.
func not(e apisix.Expr) apisix.Expr {
	return append(apisix.Expr{e[0], "!"}, e[1:]...)
}

// headerTerms translates one header matcher into terms that must all hold.
func headerTerms(h *routev3.HeaderMatcher) ([]apisix.Expr, error) {
	v, err := headerVar(h.GetName())
	if err != nil {
		return nil, err
	}
	var match apisix.Expr // false when missing
	var emptyMatches bool
	present := false // present-match type
	presentWanted := false
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		match, emptyMatches, err = stringTerm(v, s.StringMatch)
	case *routev3.HeaderMatcher_PresentMatch:
		present, presentWanted = true, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		match, emptyMatches, err = stringTerm(v, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.ExactMatch}})
	case *routev3.HeaderMatcher_PrefixMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		match, emptyMatches, err = stringTerm(v, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s.PrefixMatch}})
	case *routev3.HeaderMatcher_SuffixMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		match, emptyMatches, err = stringTerm(v, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s.SuffixMatch}})
	case *routev3.HeaderMatcher_ContainsMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		match, emptyMatches, err = stringTerm(v, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: s.ContainsMatch}})
	case *routev3.HeaderMatcher_SafeRegexMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		match, emptyMatches, err = stringTerm(v, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}})
	case nil:
		// No specifier: Envoy treats it as a present match.
		present, presentWanted = true, true
	default:
		return nil, fmt.Errorf("header matcher kind %T is not supported", s)
	}
	if err != nil {
		return nil, err
	}
	invert := h.GetInvertMatch()
	if present {
		// Envoy: a present header matches iff present_match, then invert applies; a
		// missing header matches iff !present_match (inverted), unless it is treated
		// as empty, when it is a present empty header.
		whenPresent := presentWanted != invert
		whenMissing := !presentWanted != invert
		if h.GetTreatMissingHeaderAsEmpty() {
			whenMissing = whenPresent
		}
		return boolTerms(v, whenPresent, whenMissing), nil
	}
	whenMissing := false
	if h.GetTreatMissingHeaderAsEmpty() {
		whenMissing = emptyMatches != invert
	}
	switch {
	case !invert && !whenMissing:
		return []apisix.Expr{match}, nil
	case !invert && whenMissing:
		return []apisix.Expr{{"OR", match, not(exprPresent(v))}}, nil
	case invert && whenMissing:
		return []apisix.Expr{not(match)}, nil
	default:
		return []apisix.Expr{exprPresent(v), not(match)}, nil
	}
}

// boolTerms builds the condition for a matcher whose verdict depends only on presence.
func boolTerms(v string, whenPresent, whenMissing bool) []apisix.Expr {
	switch {
	case whenPresent && whenMissing:
		return nil
	case whenPresent:
		return []apisix.Expr{exprPresent(v)}
	case whenMissing:
		return []apisix.Expr{not(exprPresent(v))}
	}
	// Never matches: a regex that cannot match.
	return []apisix.Expr{{v, "~~", `(?!)`}, not(exprPresent(v))}
}

// queryTerms translates one query parameter matcher. nginx's $arg_<name> holds the
// first value, undecoded, and its name matches case-insensitively; Envoy decodes the
// value and compares the name exactly, which the caller reports.
func queryTerms(q *routev3.QueryParameterMatcher) ([]apisix.Expr, error) {
	name := q.GetName()
	if name == "" {
		return nil, fmt.Errorf("empty query parameter name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return nil, fmt.Errorf("query parameter %q cannot be read from an nginx variable", name)
		}
	}
	v := "arg_" + name
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_StringMatch:
		t, _, err := stringTerm(v, s.StringMatch)
		if err != nil {
			return nil, err
		}
		return []apisix.Expr{t}, nil
	case *routev3.QueryParameterMatcher_PresentMatch:
		if s.PresentMatch {
			return []apisix.Expr{exprPresent(v)}, nil
		}
		return []apisix.Expr{not(exprPresent(v))}, nil
	}
	return []apisix.Expr{exprPresent(v)}, nil
}

// re2MatchesEmpty reports whether the RE2 regex matches the empty string as a whole.
func re2MatchesEmpty(re string) bool {
	r, err := compileWhole(re)
	return err == nil && r.MatchString("")
}
