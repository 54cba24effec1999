package translate

// jwt_authn (Istio's RequestAuthentication). The filter's providers and the
// requirement that applies to a route become one step of amesh-rbac's ordered list
// (action "JWT"), so it runs in HTTP filter order with the RBAC filters around it:
// lua/amesh/jwt.lua extracts the tokens as Envoy's extractor does, verifies them
// (signature through libcrypto, iss, aud, exp and nbf with the clock skew), answers a
// failure as Envoy does (401 or 403, its status text, www-authenticate) and hands the
// verified payloads to the RBAC steps after it as the filter's dynamic metadata, which
// Istio's requestPrincipals and request.auth.claims read (rbacrules.go).
//
// A provider's remote JWKS (istiod leaves the fetch to the proxy when
// PILOT_JWT_ENABLE_REMOTE_JWKS says so) is fetched by package jwks over the cluster
// it names, and its keys are inlined here as istiod's would be; until a fetch
// succeeds, or after one failed, the provider's tokens fail as Envoy's do ("Jwks
// remote fetch is failed").
//
// What the step does not do as Envoy does fails the routes closed (403), reported:
// JWKS from files, symmetric keys, rules that match only some requests,
// filter-state rules and the newer provider options that change verification.

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"

	"github.com/amesh-dev/amesh/internal/jwks"
)

// jwtApprox says what the jwt_authn step does differently from Envoy.
const jwtApprox = "the www-authenticate realm holds the :path as amesh-rbac reads it (the raw target where it cannot normalise it as the connection manager does); requests for hosts no virtual host serves get APISIX's 404 without verification"

// jwtFilterMetadata is where the filter puts verified payloads (dynamic metadata).
const jwtFilterMetadata = "envoy.filters.http.jwt_authn"

// jwtDefaultSkew is Envoy's clock skew when the provider sets none (seconds).
const jwtDefaultSkew = 60

// jwtStep is the amesh-rbac step of one jwt_authn filter.
type jwtStep struct {
	Name   string   `json:"name"`
	Action string   `json:"action"` // "JWT"
	JWT    *jwtConf `json:"jwt"`
}

type jwtConf struct {
	// Providers are those the requirement names, by name.
	Providers map[string]*jwtProvider `json:"providers"`
	Requires  *jwtReq                 `json:"requires"`
	// BypassCORS: a CORS preflight passes without a token (bypass_cors_preflight).
	BypassCORS bool `json:"bypass_cors,omitempty"`
	// Strip: failures answer without a body or www-authenticate (strip_failure_response).
	Strip bool `json:"strip,omitempty"`
}

type jwtProvider struct {
	Issuer    string   `json:"iss,omitempty"`
	Audiences []string `json:"aud,omitempty"`
	Keys      []jwtKey `json:"keys"`
	// FetchFailed: the provider's remote JWKS is not fetched (yet, or the last fetch
	// failed); its tokens fail with Envoy's JwksFetchFail.
	FetchFailed bool `json:"jwks_fetch_failed,omitempty"`
	// Headers, Params and Cookies are where tokens are looked for, Envoy's defaults
	// filled in. A token in a cookie stays there (Envoy does not remove it).
	Headers []jwtHeaderLoc `json:"headers,omitempty"`
	Params  []string       `json:"params,omitempty"`
	Cookies []string       `json:"cookies,omitempty"`
	// Forward keeps the token in the request; otherwise a verified token's header
	// (or query parameter) is removed.
	Forward          bool              `json:"forward,omitempty"`
	PayloadHeader    string            `json:"payload_header,omitempty"`
	PadPayloadHeader bool              `json:"pad,omitempty"`
	PayloadMetadata  string            `json:"payload_meta,omitempty"`
	HeaderMetadata   string            `json:"header_meta,omitempty"`
	SpaceClaims      []string          `json:"space_claims,omitempty"`
	Skew             uint32            `json:"skew"`
	ClaimHeaders     []jwtClaimHeaders `json:"claim_headers,omitempty"`
}

type jwtHeaderLoc struct {
	Name   string `json:"name"` // lower case
	Prefix string `json:"prefix,omitempty"`
}

type jwtClaimHeaders struct {
	Header string `json:"header"` // lower case
	Claim  string `json:"claim"`
}

// jwtReq is a requirement: K is "provider" (P, with Aud replacing the provider's
// audiences when set), "any" or "all" (Of), "missing" or "failed" (allow_missing,
// allow_missing_or_failed, over the tokens of Providers' locations), or "ok".
type jwtReq struct {
	K         string   `json:"k"`
	P         string   `json:"p,omitempty"`
	Aud       []string `json:"aud,omitempty"`
	Of        []jwtReq `json:"of,omitempty"`
	Providers []string `json:"providers,omitempty"`
}

// jwtCompiler collects the providers a requirement names and why it cannot.
type jwtCompiler struct {
	cfg       *jwtv3.JwtAuthentication
	fetched   jwks.Set // the remote JWKS fetched so far
	providers map[string]*jwtProvider
	bad       []string
	notes     []string
}

func (c *jwtCompiler) fail(why string) {
	if !slices.Contains(c.bad, why) {
		c.bad = append(c.bad, why)
	}
}

// jwtVerdict is what one jwt_authn filter decides for routes without a per-route
// config: the step for amesh-rbac, no verdict (no rule applies), or fail closed.
func jwtVerdict(name string, c *jwtv3.JwtAuthentication, fetched jwks.Set) verdict {
	if c.GetFilterStateRules() != nil {
		return failClosed(403, "jwt_authn filter "+name+" chooses requirements from filter state (filter_state_rules); not translated")
	}
	// Envoy takes the first rule whose match the request meets; amesh translates
	// rules that every request meets, so the first rule decides.
	rules := c.GetRules()
	if len(rules) == 0 {
		return verdict{}
	}
	r := rules[0]
	if !matchesEveryRequest(r.GetMatch()) {
		return failClosed(403, "jwt_authn filter "+name+": rule 0 applies to some requests only; not translated")
	}
	req := r.GetRequires()
	if n := r.GetRequirementName(); n != "" {
		if req = c.GetRequirementMap()[n]; req == nil {
			return failClosed(403, "jwt_authn filter "+name+": rule 0 names requirement "+n+", which requirement_map lacks")
		}
	}
	if req == nil {
		return verdict{}
	}
	return jwtStepVerdict(name, c, req, fetched)
}

// jwtStepVerdict compiles requirement req of filter c into the amesh-rbac step.
func jwtStepVerdict(name string, c *jwtv3.JwtAuthentication, req *jwtv3.JwtRequirement, fetched jwks.Set) verdict {
	jc := &jwtCompiler{cfg: c, fetched: fetched, providers: map[string]*jwtProvider{}}
	r := jc.req(req, 0)
	if len(jc.bad) > 0 {
		return failClosed(403, "jwt_authn filter "+name+": "+strings.Join(jc.bad, "; ")+"; not translated")
	}
	step := jwtStep{Name: name, Action: "JWT", JWT: &jwtConf{Providers: jc.providers, Requires: &r,
		BypassCORS: c.GetBypassCorsPreflight(), Strip: c.GetStripFailureResponse()}}
	b, err := json.Marshal(step)
	if err != nil {
		return failClosed(403, "jwt_authn filter "+name+": "+err.Error())
	}
	names := make([]string, 0, len(jc.providers))
	for n, p := range jc.providers {
		names = append(names, n+" ("+p.Issuer+")")
	}
	sort.Strings(names)
	reason := "jwt_authn filter " + name + " verifies JWTs of providers " + strings.Join(names, ", ") + "; enforced per request by " + rbacPluginName
	if len(jc.notes) > 0 {
		reason += "; " + strings.Join(jc.notes, "; ")
	}
	return verdict{rbac: string(b), reason: reason}
}

// matchesEveryRequest: a rule's route match that every request meets (Istio's
// prefix "/").
func matchesEveryRequest(m *routev3.RouteMatch) bool {
	if m == nil || len(m.GetHeaders()) > 0 || len(m.GetQueryParameters()) > 0 || m.GetRuntimeFraction() != nil ||
		m.GetGrpc() != nil || m.GetTlsContext() != nil || len(m.GetDynamicMetadata()) > 0 || m.GetFilterState() != nil {
		return false
	}
	p, ok := m.GetPathSpecifier().(*routev3.RouteMatch_Prefix)
	return ok && p.Prefix == "/"
}

func itoa(i int) string { return fmt.Sprint(i) }

const maxJWTDepth = 16

func (c *jwtCompiler) req(r *jwtv3.JwtRequirement, d int) jwtReq {
	if d > maxJWTDepth {
		c.fail("requirements nested deeper than " + itoa(maxJWTDepth))
		return jwtReq{}
	}
	switch t := r.GetRequiresType().(type) {
	case nil:
		return jwtReq{K: "ok"}
	case *jwtv3.JwtRequirement_ProviderName:
		c.provider(t.ProviderName)
		return jwtReq{K: "provider", P: t.ProviderName}
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		p := t.ProviderAndAudiences.GetProviderName()
		c.provider(p)
		// Envoy checks the provider's own audiences when the list is empty.
		return jwtReq{K: "provider", P: p, Aud: t.ProviderAndAudiences.GetAudiences()}
	case *jwtv3.JwtRequirement_RequiresAll:
		out := jwtReq{K: "all"}
		for _, x := range t.RequiresAll.GetRequirements() {
			out.Of = append(out.Of, c.req(x, d+1))
		}
		return out
	case *jwtv3.JwtRequirement_RequiresAny:
		// Envoy verifies the regular requirements first and then one bypass
		// (allow_missing_or_failed over allow_missing), over the tokens of the
		// providers the list names directly.
		out := jwtReq{K: "any"}
		var bypass *jwtReq
		var used []string
		for _, x := range t.RequiresAny.GetRequirements() {
			switch xt := x.GetRequiresType().(type) {
			case *jwtv3.JwtRequirement_AllowMissing:
				if bypass == nil {
					bypass = &jwtReq{K: "missing"}
				}
				continue
			case *jwtv3.JwtRequirement_AllowMissingOrFailed:
				bypass = &jwtReq{K: "failed"}
				continue
			case *jwtv3.JwtRequirement_ProviderName:
				used = append(used, xt.ProviderName)
			case *jwtv3.JwtRequirement_ProviderAndAudiences:
				used = append(used, xt.ProviderAndAudiences.GetProviderName())
			}
			out.Of = append(out.Of, c.req(x, d+1))
		}
		if bypass != nil {
			bypass.Providers = used
			out.Of = append(out.Of, *bypass)
		}
		return out
	case *jwtv3.JwtRequirement_AllowMissing:
		// Outside requires_any it extracts from no provider: no token, allowed.
		return jwtReq{K: "missing"}
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return jwtReq{K: "failed"}
	}
	c.fail(fmt.Sprintf("a requirement of a kind amesh does not enforce (%T)", r.GetRequiresType()))
	return jwtReq{}
}

// provider compiles provider name once.
func (c *jwtCompiler) provider(name string) {
	if _, ok := c.providers[name]; ok {
		return
	}
	p := c.cfg.GetProviders()[name]
	if p == nil {
		c.fail("requirement names provider " + name + ", which the filter lacks")
		return
	}
	what := "provider " + name
	unsupported := func(field string) { c.fail(what + " sets " + field + ", which amesh does not enforce") }
	switch {
	case p.GetSubjects() != nil:
		unsupported("subjects")
	case p.GetRequireExpiration():
		unsupported("require_expiration")
	case p.GetMaxLifetime() != nil:
		unsupported("max_lifetime")
	case p.GetFailedStatusInMetadata() != "":
		unsupported("failed_status_in_metadata")
	case p.GetClearRouteCache():
		unsupported("clear_route_cache")
	}
	src := p.GetLocalJwks()
	var text string
	remote := p.GetRemoteJwks() != nil
	switch {
	case remote:
		var why string
		text, why = c.remote(p.GetRemoteJwks())
		if why != "" {
			c.notes = append(c.notes, what+"'s JWKS is not fetched ("+why+"): its tokens fail as in Envoy (Jwks remote fetch is failed)")
		}
	case src.GetInlineString() != "":
		text = src.GetInlineString()
	case len(src.GetInlineBytes()) > 0:
		text = string(src.GetInlineBytes())
	default:
		c.fail(what + " reads its JWKS from a file or the environment")
	}
	out := &jwtProvider{Issuer: p.GetIssuer(), Audiences: p.GetAudiences(), Forward: p.GetForward(),
		PayloadHeader: strings.ToLower(p.GetForwardPayloadHeader()), PadPayloadHeader: p.GetPadForwardPayloadHeader(),
		PayloadMetadata: p.GetPayloadInMetadata(), HeaderMetadata: p.GetHeaderInMetadata(),
		SpaceClaims: p.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(), Skew: p.GetClockSkewSeconds(), Params: p.GetFromParams(),
		Cookies: p.GetFromCookies()}
	if out.Skew == 0 {
		out.Skew = jwtDefaultSkew
	}
	for _, h := range p.GetFromHeaders() {
		out.Headers = append(out.Headers, jwtHeaderLoc{Name: strings.ToLower(h.GetName()), Prefix: h.GetValuePrefix()})
	}
	if len(p.GetFromHeaders()) == 0 && len(p.GetFromParams()) == 0 && len(p.GetFromCookies()) == 0 {
		out.Headers = []jwtHeaderLoc{{Name: "authorization", Prefix: "Bearer "}}
		out.Params = []string{"access_token"}
	}
	for _, ch := range p.GetClaimToHeaders() {
		out.ClaimHeaders = append(out.ClaimHeaders, jwtClaimHeaders{Header: strings.ToLower(ch.GetHeaderName()), Claim: ch.GetClaimName()})
	}
	if remote && text == "" {
		out.FetchFailed, out.Keys = true, []jwtKey{}
	}
	if text != "" {
		keys, skipped, placeholder, err := parseJWKS(text)
		switch {
		case remote && (err != nil || len(keys) == 0):
			// Envoy takes a fetched set it cannot use as a failed fetch.
			if err == nil {
				err = errors.New("it has no usable key")
			}
			out.FetchFailed, keys = true, []jwtKey{}
			c.notes = append(c.notes, what+"'s fetched JWKS is not usable ("+err.Error()+"): its tokens fail as in Envoy (Jwks remote fetch is failed)")
		case err != nil:
			c.fail(what + ": " + err.Error())
		case len(keys) == 0:
			c.fail(what + ": its JWKS has no usable key")
		}
		out.Keys = keys
		if len(skipped) > 0 {
			c.notes = append(c.notes, what+" skips keys Envoy skips too ("+strings.Join(skipped, ", ")+")")
		}
		if placeholder {
			c.notes = append(c.notes, what+" (issuer "+p.GetIssuer()+") has the key istiod puts in place of a JWKS it could not fetch: its tokens fail verification, as in Envoy")
		}
	}
	if len(p.GetFromParams()) > 0 && !p.GetForward() {
		c.notes = append(c.notes, what+" removes a verified token's query parameter, keeping the other parameters as sent where Envoy re-encodes them")
	}
	c.providers[name] = out
}

// remote returns the fetched JWKS of a remote_jwks, or why there is none.
func (c *jwtCompiler) remote(r *jwtv3.RemoteJwks) (text, why string) {
	s, ok := remoteSource(r)
	if !ok {
		return "", "its http_uri names no URI or cluster"
	}
	res, ok := c.fetched[s]
	switch {
	case !ok:
		return "", "no fetch of " + s.String() + " has completed"
	case res.Err != "":
		return "", res.Err
	}
	return res.JWKS, ""
}

// remoteSource is what package jwks fetches for r.
func remoteSource(r *jwtv3.RemoteJwks) (jwks.Source, bool) {
	u := r.GetHttpUri()
	s := jwks.Source{URI: u.GetUri(), Cluster: u.GetCluster()}
	return s, s.URI != "" && s.Cluster != ""
}
