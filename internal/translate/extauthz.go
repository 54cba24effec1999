package translate

// External authorization (envoy.filters.http.ext_authz; Istio's AuthorizationPolicy
// action CUSTOM). istiod puts, for each extension provider a workload's CUSTOM
// policies name, an RBAC filter whose shadow rules are those policies (stat prefix
// istio_ext_authz_) and, right after it, an ext_authz filter whose
// filter_enabled_metadata asks for the RBAC filter's shadow effective policy id: Envoy's
// RBAC filter writes the name of the first shadow policy (by name) that matches the
// request into its dynamic metadata (namespace envoy.filters.http.rbac, key
// <shadow_rules_stat_prefix>shadow_effective_policy_id), and ext_authz asks its server
// only when that value matches. Both come before the DENY and ALLOW RBAC filters.
//
// Both are steps of amesh-rbac's ordered list (lua/amesh/rbac.lua runs them, the call
// is lua/amesh/ext_authz.lua), where their filters sit in the HTTP filter chain, with
// the jwt_authn and RBAC steps around them: a shadow step (action SHADOW) evaluates an
// RBAC filter's shadow rules, with the request state the steps before it left (a
// jwt_authn step's verified payloads), and records the value Envoy writes; an
// ext_authz step (action EXT_AUTHZ) checks its metadata matcher and, when enabled, asks
// the authorization server over HTTP as Envoy's HTTP service does. A shadow step goes
// on a route only when an ext_authz step after it reads its key. What the plugin does
// not reproduce exactly (the gRPC service, the request body, headers the connection
// manager rewrites, other options) fails the routes the filter applies to closed
// (403), as the report says.

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// rbacMetadataNamespace is the dynamic metadata namespace Envoy's HTTP RBAC filter
// writes, whatever the filter's name.
const rbacMetadataNamespace = "envoy.filters.http.rbac"

// shadowPolicyIDKey ends the metadata key of an RBAC filter's shadow effective policy
// id (after shadow_rules_stat_prefix).
const shadowPolicyIDKey = "shadow_effective_policy_id"

// The actions of amesh-rbac's steps for shadow rules and ext_authz filters.
const (
	shadowAction   = "SHADOW"
	extAuthzAction = "EXT_AUTHZ"
)

// shadowStep is an RBAC filter's shadow rules as an amesh-rbac step (action SHADOW):
// when one of its policies matches, the first (by name) is the value of Key.
type shadowStep struct {
	rbacEnforced
	Key string `json:"key"`
}

// checkStep is an ext_authz filter as an amesh-rbac step (action EXT_AUTHZ).
type checkStep struct {
	Name   string      `json:"name"`
	Action string      `json:"action"`
	Check  *authzCheck `json:"ext_authz"`
}

// authzCheck is an ext_authz filter with an HTTP service.
type authzCheck struct {
	Cluster string `json:"cluster"`
	// UpstreamID is the APISIX upstream of Cluster, set on the route that references
	// it; absent when the cluster does not exist (Envoy answers as on a failed call).
	UpstreamID string  `json:"upstream_id,omitempty"`
	PathPrefix string  `json:"path_prefix,omitempty"`
	Timeout    float64 `json:"timeout"` // seconds, the whole call
	// AllowedHeaders select the request headers sent (Envoy's defaults included: the
	// Authorization header, :method, :path and :authority); HeadersToAdd are set on
	// the authorization request after them.
	AllowedHeaders []rbacString `json:"allowed_headers"`
	HeadersToAdd   [][2]string  `json:"headers_to_add,omitempty"`
	// UpstreamHeaders select the headers of a 200 answer set on the request; without
	// ClientHeaders every header of a denial but Host goes to the client, with them
	// those and Envoy's defaults (:status, Content-Length, WWW-Authenticate, Location).
	UpstreamHeaders []rbacString `json:"upstream_headers,omitempty"`
	ClientHeaders   []rbacString `json:"client_headers,omitempty"`
	StatusOnError   int          `json:"status_on_error"`
	FailOpen        bool         `json:"failure_mode_allow,omitempty"`
	// FailOpenHeader adds x-envoy-auth-failure-mode-allowed: true to a request let
	// through on an error.
	FailOpenHeader bool          `json:"failure_mode_allow_header_add,omitempty"`
	EnabledBy      *authzEnabled `json:"enabled_by,omitempty"`
}

// authzEnabled is filter_enabled_metadata on the RBAC filters' namespace: the value
// of Key matches Str, inverted by Invert; a missing value does not match.
type authzEnabled struct {
	Key    string     `json:"key"`
	Str    rbacString `json:"str"`
	Invert bool       `json:"invert,omitempty"`
}

// rewrittenHeaders are headers the connection manager sets, rewrites or removes before
// the filters: the authorization server would see other values from amesh.
var rewrittenHeaders = []string{
	"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
	"x-forwarded-client-cert", "x-request-id", "connection", "keep-alive", "proxy-connection",
	"transfer-encoding", "upgrade", "te", "x-envoy-internal", "x-envoy-external-address",
	"x-envoy-expected-rq-timeout-ms", "x-envoy-decorator-operation", "x-envoy-original-path",
	"x-envoy-peer-metadata", "x-envoy-peer-metadata-id", "x-envoy-attempt-count",
}

// shadowStepOf is the step of an RBAC filter's shadow rules, "" without any.
func shadowStepOf(name string, c *rbachttpv3.RBAC, env rbacEnv) string {
	if c.GetShadowRules() == nil && c.GetShadowMatcher() == nil {
		return ""
	}
	s := authzShadowJSON{Step: shadowStep{Key: c.GetShadowRulesStatPrefix() + shadowPolicyIDKey}}
	if c.GetShadowMatcher() != nil {
		s.Opaque = true
		s.Step.Name = name
	} else {
		// An unknown condition counts as a match, so that the server is asked rather
		// than skipped: as DENY rules compile.
		rules := proto.Clone(c.GetShadowRules()).(*rbacv3.RBAC)
		rules.Action = rbacv3.RBAC_DENY
		s.Step.rbacEnforced, s.Gaps = compileRBAC(name, rules, env)
	}
	s.Step.Action = shadowAction
	return mustJSON(s)
}

// authzShadowJSON is a shadow step with what the plugin does not read, between the
// guard and the route (verdicts hold strings): Gaps are the conditions decided as a
// match (the server is asked); Opaque, a shadow matcher tree, which amesh does not
// evaluate.
type authzShadowJSON struct {
	Step   shadowStep `json:"step"`
	Gaps   []string   `json:"gaps,omitempty"`
	Opaque bool       `json:"opaque,omitempty"`
}

// rbacVerdict is what an HTTP RBAC filter's config decides, with its shadow rules for
// the ext_authz filters after it.
func rbacVerdict(name string, c *rbachttpv3.RBAC, env rbacEnv) verdict {
	v := rbacRulesVerdict(name, c, env)
	if !v.deny {
		v.shadow = shadowStepOf(name, c, env)
	}
	return v
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// extAuthzVerdict is what an ext_authz filter's config decides: an authzCheck for the
// plugin, or fail closed.
func extAuthzVerdict(g *guard, c *extauthzv3.ExtAuthz) verdict {
	chk, why := compileExtAuthz(c)
	if why != "" {
		return g.failClosed("ext_authz filter " + g.name + ": " + why + "; not translated")
	}
	what := "asks cluster " + chk.Cluster + " over HTTP"
	if chk.EnabledBy != nil {
		what += " for the requests whose " + chk.EnabledBy.Key + " matches"
	}
	return verdict{authz: mustJSON(checkStep{Name: g.name, Action: extAuthzAction, Check: chk}),
		reason: "ext_authz filter " + g.name + " " + what + "; enforced per request by " + rbacPluginName + " in HTTP filter order"}
}

// compileExtAuthz translates an ext_authz filter's config, or says why it cannot.
func compileExtAuthz(c *extauthzv3.ExtAuthz) (*authzCheck, string) {
	hs := c.GetHttpService()
	if hs == nil {
		if c.GetGrpcService() != nil {
			return nil, "its authorization service speaks gRPC, which amesh does not"
		}
		return nil, "no authorization service"
	}
	rest := proto.Clone(c).(*extauthzv3.ExtAuthz)
	// What amesh enforces, and what only the gRPC service or Envoy's stats read.
	rest.Services = nil
	rest.TransportApiVersion = 0
	rest.StatusOnError = nil
	rest.FailureModeAllow = false
	rest.FailureModeAllowHeaderAdd = false
	rest.FilterEnabledMetadata = nil
	rest.AllowedHeaders = nil
	rest.StatPrefix = ""
	rest.ChargeClusterResponseStats = nil
	rest.EmitFilterStateStats = false
	rest.IncludePeerCertificate = false
	rest.IncludeTlsSession = false
	rest.MetadataContextNamespaces = nil
	rest.TypedMetadataContextNamespaces = nil
	rest.RouteMetadataContextNamespaces = nil
	rest.RouteTypedMetadataContextNamespaces = nil
	rest.BootstrapMetadataLabelsKey = ""
	rest.EncodeRawHeaders = false
	if f := setFields(rest); len(f) > 0 {
		return nil, "options amesh does not enforce: " + strings.Join(f, ", ")
	}
	hrest := proto.Clone(hs).(*extauthzv3.HttpService)
	hrest.ServerUri = nil
	hrest.PathPrefix = ""
	if r := hrest.GetAuthorizationRequest(); r != nil {
		//lint:ignore SA1019 deprecated fields are still valid xDS and must keep their meaning
		r.AllowedHeaders, r.HeadersToAdd = nil, nil
		if proto.Size(r) == 0 {
			hrest.AuthorizationRequest = nil
		}
	}
	if r := hrest.GetAuthorizationResponse(); r != nil {
		r.AllowedUpstreamHeaders, r.AllowedClientHeaders = nil, nil
		if proto.Size(r) == 0 {
			hrest.AuthorizationResponse = nil
		}
	}
	if f := setFields(hrest); len(f) > 0 {
		return nil, "http_service options amesh does not enforce: " + strings.Join(f, ", ")
	}
	uri := hs.GetServerUri()
	if uri.GetCluster() == "" {
		return nil, "http_service.server_uri names no cluster"
	}
	secs, _ := upstream.Timeout(uri.GetTimeout())
	chk := &authzCheck{Cluster: uri.GetCluster(), PathPrefix: hs.GetPathPrefix(), Timeout: secs, StatusOnError: 403,
		FailOpen: c.GetFailureModeAllow(), FailOpenHeader: c.GetFailureModeAllowHeaderAdd()}
	if s := c.GetStatusOnError(); s != nil {
		chk.StatusOnError = int(s.GetCode())
	}
	if secs <= 0 {
		return nil, "http_service.server_uri.timeout is not positive"
	}
	// Envoy reads the HTTP service's own allowed_headers when it is set, else the
	// filter's, with its defaults added either way.
	allowed := c.GetAllowedHeaders()
	//lint:ignore SA1019 deprecated fields are still valid xDS and must keep their meaning
	if legacy := hs.GetAuthorizationRequest().GetAllowedHeaders(); legacy != nil {
		if allowed != nil {
			return nil, "allowed_headers is set twice (Envoy rejects the config)"
		}
		allowed = legacy
	}
	var c2 rbacCompiler
	list := func(field string, l *matcherv3.ListStringMatcher) ([]rbacString, string) {
		var out []rbacString
		for _, p := range l.GetPatterns() {
			s, ok := c2.str(p)
			if !ok {
				return nil, field + " has a pattern amesh does not evaluate"
			}
			out = append(out, *s)
		}
		return out, ""
	}
	var why string
	if chk.AllowedHeaders, why = list("allowed_headers", allowed); why != "" {
		return nil, why
	}
	for _, p := range allowed.GetPatterns() {
		for _, h := range rewrittenHeaders {
			if stringMatches(p, h) {
				return nil, "allowed_headers selects " + h + ", which the connection manager rewrites before the filters"
			}
		}
		if pre := p.GetPrefix(); pre != "" && (strings.HasPrefix("x-envoy-", strings.ToLower(pre)) || strings.HasPrefix(strings.ToLower(pre), "x-envoy-")) {
			return nil, "allowed_headers selects x-envoy- headers, which the connection manager rewrites before the filters"
		}
	}
	for _, k := range []string{"authorization", ":method", ":path", ":authority"} {
		chk.AllowedHeaders = append(chk.AllowedHeaders, rbacString{Op: "exact", V: k})
	}
	for _, h := range hs.GetAuthorizationRequest().GetHeadersToAdd() {
		// Envoy's header parser reads %...% as a formatter command.
		if strings.Contains(h.GetValue(), "%") || h.GetRawValue() != nil {
			return nil, "authorization_request.headers_to_add has a value with a formatter command or raw bytes"
		}
		chk.HeadersToAdd = append(chk.HeadersToAdd, [2]string{strings.ToLower(h.GetKey()), h.GetValue()})
	}
	resp := hs.GetAuthorizationResponse()
	if chk.UpstreamHeaders, why = list("allowed_upstream_headers", resp.GetAllowedUpstreamHeaders()); why != "" {
		return nil, why
	}
	if chk.ClientHeaders, why = list("allowed_client_headers", resp.GetAllowedClientHeaders()); why != "" {
		return nil, why
	}
	if len(chk.ClientHeaders) > 0 {
		for _, k := range []string{":status", "content-length", "www-authenticate", "location"} {
			chk.ClientHeaders = append(chk.ClientHeaders, rbacString{Op: "exact", V: k})
		}
	}
	if m := c.GetFilterEnabledMetadata(); m != nil {
		path := m.GetPath()
		sm := m.GetValue().GetStringMatch()
		if m.GetFilter() != rbacMetadataNamespace || len(path) != 1 || path[0].GetKey() == "" ||
			!strings.HasSuffix(path[0].GetKey(), shadowPolicyIDKey) || sm == nil {
			return nil, "filter_enabled_metadata reads metadata other than an RBAC filter's shadow effective policy id"
		}
		s, ok := c2.str(sm)
		if !ok {
			return nil, "filter_enabled_metadata has a string matcher amesh does not evaluate"
		}
		chk.EnabledBy = &authzEnabled{Key: path[0].GetKey(), Str: *s, Invert: m.GetInvert()}
	}
	return chk, ""
}

// setFields names the fields set in m.
func setFields(m proto.Message) []string {
	var out []string
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() == protoreflect.MessageKind && !fd.IsList() && !fd.IsMap() {
			for _, sub := range setFields(v.Message().Interface()) {
				out = append(out, string(fd.Name())+"."+sub)
			}
			if v.Message().IsValid() && proto.Size(v.Message().Interface()) > 0 {
				return true
			}
		}
		out = append(out, string(fd.Name()))
		return true
	})
	slices.Sort(out)
	return out
}

// stringMatches evaluates Envoy's StringMatcher on v (a regex as Go's RE2 reads it).
func stringMatches(m *matcherv3.StringMatcher, v string) bool {
	pat := ""
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		pat = p.Exact
	case *matcherv3.StringMatcher_Prefix:
		pat = p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		pat = p.Suffix
	case *matcherv3.StringMatcher_Contains:
		pat = p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.SafeRegex.GetRegex() + ")$")
		return err != nil || re.MatchString(v) // one Go cannot read may match
	default:
		return true
	}
	if m.GetIgnoreCase() {
		pat, v = strings.ToLower(pat), strings.ToLower(v)
	}
	switch m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return v == pat
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(v, pat)
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(v, pat)
	}
	return strings.Contains(v, pat)
}

// rbacStringMatches evaluates the plugin's form of a string matcher in Go; ok is false
// for a regex Go cannot read.
func rbacStringMatches(s rbacString, v string) (match, ok bool) {
	pat := s.V
	if s.ICase {
		pat, v = strings.ToLower(pat), strings.ToLower(v)
	}
	switch s.Op {
	case "exact":
		return v == pat, true
	case "prefix":
		return strings.HasPrefix(v, pat), true
	case "suffix":
		return strings.HasSuffix(v, pat), true
	case "contains":
		return strings.Contains(v, pat), true
	}
	return false, false
}

// routeSteps are a route's amesh-rbac steps in HTTP filter order.
type routeSteps struct {
	list []json.RawMessage
	// checks are the indexes in list of the ext_authz steps, whose clusters the
	// route references.
	checks []int
}

// stepsBuilder collects the steps of a route's guards in filter order.
type stepsBuilder struct {
	list    []json.RawMessage
	checks  []int
	shadows []pendingShadow
}

// pendingShadow is a shadow step at index at of the list, kept only when an ext_authz
// step after it reads its key.
type pendingShadow struct {
	authzShadowJSON
	at   int
	read bool
}

// add takes a guard's verdict: its shadow step (Envoy's RBAC filter evaluates its
// shadow rules before its rules), its rules or JWT step, and its ext_authz step, which
// fails the route closed (the returned reason) when the shadow rules it reads do not
// decide as Envoy's.
func (s *stepsBuilder) add(v verdict) string {
	if v.shadow != "" {
		var sh authzShadowJSON
		if err := json.Unmarshal([]byte(v.shadow), &sh); err == nil {
			s.shadows = append(s.shadows, pendingShadow{authzShadowJSON: sh, at: len(s.list)})
			s.list = append(s.list, json.RawMessage(mustJSON(sh.Step)))
		}
	}
	if v.rbac != "" {
		s.list = append(s.list, json.RawMessage(v.rbac))
	}
	if v.authz == "" {
		return ""
	}
	var st checkStep
	if err := json.Unmarshal([]byte(v.authz), &st); err != nil || st.Check == nil {
		return "ext_authz config cannot be read back"
	}
	chk := st.Check
	if e := chk.EnabledBy; e != nil {
		for i := range s.shadows {
			sh := &s.shadows[i]
			if sh.Step.Key != e.Key {
				continue
			}
			if sh.Opaque {
				return "ext_authz filter " + st.Name + " is enabled by a shadow matcher tree, which amesh does not evaluate; not translated"
			}
			// The value written is the first matching policy's name: amesh knows it
			// exactly only when every name decides the same.
			var first *bool
			for _, p := range sh.Step.Policies {
				m, ok := rbacStringMatches(e.Str, p.Name)
				if !ok {
					return "ext_authz filter " + st.Name + "'s filter_enabled_metadata is a regex; not translated"
				}
				m = m != e.Invert
				if first != nil && *first != m {
					return "the shadow policies of RBAC filter " + sh.Step.Name + " enable ext_authz filter " + st.Name + " for some names only; not translated"
				}
				first = &m
			}
			sh.read = true
		}
	}
	s.checks = append(s.checks, len(s.list))
	s.list = append(s.list, json.RawMessage(v.authz))
	return ""
}

// done returns the steps, without the shadow steps no ext_authz step reads.
func (s *stepsBuilder) done() routeSteps {
	drop := map[int]bool{}
	for _, sh := range s.shadows {
		if !sh.read {
			drop[sh.at] = true
		}
	}
	if len(drop) == 0 {
		return routeSteps{list: s.list, checks: s.checks}
	}
	var out routeSteps
	checks := slices.Clone(s.checks)
	for i, st := range s.list {
		if drop[i] {
			continue
		}
		if len(checks) > 0 && checks[0] == i {
			out.checks = append(out.checks, len(out.list))
			checks = checks[1:]
		}
		out.list = append(out.list, st)
	}
	return out
}

// authzUpstream references the base upstream of cluster for an ext_authz step.
func (b *vhostBuilder) authzUpstream(cluster string) (string, bool, string) {
	name, info := b.clusters.ref(cluster)
	b.refs.deps = append(b.refs.deps, name)
	switch {
	case !info.exists:
		return "", false, ""
	case info.tls != 0 || clusterMayUseTLS(b.clusters[name]):
		return "", false, "some of whose endpoints Envoy may reach with TLS, which amesh's call does not speak"
	case info.special != upstream.None:
		return "", false, "which has no endpoints of its own (" + fmt.Sprint(info.special) + ")"
	}
	return b.acquire(name, upstream.Variant{}), true, ""
}

// clusterMayUseTLS reports whether Envoy may reach an endpoint of the cluster with a
// transport socket: the cluster has one, or socket matches and an endpoint (or its
// locality) with match metadata (Istio's auto mTLS gives pods with a sidecar
// {tlsMode: istio}). The upstream leaves such endpoints out when amesh has no identity
// to present, so their absence must not read as a cluster without endpoints.
func clusterMayUseTLS(cs *clusterState) bool {
	if cs == nil || cs.src == nil {
		return false
	}
	shape := cs.src.Shape()
	if shape.GetTransportSocket() != nil {
		return true
	}
	if len(shape.GetTransportSocketMatches()) == 0 || cs.cla == nil {
		return false
	}
	for _, l := range cs.cla.Localities {
		for i := range l.Endpoints {
			if e, lo := l.SocketMatch(i); e != resource.SocketMatchNone || lo != resource.SocketMatchNone {
				return true
			}
		}
	}
	return false
}

// withUpstreams gives each ext_authz step of steps the upstream of its cluster, through
// acquire; a cluster that does not exist gets none (the plugin answers as Envoy does
// when the call fails). It returns why the route fails closed, "" when it does not.
func withUpstreams(steps routeSteps, acquire func(cluster string) (id string, exists bool, why string)) ([]json.RawMessage, string) {
	if len(steps.checks) == 0 {
		return steps.list, ""
	}
	out := slices.Clone(steps.list)
	for _, i := range steps.checks {
		var st checkStep
		if err := json.Unmarshal(out[i], &st); err != nil || st.Check == nil {
			return nil, "ext_authz config cannot be read back"
		}
		id, exists, why := acquire(st.Check.Cluster)
		if why != "" {
			return nil, fmt.Sprintf("ext_authz filter %s asks cluster %s, %s; not translated", st.Name, st.Check.Cluster, why)
		}
		if exists {
			st.Check.UpstreamID = id
		}
		out[i] = json.RawMessage(mustJSON(st))
	}
	return out, ""
}

// extAuthzApprox says what the ext_authz step does differently from Envoy.
const extAuthzApprox = "amesh-rbac calls the server over HTTP/1.1 from nginx (Envoy's async client may use HTTP/2 where the cluster says so), picks an endpoint of the cluster's upstream at random by weight among the highest priority without Envoy's load balancer and outlier state, and answers a request whose :path it cannot normalise as the connection manager does with 403"

// shadowNote is what the report adds about an RBAC filter's shadow rules.
func shadowNote(shadow string) string {
	var sh authzShadowJSON
	if err := json.Unmarshal([]byte(shadow), &sh); err != nil {
		return ""
	}
	msg := "; its shadow rules also set the metadata " + sh.Step.Key + ", which ext_authz filters after it may read (" + rbacPluginName + " evaluates them in filter order when one does)"
	if len(sh.Gaps) > 0 {
		msg += "; in them, what amesh cannot evaluate is decided as a match, so the authorization server is asked: " + strings.Join(sh.Gaps, ", ")
	}
	if sh.Opaque {
		msg += "; a shadow matcher tree, which amesh does not evaluate: the routes of ext_authz filters that read it fail closed"
	}
	return msg
}

// extAuthzPerRoute says why a per-route ExtAuthzPerRoute (not disabled) changes what
// the filter does in a way amesh does not translate, "" when it does not: context
// extensions reach a gRPC service only.
func extAuthzPerRoute(pr *extauthzv3.ExtAuthzPerRoute) string {
	cs := pr.GetCheckSettings()
	if cs == nil {
		return ""
	}
	rest := proto.Clone(cs).(*extauthzv3.CheckSettings)
	rest.ContextExtensions = nil
	if f := setFields(rest); len(f) > 0 {
		return "sets check_settings " + strings.Join(f, ", ")
	}
	return ""
}
