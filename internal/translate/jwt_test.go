package translate

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/dump"
)

// rbacFiltersOf decodes the amesh-rbac filters of a route.
func rbacFiltersOf(t *testing.T, r map[string]any) []map[string]any {
	t.Helper()
	p, _ := r["plugins"].(map[string]any)
	c, _ := p[rbacPluginName].(map[string]any)
	fs, _ := c["filters"].([]any)
	out := make([]map[string]any, 0, len(fs))
	for _, f := range fs {
		out = append(out, f.(map[string]any))
	}
	return out
}

// istiod's RequestAuthentication and AuthorizationPolicies (testdata/istiod/jwt): every
// inbound route of virtualInbound carries, in filter order, the jwt_authn step and the
// DENY and ALLOW RBAC filters whose request principals and claims read its metadata,
// exactly (no condition decided as the worst case); the config validates against the
// plugin's schema; the inline JWKS become PEM keys; the report names istiod's
// placeholder for the JWKS it could not fetch.
func TestIstiodRequestAuthentication(t *testing.T) {
	res, err := dump.LoadDir(istiodDir(t, "jwt"))
	if err != nil {
		t.Fatal(err)
	}
	tr := newTracked(Options{})
	r := tr.Translate(res.Snapshot())
	validateAll(t, tr.Objects())
	inbound := 0
	for k, v := range tr.Objects() {
		if !strings.HasPrefix(k, "/routes/in-") {
			continue
		}
		inbound++
		var route map[string]any
		if err := json.Unmarshal(v, &route); err != nil {
			t.Fatal(err)
		}
		raw, _ := json.Marshal(route["plugins"].(map[string]any)[rbacPluginName])
		if err := schema.ValidatePlugin(rbacPluginName, raw); err != nil {
			t.Errorf("%s: %v", k, err)
		}
		fs := rbacFiltersOf(t, route)
		var order []string
		for _, f := range fs {
			order = append(order, f["action"].(string))
		}
		if strings.Join(order, " ") != "JWT DENY ALLOW" {
			t.Fatalf("%s: steps %v, want JWT DENY ALLOW (istiod's filter order)", k, order)
		}
		if strings.Contains(string(raw), `"const"`) && strings.Contains(string(raw), `"payload"`) && !strings.Contains(string(raw), `"meta"`) {
			t.Errorf("%s: JWT conditions decided at translation: %s", k, raw)
		}
		var step jwtStep
		b, _ := json.Marshal(fs[0])
		if err := json.Unmarshal(b, &step); err != nil {
			t.Fatal(err)
		}
		c := step.JWT
		if len(c.Providers) != 3 || !c.BypassCORS || c.Requires.K != "any" || len(c.Requires.Of) != 4 {
			t.Fatalf("%s: jwt step %s", k, b)
		}
		o0 := c.Providers["origins-0"]
		if o0.Issuer != "https://issuer.example" || strings.Join(o0.Audiences, ",") != "aud-a,aud-b" || len(o0.Keys) != 2 ||
			o0.Headers[0] != (jwtHeaderLoc{Name: "x-jwt", Prefix: "Bearer "}) || strings.Join(o0.Params, ",") != "access_token" ||
			!o0.Forward || o0.PayloadHeader != "x-jwt-payload" || o0.PayloadMetadata != "payload" || o0.Skew != jwtDefaultSkew ||
			len(o0.ClaimHeaders) != 1 || o0.ClaimHeaders[0] != (jwtClaimHeaders{Header: "x-jwt-sub", Claim: "sub"}) ||
			strings.Join(o0.SpaceClaims, ",") != "permission,scope" {
			t.Errorf("%s: origins-0 %+v", k, o0)
		}
		if o1 := c.Providers["origins-1"]; o1.Headers[0] != (jwtHeaderLoc{Name: "authorization", Prefix: "Bearer "}) || o1.Forward || len(o1.Keys) != 1 {
			t.Errorf("%s: origins-1 (Envoy's default locations) %+v", k, o1)
		}
		// requires_any: the three providers, then requires_all of (provider or allow_missing).
		all := c.Requires.Of[3]
		if all.K != "all" || len(all.Of) != 3 || all.Of[1].K != "any" || all.Of[1].Of[1].K != "missing" ||
			strings.Join(all.Of[1].Of[1].Providers, ",") != "origins-1" {
			t.Errorf("%s: requirement %+v", k, c.Requires)
		}
		// The keys are the JWKS's: the RSA key's modulus survives the conversion.
		blk, _ := pem.Decode([]byte(o0.Keys[0].PEM))
		pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
		if err != nil || o0.Keys[0].Kid != "inline-rsa" || o0.Keys[0].Kty != "RSA" {
			t.Fatalf("%s: key %+v: %v", k, o0.Keys[0], err)
		}
		n, _ := b64url("0CR0vxBwFaEMMvxpSCASlQQyh4KA4YCEmct7BUpFaIEQ8")
		if got := pub.(*rsa.PublicKey).N.Bytes(); string(got[:len(n)-1]) != string(n[:len(n)-1]) {
			t.Errorf("%s: the PEM's modulus starts %x, want %x", k, got[:8], n[:8])
		}
		if o0.Keys[1].Kty != "EC" || o0.Keys[1].Crv != "P-256" {
			t.Errorf("%s: EC key %+v", k, o0.Keys[1])
		}
	}
	if inbound == 0 {
		t.Fatal("no inbound routes")
	}
	if !findEntry(r.Report, "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.jwt_authn]", report.Approximated,
		"origins-2", "unreachable-issuer", "could not fetch", "enforced per request by amesh-rbac") {
		t.Errorf("the report does not name the jwt_authn step and istiod's placeholder key: %v", r.Report)
	}
	for _, e := range r.Report {
		if strings.Contains(e.Field, "envoy.filters.http.rbac") && e.Severity == report.Unsupported {
			t.Errorf("an RBAC condition was decided as the worst case: %v", e)
		}
	}
}

func b64u(b []byte) string { return strings.TrimRight(base64.RawURLEncoding.EncodeToString(b), "=") }

func rsaJWKS(kid string) string {
	k := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 2047), E: 65537}
	k.N.Add(k.N, big.NewInt(12345))
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{"kty": "RSA", "kid": kid,
		"n": b64u(k.N.Bytes()), "e": "AQAB"}}})
	return string(b)
}

func localJWKS(s string) *jwtv3.JwtProvider_LocalJwks {
	return &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}}
}

func requireProvider(p string) *jwtv3.RequirementRule {
	return &jwtv3.RequirementRule{Match: prefix("/"), RequirementType: &jwtv3.RequirementRule_Requires{
		Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: p}}}}
}

// What the step cannot do as Envoy does fails the routes closed (403), reported:
// provider options istiod does not set, symmetric keys, a JWKS without a usable key, rules for some
// requests only, filter-state rules. A provider amesh enforces does not.
func TestJWTUnsupportedFailsClosed(t *testing.T) {
	good := func() *jwtv3.JwtProvider {
		return &jwtv3.JwtProvider{Issuer: "i", JwksSourceSpecifier: localJWKS(rsaJWKS("k"))}
	}
	for _, tc := range []struct {
		name string
		edit func(*jwtv3.JwtAuthentication)
		want string // "" enforced
	}{
		{"enforced", func(*jwtv3.JwtAuthentication) {}, ""},
		{"require expiration", func(c *jwtv3.JwtAuthentication) { c.Providers["p"].RequireExpiration = true }, "require_expiration"},
		{"oct key", func(c *jwtv3.JwtAuthentication) {
			c.Providers["p"].JwksSourceSpecifier = localJWKS(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)
		}, "symmetric"},
		{"no usable key", func(c *jwtv3.JwtAuthentication) {
			c.Providers["p"].JwksSourceSpecifier = localJWKS(`{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}`)
		}, "no usable key"},
		{"rule for some paths", func(c *jwtv3.JwtAuthentication) {
			c.Rules[0].Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/x"}}
		}, "some requests only"},
		{"filter state rules", func(c *jwtv3.JwtAuthentication) { c.FilterStateRules = &jwtv3.FilterStateRule{Name: "x"} }, "filter_state_rules"},
		{"unknown provider", func(c *jwtv3.JwtAuthentication) { c.Rules = []*jwtv3.RequirementRule{requireProvider("q")} }, "lacks"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": good()}, Rules: []*jwtv3.RequirementRule{requireProvider("p")}}
			tc.edit(c)
			objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, httpFilter("envoy.filters.http.jwt_authn", c))}, twoRoutes("80"))
			for name, r := range routeObjs(t, objs, "out-80") {
				st, body := abortOf(r)
				fs := rbacFiltersOf(t, r)
				switch {
				case tc.want == "" && (st != 0 || len(fs) != 1 || fs[0]["action"] != "JWT") && name != "no-route":
					t.Errorf("route %q: %d %q %v, want the JWT step", name, st, body, fs)
				case tc.want != "" && (st != 403 || !strings.Contains(body, tc.want) || len(fs) != 0):
					t.Errorf("route %q: %d %q %v, want 403 naming %s", name, st, body, fs, tc.want)
				}
			}
			field := "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.jwt_authn]"
			if tc.want != "" && !findEntry(rep, field, report.Unsupported, tc.want, "403 (fail closed)") {
				t.Errorf("not reported: %v", rep)
			}
		})
	}
}

// An RBAC filter in front of jwt_authn runs before it (its metadata is absent then,
// as in Envoy): the steps keep the filter order either way.
func TestJWTFilterOrder(t *testing.T) {
	c := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {JwksSourceSpecifier: localJWKS(rsaJWKS("k"))}},
		Rules: []*jwtv3.RequirementRule{requireProvider("p")}}
	jf := httpFilter("envoy.filters.http.jwt_authn", c)
	for _, tc := range []struct {
		filters []string
		want    string
	}{{[]string{"rbac", "jwt"}, "DENY JWT"}, {[]string{"jwt", "rbac"}, "JWT DENY"}} {
		var hs []*hcmv3.HttpFilter
		for _, f := range tc.filters {
			if f == "jwt" {
				hs = append(hs, jf)
			} else {
				hs = append(hs, rbacFilter(istioDenyPath("/a")))
			}
		}
		objs, _ := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, hs...)}, twoRoutes("80"))
		r := routeObjs(t, objs, "out-80")["a"]
		var got []string
		for _, f := range rbacFiltersOf(t, r) {
			got = append(got, f["action"].(string))
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("filters %v: steps %v, want %s", tc.filters, got, tc.want)
		}
	}
}

// A per-route config naming a requirement of requirement_map verifies it on that
// route; disabled skips the filter; a name the map lacks fails the route closed.
func TestJWTPerRoute(t *testing.T) {
	c := &jwtv3.JwtAuthentication{Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "i", JwksSourceSpecifier: localJWKS(rsaJWKS("k"))}},
		RequirementMap: map[string]*jwtv3.JwtRequirement{"r": {RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "p"}}}}
	rc := twoRoutes("80")
	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.jwt_authn": mustAny(&jwtv3.PerRouteConfig{
		RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "r"}})}
	rc.VirtualHosts[0].Routes[1].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.jwt_authn": mustAny(&jwtv3.PerRouteConfig{
		RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "missing"}})}
	objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, httpFilter("envoy.filters.http.jwt_authn", c))}, rc)
	rs := routeObjs(t, objs, "out-80")
	if fs := rbacFiltersOf(t, rs["a"]); len(fs) != 1 || fs[0]["action"] != "JWT" {
		t.Errorf("route a: %v, want the JWT step of requirement r", fs)
	}
	if st, body := abortOf(rs["b"]); st != 403 || !strings.Contains(body, "missing") {
		t.Errorf("route b: %d %q, want 403 for a requirement the map lacks", st, body)
	}
	if st, _ := abortOf(rs["no-route"]); st != 0 && st != 404 {
		t.Errorf("no-route: %d; without rules nothing is required", st)
	}
	if !findEntry(rep, "route.typed_per_filter_config[envoy.filters.http.jwt_authn]", report.Approximated, "enforced per request") {
		t.Errorf("the per-route requirement is not reported: %v", rep)
	}
}
