package nginx

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// testKeys are keys generated for one run, to sign tokens with.
type testKeys struct {
	rsa, otherRSA *rsa.PrivateKey
	p256, p384    *ecdsa.PrivateKey
	ed            ed25519.PrivateKey
}

func newTestKeys(t *testing.T) testKeys {
	t.Helper()
	var k testKeys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	if k.p256, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if k.p384, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if _, k.ed, err = ed25519.GenerateKey(rand.Reader); err != nil {
		t.Fatal(err)
	}
	return k
}

func b64u(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// jwks is a JSON Web Key Set of the public halves of keys, named by kid.
func jwks(t *testing.T, keys map[string]crypto.PrivateKey) string {
	t.Helper()
	var out []map[string]string
	for kid, k := range keys {
		switch k := k.(type) {
		case *rsa.PrivateKey:
			out = append(out, map[string]string{"kty": "RSA", "kid": kid, "n": b64u(k.N.Bytes()), "e": b64u(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PrivateKey:
			size := (k.Curve.Params().BitSize + 7) / 8
			crv := map[int]string{32: "P-256", 48: "P-384"}[size]
			pt, err := k.PublicKey.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, map[string]string{"kty": "EC", "kid": kid, "crv": crv, "x": b64u(pt[1 : 1+size]), "y": b64u(pt[1+size:])})
		case ed25519.PrivateKey:
			out = append(out, map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": b64u(k.Public().(ed25519.PublicKey))})
		}
	}
	b, err := json.Marshal(map[string]any{"keys": out})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// signJWT signs claims with key under alg and kid, as a JOSE compact token.
func signJWT(t *testing.T, alg, kid string, key crypto.PrivateKey, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": alg, "typ": "JWT", "kid": kid})
	p, _ := json.Marshal(claims)
	signed := b64u(h) + "." + b64u(p)
	var hf func() hash.Hash
	var ch crypto.Hash
	switch alg[2:] {
	case "256":
		hf, ch = sha256.New, crypto.SHA256
	case "384":
		hf, ch = sha512.New384, crypto.SHA384
	case "512":
		hf, ch = sha512.New, crypto.SHA512
	}
	var sig []byte
	var err error
	if alg == "EdDSA" {
		sig = ed25519.Sign(key.(ed25519.PrivateKey), []byte(signed))
	} else {
		d := hf()
		d.Write([]byte(signed))
		sum := d.Sum(nil)
		switch alg[:2] {
		case "RS":
			sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), ch, sum)
		case "PS":
			sig, err = rsa.SignPSS(rand.Reader, key.(*rsa.PrivateKey), ch, sum, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		case "ES":
			k := key.(*ecdsa.PrivateKey)
			var r, s *big.Int
			r, s, err = ecdsa.Sign(rand.Reader, k, sum)
			size := (k.Curve.Params().BitSize + 7) / 8
			if err == nil {
				sig = append(r.FillBytes(make([]byte, size)), s.FillBytes(make([]byte, size))...)
			}
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64u(sig)
}

// istiodJWTFilters are the HTTP filters istiod gives virtualInbound for
// RequestAuthentication (testdata/istiod/jwt): jwt_authn and the two RBAC filters
// reading its metadata, with the JWKS of providers origins-0 and origins-1 replaced.
func istiodJWTFilters(t *testing.T, jwks0, jwks1 string) []*hcmv3.HttpFilter {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "istiod", "jwt", "lds", "virtualInbound.json"))
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{}
	if err := protojson.Unmarshal(b, l); err != nil {
		t.Fatal(err)
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			h, err := resource.HCMOf(f)
			if err != nil || h == nil {
				continue
			}
			var out []*hcmv3.HttpFilter
			for _, hf := range h.GetHttpFilters() {
				switch hf.GetName() {
				case "envoy.filters.http.jwt_authn":
					c := &jwtv3.JwtAuthentication{}
					if err := resource.UnpackFilterConfig(hf.GetTypedConfig(), c); err != nil {
						t.Fatal(err)
					}
					c.GetProviders()["origins-0"].GetLocalJwks().Specifier = inlineString(jwks0)
					c.GetProviders()["origins-1"].GetLocalJwks().Specifier = inlineString(jwks1)
					a, err := anypb.New(c)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, &hcmv3.HttpFilter{Name: hf.GetName(), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
				case "envoy.filters.http.rbac":
					out = append(out, hf)
				}
			}
			if len(out) == 3 {
				return out
			}
		}
	}
	t.Fatal("no chain of virtualInbound has jwt_authn and two RBAC filters")
	return nil
}

// jwtReq is a request of the JWT tests and what Envoy answers it.
type jwtReq struct {
	what    string
	target  string
	headers [][2]string
	status  int
	body    string // "" for "allowed"
	www     string // the www-authenticate Envoy sets; "" none
}

// bearer puts a token where istiod's origins-0 looks for it, auth at Envoy's default.
func bearer(tok string) [][2]string { return [][2]string{{"x-jwt", "Bearer " + tok}} }

func auth(tok string) [][2]string { return [][2]string{{"authorization", "Bearer " + tok}} }

// TestJWTLuaDecisions: istiod's jwt_authn and RBAC filters for RequestAuthentication
// (testdata/istiod/jwt, the JWKS replaced by keys of this run), translated and run by
// amesh.rbac and amesh.jwt in stock nginx, answer what Envoy answers: tokens of every
// supported algorithm verify; expired, foreign-issuer, foreign-audience and badly
// signed tokens get 401 (403 for the audience) with Envoy's text and
// www-authenticate; a token in the query parameter counts; a missing token is allowed
// (istiod's allow_missing) and then the AuthorizationPolicies decide on request
// principals and claims.
func TestJWTLuaDecisions(t *testing.T) {
	n := startRBACNginx(t)
	k := newTestKeys(t)
	jwks0 := jwks(t, map[string]crypto.PrivateKey{"rsa": k.rsa, "p256": k.p256})
	jwks1 := jwks(t, map[string]crypto.PrivateKey{"p384": k.p384, "ed": k.ed})
	normalize := func(h *hcmv3.HttpConnectionManager) { h.NormalizePath = wrapperspb.Bool(true) }
	conf := rbacConf(t, normalize, istiodJWTFilters(t, jwks0, jwks1)...)
	if err := os.WriteFile(filepath.Join(n.cases, "istiod-jwt.json"), conf, 0o644); err != nil {
		t.Fatal(err)
	}
	// A provider required without allow_missing: a missing token is refused.
	required := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "https://issuer.example",
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: inlineString(jwks0)}}}},
		Rules: []*jwtv3.RequirementRule{{Match: prefixMatch("/"), RequirementType: &jwtv3.RequirementRule_Requires{
			Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "p"}}}}},
	}
	a, err := anypb.New(required)
	if err != nil {
		t.Fatal(err)
	}
	reqConf := rbacConf(t, nil, &hcmv3.HttpFilter{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	if err := os.WriteFile(filepath.Join(n.cases, "jwt-required.json"), reqConf, 0o644); err != nil {
		t.Fatal(err)
	}
	// Tokens in cookies only.
	cookie := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "https://issuer.example", FromCookies: []string{"session", "at"},
			JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: inlineString(jwks0)}}}},
		Rules: required.Rules,
	}
	if a, err = anypb.New(cookie); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.cases, "jwt-cookie.json"),
		rbacConf(t, nil, &hcmv3.HttpFilter{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}), 0o644); err != nil {
		t.Fatal(err)
	}
	// The same provider with a remote JWKS no fetch has brought (rbacConf translates
	// without a fetcher): the JWKS Envoy could not fetch.
	required.Providers["p"].JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
		HttpUri: &corev3.HttpUri{Uri: "http://jwks.example/jwks.json", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|80||jwks.example"}}}}
	if a, err = anypb.New(required); err != nil {
		t.Fatal(err)
	}
	remoteConf := rbacConf(t, nil, &hcmv3.HttpFilter{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	if !strings.Contains(string(remoteConf), `"jwks_fetch_failed":true`) {
		t.Fatalf("the remote provider is not marked unfetched: %s", remoteConf)
	}
	if err := os.WriteFile(filepath.Join(n.cases, "jwt-remote-unfetched.json"), remoteConf, 0o644); err != nil {
		t.Fatal(err)
	}

	now := time.Now().Unix()
	claims := func(iss, sub string, extra ...any) map[string]any {
		c := map[string]any{"iss": iss, "sub": sub, "aud": "aud-a", "exp": now + 600, "iat": now}
		for i := 0; i+1 < len(extra); i += 2 {
			c[extra[i].(string)] = extra[i+1]
		}
		return c
	}
	const iss = "https://issuer.example"
	alice := signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice"))
	invalid := func(target string) string { return `Bearer realm="http://test` + target + `", error="invalid_token"` }
	reqs := []jwtReq{
		{what: "no token, public path (notRequestPrincipals)", target: "/public/x", status: 200},
		{what: "no token, requestPrincipals required", target: "/api/x", status: 403, body: "RBAC: access denied"},
		{what: "no token, DENY notRequestPrincipals", target: "/api/secure/x", status: 403, body: "RBAC: access denied"},
		{what: "alice RS256", target: "/api/x", headers: bearer(alice), status: 200},
		{what: "alice RS256, DENY policy does not apply", target: "/api/secure/x", headers: bearer(alice), status: 200},
		{what: "alice in the query parameter", target: "/api/x?access_token=" + alice, status: 200},
		{what: "a valid token on a public path", target: "/public/x", headers: bearer(alice), status: 403, body: "RBAC: access denied"},
		{what: "bob is not a request principal", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "bob"))), status: 403, body: "RBAC: access denied"},
		{what: "expired", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice", "exp", now-3600))),
			status: 401, body: "Jwt is expired", www: invalid("/api/x")},
		{what: "expired within the clock skew", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice", "exp", now-20))), status: 200},
		{what: "not yet valid", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice", "nbf", now+3600))),
			status: 401, body: "Jwt not yet valid", www: invalid("/api/x")},
		{what: "foreign issuer", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims("https://other.example", "alice"))),
			status: 401, body: "Jwt issuer is not configured", www: invalid("/api/x")},
		{what: "foreign audience", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice", "aud", "other"))),
			status: 403, body: "Audiences in Jwt are not allowed", www: invalid("/api/x")},
		{what: "signed by another key", target: "/api/x", headers: bearer(signJWT(t, "RS256", "rsa", k.otherRSA, claims(iss, "alice"))),
			status: 401, body: "Jwt verification fails", www: invalid("/api/x")},
		{what: "tampered payload", target: "/api/x", headers: bearer(tamper(alice)), status: 401, body: "Jwt verification fails", www: invalid("/api/x")},
		{what: "not a JWT", target: "/api/x", headers: bearer("abc"), status: 401,
			body: "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections", www: invalid("/api/x")},
		{what: "no key for the kid", target: "/api/x", headers: bearer(signJWT(t, "RS256", "nope", k.rsa, claims(iss, "alice"))),
			status: 401, body: "Jwks doesn't have key to match kid or alg from Jwt", www: invalid("/api/x")},
		// origins-2 verifies it against istiod's placeholder and fails; Envoy answers
		// with the status of its last requirement (requires_all), where origins-1's
		// allow_missing finds the token at the Authorization header they share and
		// refuses its issuer.
		{what: "istiod's placeholder for an unreachable JWKS", target: "/api/x", headers: auth(signJWT(t, "RS256", "", k.rsa, claims("unreachable-issuer", "alice"))),
			status: 401, body: "Jwt issuer is not configured", www: invalid("/api/x")},
		{what: "claims groups, aud and azp", target: "/admin/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "x", "groups", []string{"users", "admins"}, "azp", "client-x"))), status: 200},
		{what: "claims without the group", target: "/admin/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "x", "groups", []string{"users"}, "azp", "client-x"))), status: 403, body: "RBAC: access denied"},
		{what: "claims with another presenter", target: "/admin/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "x", "groups", "admins", "azp", "client-y"))), status: 403, body: "RBAC: access denied"},
		{what: "nested claim", target: "/nested/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "x", "realm", map[string]any{"role": "ops"}))), status: 200},
		{what: "nested claim of another value", target: "/nested/x", headers: bearer(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "x", "realm", map[string]any{"role": "dev"}))), status: 403, body: "RBAC: access denied"},
	}
	for _, alg := range []string{"RS384", "RS512", "PS256", "PS384", "PS512"} {
		reqs = append(reqs, jwtReq{what: alg, target: "/api/x", headers: bearer(signJWT(t, alg, "rsa", k.rsa, claims(iss, "alice"))), status: 200})
	}
	reqs = append(reqs,
		jwtReq{what: "ES256", target: "/api/x", headers: bearer(signJWT(t, "ES256", "p256", k.p256, claims(iss, "alice"))), status: 200},
		jwtReq{what: "ES384, remote-issuer/*", target: "/api/x", headers: auth(signJWT(t, "ES384", "p384", k.p384, claims("remote-issuer", "anyone"))), status: 200},
		jwtReq{what: "EdDSA, remote-issuer/*", target: "/api/x", headers: auth(signJWT(t, "EdDSA", "ed", k.ed, claims("remote-issuer", "anyone"))), status: 200},
		jwtReq{what: "remote-issuer's token at origins-0's location", target: "/api/x", headers: bearer(signJWT(t, "EdDSA", "ed", k.ed, claims("remote-issuer", "anyone"))),
			status: 401, body: "Jwt issuer is not configured", www: invalid("/api/x")},
		jwtReq{what: "ES256 signature under another key", target: "/api/x", headers: bearer(signJWT(t, "ES256", "p256", mustEC(t), claims(iss, "alice"))),
			status: 401, body: "Jwt verification fails", www: invalid("/api/x")},
	)
	check := func(c string, r jwtReq) {
		t.Helper()
		code, body, h, err := n.exchange(c, rbacReq{target: r.target, headers: r.headers})
		if err != nil {
			t.Errorf("%s: %v", r.what, err)
			return
		}
		want := r.body
		if want == "" {
			want = "allowed"
		}
		if code != r.status || body != want || h.Get("Www-Authenticate") != r.www {
			t.Errorf("%s (%s): %d %q www-authenticate %q, want %d %q %q", r.what, r.target, code, body, h.Get("Www-Authenticate"), r.status, want, r.www)
		}
	}
	for _, r := range reqs {
		check("istiod-jwt", r)
	}
	for _, r := range []jwtReq{
		{what: "missing token, required", target: "/x", status: 401, body: "Jwt is missing", www: `Bearer realm="http://test/x"`},
		{what: "valid token in Authorization (the default location)", target: "/x", headers: auth(alice), status: 200},
		{what: "valid token in the default query parameter", target: "/x?access_token=" + alice, status: 200},
		{what: "token in x-jwt, not a location of this provider", target: "/x", headers: bearer(alice), status: 401, body: "Jwt is missing", www: `Bearer realm="http://test/x"`},
	} {
		check("jwt-required", r)
	}
	// Envoy's cookie parsing: every Cookie header, parts split at ";", leading spaces
	// dropped from the name, surrounding quotes from the value, the first of a name.
	expired := signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice", "exp", now-3600))
	for _, r := range []jwtReq{
		{what: "token in a cookie", target: "/x", headers: [][2]string{{"cookie", "theme=dark; session=" + alice}}, status: 200},
		{what: "token in a quoted cookie", target: "/x", headers: [][2]string{{"cookie", `session="` + alice + `"`}}, status: 200},
		{what: "token in the second cookie header", target: "/x", headers: [][2]string{{"cookie", "theme=dark"}, {"cookie", "at=" + alice}}, status: 200},
		{what: "the first of two cookies of a name", target: "/x", headers: [][2]string{{"cookie", "session=" + expired + "; session=" + alice}},
			status: 401, body: "Jwt is expired", www: invalid("/x")},
		{what: "a badly signed token in a cookie", target: "/x", headers: [][2]string{{"cookie", "session=" + tamper(alice)}},
			status: 401, body: "Jwt verification fails", www: invalid("/x")},
		{what: "no cookie of the provider", target: "/x", headers: [][2]string{{"cookie", "theme=dark; sessionx=" + alice}},
			status: 401, body: "Jwt is missing", www: `Bearer realm="http://test/x"`},
		{what: "a token in Authorization, not a location of this provider", target: "/x", headers: auth(alice),
			status: 401, body: "Jwt is missing", www: `Bearer realm="http://test/x"`},
	} {
		check("jwt-cookie", r)
	}
	// Envoy checks a token's issuer, times and audiences before it needs the keys.
	for _, r := range []jwtReq{
		{what: "remote JWKS not fetched: a valid token", target: "/x", headers: auth(alice), status: 401, body: "Jwks remote fetch is failed", www: invalid("/x")},
		{what: "remote JWKS not fetched: an expired token", target: "/x", headers: auth(signJWT(t, "RS256", "rsa", k.rsa, claims(iss, "alice", "exp", now-3600))),
			status: 401, body: "Jwt is expired", www: invalid("/x")},
		{what: "remote JWKS not fetched: no token", target: "/x", status: 401, body: "Jwt is missing", www: `Bearer realm="http://test/x"`},
	} {
		check("jwt-remote-unfetched", r)
	}
}

func inlineString(s string) *corev3.DataSource_InlineString {
	return &corev3.DataSource_InlineString{InlineString: s}
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p, _ := base64.RawURLEncoding.DecodeString(parts[1])
	p = []byte(strings.Replace(string(p), "alice", "admin", 1))
	return parts[0] + "." + b64u(p) + "." + parts[2]
}

func mustEC(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
