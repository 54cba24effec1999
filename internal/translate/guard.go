package translate

// Filters in front of the routes. Envoy runs a connection's network filters, then the
// HTTP connection manager's HTTP filters in order, the router last; a filter that
// refuses a request ends it there, before the router picks a route or a cluster. amesh
// translates the router (the routes), fault and CORS (from their per-route configs,
// package plugins); filters that only observe traffic are ignored. Every other filter
// is a guard: amesh enforces what it decides when that is the same for every request
// of a route (an RBAC filter without rules allows everything, one that allows no
// policy denies everything...); an HTTP RBAC filter whose rules depend on the request
// is enforced per request by the amesh-rbac plugin, which runs the RBAC, jwt_authn and
// ext_authz filters of a route in filter order, as one ordered list of steps, up to the
// first guard that refuses the route's requests; and otherwise the routes a guard
// applies to fail closed:
// 403 for a filter that decides who gets in (RBAC, ext_authz, jwt_authn and code that
// may refuse requests, as Envoy answers a request it cannot authorize), 500 for any
// other. Per-route configs (typed_per_filter_config, FilterConfig) that disable,
// enable or override a guard are taken into account, or fail the route closed.

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/plugins"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Names istiod gives the filters whose per-route configs package plugins translates.
const (
	faultFilterName = "envoy.filters.http.fault"
	corsFilterName  = "envoy.filters.http.cors"
)

// rbacDeniedBody is what Envoy's RBAC filter answers a request it denies (403).
const rbacDeniedBody = "RBAC: access denied"

// verdict is what a filter decides for the requests of one route.
type verdict struct {
	deny   bool
	status int
	body   string // the response body
	reason string // why, for the report
	// rbac, when set, is an RBAC filter's rules (the JSON of an rbacEnforced) that
	// amesh-rbac enforces per request; deny is false then.
	rbac string
	// gaps: some of rbac's conditions are decided as Envoy's worst case.
	gaps bool
	// shadow is an RBAC filter's shadow rules and authz an ext_authz filter, as the
	// JSON of their amesh-rbac steps (extauthz.go); deny is false then.
	shadow, authz string
}

// failClosed is the verdict on requests a filter amesh cannot enforce applies to.
func failClosed(status int, reason string) verdict {
	return verdict{deny: true, status: status, body: "amesh: " + reason + "\n", reason: reason}
}

// guard is one filter that may refuse requests.
type guard struct {
	name     string // the filter's name: the key of its per-route configs
	role     resource.FilterRole
	network  bool // a network filter: it has no per-route configs
	disabled bool // disabled by default: only routes that enable it run it
	base     verdict
	status   int     // of a fail-closed verdict: 403 for a filter that decides who gets in, else 500
	env      rbacEnv // what RBAC rules of per-route configs read
	// jwt is a jwt_authn filter's config, whose requirement_map per-route configs name,
	// and fetched the remote JWKS its providers' keys come from.
	jwt     *jwtv3.JwtAuthentication
	fetched jwks.Set
}

// failClosed is the verdict on a route the guard cannot be enforced on.
func (g *guard) failClosed(reason string) verdict {
	return failClosed(g.status, reason)
}

// ctxFilters is what the filters of one filter chain mean for its routes.
type ctxFilters struct {
	guards []guard
	// plugins are the HTTP filters as package plugins sees them, by name.
	plugins map[string]plugins.HTTPFilter
	// noRoute is what the filters decide for a request that matches no route (no
	// per-route config applies to it); nil when they let it reach the router (404).
	noRoute *verdict
	// noRouteSteps are the amesh-rbac steps enforced before noRoute (or the router's
	// 404).
	noRouteSteps routeSteps
	env          rbacEnv
	// alpn is what Istio's istio.alpn filter sets as the upstream ALPN of HTTP/1.1
	// requests (see alpnOverride).
	alpn []string
	// xfcc is how the connection manager rewrites x-forwarded-client-cert (xfcc.go).
	xfcc *xfccConf
	sig  string
}

// alpnOverride is the ALPN list the filters set for upstream TLS of the routes'
// requests (APISIX speaks HTTP/1.1 upstream), nil when they set none.
func (cf *ctxFilters) alpnOverride() []string {
	if cf == nil {
		return nil
	}
	return cf.alpn
}

// refuseUnrouted is what the filters answer a request no route matches, nil when
// they let it through (the router answers 404).
func (cf *ctxFilters) refuseUnrouted() *verdict {
	if cf == nil {
		return nil
	}
	return cf.noRoute
}

// note is a report entry about a filter chain, without the listener it belongs to.
type note struct {
	field string
	sev   report.Severity
	msg   string
}

// chainAnalysis is one filter chain: its terminal filter and what the filters in
// front of the routes mean for them.
type chainAnalysis struct {
	hcm *hcmv3.HttpConnectionManager
	tcp *tcpv3.TcpProxy
	// terminal names a terminal network filter amesh does not translate.
	terminal string
	filters  ctxFilters
	notes    []note
	// observed lists the filters that only observe traffic, and accounted lists
	// what became of the others that need no report entry of their own.
	observed, accounted []string
	// pluginFilters are the fault and CORS filters read so far, in order.
	pluginFilters []string
	// fetched are the remote JWKS fetched so far; remote are those the chain's
	// jwt_authn providers name (package jwks fetches them).
	fetched jwks.Set
	remote  []remoteJWKS
}

// analyzeChain reads a filter chain's filters in order. Listeners reach translation
// validated (resource.ValidateListenerFilters), so every filter type is one Envoy
// implements; one that is not is failed closed all the same.
func analyzeChain(fc *listenerv3.FilterChain, portVar string, fetched jwks.Set) chainAnalysis {
	a := chainAnalysis{fetched: fetched}
	a.filters.env.PortVar = portVar
	fs := fc.GetFilters()
	// Network RBAC in front of tcp_proxy is enforced per connection on the stream route.
	tcpChain := false
	if n := len(fs); n > 0 {
		typ, err := resource.FilterTypeName(fs[n-1].GetTypedConfig())
		tcpChain = err == nil && resource.NetworkFilterRole(typ) == resource.RoleTCPProxy
	}
	for i, f := range fs {
		name := f.GetName()
		field := "filter_chains.filters[" + name + "]"
		if cd := f.GetConfigDiscovery(); cd != nil {
			a.ecds(name, field, resource.ECDSRole(cd.GetTypeUrls(), true), true, false)
			continue
		}
		typ, err := resource.FilterTypeName(f.GetTypedConfig())
		if err != nil {
			a.addGuard(guard{name: name, role: resource.RoleOther, network: true, status: 500,
				base: failClosed(500, "network filter "+name+": "+err.Error())}, field)
			continue
		}
		switch role := resource.NetworkFilterRole(typ); role {
		case resource.RoleHCM:
			h, err := resource.HCMOf(f)
			if err != nil {
				a.addGuard(guard{name: name, role: resource.RoleOther, network: true, status: 500,
					base: failClosed(500, "HTTP connection manager "+name+" cannot be decoded: "+err.Error())}, field)
				continue
			}
			a.hcm = h
			a.httpFilters(h)
		case resource.RoleTCPProxy:
			tp := &tcpv3.TcpProxy{}
			if err := resource.UnpackFilterConfig(f.GetTypedConfig(), tp); err != nil {
				a.addGuard(guard{name: name, role: resource.RoleOther, network: true, status: 500,
					base: failClosed(500, "tcp_proxy "+name+" cannot be decoded: "+err.Error())}, field)
				continue
			}
			a.tcp = tp
		case resource.RoleObserve:
			a.observed = append(a.observed, name)
		case resource.RoleRBAC:
			c := &rbacnetv3.RBAC{}
			if err := resource.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
				a.addGuard(guard{name: name, role: role, network: true, status: 403,
					base: failClosed(403, "network RBAC filter "+name+" cannot be decoded: "+err.Error())}, field)
				continue
			}
			o := rbacRules(c.GetRules(), c.GetMatcher(), c.GetShadowRules() != nil || c.GetShadowMatcher() != nil)
			g := guard{name: name, role: role, network: true, status: 403}
			switch o.decision {
			case rbacAllowAll:
			case rbacDenyAll:
				// Envoy closes such connections; an HTTP client of APISIX gets a 403.
				g.base = verdict{deny: true, status: 403, body: rbacDeniedBody, reason: "network RBAC filter " + name + ": " + o.why}
			default:
				v, ok := verdict{}, false
				if tcpChain {
					v, ok = networkRBACVerdict(name, c, o.why)
				}
				if !ok {
					v = failClosed(403, "network RBAC filter "+name+": "+o.why+"; not translated")
				}
				g.base = v
			}
			a.addGuardWhy(g, field, o.why)
		default:
			if i == len(fs)-1 && role != resource.RoleUnknown && role != resource.RoleAccess {
				a.terminal = name
				continue
			}
			status, what := 500, "changes connections"
			if role.Guards() {
				status, what = 403, "may refuse connections"
			}
			if role == resource.RoleUnknown {
				what = "has a type (" + typ + ") Envoy does not implement"
			}
			a.addGuard(guard{name: name, role: role, network: true, status: status,
				base: failClosed(status, "network filter "+name+" "+what+"; not translated")}, field)
		}
	}
	a.filters.finish()
	a.filters.sigJWKS(a.remote, a.fetched)
	return a
}

// httpFilters reads the HTTP connection manager's filters (and those of its upgrade
// configs, which replace them for upgrade requests).
func (a *chainAnalysis) httpFilters(h *hcmv3.HttpConnectionManager) {
	a.filters.plugins = map[string]plugins.HTTPFilter{}
	a.filters.env = envOf(h, a.filters.env.PortVar)
	x, why := xfccOf(h)
	a.filters.xfcc = &x
	if why != "" {
		// The connection manager rewrites the header before any filter: every route.
		a.addGuard(guard{name: "", role: resource.RoleOther, status: 500,
			base: failClosed(500, "the connection manager's x-forwarded-client-cert settings: "+why+"; not translated")},
			"filter_chains.filters.http_connection_manager.set_current_client_cert_details")
	}
	router := false
	for _, f := range h.GetHttpFilters() {
		if a.httpFilter(f, "filter_chains.filters.http_connection_manager.http_filters["+f.GetName()+"]", true) {
			router = true
		}
	}
	if !router {
		a.addGuard(guard{name: "", role: resource.RoleOther, status: 500,
			base: failClosed(500, "the HTTP filters have no router: Envoy forwards no request")},
			"filter_chains.filters.http_connection_manager.http_filters")
	}
	for _, u := range h.GetUpgradeConfigs() {
		// Their filters run for upgrade requests only; amesh holds every request of
		// the routes to them.
		for _, f := range u.GetFilters() {
			a.httpFilter(f, "filter_chains.filters.http_connection_manager.upgrade_configs["+u.GetUpgradeType()+"].filters["+f.GetName()+"]", false)
		}
	}
}

// httpFilter reads one HTTP filter; main is false for an upgrade config's filters,
// whose per-route configs are not package plugins' to translate. It reports whether
// the filter is the router.
func (a *chainAnalysis) httpFilter(f *hcmv3.HttpFilter, field string, main bool) bool {
	name := f.GetName()
	handled := func() {
		if main {
			a.filters.plugins[name] = plugins.HTTPFilter{Handled: true}
		}
	}
	if cd := f.GetConfigDiscovery(); cd != nil {
		a.ecds(name, field, resource.ECDSRole(cd.GetTypeUrls(), false), false, f.GetDisabled())
		handled()
		return false
	}
	typ, err := resource.FilterTypeName(f.GetTypedConfig())
	role := resource.HTTPFilterRole(typ, f.GetTypedConfig())
	if err != nil {
		role = resource.RoleUnknown
	}
	g := guard{name: name, role: role, disabled: f.GetDisabled(), status: 500, env: a.filters.env}
	if role.Guards() {
		g.status = 403
	}
	switch role {
	case resource.RoleRouter:
		a.accounted = append(a.accounted, name+" (the routes)")
		return true
	case resource.RoleObserve:
		a.observed = append(a.observed, name)
		if main {
			a.filters.plugins[name] = plugins.HTTPFilter{Disabled: f.GetDisabled()}
			if typ == resource.IstioALPNType && !f.GetDisabled() {
				a.filters.alpn = resource.IstioALPN(f.GetTypedConfig())
			}
		}
		return false
	case resource.RoleUnknown:
		if f.GetIsOptional() {
			a.notes = append(a.notes, note{field, report.Ignored, fmt.Sprintf(
				"optional HTTP filter %s has a type (%s) Envoy does not implement; skipped, as Envoy skips it", name, typ)})
			return false
		}
		g.base = g.failClosed("HTTP filter " + name + " has a type (" + typ + ") Envoy does not implement")
	case resource.RoleFault, resource.RoleCORS:
		var fault *faultv3.HTTPFault
		var err error
		if role == resource.RoleFault {
			fault = &faultv3.HTTPFault{}
			if err = resource.UnpackFilterConfig(f.GetTypedConfig(), fault); err == nil && proto.Size(fault) == 0 {
				fault = nil
			}
		}
		if main && err == nil && (role == resource.RoleFault && name == faultFilterName || role == resource.RoleCORS && name == corsFilterName) {
			a.filters.plugins[name] = plugins.HTTPFilter{Disabled: f.GetDisabled(), Fault: fault}
			a.pluginFilters = append(a.pluginFilters, name)
			a.accounted = append(a.accounted, name+" (from per-route configs)")
			return false
		}
		// Under another name (or in an upgrade config) its per-route configs are not
		// translated: routes that have one fail closed, and so does every route if
		// the filter injects faults of its own.
		if fault != nil || err != nil {
			g.base = g.failClosed("HTTP filter " + name + " injects faults of its own; not translated")
		} else {
			a.accounted = append(a.accounted, name+" (no effect without per-route configs)")
		}
	case resource.RoleRBAC:
		c := &rbachttpv3.RBAC{}
		if err := resource.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
			g.base = g.failClosed("RBAC filter " + name + " cannot be decoded: " + err.Error())
			break
		}
		g.base = rbacVerdict(name, c, g.env)
		a.addGuardWhy(g, field, rbacRules(c.GetRules(), c.GetMatcher(), c.GetShadowRules() != nil || c.GetShadowMatcher() != nil).why)
		if len(a.pluginFilters) > 0 && main && g.base.rbac != "" {
			// APISIX runs amesh-rbac before the plugins of these filters.
			a.notes = append(a.notes, note{field, report.Approximated, "RBAC filter " + name + " runs after " + strings.Join(a.pluginFilters, ", ") +
				" in Envoy; amesh enforces RBAC rules first, so a request those filters would abort or answer (a CORS preflight) may get RBAC's 403 instead"})
		}
		handled()
		return false
	case resource.RoleExtAuthz:
		c := &extauthzv3.ExtAuthz{}
		if err := resource.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
			g.base = g.failClosed("ext_authz filter " + name + " cannot be decoded: " + err.Error())
			break
		}
		g.base = extAuthzVerdict(&g, c)
	case resource.RoleJWT:
		c := &jwtv3.JwtAuthentication{}
		if err := resource.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
			g.base = g.failClosed("jwt_authn filter " + name + " cannot be decoded: " + err.Error())
			break
		}
		g.jwt, g.fetched = c, a.fetched
		g.base = jwtVerdict(name, c, a.fetched)
		a.remote = appendRemote(a.remote, c)
	case resource.RoleAccess:
		g.base = g.failClosed("HTTP filter " + name + " (" + typ + ") may refuse requests; not translated")
	default:
		g.base = g.failClosed("HTTP filter " + name + " (" + typ + ") changes requests or responses; not translated")
	}
	a.addGuard(g, field)
	handled()
	return false
}

// rbacRulesVerdict is what an HTTP RBAC filter's own config decides: rules that depend on
// the request are enforced by amesh-rbac, a matcher tree fails closed.
func rbacRulesVerdict(name string, c *rbachttpv3.RBAC, env rbacEnv) verdict {
	o := rbacRules(c.GetRules(), c.GetMatcher(), c.GetShadowRules() != nil || c.GetShadowMatcher() != nil)
	switch o.decision {
	case rbacAllowAll:
		return verdict{}
	case rbacDenyAll:
		return verdict{deny: true, status: 403, body: rbacDeniedBody, reason: "RBAC filter " + name + ": " + o.why}
	}
	if act := c.GetRules().GetAction(); c.GetMatcher() == nil && (act == rbacv3.RBAC_ALLOW || act == rbacv3.RBAC_DENY) {
		f, gaps := compileRBAC(name, c.GetRules(), env)
		b, err := json.Marshal(f)
		if err == nil {
			v := verdict{rbac: string(b), reason: "RBAC filter " + name + ": " + o.why + "; enforced per request by " + rbacPluginName}
			if len(gaps) > 0 {
				v.gaps = true
				v.reason += "; decided as Envoy's worst case (what would deny), as amesh cannot evaluate them: " + strings.Join(gaps, ", ")
			}
			return v
		}
	}
	return failClosed(403, "RBAC filter "+name+": "+o.why+"; not translated")
}

// ecds records a filter whose config comes from the extension config discovery
// service, which amesh does not serve: a config of any of its allowed types may arrive.
func (a *chainAnalysis) ecds(name, field string, role resource.FilterRole, network, disabled bool) {
	if role == resource.RoleObserve {
		a.observed = append(a.observed, name+" (config from ECDS)")
		return
	}
	status := 500
	if role.Guards() {
		status = 403
	}
	reason := "filter " + name + " takes its config from the extension config discovery service (ECDS), which amesh does not serve"
	a.addGuard(guard{name: name, role: role, network: network, disabled: disabled, status: status, base: failClosed(status, reason)}, field)
}

func (a *chainAnalysis) addGuard(g guard, field string) {
	a.addGuardWhy(g, field, "")
}

// addGuardWhy adds a guard and its report entry; why explains an RBAC decision.
func (a *chainAnalysis) addGuardWhy(g guard, field, why string) {
	a.filters.guards = append(a.filters.guards, g)
	var n note
	switch {
	case g.role == resource.RoleJWT && g.base.rbac != "":
		n = note{field, report.Approximated, g.base.reason + "; " + jwtApprox}
	case g.base.rbac != "" && g.network && !g.base.gaps:
		n = note{field, report.Approximated, g.base.reason + "; " + networkRBACApprox}
	case g.base.rbac != "" && g.base.gaps:
		n = note{field, report.Unsupported, g.base.reason}
	case g.base.rbac != "":
		n = note{field, report.Approximated, g.base.reason + "; " + rbacApprox}
	case g.base.authz != "":
		n = note{field, report.Approximated, g.base.reason + "; " + extAuthzApprox}
	case !g.base.deny:
		n = note{field, report.Ignored, fmt.Sprintf("filter %s refuses no request", g.name)}
		switch {
		case why != "":
			n.msg += ": " + why
		case g.role == resource.RoleJWT:
			n.msg += ": no rules apply; routes whose per-route config names a requirement verify it"
		}
	case g.base.body == rbacDeniedBody && g.network:
		n = note{field, report.Approximated, g.base.reason + "; Envoy closes these connections: HTTP routes behind the filter answer 403, connections to a TCP proxy behind it are refused"}
	case g.base.body == rbacDeniedBody:
		n = note{field, report.Approximated, g.base.reason + "; the routes answer 403 (" + rbacDeniedBody + ") as in Envoy, except requests for hosts no virtual host serves, which get APISIX's 404"}
	case g.network:
		n = note{field, report.Unsupported, fmt.Sprintf("%s; HTTP routes behind the filter answer %d (fail closed), connections to a TCP proxy behind it are refused", g.base.reason, g.base.status)}
	default:
		n = note{field, report.Unsupported, fmt.Sprintf("%s; the routes answer %d (fail closed)", g.base.reason, g.base.status)}
	}
	if g.base.shadow != "" {
		n.msg += shadowNote(g.base.shadow)
	}
	if g.disabled && (g.base.deny || g.base.rbac != "" || g.base.authz != "") {
		n.msg += "; disabled by default, so only routes that enable it in their per-route config"
	}
	a.notes = append(a.notes, n)
}

// finish computes what requests matching no route get, and the signature.
func (cf *ctxFilters) finish() {
	var steps stepsBuilder
	for i := range cf.guards {
		g := &cf.guards[i]
		if g.network || !g.disabled {
			if why := steps.add(g.base); why != "" {
				v := g.failClosed(why)
				cf.noRoute = &v
				break
			}
			if g.base.deny {
				v := g.base
				cf.noRoute = &v
				break
			}
		}
	}
	cf.noRouteSteps = steps.done()
	var b strings.Builder
	fmt.Fprintf(&b, "%+v;%q;%+v;", cf.env, cf.alpn, cf.xfcc)
	for _, g := range cf.guards {
		fmt.Fprintf(&b, "%q/%d/%t/%t/%+v;", g.name, g.role, g.network, g.disabled, g.base)
	}
	names := slices.Sorted(maps.Keys(cf.plugins))
	for _, n := range names {
		p := cf.plugins[n]
		fmt.Fprintf(&b, "%q:%t/%t/%x;", n, p.Handled, p.Disabled, mustMarshal(p.Fault))
	}
	cf.sig = b.String()
}

// sigJWKS adds to the signature the fetched JWKS of remote, which per-route configs'
// requirements read.
func (cf *ctxFilters) sigJWKS(remote []remoteJWKS, fetched jwks.Set) {
	if len(remote) == 0 {
		return
	}
	var b strings.Builder
	b.WriteString(cf.sig)
	for _, r := range remote {
		res := fetched[r.Source]
		h := fnv.New64a()
		h.Write([]byte(res.JWKS))
		fmt.Fprintf(&b, "jwks %q %x %q;", r.Source.String(), h.Sum64(), res.Err)
	}
	cf.sig = b.String()
}

func mustMarshal(m proto.Message) []byte {
	if m == nil {
		return nil
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return b
}

// summary is the listener's one report entry on the filters that need no entry of
// their own: those that only observe (ignored) and those translated with the routes.
func summary(observed, accounted []string) (note, bool) {
	observed, accounted = uniqueSorted(observed), uniqueSorted(accounted)
	var parts []string
	if len(observed) > 0 {
		parts = append(parts, "filters that only observe traffic are ignored: "+strings.Join(observed, ", "))
	}
	if len(accounted) > 0 {
		parts = append(parts, "translated: "+strings.Join(accounted, ", "))
	}
	if len(parts) == 0 {
		return note{}, false
	}
	return note{"filter_chains.filters", report.Ignored, strings.Join(parts, "; ")}, true
}

func uniqueSorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}

// routeVerdict is what the guards decide for the requests of route r, in filter
// order: the first that refuses them answers, after the steps (RBAC rules, jwt_authn,
// shadow rules, ext_authz) of the filters in front of it, which amesh-rbac enforces in
// that order. It reports per-route configs that play a part.
func (b *vhostBuilder) routeVerdict(r *routev3.Route, res string) (*verdict, routeSteps) {
	cf := b.rc.ctx.filters
	if cf == nil {
		return nil, routeSteps{}
	}
	var steps stepsBuilder
	for i := range cf.guards {
		g := &cf.guards[i]
		v := b.guardOn(g, r, res)
		if why := steps.add(v); why != "" {
			fv := g.failClosed(why)
			return &fv, steps.done()
		}
		if v.deny {
			return &v, steps.done()
		}
	}
	return nil, steps.done()
}

// rbacApprox says what amesh-rbac decides differently from Envoy.
const rbacApprox = "the plugin decides as Envoy's worst case (what would deny) a request whose :path it cannot normalise as the connection manager does (percent-encoding, backslashes, bytes outside RFC 3986's path characters), an x-forwarded-for entry it may read as an address differently from Envoy (remote_ip), and a regex PCRE cannot run on the value; requests for hosts no virtual host serves get APISIX's 404 without the rules"

// rbacPlugin is the amesh-rbac config enforcing rules on a route of the chain.
func (cf *ctxFilters) rbacPlugin(rules []json.RawMessage) rbacPluginConf {
	return rbacPluginConf{rbacEnv: cf.env, Filters: rules}
}

// guardOn decides one guard for a route: the most specific per-route config under the
// guard's name (a weighted cluster's, the route's, the virtual host's, the route
// configuration's) decides, and without one the filter's own config.
func (b *vhostBuilder) guardOn(g *guard, r *routev3.Route, res string) verdict {
	if g.network || g.name == "" {
		return g.base
	}
	levels := []struct {
		field string
		cfgs  map[string]*anypb.Any
	}{
		{"route.typed_per_filter_config", r.GetTypedPerFilterConfig()},
		{"virtual_host.typed_per_filter_config", b.vh.GetTypedPerFilterConfig()},
		{"route_config.typed_per_filter_config", b.rc.hdr.GetTypedPerFilterConfig()},
	}
	var field string
	var cfg *anypb.Any
	for _, lv := range levels {
		if a := lv.cfgs[g.name]; a != nil {
			field, cfg = lv.field+"["+g.name+"]", a
			break
		}
	}
	v := g.decide(cfg)
	for _, cw := range r.GetRoute().GetWeightedClusters().GetClusters() {
		a := cw.GetTypedPerFilterConfig()[g.name]
		if a == nil {
			continue
		}
		if cv := g.decide(a); cv != v {
			field = "route.weighted_clusters.clusters.typed_per_filter_config[" + g.name + "]"
			v = g.failClosed("the weighted clusters' per-route configs for filter " + g.name + " decide differently; not translated")
			break
		}
	}
	if field != "" {
		sev, msg := report.Ignored, "per-route config lets every request through filter "+g.name
		switch {
		case g.role == resource.RoleJWT && v.rbac != "":
			sev, msg = report.Approximated, v.reason+"; "+jwtApprox
		case v.rbac != "" && v.gaps:
			sev, msg = report.Unsupported, v.reason
		case v.rbac != "":
			sev, msg = report.Approximated, v.reason+"; "+rbacApprox
		case v.authz != "":
			sev, msg = report.Approximated, v.reason+"; "+extAuthzApprox
		case v.deny:
			sev, msg = report.Unsupported, fmt.Sprintf("%s; the route answers %d (fail closed)", v.reason, v.status)
			if v.body == rbacDeniedBody {
				sev, msg = report.Approximated, v.reason+"; the route answers 403 ("+rbacDeniedBody+") as in Envoy"
			}
		}
		// Istio's RBAC filters share one name: report a per-route config once.
		e := report.Entry{Kind: "route", Resource: res, Field: field, Severity: sev, Message: msg}
		if !slices.Contains(b.rep, e) {
			b.rep = append(b.rep, e)
		}
	}
	return v
}

// decide is the guard's verdict given the most specific per-route config under its
// name (nil for none).
func (g *guard) decide(a *anypb.Any) verdict {
	if a == nil {
		if g.disabled {
			return verdict{}
		}
		return g.base
	}
	typ, _ := resource.FilterTypeName(a)
	if typ == "envoy.config.route.v3.FilterConfig" {
		fc := &routev3.FilterConfig{}
		if err := a.UnmarshalTo(fc); err != nil {
			return g.failClosed("per-route FilterConfig for filter " + g.name + " cannot be decoded")
		}
		switch {
		case fc.GetDisabled():
			return verdict{}
		case fc.GetConfig() == nil:
			return g.base // enabled, with the filter's own config
		}
		a = fc.GetConfig()
		typ, _ = resource.FilterTypeName(a)
	}
	switch {
	case g.role == resource.RoleRBAC && typ == "envoy.extensions.filters.http.rbac.v3.RBACPerRoute":
		pr := &rbachttpv3.RBACPerRoute{}
		if err := resource.UnpackFilterConfig(a, pr); err != nil {
			break
		}
		if pr.GetRbac() == nil {
			return verdict{} // Envoy: without rbac, RBAC is disabled for the route
		}
		return rbacVerdict(g.name, pr.GetRbac(), g.env)
	case g.role == resource.RoleExtAuthz && typ == "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute":
		pr := &extauthzv3.ExtAuthzPerRoute{}
		if err := resource.UnpackFilterConfig(a, pr); err != nil {
			break
		}
		if pr.GetDisabled() {
			return verdict{}
		}
		if why := extAuthzPerRoute(pr); why != "" {
			return g.failClosed("per-route config for ext_authz filter " + g.name + " " + why + "; not translated")
		}
		return g.base
	case g.role == resource.RoleJWT && typ == "envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig":
		pr := &jwtv3.PerRouteConfig{}
		if err := resource.UnpackFilterConfig(a, pr); err != nil {
			break
		}
		if pr.GetDisabled() {
			return verdict{}
		}
		if req := g.jwt.GetRequirementMap()[pr.GetRequirementName()]; req != nil {
			return jwtStepVerdict(g.name, g.jwt, req, g.fetched)
		}
		// Envoy answers 403 "Failed JWT authentication: Wrong requirement_name".
		return g.failClosed("the route names JWT requirement " + pr.GetRequirementName() + ", which filter " + g.name + " lacks")
	}
	return g.failClosed("per-route config (" + typ + ") for filter " + g.name + " is not translated")
}
