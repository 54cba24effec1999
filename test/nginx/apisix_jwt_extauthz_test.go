package nginx

import (
	"fmt"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// istiod's filters for a RequestAuthentication with CUSTOM (one rule on a JWT claim),
// DENY and ALLOW policies (testdata/istiod/jwt-extauthz, the JWKS replaced by a key of
// this run) in real APISIX, enforced by amesh-rbac alone with a real HTTP authorization
// server behind an EDS cluster, in Envoy's order for two filter orders on two
// listeners: istiod's (CUSTOM before jwt_authn: a request under CUSTOM's rules reaches
// the server whatever its token, then jwt_authn answers a bad token 401; a bad token
// elsewhere never reaches the server; the claim rule does not match before jwt_authn
// ran) and jwt_authn first (a bad token gets 401 and never reaches the server; a valid
// one reaches it without the token, and the claim rule matches on its payload); DENY
// and ALLOW after.
func TestAPISIXJWTExtAuthz(t *testing.T) {
	requireAPISIX(t)
	key, jwksText := jwtCustomKeys(t)
	tok := signJWTCustomTokens(t, key)
	istiodPort, jwtFirstPort := freePort(t), freePort(t)
	app := startBackendAt(t, "127.0.0.23", "app", nil)
	srv := startAuthzServer(t)
	authz := &backend{name: "authz", ip: "127.0.0.1", port: srv.addr.Port}
	ca, cauthz := "outbound|9080||app.test", "outbound|8000||ext-authz.test"
	msgs := []proto.Message{
		rbacFiltersListener(istiodPort, "istiod", captureFilters(t, "jwt-extauthz", 5, cauthz, jwtCustomEdit(t, jwksText, false))...),
		rbacFiltersListener(jwtFirstPort, "jwt-first", captureFilters(t, "jwt-extauthz", 5, cauthz, jwtCustomEdit(t, jwksText, true))...),
	}
	for _, rds := range []string{"istiod", "jwt-first"} {
		msgs = append(msgs, routeConfig(rds, &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("all", prefixMatch("/"), ca, nil),
		}}))
	}
	msgs = append(append(msgs, edsCluster(ca, app)...), edsCluster(cauthz, authz)...)
	xds := newXDS(t, resourcesOf(msgs...))
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 2, Port: istiodPort, ExtraPorts: []int{jwtFirstPort}})
	ap.waitServing()
	for _, port := range []int{istiodPort, jwtFirstPort} {
		waitFor(t, fmt.Sprintf("/productpage on %d to reach the app", port), func() bool {
			ans, err := ap.call(port, "productpage", "/productpage")
			return err == nil && ans.code == 200
		})
	}
	srv.taken()
	const denied, rbacDenied, badSig = "denied by ext authz", "RBAC: access denied", "Jwt verification fails"
	for _, c := range []struct {
		port                int
		path, token, mode   string
		code                int
		body                string
		calls               int
		authorizationToServ bool
	}{
		{istiodPort, "/productpage", tok.bad, "allow", 401, badSig, 0, false},
		{istiodPort, "/admin/x", tok.bad, "deny", 403, denied, 1, true},
		{istiodPort, "/admin/x", tok.bad, "allow", 401, badSig, 1, true},
		{istiodPort, "/login", tok.valid, "deny", 403, denied, 1, true},
		{istiodPort, "/admin/x", tok.valid, "allow", 200, "app", 1, true},
		{istiodPort, "/claims/x", tok.checked, "deny", 200, "app", 0, false},
		{istiodPort, "/debug", tok.valid, "deny", 403, rbacDenied, 0, false},
		{jwtFirstPort, "/admin/x", tok.bad, "allow", 401, badSig, 0, false},
		{jwtFirstPort, "/login", tok.valid, "deny", 403, denied, 1, false},
		{jwtFirstPort, "/admin/x", tok.valid, "allow", 200, "app", 1, false},
		{jwtFirstPort, "/claims/x", tok.checked, "deny", 403, denied, 1, false},
		{jwtFirstPort, "/claims/x", tok.unchecked, "deny", 200, "app", 0, false},
		{jwtFirstPort, "/claims/x", "", "deny", 200, "app", 0, false},
		{jwtFirstPort, "/debug", tok.checked, "allow", 403, rbacDenied, 0, false},
	} {
		order := map[int]string{istiodPort: "istiod's order", jwtFirstPort: "jwt_authn first"}[c.port]
		header := []string{"x-ext-authz", c.mode}
		if c.token != "" {
			header = append(header, "authorization", "Bearer "+c.token)
		}
		ans := ap.mustCall(c.port, "productpage", c.path, header...)
		if ans.code != c.code || ans.body != c.body {
			t.Errorf("%s, %s (%s): %d %q, want %d %q", order, c.path, c.mode, ans.code, ans.body, c.code, c.body)
		}
		if c.code == 401 && ans.header.Get("www-authenticate") != `Bearer realm="http://productpage`+c.path+`", error="invalid_token"` {
			t.Errorf("%s, %s: www-authenticate %q, want jwt_authn's", order, c.path, ans.header.Get("www-authenticate"))
		}
		calls := srv.taken()
		if len(calls) != c.calls {
			t.Errorf("%s, %s (%s): the server got %d calls, want %d", order, c.path, c.mode, len(calls), c.calls)
			continue
		}
		if c.calls == 1 && (calls[0].Target != "/check"+c.path || (calls[0].Header.Get("authorization") != "") != c.authorizationToServ) {
			t.Errorf("%s, %s (%s): the server was asked about %s, with the token: %t", order, c.path, c.mode, calls[0].Target, calls[0].Header.Get("authorization") != "")
		}
	}
}
