package translate

// RBAC rules that depend on the request, in the form APISIX's amesh-rbac plugin
// (lua/apisix/plugins/amesh-rbac.lua, lua/amesh/rbac.lua) evaluates per request. Each
// Envoy RBAC filter with action ALLOW or DENY becomes one rbacEnforced; a route carries
// the filters in HTTP filter order, and the first that denies answers 403 "RBAC: access
// denied" as Envoy does.
//
// What the plugin reads: the :path as Envoy's HTTP connection manager normalises it
// (from $request_uri; see rbacEnv), the method and headers (repeated headers joined
// with "," as Envoy's header matchers see them), the destination port from the
// original-destination variable, the peer's address (the remote address from
// x-forwarded-for as the connection manager takes it), and the downstream TLS peer for
// Envoy's authenticated principal (its certificate's URI SANs, DNS SANs and subject,
// from nginx/original_dst's variables; no TLS, no match). Everything else a rule may
// name (JWT claims and other metadata, the SNI, the destination address, CEL
// conditions, matcher extensions, headers the connection manager rewrites other than
// x-forwarded-client-cert, which amesh-xfcc rewrites first) is decided here as the worst case
// Envoy could decide: a condition that cannot be evaluated never makes an ALLOW
// policy match and always makes a DENY policy match. Conditions under a not_rule (or
// not_id) flip, so the constant given to each is chosen by the polarity of its
// position, which makes the whole policy deny at least what Envoy denies. Conditions
// the plugin may find it cannot evaluate at run time (a path Envoy would normalise in
// ways the plugin does not repeat, an x-forwarded-for entry it may read differently,
// a regex PCRE rejects on the subject, a TLS peer nginx cannot read because its module
// is not loaded) carry the same worst-case constant ("u").

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbacPluginName is the APISIX plugin that enforces the rules.
const rbacPluginName = "amesh-rbac"

// rbacPluginConf is the plugin's config on a route (its schema is in the plugin).
type rbacPluginConf struct {
	rbacEnv
	// Filters are enforced in order; each is the JSON of an rbacEnforced.
	Filters []json.RawMessage `json:"filters"`
}

// rbacEnv is what the filter chain's HTTP connection manager and the listener say
// about the request attributes the plugin reads.
type rbacEnv struct {
	// PortVar names the nginx variable with the connection's original destination port.
	PortVar string `json:"port_var"`
	// NormalizePath and MergeSlashes are the connection manager's options: the :path
	// Envoy's filters see is normalised (RFC 3986 dot segments) and/or merged slashes.
	NormalizePath bool `json:"normalize_path,omitempty"`
	MergeSlashes  bool `json:"merge_slashes,omitempty"`
	// PctUnknown: the connection manager rewrites percent-encoded slashes
	// (path_with_escaped_slashes_action), which the plugin does not repeat.
	PctUnknown bool `json:"pct_unknown,omitempty"`
	// RemoteFrom says where Envoy's remote address (remote_ip) comes from: "peer",
	// the connection's (use_remote_address without trusted hops); "xff", the
	// x-forwarded-for entry XffHops from the right when the request has a valid one,
	// else the peer (use_remote_address false); "" where the plugin does not know
	// (trusted hops with use_remote_address, or a detection extension).
	RemoteFrom string `json:"remote_from,omitempty"`
	XffHops    uint32 `json:"xff_hops,omitempty"`
	// authorityRewritten: the connection manager strips the host's port or trailing
	// dot before the filters.
	authorityRewritten bool
	// network: the rules are a network RBAC filter's, evaluated per connection by
	// amesh-network-rbac (streamauthz.go).
	network bool
}

// envOf reads the connection manager's options.
func envOf(h *hcmv3.HttpConnectionManager, portVar string) rbacEnv {
	a := h.GetPathWithEscapedSlashesAction()
	return rbacEnv{
		PortVar:            portVar,
		NormalizePath:      h.GetNormalizePath().GetValue(),
		MergeSlashes:       h.GetMergeSlashes(),
		PctUnknown:         a > hcmv3.HttpConnectionManager_KEEP_UNCHANGED,
		RemoteFrom:         remoteFrom(h),
		XffHops:            h.GetXffNumTrustedHops(),
		authorityRewritten: h.GetStripPortMode() != nil || h.GetStripMatchingHostPort() || h.GetStripTrailingHostDot(),
	}
}

// remoteFrom is where the connection manager takes the remote address from (see
// rbacEnv.RemoteFrom).
func remoteFrom(h *hcmv3.HttpConnectionManager) string {
	switch {
	case len(h.GetOriginalIpDetectionExtensions()) > 0:
		return ""
	case !h.GetUseRemoteAddress().GetValue():
		return "xff"
	case h.GetXffNumTrustedHops() == 0:
		return "peer"
	}
	return ""
}

// rbacEnforced is one RBAC filter's enforced rules.
type rbacEnforced struct {
	Name     string       `json:"name"`
	Action   string       `json:"action"` // ALLOW or DENY
	Policies []rbacPolicy `json:"policies,omitempty"`
}

// rbacPolicy matches when one of its permissions and one of its principals match.
type rbacPolicy struct {
	Name        string     `json:"name"`
	Permissions []rbacNode `json:"permissions,omitempty"`
	Principals  []rbacNode `json:"principals,omitempty"`
}

// rbacNode is one condition: exactly one of the fields is set (Any false and no other
// field is the constant false).
type rbacNode struct {
	Const *bool      `json:"const,omitempty"` // decided at translation
	Any   bool       `json:"any,omitempty"`
	And   []rbacNode `json:"and,omitempty"`
	Or    []rbacNode `json:"or,omitempty"`
	Not   *rbacNode  `json:"not,omitempty"`
	// Path: the normalised path without query and fragment (url_path).
	Path *rbacString `json:"path,omitempty"`
	// Header: a header matcher.
	Header *rbacHeader `json:"header,omitempty"`
	// Ports: the destination port is in [Ports[0], Ports[1]).
	Ports *[2]int `json:"ports,omitempty"`
	// IP: the address Src names is in the CIDR range.
	IP *rbacCIDR `json:"ip,omitempty"`
	// Auth: Envoy's authenticated principal (see rbacAuth).
	Auth *rbacAuth `json:"auth,omitempty"`
	// Meta: a dynamic metadata matcher (rbacmeta.go).
	Meta *rbacMeta `json:"meta,omitempty"`
	// U is the node's value when the plugin cannot evaluate it for a request.
	U bool `json:"u,omitempty"`
}

// rbacString is Envoy's StringMatcher: op exact, prefix, suffix, contains or regex (an
// anchored PCRE for RE2's full match); icase (not for regex) compares ASCII case
// insensitively.
type rbacString struct {
	Op    string `json:"op"`
	V     string `json:"v"`
	ICase bool   `json:"icase,omitempty"`
}

// rbacHeader is Envoy's header matcher: Miss is its value for a missing header; for a
// present one, Str (or Range, an integer in [lo, hi)) decides, inverted by Invert, and
// without either the value is Pres.
type rbacHeader struct {
	Name   string      `json:"name"`
	Miss   bool        `json:"miss,omitempty"`
	Pres   bool        `json:"pres,omitempty"`
	Str    *rbacString `json:"str,omitempty"`
	Range  *[2]int64   `json:"range,omitempty"`
	Invert bool        `json:"invert,omitempty"`
}

// rbacAuth matches a request on a TLS connection whose peer certificate has a URI SAN,
// a DNS SAN or (then) a subject that N matches; without N, any request on a TLS
// connection (Envoy's AuthenticatedMatcher). A request without TLS never matches.
type rbacAuth struct {
	N *rbacString `json:"n,omitempty"`
}

// rbacCIDR: src is "direct" (the physical peer), "remote" (Envoy's remote address),
// "source" (the peer, after PROXY protocol) or, in a network filter's rules, ipDest (the
// original destination); addr is the range's first address.
type rbacCIDR struct {
	Src  string `json:"src"`
	Addr string `json:"addr"`
	Len  int    `json:"len"`
}

// rbacCompiler builds the nodes of one filter and collects what it could not evaluate.
type rbacCompiler struct {
	env  rbacEnv
	deny bool     // the filter's action is DENY: an unknown condition should match
	gaps []string // the conditions decided here, for the report
}

// worst is the value of an unevaluable condition under neg not_rules: the value that
// makes the filter deny.
func (c *rbacCompiler) worst(neg bool) bool { return c.deny != neg }

func (c *rbacCompiler) unknown(neg bool, what string) rbacNode {
	if !slices.Contains(c.gaps, what) {
		c.gaps = append(c.gaps, what)
	}
	v := c.worst(neg)
	return rbacNode{Const: &v}
}

func constNode(v bool) rbacNode { return rbacNode{Const: &v} }

// compileRBAC turns rules with action ALLOW or DENY into the plugin's form. gaps lists
// the conditions it decided as Envoy's worst case.
func compileRBAC(name string, rules *rbacv3.RBAC, env rbacEnv) (f rbacEnforced, gaps []string) {
	c := &rbacCompiler{env: env, deny: rules.GetAction() == rbacv3.RBAC_DENY}
	f = rbacEnforced{Name: name, Action: "ALLOW"}
	if c.deny {
		f.Action = "DENY"
	}
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		p := rules.GetPolicies()[n]
		rp := rbacPolicy{Name: n}
		for _, x := range p.GetPermissions() {
			rp.Permissions = append(rp.Permissions, c.perm(x, false, 0))
		}
		for _, x := range p.GetPrincipals() {
			rp.Principals = append(rp.Principals, c.principal(x, false, 0))
		}
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
			// A CEL condition is ANDed with the policy.
			cond := c.unknown(false, "CEL condition")
			rp.Permissions = []rbacNode{{And: []rbacNode{{Or: rp.Permissions}, cond}}}
		}
		f.Policies = append(f.Policies, rp)
	}
	return f, c.gaps
}

// ruleSet is an and_rules/and_ids (and) or or_rules/or_ids set of the nodes compile
// makes of xs. Envoy: an empty and-set matches every request, an empty or-set none.
func ruleSet[T any](and bool, xs []T, compile func(T) rbacNode) rbacNode {
	if len(xs) == 0 {
		return constNode(and)
	}
	nodes := make([]rbacNode, 0, len(xs))
	for _, x := range xs {
		nodes = append(nodes, compile(x))
	}
	if and {
		return rbacNode{And: nodes}
	}
	return rbacNode{Or: nodes}
}

func (c *rbacCompiler) perm(p *rbacv3.Permission, neg bool, d int) rbacNode {
	if d > maxRBACDepth {
		return c.unknown(neg, "rules nested deeper than "+fmt.Sprint(maxRBACDepth))
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return rbacNode{Any: r.Any}
	case *rbacv3.Permission_AndRules:
		return ruleSet(true, r.AndRules.GetRules(), func(x *rbacv3.Permission) rbacNode { return c.perm(x, neg, d+1) })
	case *rbacv3.Permission_OrRules:
		return ruleSet(false, r.OrRules.GetRules(), func(x *rbacv3.Permission) rbacNode { return c.perm(x, neg, d+1) })
	case *rbacv3.Permission_NotRule:
		x := c.perm(r.NotRule, !neg, d+1)
		return rbacNode{Not: &x}
	case *rbacv3.Permission_Header:
		return c.header(r.Header, neg)
	case *rbacv3.Permission_UrlPath:
		return c.urlPath(r.UrlPath, neg)
	case *rbacv3.Permission_DestinationPort:
		if r.DestinationPort > 65535 {
			return constNode(false)
		}
		return rbacNode{Ports: &[2]int{int(r.DestinationPort), int(r.DestinationPort) + 1}, U: c.worst(neg)}
	case *rbacv3.Permission_DestinationPortRange:
		// Ports are 0..65535: a range reaching beyond holds the same ports as its part
		// within, and an empty one none.
		lo, hi := max(int(r.DestinationPortRange.GetStart()), 0), min(int(r.DestinationPortRange.GetEnd()), 65536)
		if lo >= hi {
			return constNode(false)
		}
		return rbacNode{Ports: &[2]int{lo, hi}, U: c.worst(neg)}
	case *rbacv3.Permission_DestinationIp:
		if c.env.network {
			return c.cidr(ipDest, r.DestinationIp, neg)
		}
		return c.unknown(neg, "destination_ip")
	case *rbacv3.Permission_RequestedServerName:
		return c.unknown(neg, "requested_server_name")
	case *rbacv3.Permission_Metadata:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		return c.metadata(r.Metadata, neg)
	case *rbacv3.Permission_SourcedMetadata:
		return c.unknown(neg, "sourced_metadata")
	case *rbacv3.Permission_Matcher:
		return c.unknown(neg, "matcher extension")
	case *rbacv3.Permission_UriTemplate:
		return c.unknown(neg, "uri_template")
	}
	return c.unknown(neg, fmt.Sprintf("permission %T", p.GetRule()))
}

func (c *rbacCompiler) principal(p *rbacv3.Principal, neg bool, d int) rbacNode {
	if d > maxRBACDepth {
		return c.unknown(neg, "rules nested deeper than "+fmt.Sprint(maxRBACDepth))
	}
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return rbacNode{Any: r.Any}
	case *rbacv3.Principal_AndIds:
		return ruleSet(true, r.AndIds.GetIds(), func(x *rbacv3.Principal) rbacNode { return c.principal(x, neg, d+1) })
	case *rbacv3.Principal_OrIds:
		return ruleSet(false, r.OrIds.GetIds(), func(x *rbacv3.Principal) rbacNode { return c.principal(x, neg, d+1) })
	case *rbacv3.Principal_NotId:
		x := c.principal(r.NotId, !neg, d+1)
		return rbacNode{Not: &x}
	case *rbacv3.Principal_Authenticated_:
		a := &rbacAuth{}
		if pn := r.Authenticated.GetPrincipalName(); pn != nil {
			s, ok := c.str(pn)
			if !ok {
				return c.unknown(neg, "authenticated principal_name matcher of an unsupported kind")
			}
			a.N = s
		}
		// The plugin may find it cannot read the TLS peer (the nginx module is missing).
		return rbacNode{Auth: a, U: c.worst(neg)}
	case *rbacv3.Principal_Header:
		return c.header(r.Header, neg)
	case *rbacv3.Principal_UrlPath:
		return c.urlPath(r.UrlPath, neg)
	case *rbacv3.Principal_DirectRemoteIp:
		return c.cidr("direct", r.DirectRemoteIp, neg)
	case *rbacv3.Principal_RemoteIp:
		if c.env.network {
			return c.cidr("remote", r.RemoteIp, neg)
		}
		if c.env.RemoteFrom == "" {
			return c.unknown(neg, "remote_ip (the connection manager's client address detection)")
		}
		return c.cidr("remote", r.RemoteIp, neg)
	case *rbacv3.Principal_SourceIp:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		return c.cidr("source", r.SourceIp, neg)
	case *rbacv3.Principal_Metadata:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		return c.metadata(r.Metadata, neg)
	case *rbacv3.Principal_FilterState:
		return c.unknown(neg, "filter_state")
	case *rbacv3.Principal_SourcedMetadata:
		return c.unknown(neg, "sourced_metadata")
	case *rbacv3.Principal_Custom:
		return c.unknown(neg, "custom principal extension")
	}
	return c.unknown(neg, fmt.Sprintf("principal %T", p.GetIdentifier()))
}

// urlPath is a path node, for permissions and principals alike.
func (c *rbacCompiler) urlPath(m *matcherv3.PathMatcher, neg bool) rbacNode {
	if c.env.network {
		// Envoy's network RBAC has no request: a path matcher matches no connection.
		return constNode(false)
	}
	sm := m.GetPath()
	if sm == nil {
		return c.unknown(neg, "url_path without a path matcher")
	}
	s, ok := c.str(sm)
	if !ok {
		return c.unknown(neg, "url_path matcher of an unsupported kind")
	}
	return rbacNode{Path: s, U: c.worst(neg)}
}

// cidr is a range node; Envoy masks the address to the prefix length.
func (c *rbacCompiler) cidr(src string, r *corev3.CidrRange, neg bool) rbacNode {
	a, err := netip.ParseAddr(r.GetAddressPrefix())
	bits := int(r.GetPrefixLen().GetValue())
	if err != nil || a.Zone() != "" || bits > a.BitLen() {
		return c.unknown(neg, "CIDR range "+r.GetAddressPrefix()+" that Envoy rejects")
	}
	pfx, err := a.Prefix(bits)
	if err != nil {
		return c.unknown(neg, "CIDR range "+r.GetAddressPrefix())
	}
	return rbacNode{IP: &rbacCIDR{Src: src, Addr: pfx.Addr().String(), Len: bits}, U: c.worst(neg)}
}

// str translates a StringMatcher; false for a kind the plugin does not evaluate.
func (c *rbacCompiler) str(sm *matcherv3.StringMatcher) (*rbacString, bool) {
	ic := sm.GetIgnoreCase()
	switch m := sm.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return &rbacString{Op: "exact", V: m.Exact, ICase: ic}, true
	case *matcherv3.StringMatcher_Prefix:
		return &rbacString{Op: "prefix", V: m.Prefix, ICase: ic}, true
	case *matcherv3.StringMatcher_Suffix:
		return &rbacString{Op: "suffix", V: m.Suffix, ICase: ic}, true
	case *matcherv3.StringMatcher_Contains:
		return &rbacString{Op: "contains", V: m.Contains, ICase: ic}, true
	case *matcherv3.StringMatcher_SafeRegex:
		// ignore_case has no effect on safe_regex in Envoy.
		re, err := pcreAnchored(m.SafeRegex.GetRegex())
		if err != nil {
			return nil, false
		}
		return &rbacString{Op: "regex", V: re}, true
	}
	return nil, false
}

// header translates a header matcher (Envoy's HeaderUtility::matchHeaders, the rules
// match.go keeps for routes).
func (c *rbacCompiler) header(h *routev3.HeaderMatcher, neg bool) rbacNode {
	name := strings.ToLower(h.GetName())
	// A network filter sees no headers: every header is missing.
	if why := unreadableHeader(name, c.env); why != "" && !c.env.network {
		return c.unknown(neg, "header "+name+" ("+why+")")
	}
	hd := &rbacHeader{Name: name, Invert: h.GetInvertMatch()}
	var sm *matcherv3.StringMatcher
	present, presentWanted := false, false
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		sm = s.StringMatch
	case *routev3.HeaderMatcher_PresentMatch:
		present, presentWanted = true, s.PresentMatch
	case nil:
		present, presentWanted = true, true
	case *routev3.HeaderMatcher_ExactMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s.ExactMatch}}
	case *routev3.HeaderMatcher_PrefixMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s.PrefixMatch}}
	case *routev3.HeaderMatcher_SuffixMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: s.SuffixMatch}}
	case *routev3.HeaderMatcher_ContainsMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: s.ContainsMatch}}
	case *routev3.HeaderMatcher_SafeRegexMatch:
		//lint:ignore SA1019 deprecated matchers are still valid xDS and must keep their meaning
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: s.SafeRegexMatch}}
	case *routev3.HeaderMatcher_RangeMatch:
		r := s.RangeMatch
		if r.GetStart() < -(1<<53) || r.GetEnd() > 1<<53 {
			// Lua's numbers are doubles.
			return c.unknown(neg, "header range beyond 2^53")
		}
		hd.Range = &[2]int64{r.GetStart(), r.GetEnd()}
	default:
		return c.unknown(neg, fmt.Sprintf("header matcher %T", s))
	}
	switch {
	case present:
		hd.Pres = presentWanted != hd.Invert
		hd.Miss = !presentWanted != hd.Invert
		hd.Invert = false
		if h.GetTreatMissingHeaderAsEmpty() {
			hd.Miss = hd.Pres
		}
	case sm != nil:
		s, ok := c.str(sm)
		if !ok {
			return c.unknown(neg, "header "+name+" with a string matcher of an unsupported kind")
		}
		hd.Str = s
		if h.GetTreatMissingHeaderAsEmpty() {
			empty := s.V == ""
			if s.Op == "regex" {
				empty = re2MatchesEmpty(sm.GetSafeRegex().GetRegex())
			}
			hd.Miss = empty != hd.Invert
		}
	case h.GetTreatMissingHeaderAsEmpty():
		hd.Miss = hd.Invert // "" is no integer: no match, inverted
	}
	if c.env.network {
		return constNode(hd.Miss)
	}
	// :path is the normalised path: the plugin may find it cannot know it.
	return rbacNode{Header: hd, U: c.worst(neg)}
}

// unreadableHeader says why the plugin cannot see header name as Envoy's RBAC filter
// sees it, "" when it can.
func unreadableHeader(name string, env rbacEnv) string {
	switch name {
	case ":method", ":path", ":scheme":
		return ""
	case "x-forwarded-client-cert":
		// amesh-xfcc rewrites it as the connection manager does, before amesh-rbac.
		return ""
	case ":authority":
		if env.authorityRewritten {
			return "the connection manager rewrites the host"
		}
		return ""
	case "host":
		// Envoy keeps Host as :authority: a matcher on "host" may see nothing.
		return "Envoy holds it as :authority"
	case "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host",
		"x-forwarded-port", "x-request-id", "connection", "keep-alive", "proxy-connection",
		"transfer-encoding", "upgrade", "te":
		return "the connection manager sets or removes it before the filters"
	}
	if strings.HasPrefix(name, "x-envoy-") {
		return "the connection manager sets or removes it before the filters"
	}
	if strings.HasPrefix(name, ":") {
		return "a pseudo-header nginx does not have"
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			// nginx drops header names with '_' (underscores_in_headers off) and
			// others it does not read as names.
			return "nginx drops such names"
		}
	}
	if name == "" {
		return "no name"
	}
	return ""
}
