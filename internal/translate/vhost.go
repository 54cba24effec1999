package translate

// Virtual hosts. Envoy chooses the virtual host by domain (exact, then the longest
// suffix wildcard "*x", then the longest prefix wildcard "x*", then "*") and then its
// first matching route; it never falls through to another virtual host (no match is a
// 404). APISIX's radixtree_host_uri tries the routes of the exact host, then of the
// wildcard hosts from the longest suffix, then the routes without hosts, falling
// through whenever nothing matches. So:
//   - exact and suffix-wildcard domains become the routes' hosts (fast: per-host trees);
//   - every virtual host that does not end in an unconditional route gets a final 404
//     route, so a request never falls through to another virtual host;
//   - prefix wildcards and "*" go to host-less routes with a condition on $host that
//     keeps them disjoint (a prefix wildcard excludes the longer ones; "*" excludes all).

import (
	"encoding/json"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// rcInfo is what every virtual host of a route configuration needs from the others.
type rcInfo struct {
	ignorePort bool
	prefixWild string // "p1\x00p2..." prefix-wildcard stems, longest first
}

func infoOf(rc *routev3.RouteConfiguration) rcInfo {
	var stems []string
	for _, vh := range rc.GetVirtualHosts() {
		for _, d := range vh.GetDomains() {
			if len(d) > 1 && d[len(d)-1] == '*' && d[0] != '*' {
				stems = append(stems, strings.ToLower(d[:len(d)-1]))
			}
		}
	}
	sort.Slice(stems, func(i, j int) bool {
		if len(stems[i]) != len(stems[j]) {
			return len(stems[i]) > len(stems[j])
		}
		return stems[i] < stems[j]
	})
	return rcInfo{ignorePort: rc.GetIgnorePortInHostMatching(), prefixWild: strings.Join(stems, "\x00")}
}

func (i rcInfo) stems() []string {
	if i.prefixWild == "" {
		return nil
	}
	return strings.Split(i.prefixWild, "\x00")
}

// group is one copy of a virtual host's routes: for its exact/suffix hosts, for one
// prefix wildcard, or for "*".
type group struct {
	suffix string
	hosts  []string
	vars   []apisix.Expr
}

// rcInput is what building a virtual host reads of its context and route
// configuration. hdr is the route configuration decoded without its virtual hosts:
// what routes read from the configuration itself (plugins.Input).
type rcInput struct {
	ctx  httpCtx
	hdr  *routev3.RouteConfiguration
	info rcInfo
}

// vhostBuilder translates one virtual host of a route configuration into APISIX
// routes. It reads nothing but its inputs and writes nothing but its outputs, so
// virtual hosts can be built on several goroutines.
type vhostBuilder struct {
	// Inputs; plugins are the controller's, merged into every route.
	rc       *rcInput
	vh       *routev3.VirtualHost
	clusters clusters
	plugins  *overlay.Rules
	up       upstream.Options

	// Outputs: the routes, one per refs.keys entry; the upstreams they reference,
	// one per refs.ups entry; the findings; the controller plugins that translated
	// plugins kept out; a summary of the routes' hosts.
	routes   []apisix.Route
	acquires []acquired
	rep      []report.Entry
	shadows  []routeShadow
	hosts    overlay.Hosts
	// refs collects the names finish returns, in buffers of this goroutine.
	refs *refLists
}

// refLists are a virtual host's lists of names while it is built, in buffers reused
// from one build to the next; finish copies them out.
type refLists struct {
	keys, ups, deps, mirror []string
}

// acquired is an upstream a build references: of a cluster, or of a merged
// weighted split.
type acquired struct {
	cluster string
	split   *upstream.Split // instead of cluster, for a merged weighted split
	v       upstream.Variant
	id      string
}

// acquire references the upstream of (cluster, v) once per virtual host and returns
// its id: the routes of a virtual host mostly share one upstream, and one reference
// keeps it alive as well as one per route would.
func (b *vhostBuilder) acquire(cluster string, v upstream.Variant) string {
	return b.reference(acquired{cluster: cluster, v: v, id: upstream.VariantID(cluster, v)})
}

// acquireSplit is acquire for the upstream of a merged weighted split.
func (b *vhostBuilder) acquireSplit(s *upstream.Split, v upstream.Variant) string {
	return b.reference(acquired{split: s, v: v, id: upstream.SplitID(s, v)})
}

func (b *vhostBuilder) reference(a acquired) string {
	for _, u := range b.refs.ups {
		if u == a.id {
			return u
		}
	}
	b.acquires = append(b.acquires, a)
	b.refs.ups = append(b.refs.ups, a.id)
	return a.id
}

// finish returns the lists collected during the build in one exactly sized slice,
// the clusters sorted and each listed once (so that the index can append without
// searching), and empties the buffers without holding on to their strings.
func (b *vhostBuilder) finish() vhostRefs {
	l := b.refs
	slices.Sort(l.deps)
	slices.Sort(l.mirror)
	l.deps, l.mirror = slices.Compact(l.deps), slices.Compact(l.mirror)
	n := len(l.keys) + len(l.ups) + len(l.deps) + len(l.mirror)
	refs := make([]string, 0, n)
	refs = append(append(append(append(refs, l.keys...), l.ups...), l.deps...), l.mirror...)
	out := vhostRefs{refs: refs, nKeys: int32(len(l.keys)), nUps: int32(len(l.ups)), nDeps: int32(len(l.deps))}
	for _, s := range []*[]string{&l.keys, &l.ups, &l.deps, &l.mirror} {
		clear(*s)
		*s = (*s)[:0]
	}
	return out
}

func (b *vhostBuilder) resource(r *routev3.Route, i int) string {
	n := r.GetName()
	if n == "" {
		n = "#" + strconv.Itoa(i)
	}
	return b.rc.ctx.key + "/" + b.vh.GetName() + "/" + n
}

func (b *vhostBuilder) report(kind, resource, field string, sev report.Severity, msg string) {
	b.rep = append(b.rep, report.Entry{Kind: kind, Resource: resource, Field: field, Severity: sev, Message: msg})
}

// groups splits the domains of the virtual host.
func (b *vhostBuilder) groups() []group {
	var hosts []string
	var suffixes []string
	exact := map[string]bool{}
	var prefixes []string
	star := false
	portDropped := false
	for _, d := range b.vh.GetDomains() {
		d = strings.ToLower(d)
		if d == "*" {
			star = true
			continue
		}
		if i := strings.LastIndexByte(d, ':'); i > 0 && !strings.Contains(d[i:], "]") {
			if b.rc.info.ignorePort {
				// Envoy strips the port from the request's host: this domain never matches.
				continue
			}
			d = d[:i]
			portDropped = true
		}
		// nginx strips one trailing dot from $host.
		d = strings.TrimSuffix(d, ".")
		switch {
		case d == "":
			continue
		case d[0] == '*':
			if validHost(d[1:]) {
				hosts = append(hosts, d)
				suffixes = append(suffixes, d[1:])
			} else {
				b.report("virtual_host", b.rc.ctx.key+"/"+b.vh.GetName(), "domains", report.Unsupported, "domain "+d+" cannot be an APISIX host and is not served")
			}
		case d[len(d)-1] == '*':
			prefixes = append(prefixes, d[:len(d)-1])
		default:
			if validHost(d) {
				if !exact[d] {
					exact[d] = true
					hosts = append(hosts, d)
				}
			} else {
				b.report("virtual_host", b.rc.ctx.key+"/"+b.vh.GetName(), "domains", report.Unsupported, "domain "+d+" cannot be an APISIX host and is not served")
			}
		}
	}
	if portDropped {
		b.report("virtual_host", b.rc.ctx.key+"/"+b.vh.GetName(), "domains", report.Approximated, "domains with a port are matched without it")
	}
	var gs []group
	if len(hosts) > 0 {
		g := group{hosts: dedupe(hosts)}
		// Envoy's suffix wildcard needs at least one character before the suffix;
		// APISIX's also matches the bare suffix.
		for _, s := range suffixes {
			if !exact[s] {
				g.vars = append(g.vars, apisix.Expr{"host", "~=", s})
			}
		}
		gs = append(gs, g)
	}
	stems := b.rc.info.stems()
	for k, p := range dedupe(prefixes) {
		g := group{suffix: ".pw" + strconv.Itoa(k)}
		g.vars = append(g.vars, apisix.Expr{"host", "~~", `\A` + quoteLiteral(p) + `[\x00-\xff]`})
		var longer []string
		for _, q := range stems {
			if len(q) > len(p) && strings.HasPrefix(q, p) {
				longer = append(longer, q)
			}
		}
		if len(longer) > 0 {
			g.vars = append(g.vars, not(apisix.Expr{"host", "~~", stemRegex(longer)}))
		}
		gs = append(gs, g)
	}
	if star {
		g := group{suffix: ".any"}
		if len(stems) > 0 {
			g.vars = append(g.vars, not(apisix.Expr{"host", "~~", stemRegex(stems)}))
		}
		gs = append(gs, g)
	}
	return gs
}

func stemRegex(stems []string) string {
	q := make([]string, len(stems))
	for i, s := range stems {
		q[i] = quoteLiteral(s)
	}
	return `\A(?:` + strings.Join(q, "|") + `)[\x00-\xff]`
}

// validHost reports whether h matches APISIX's host pattern (after an optional '*').
func validHost(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '[' || c == ']' || c == ':') {
			return false
		}
	}
	return true
}

func dedupe(s []string) []string {
	seen := make(map[string]bool, len(s))
	out := s[:0:0]
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// builtRoute is one Envoy route, translated once and emitted per group.
type builtRoute struct {
	shape      routeShape
	exactNat   bool // the natural bucket matches exactly the path matcher
	path       pathSpec
	conds      []apisix.Expr
	matchesAll bool // no condition besides a path matching everything
	fail       *failure
	upstreamID string
	plugins    map[string]any
	websocket  bool
	rbac       []json.RawMessage // the steps amesh-rbac enforces first, in filter order
}

// failure is why a route answers an error instead of routing.
type failure struct {
	status int
	reason string
	body   string // the response body; "" for "amesh: <reason>"
}

func (f *failure) responseBody() string {
	if f.body != "" {
		return f.body
	}
	return "amesh: " + f.reason + "\n"
}

func (b *vhostBuilder) build() {
	routes := b.vh.GetRoutes()
	brs := make([]builtRoute, len(routes))
	shapes := make([]routeShape, len(routes))
	catchAll := false
	for i, r := range routes {
		br := &brs[i]
		res := b.resource(r, i)
		br.path = pathOf(r.GetMatch())
		nat, exact := naturalBucket(br.path)
		br.shape = routeShape{sets: setsOf(br.path), nat: nat}
		br.exactNat = exact
		b.conditions(r, br, res)
		v, steps := b.routeVerdict(r, res)
		var why string
		if br.rbac, why = withUpstreams(steps, b.authzUpstream); why != "" {
			v, br.rbac = &verdict{deny: true, status: 403, reason: why}, nil
			b.report("route", res, "route", report.Unsupported, why+"; the route answers 403 (fail closed)")
		}
		if v != nil {
			// The filters refuse the route's requests before the router looks at its
			// action (or at a match amesh cannot express).
			br.fail = &failure{status: v.status, reason: v.reason, body: v.body}
		} else {
			b.action(r, br, res)
		}
		shapes[i] = br.shape
		if br.matchesAll {
			catchAll = true
		}
	}
	buckets := assignBuckets(shapes)
	n := len(routes)
	base := b.rc.ctx.key + "." + b.vh.GetName()
	for _, g := range b.groups() {
		for _, h := range g.hosts {
			b.hosts.Add(h)
		}
		for i, r := range routes {
			br := &brs[i]
			bk := buckets[i]
			vars := make([]apisix.Expr, 0, len(b.rc.ctx.vars)+len(g.vars)+1+len(br.conds))
			vars = append(vars, b.rc.ctx.vars...)
			vars = append(vars, g.vars...)
			if bk.all && !(br.exactNat && br.shape.nat.all) {
				if pv, err := pathVar(br.path); err == nil && pv != nil {
					vars = append(vars, pv)
				}
			}
			vars = append(vars, br.conds...)
			obj := apisix.Route{
				ID:       apisix.SafeID(base + g.suffix + "." + strconv.Itoa(i)),
				Name:     routeName(r.GetName()),
				Hosts:    g.hosts,
				Vars:     vars,
				Priority: n - i,
			}
			if uris := bk.uris(); len(uris) == 1 {
				obj.URI = uris[0]
			} else {
				obj.URIs = uris
			}
			if br.fail != nil {
				obj.Plugins = abortPlugin(br.fail.status, br.fail.responseBody())
			} else {
				obj.UpstreamID = br.upstreamID
				obj.Plugins = br.plugins
				obj.EnableWebsocket = br.websocket
			}
			if len(br.rbac) > 0 {
				obj.Plugins = withRBAC(obj.Plugins, b.rc.ctx.filters.rbacPlugin(br.rbac))
			}
			if len(obj.Vars) == 0 {
				obj.Vars = nil
			}
			b.emit(obj)
		}
		if !catchAll {
			vars := make([]apisix.Expr, 0, len(b.rc.ctx.vars)+len(g.vars))
			vars = append(vars, b.rc.ctx.vars...)
			vars = append(vars, g.vars...)
			if len(vars) == 0 {
				vars = nil
			}
			// Envoy's filters run before the router finds no route: a request they
			// refuse gets their answer, not a 404.
			plugins := abortPlugin(404, "")
			if v := b.rc.ctx.filters.refuseUnrouted(); v != nil {
				plugins = abortPlugin(v.status, v.body)
			}
			if cf := b.rc.ctx.filters; cf != nil && len(cf.noRouteSteps.list) > 0 {
				if steps, why := withUpstreams(cf.noRouteSteps, b.authzUpstream); why != "" {
					plugins = abortPlugin(403, "amesh: "+why+"\n")
				} else {
					plugins = withRBAC(plugins, cf.rbacPlugin(steps))
				}
			}
			b.emit(apisix.Route{
				ID:      apisix.SafeID(base + g.suffix + ".nr"),
				Name:    "no-route",
				URI:     "/*",
				Hosts:   g.hosts,
				Vars:    vars,
				Plugins: plugins,
			})
		}
	}
}

func routeName(n string) string {
	if len(n) > 256 {
		return n[:256]
	}
	return n
}

func (b *vhostBuilder) emit(r apisix.Route) {
	key := apisix.Key(apisix.KindRoutes, r.ID)
	if x := b.rc.ctx.filters.xfccPlugin(); x != nil {
		r.Plugins = withPlugin(r.Plugins, xfccPluginName, *x)
	}
	for _, sh := range b.plugins.Merge(&r) {
		b.shadows = append(b.shadows, routeShadow{Shadow: sh, key: key})
	}
	b.refs.keys = append(b.refs.keys, key)
	b.routes = append(b.routes, r)
}

// withRBAC returns plugins with amesh-rbac added, which runs before any of them but
// amesh-xfcc (its priority is the highest after that one's), as Envoy's RBAC filters
// run before the router and after the connection manager's header rewrites.
func withRBAC(plugins map[string]any, conf rbacPluginConf) map[string]any {
	return withPlugin(plugins, rbacPluginName, conf)
}

// withPlugin returns a copy of plugins with name's config conf added (the maps of
// routes may be shared).
func withPlugin(plugins map[string]any, name string, conf any) map[string]any {
	out := make(map[string]any, len(plugins)+1)
	maps.Copy(out, plugins)
	out[name] = conf
	return out
}

// abortPlugin answers every request with status and body (fault-injection abort at 100%).
func abortPlugin(status int, body string) map[string]any {
	return map[string]any{"fault-injection": faultAbort{Abort: abortSpec{HTTPStatus: status, Body: body}}}
}

type faultAbort struct {
	Abort abortSpec `json:"abort"`
}

type abortSpec struct {
	HTTPStatus int    `json:"http_status"`
	Body       string `json:"body"`
}

// conditions translates the non-path parts of the match.
func (b *vhostBuilder) conditions(r *routev3.Route, br *builtRoute, res string) {
	m := r.GetMatch()
	var reasons, invalid []string
	if br.path.kind == pathUnsupported {
		reasons = append(reasons, "path matcher kind is not supported")
	} else if br.path.kind == pathRegex {
		if _, err := pcreAnchored(br.path.lit); err != nil {
			invalid = append(invalid, err.Error())
			br.path = pathSpec{kind: pathPrefix, lit: "/"}
			br.shape = routeShape{sets: setsOf(br.path), nat: bucket{all: true}}
			br.exactNat = true
		}
	}
	for _, h := range m.GetHeaders() {
		terms, err := headerTerms(h)
		switch {
		case isRegexError(err):
			invalid = append(invalid, err.Error())
		case err != nil:
			reasons = append(reasons, err.Error())
		default:
			br.conds = append(br.conds, terms...)
		}
	}
	if qs := m.GetQueryParameters(); len(qs) > 0 {
		for _, q := range qs {
			terms, err := queryTerms(q)
			switch {
			case isRegexError(err):
				invalid = append(invalid, err.Error())
			case err != nil:
				reasons = append(reasons, err.Error())
			default:
				br.conds = append(br.conds, terms...)
			}
		}
		b.report("route", res, "match.query_parameters", report.Approximated,
			"query parameters are read from nginx's $arg_<name>: first value, not percent-decoded, name case-insensitive")
	}
	if len(invalid) > 0 {
		// Envoy rejects the whole route configuration (the xDS client NACKs it, see
		// resource.ValidateRouteConfig), so no request ever reaches this route there.
		// Input that skipped that check (a file, a test) gets a route that matches
		// nothing: failing closed would need a condition at least as wide as the
		// route's, which would take requests from the routes after it.
		br.conds = append(br.conds, apisix.Expr{"uri", "~~", `(?!)`})
		br.fail = &failure{status: 500, reason: "invalid regex"}
		br.matchesAll = false
		b.report("route", res, "match", report.Invalid, strings.Join(invalid, "; ")+
			"; Envoy rejects the route configuration; the route matches nothing")
		return
	}
	if m.GetGrpc() != nil {
		br.conds = append(br.conds, apisix.Expr{"http_content_type", "~~", `\Aapplication/grpc(?:[+;]|\z)`})
	}
	if m.GetRuntimeFraction() != nil {
		reasons = append(reasons, "runtime_fraction (probabilistic match) has no APISIX equivalent")
	}
	if m.GetTlsContext() != nil {
		reasons = append(reasons, "tls_context match is not supported")
	}
	if len(m.GetDynamicMetadata()) > 0 {
		reasons = append(reasons, "dynamic_metadata match is not supported")
	}
	if m.GetFilterState() != nil {
		reasons = append(reasons, "filter_state match is not supported")
	}
	if len(reasons) > 0 {
		// Dropping a condition makes the match a superset; the route fails closed, so
		// requests it now also catches get an error rather than another route.
		msg := strings.Join(reasons, "; ")
		br.fail = &failure{status: 500, reason: "route cannot be translated: " + msg}
		b.report("route", res, "match", report.Unsupported, msg+"; the route fails closed (500)")
	}
	br.matchesAll = len(br.conds) == 0 && br.path.kind == pathPrefix && (br.path.lit == "" || br.path.lit == "/")
}
