package translate

// Two small evaluators for the differential test. envoyRoute follows Envoy's documented
// semantics over the xDS RouteConfiguration (virtual host by domain, then the first
// route whose match holds). apisixRoute follows APISIX's radixtree_host_uri router over
// the translated routes (host tree: exact host, then wildcard hosts by longest suffix,
// then host-less routes; per tree: exact uri, then longest prefix, priority among equal
// uris; then vars as lua-resty-expr evaluates them). Neither uses translation code.

import (
	"encoding/json"
	"regexp"
	"sort"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// request is an HTTP request as both proxies see it.
type request struct {
	host    string // Host header, lower case, no port
	path    string // path without query
	query   map[string]string
	headers map[string]string // lower-case names
	method  string
	port    string // original destination port
	listen  string // APISIX's port (server_port); "" is the outbound capture port 15001
	tls     bool   // on the HTTP server's TLS socket (Istio mTLS APISIX terminated)
	// peer: the client certificate's URI SANs as nginx gives them; with tls and
	// without it, the SPIFFE identity of a workload of the mesh.
	peer string
}

// envoyRoute returns the index of the virtual host and route Envoy picks, or -1, -1.
func envoyRoute(rc *routev3.RouteConfiguration, r request) (int, int) {
	vi := envoyVhost(rc, r.host)
	if vi < 0 {
		return -1, -1
	}
	for i, rt := range rc.GetVirtualHosts()[vi].GetRoutes() {
		if envoyMatches(rt.GetMatch(), r) {
			return vi, i
		}
	}
	return vi, -1
}

func envoyVhost(rc *routev3.RouteConfiguration, host string) int {
	best, bestKind, bestLen := -1, 5, -1
	for i, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			kind, l := 5, 0
			switch {
			case d == host:
				kind, l = 0, len(d)
			case d == "*":
				kind = 3
			case strings.HasPrefix(d, "*") && len(host) > len(d)-1 && strings.HasSuffix(host, d[1:]):
				kind, l = 1, len(d)
			case strings.HasSuffix(d, "*") && len(host) > len(d)-1 && strings.HasPrefix(host, d[:len(d)-1]):
				kind, l = 2, len(d)
			}
			if kind < 5 && (kind < bestKind || kind == bestKind && l > bestLen) {
				best, bestKind, bestLen = i, kind, l
			}
		}
	}
	return best
}

func envoyMatches(m *routev3.RouteMatch, r request) bool {
	ci := m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue()
	p := r.path
	eq := func(a, b string) bool {
		if ci {
			return strings.EqualFold(a, b)
		}
		return a == b
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		if len(p) < len(ps.Prefix) || !eq(p[:len(ps.Prefix)], ps.Prefix) {
			return false
		}
	case *routev3.RouteMatch_Path:
		if !eq(p, ps.Path) {
			return false
		}
	case *routev3.RouteMatch_SafeRegex:
		if !regexp.MustCompile(`^(?:` + ps.SafeRegex.GetRegex() + `)$`).MatchString(p) {
			return false
		}
	case *routev3.RouteMatch_PathSeparatedPrefix:
		x := ps.PathSeparatedPrefix
		if len(p) < len(x) || !eq(p[:len(x)], x) || len(p) > len(x) && p[len(x)] != '/' {
			return false
		}
	}
	for _, h := range m.GetHeaders() {
		if !envoyHeader(h, r) {
			return false
		}
	}
	for _, q := range m.GetQueryParameters() {
		v, ok := r.query[q.GetName()]
		switch s := q.GetQueryParameterMatchSpecifier().(type) {
		case *routev3.QueryParameterMatcher_PresentMatch:
			if ok != s.PresentMatch {
				return false
			}
		case *routev3.QueryParameterMatcher_StringMatch:
			if !ok || !envoyString(s.StringMatch, v) {
				return false
			}
		}
	}
	return true
}

func headerValue(r request, name string) (string, bool) {
	switch name {
	case ":method":
		return r.method, true
	case ":authority":
		return r.host, true
	case ":scheme":
		return "http", true
	}
	v, ok := r.headers[name]
	return v, ok
}

func envoyHeader(h *routev3.HeaderMatcher, r request) bool {
	v, ok := headerValue(r, h.GetName())
	if !ok && !h.GetTreatMissingHeaderAsEmpty() {
		pm, isPresent := h.GetHeaderMatchSpecifier().(*routev3.HeaderMatcher_PresentMatch)
		if h.GetInvertMatch() {
			return isPresent && pm.PresentMatch
		}
		return isPresent && !pm.PresentMatch
	}
	var match bool
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		match = s.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		match = envoyString(s.StringMatch, v)
	case *routev3.HeaderMatcher_ExactMatch:
		//lint:ignore SA1019 the evaluator models the deprecated matcher too
		match = v == s.ExactMatch
	}
	return match != h.GetInvertMatch()
}

func envoyString(sm *matcherv3.StringMatcher, v string) bool {
	f := func(s string) string { return s }
	if sm.GetIgnoreCase() {
		f = strings.ToLower
	}
	switch m := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return f(v) == f(m.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(f(v), f(m.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(f(v), f(m.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(f(v), f(m.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		return regexp.MustCompile(`^(?:` + m.SafeRegex.GetRegex() + `)$`).MatchString(v)
	}
	return false
}

// apisixRouter is the radixtree_host_uri router over translated routes.
type apisixRouter struct {
	hosts   map[string][]*aRoute // exact host -> routes
	wild    []wildHost           // wildcard hosts, longest suffix first
	noHosts []*aRoute
}

type wildHost struct {
	suffix string
	routes []*aRoute
}

type aRoute struct {
	ID       string   `json:"id"`
	URI      string   `json:"uri"`
	URIs     []string `json:"uris"`
	Hosts    []string `json:"hosts"`
	Vars     []any    `json:"vars"`
	Priority int      `json:"priority"`
}

func newAPISIXRouter(t *testing.T, objs map[string][]byte) *apisixRouter {
	t.Helper()
	ar := &apisixRouter{hosts: map[string][]*aRoute{}}
	wild := map[string][]*aRoute{}
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/") {
			continue
		}
		var r aRoute
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Hosts) == 0 {
			ar.noHosts = append(ar.noHosts, &r)
		}
		for _, h := range r.Hosts {
			if strings.HasPrefix(h, "*") {
				wild[h[1:]] = append(wild[h[1:]], &r)
			} else {
				ar.hosts[h] = append(ar.hosts[h], &r)
			}
		}
	}
	for s, rs := range wild {
		ar.wild = append(ar.wild, wildHost{s, rs})
	}
	sort.Slice(ar.wild, func(i, j int) bool { return len(ar.wild[i].suffix) > len(ar.wild[j].suffix) })
	return ar
}

// match returns the id of the route APISIX picks, or "".
func (ar *apisixRouter) match(t *testing.T, r request) string {
	vars := nginxVars(r)
	if rs, ok := ar.hosts[r.host]; ok {
		if id := dispatchURI(t, rs, r.path, vars); id != "" {
			return id
		}
	}
	for _, w := range ar.wild {
		if strings.HasSuffix(r.host, w.suffix) {
			if id := dispatchURI(t, w.routes, r.path, vars); id != "" {
				return id
			}
		}
	}
	return dispatchURI(t, ar.noHosts, r.path, vars)
}

func nginxVars(r request) map[string]string {
	v := map[string]string{
		"uri": r.path, "host": r.host, "http_host": r.host, "request_method": r.method, "scheme": "http",
		"server_port": "15001", "connection_original_dst": r.port,
	}
	if r.listen != "" {
		v["server_port"] = r.listen
	}
	if r.tls {
		v["scheme"] = "https"
		v["amesh_peer_uri_sans"] = r.peer
		if r.peer == "" {
			v["amesh_peer_uri_sans"] = "spiffe://cluster.local/ns/default/sa/reviews"
		}
	}
	for k, x := range r.headers {
		v["http_"+strings.ReplaceAll(k, "-", "_")] = x
	}
	for k, x := range r.query {
		v["arg_"+k] = x
	}
	return v
}

// dispatchURI is one radixtree: exact uris, then prefixes longest first; priority
// orders routes with the same uri.
func dispatchURI(t *testing.T, rs []*aRoute, path string, vars map[string]string) string {
	type cand struct {
		r      *aRoute
		exact  bool
		prefix int
	}
	var cs []cand
	for _, r := range rs {
		uris := r.URIs
		if r.URI != "" {
			uris = []string{r.URI}
		}
		for _, u := range uris {
			if strings.HasSuffix(u, "*") {
				if p := u[:len(u)-1]; strings.HasPrefix(path, p) {
					cs = append(cs, cand{r: r, prefix: len(p)})
				}
			} else if u == path {
				cs = append(cs, cand{r: r, exact: true})
			}
		}
	}
	sort.SliceStable(cs, func(i, j int) bool {
		a, b := cs[i], cs[j]
		if a.exact != b.exact {
			return a.exact
		}
		if a.prefix != b.prefix {
			return a.prefix > b.prefix
		}
		return a.r.Priority > b.r.Priority
	})
	for k, c := range cs {
		if evalExprs(t, c.r.Vars, vars) {
			// APISIX's order among equal uri and priority is insertion order, which the
			// translator does not control: two such routes must never both match.
			for _, o := range cs[k+1:] {
				if o.exact == c.exact && o.prefix == c.prefix && o.r.Priority == c.r.Priority && o.r != c.r &&
					evalExprs(t, o.r.Vars, vars) {
					t.Errorf("routes %s and %s share a uri and a priority and both match", c.r.ID, o.r.ID)
				}
			}
			return c.r.ID
		}
	}
	return ""
}

// evalExprs evaluates a lua-resty-expr list (AND of its terms).
func evalExprs(t *testing.T, exprs []any, vars map[string]string) bool {
	for _, e := range exprs {
		if !evalExpr(t, e.([]any), vars) {
			return false
		}
	}
	return true
}

func evalExpr(t *testing.T, e []any, vars map[string]string) bool {
	if op, ok := e[0].(string); ok && (op == "OR" || op == "AND") {
		for _, sub := range e[1:] {
			r := evalExpr(t, sub.([]any), vars)
			if op == "OR" && r {
				return true
			}
			if op == "AND" && !r {
				return false
			}
		}
		return op == "AND"
	}
	name := e[0].(string)
	rest := e[1:]
	neg := false
	if len(rest) == 3 {
		if rest[0] != "!" {
			t.Fatalf("bad expression %v", e)
		}
		neg, rest = true, rest[1:]
	}
	v, present := vars[name]
	var res bool
	switch rest[0] {
	case "==":
		res = present && v == rest[1].(string)
	case "~=":
		res = !present || v != rest[1].(string)
	case "~~":
		res = present && pcreToGo(t, rest[1].(string)).MatchString(v)
	case "in":
		for _, x := range rest[1].([]any) {
			if present && x.(string) == v {
				res = true
			}
		}
	default:
		t.Fatalf("operator %v not modelled", rest[0])
	}
	return res != neg
}

var pcreCache = map[string]*regexp.Regexp{}

// pcreToGo runs the PCRE subset the translator emits with Go's engine: (*UTF) is
// dropped (test inputs are ASCII) and (?!) (never matches) is rewritten.
func pcreToGo(t *testing.T, re string) *regexp.Regexp {
	if r, ok := pcreCache[re]; ok {
		return r
	}
	g := strings.TrimPrefix(re, "(*UTF)")
	g = strings.ReplaceAll(g, `(?!)`, `[^\x00-\x{10FFFF}]`)
	r, err := regexp.Compile(g)
	if err != nil {
		t.Fatalf("emitted regex %q: %v", re, err)
	}
	pcreCache[re] = r
	return r
}
