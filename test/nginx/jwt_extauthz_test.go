package nginx

import (
	"crypto"
	"crypto/rsa"

	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// jwtCustomEdit changes the HTTP filters istiod gives productpage for a
// RequestAuthentication with CUSTOM, DENY and ALLOW policies
// (testdata/istiod/jwt-extauthz): the jwt_authn provider's JWKS becomes jwksText and,
// with jwtFirst, jwt_authn moves in front of CUSTOM's RBAC and ext_authz filters (the
// order of a mesh that authenticates first).
func jwtCustomEdit(t *testing.T, jwksText string, jwtFirst bool) func([]*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	return func(fs []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
		out := slices.Clone(fs)
		at, custom := -1, -1
		for i, f := range out {
			switch f.GetName() {
			case "envoy.filters.http.jwt_authn":
				c := &jwtv3.JwtAuthentication{}
				if err := resource.UnpackFilterConfig(f.GetTypedConfig(), c); err != nil {
					t.Fatal(err)
				}
				for _, p := range c.GetProviders() {
					p.GetLocalJwks().Specifier = inlineString(jwksText)
				}
				a, err := anypb.New(c)
				if err != nil {
					t.Fatal(err)
				}
				out[i] = &hcmv3.HttpFilter{Name: f.GetName(), ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
				at = i
			case "envoy.filters.http.rbac":
				if custom < 0 {
					custom = i
				}
			}
		}
		if at < 0 || custom < 0 || custom > at {
			t.Fatalf("the filters are not CUSTOM's then jwt_authn: %v", fs)
		}
		if jwtFirst {
			j := out[at]
			out = slices.Delete(out, at, at+1)
			out = slices.Insert(out, custom, j)
		}
		return out
	}
}

// editListenerFilters changes the HTTP filters of every connection manager of l.
func editListenerFilters(t *testing.T, l *listenerv3.Listener, edit func([]*hcmv3.HttpFilter) []*hcmv3.HttpFilter) {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			h, err := resource.HCMOf(f)
			if err != nil || h == nil {
				continue
			}
			h.HttpFilters = edit(h.GetHttpFilters())
			a, err := anypb.New(h)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
}

// jwtCustomKeys are the run's key and the JWKS istiod's provider gets in its place.
func jwtCustomKeys(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	k := newTestKeys(t)
	return k.rsa, jwks(t, map[string]crypto.PrivateKey{"rsa": k.rsa})
}

// jwtCustomTokens signs the tokens the tests send: valid ones (with groups), one
// signed by a key the provider does not have.
type jwtCustomTokens struct {
	valid, checked, unchecked, bad string
}

func signJWTCustomTokens(t *testing.T, key *rsa.PrivateKey) jwtCustomTokens {
	t.Helper()
	now := time.Now().Unix()
	claims := func(groups ...string) map[string]any {
		c := map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "aud-a", "exp": now + 600}
		if len(groups) > 0 {
			c["groups"] = groups
		}
		return c
	}
	other, _ := jwtCustomKeys(t)
	return jwtCustomTokens{
		valid:     signJWT(t, "RS256", "rsa", key, claims()),
		checked:   signJWT(t, "RS256", "rsa", key, claims("users", "checked")),
		unchecked: signJWT(t, "RS256", "rsa", key, claims("users")),
		bad:       signJWT(t, "RS256", "rsa", other, claims("checked")),
	}
}

// jwtPattern matches a JWT, which the test's output leaves out.
var jwtPattern = regexp.MustCompile(`eyJ[\w-]*\.[\w-]*\.[\w-]*`)

// jwtCustomCase is a request of the combined tests and what Envoy answers it.
type jwtCustomCase struct {
	what, method, target string
	token, mode          string // the Authorization bearer token ("" none), x-ext-authz
	status               int
	body                 string // "" for the application's answer
	asked                bool   // the authorization server is called
	// authorization is what the server gets in Authorization ("" none), when asked.
	authorization string
	// serverTarget, when set, is the target the server gets.
	serverTarget string
}

func (n *extAuthzNginx) checkCustom(t *testing.T, srv *authzServer, c string, tc jwtCustomCase) {
	t.Helper()
	hs := [][2]string{{"x-ext-authz", tc.mode}}
	if tc.token != "" {
		hs = append(hs, [2]string{"Authorization", "Bearer " + tc.token})
	}
	r := n.send(t, c, tc.method, tc.target, hs...)
	calls := srv.taken()
	switch {
	case r.status != tc.status:
		t.Errorf("%s (%s): %d %q, want %d %q", tc.what, c, r.status, r.body, tc.status, tc.body)
	case tc.body == "":
		echoed(t, r) // the application's answer
	case r.body != tc.body:
		t.Errorf("%s (%s): %d %q, want %d %q", tc.what, c, r.status, r.body, tc.status, tc.body)
	}
	if tc.status == 401 && !strings.HasPrefix(r.header.Get("www-authenticate"), `Bearer realm="http://productpage:9080`) {
		t.Errorf("%s (%s): www-authenticate %q, want jwt_authn's", tc.what, c, r.header.Get("www-authenticate"))
	}
	if !tc.asked {
		if len(calls) != 0 {
			t.Errorf("%s (%s): the authorization server was asked (%s %s)", tc.what, c, calls[0].Method, calls[0].Target)
		}
		return
	}
	if len(calls) != 1 {
		t.Fatalf("%s (%s): the authorization server got %d calls, want 1", tc.what, c, len(calls))
	}
	call := calls[0]
	path, _, _ := strings.Cut(tc.target, "?")
	if call.Method != tc.method || !strings.HasPrefix(call.Target, "/check"+path) || call.Host != "productpage:9080" ||
		call.Header.Get("X-Authz-From") != "amesh-test" || call.Header.Get("X-Ext-Authz") != tc.mode {
		t.Errorf("%s (%s): the server got %s %s host %q, x-authz-from %q, x-ext-authz %q", tc.what, c, call.Method, call.Target, call.Host,
			call.Header.Get("X-Authz-From"), call.Header.Get("X-Ext-Authz"))
	}
	if tc.serverTarget != "" && call.Target != tc.serverTarget {
		t.Errorf("%s (%s): the server got target %q, want %q", tc.what, c, jwtPattern.ReplaceAllString(call.Target, "<jwt>"), jwtPattern.ReplaceAllString(tc.serverTarget, "<jwt>"))
	}
	// Tokens stay out of the test's output.
	if got := call.Header.Get("Authorization"); got != tc.authorization {
		t.Errorf("%s (%s): the server got an Authorization header of %d bytes, want %d (the request's: %t)", tc.what, c, len(got), len(tc.authorization), tc.authorization != "")
	}
}

// istiod's filters for a RequestAuthentication with CUSTOM (one rule on a JWT claim),
// DENY and ALLOW policies (testdata/istiod/jwt-extauthz, the JWKS replaced by a key of
// this run), translated and run by amesh.rbac in stock nginx against a real HTTP
// authorization server, in Envoy's order for each filter order:
//
//   - istiod's (CUSTOM's shadow rules and ext_authz, then jwt_authn, DENY, ALLOW): a
//     request under CUSTOM's rules is sent to the server first, whatever its token
//     (with the token, which jwt_authn has not removed yet), and the server's denial
//     answers; one it allows then meets jwt_authn (401 for a bad token) and the RBAC
//     filters; a bad token outside the rules gets jwt_authn's 401 and never reaches
//     the server; the claim rule never matches, as jwt_authn has written no payload
//     when the shadow rules run.
//   - jwt_authn first: a bad token gets jwt_authn's 401 and the server is not called;
//     a valid token reaches the server without the token (jwt_authn removed it) and its
//     denial answers; the claim rule matches on the verified payload only.
func TestJWTExtAuthzLua(t *testing.T) {
	requireNginx(t)
	key, jwksText := jwtCustomKeys(t)
	tok := signJWTCustomTokens(t, key)
	srv := startAuthzServer(t)
	prefix := t.TempDir()
	n := &extAuthzNginx{port: freePort(t), cases: filepath.Join(prefix, "cases")}
	if err := os.Mkdir(n.cases, 0o755); err != nil {
		t.Fatal(err)
	}
	for c, jwtFirst := range map[string]bool{"istiod": false, "jwt-first": true} {
		rbac, upID := inboundRBACConf(t, "jwt-extauthz", func(l *listenerv3.Listener) {
			editListenerFilters(t, l, jwtCustomEdit(t, jwksText, jwtFirst))
		})
		want := "SHADOW EXT_AUTHZ JWT DENY ALLOW"
		if jwtFirst {
			want = "JWT SHADOW EXT_AUTHZ DENY ALLOW"
		}
		if got := actionsOf(rbac); got != want {
			t.Fatalf("%s: amesh-rbac's steps %s, want %s", c, got, want)
		}
		n.writeCase(t, c, rbac, upID, srv.addr, nil)
	}
	startStockNginx(t, prefix, extAuthzNginxConf, map[string]any{"Port": n.port, "Cases": n.cases}, n.port)

	const denied = "denied by ext authz"
	const rbacDenied = "RBAC: access denied"
	const badSig = "Jwt verification fails"
	for _, tc := range []jwtCustomCase{
		{what: "bad token outside CUSTOM's rules", method: "GET", target: "/productpage", token: tok.bad, mode: "allow", status: 401, body: badSig},
		{what: "bad token under CUSTOM's rules, the server denies", method: "GET", target: "/admin/x", token: tok.bad, mode: "deny",
			status: 403, body: denied, asked: true, authorization: "Bearer " + tok.bad},
		{what: "bad token under CUSTOM's rules, the server allows", method: "GET", target: "/admin/x", token: tok.bad, mode: "allow",
			status: 401, body: badSig, asked: true, authorization: "Bearer " + tok.bad},
		{what: "valid token, the server denies", method: "GET", target: "/login", token: tok.valid, mode: "deny",
			status: 403, body: denied, asked: true, authorization: "Bearer " + tok.valid},
		{what: "valid token, the server allows", method: "GET", target: "/admin/x?q=1", token: tok.valid, mode: "allow",
			status: 200, asked: true, authorization: "Bearer " + tok.valid},
		{what: "valid token in the query, sent to the server before jwt_authn", method: "GET", target: "/login?access_token=" + tok.valid, mode: "deny",
			status: 403, body: denied, asked: true, serverTarget: "/check/login?access_token=" + tok.valid},
		{what: "the claim rule before jwt_authn's payload", method: "GET", target: "/claims/x", token: tok.checked, mode: "deny", status: 200},
		{what: "no token", method: "GET", target: "/productpage", mode: "deny", status: 200},
		{what: "DENY after CUSTOM", method: "GET", target: "/debug", token: tok.valid, mode: "deny", status: 403, body: rbacDenied},
		{what: "ALLOW after an allowing server", method: "PUT", target: "/admin/x", token: tok.valid, mode: "allow",
			status: 403, body: rbacDenied, asked: true, authorization: "Bearer " + tok.valid},
	} {
		n.checkCustom(t, srv, "istiod", tc)
	}
	for _, tc := range []jwtCustomCase{
		{what: "bad token under CUSTOM's rules", method: "GET", target: "/admin/x", token: tok.bad, mode: "allow", status: 401, body: badSig},
		{what: "bad token on the claim rule's path", method: "GET", target: "/claims/x", token: tok.bad, mode: "deny", status: 401, body: badSig},
		{what: "valid token, the server denies", method: "GET", target: "/login", token: tok.valid, mode: "deny", status: 403, body: denied, asked: true},
		{what: "valid token, the server allows", method: "GET", target: "/admin/x", token: tok.valid, mode: "allow", status: 200, asked: true},
		{what: "valid token in the query, removed before the server", method: "GET", target: "/login?x=1&access_token=" + tok.valid, mode: "deny",
			status: 403, body: denied, asked: true, serverTarget: "/check/login?x=1"},
		{what: "the only query parameter, removed before the server", method: "GET", target: "/login?access_token=" + tok.valid, mode: "deny",
			status: 403, body: denied, asked: true, serverTarget: "/check/login"},
		{what: "the claim rule on the verified payload", method: "GET", target: "/claims/x", token: tok.checked, mode: "deny", status: 403, body: denied, asked: true},
		{what: "the claim rule, another group", method: "GET", target: "/claims/x", token: tok.unchecked, mode: "deny", status: 200},
		{what: "the claim rule without a token", method: "GET", target: "/claims/x", mode: "deny", status: 200},
		{what: "outside CUSTOM's rules", method: "GET", target: "/productpage", token: tok.checked, mode: "deny", status: 200},
		{what: "DENY after CUSTOM", method: "GET", target: "/debug", token: tok.checked, mode: "allow", status: 403, body: rbacDenied},
		{what: "ALLOW after an allowing server", method: "PUT", target: "/claims/x", token: tok.checked, mode: "allow", status: 403, body: rbacDenied, asked: true},
	} {
		n.checkCustom(t, srv, "jwt-first", tc)
	}
	// The server's allowed headers reach the application after jwt_authn removed the
	// token.
	r := n.send(t, "jwt-first", "GET", "/admin/x", [2]string{"x-ext-authz", "allow"}, [2]string{"Authorization", "Bearer " + tok.valid})
	srv.taken()
	if h := echoed(t, r); h["x-auth-user"] != "alice" || h["authorization"] != nil {
		t.Errorf("the application got %v, want the server's x-auth-user and no token", h)
	}
}

// actionsOf lists the actions of an amesh-rbac config's steps.
func actionsOf(rbac map[string]any) string {
	var out []string
	fs, _ := rbac["filters"].([]any)
	for _, f := range fs {
		m, _ := f.(map[string]any)
		a, _ := m["action"].(string)
		out = append(out, a)
	}
	return strings.Join(out, " ")
}
