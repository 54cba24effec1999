package nginx

import (
	"crypto"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// startEchoBackend answers with the request's target and the headers a verified JWT
// adds or removes, one "name=value" a line ("-" for a missing header).
func startEchoBackend(t *testing.T, ip string) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: "echo", ip: ip, port: ln.Addr().(*net.TCPAddr).Port}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "uri=%s\n", r.RequestURI)
		for _, h := range []string{"x-jwt", "authorization", "x-jwt-payload", "x-jwt-sub"} {
			v := r.Header.Values(h)
			if len(v) == 0 {
				v = []string{"-"}
			}
			fmt.Fprintf(w, "%s=%s\n", h, strings.Join(v, ","))
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// istiod's RequestAuthentication and JWT AuthorizationPolicies (testdata/istiod/jwt,
// with keys of this run) in real APISIX, through amesh-rbac: a verified token reaches
// the backend with the payload and claim headers Envoy adds (a client's own copies
// removed), a token not forwarded is removed, failures answer Envoy's 401/403 with
// www-authenticate, request principals and claims decide, and a request without a
// token is allowed where the policies allow it.
func TestAPISIXJWT(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	be := startEchoBackend(t, "127.0.0.23")
	cl := fmt.Sprintf("outbound|%d||jwt.test", port)
	k := newTestKeys(t)
	filters := istiodJWTFilters(t,
		jwks(t, map[string]crypto.PrivateKey{"rsa": k.rsa, "p256": k.p256}),
		jwks(t, map[string]crypto.PrivateKey{"ed": k.ed}))
	msgs := []proto.Message{
		rbacFiltersListener(port, "jwt", filters...),
		routeConfig("jwt", &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("all", prefixMatch("/"), cl, nil),
		}}),
	}
	msgs = append(msgs, edsCluster(cl, be)...)
	xds := newXDS(t, resourcesOf(msgs...))
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 2, Port: port})
	ap.waitServing()
	waitFor(t, "the JWT route", func() bool {
		ans, err := ap.call(port, "jwt.test", "/public/x")
		return err == nil && ans.code == 200
	})

	now := time.Now().Unix()
	claims := func(iss, sub string) map[string]any {
		return map[string]any{"iss": iss, "sub": sub, "aud": "aud-a", "exp": now + 600}
	}
	alice := signJWT(t, "ES256", "p256", k.p256, claims("https://issuer.example", "alice"))
	remote := signJWT(t, "EdDSA", "ed", k.ed, claims("remote-issuer", "svc"))
	expired := signJWT(t, "RS256", "rsa", k.rsa, map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "aud-a", "exp": now - 3600})
	payload := strings.Split(alice, ".")[1]
	for _, tc := range []struct {
		what   string
		path   string
		header []string
		code   int
		body   []string // lines the body holds
		www    string
	}{
		{"alice, her claims forwarded and a client's forged copies removed", "/api/x", []string{"x-jwt", "Bearer " + alice, "x-jwt-sub", "mallory", "x-jwt-payload", "forged"},
			200, []string{"x-jwt=Bearer " + alice, "x-jwt-payload=" + payload, "x-jwt-sub=alice"}, ""},
		{"alice in the query parameter (forwarded: origins-0 forwards)", "/api/x?access_token=" + alice, nil,
			200, []string{"uri=/api/x?access_token=" + alice, "x-jwt-sub=alice"}, ""},
		{"remote-issuer's token, not forwarded", "/api/x", []string{"authorization", "Bearer " + remote},
			200, []string{"authorization=-", "x-jwt-payload=-"}, ""},
		{"no token on a public path", "/public/x", nil, 200, []string{"x-jwt-sub=-"}, ""},
		{"no token where a request principal is required", "/api/x", nil, 403, []string{"RBAC: access denied"}, ""},
		{"expired", "/api/x", []string{"x-jwt", "Bearer " + expired}, 401, []string{"Jwt is expired"},
			`Bearer realm="http://jwt.test/api/x", error="invalid_token"`},
		{"bob", "/api/x", []string{"x-jwt", "Bearer " + signJWT(t, "RS256", "rsa", k.rsa, claims("https://issuer.example", "bob"))},
			403, []string{"RBAC: access denied"}, ""},
	} {
		ans := ap.mustCall(port, "jwt.test", tc.path, tc.header...)
		lines := strings.Split(strings.TrimSpace(ans.body), "\n")
		ok := ans.code == tc.code && ans.header.Get("www-authenticate") == tc.www
		for _, want := range tc.body {
			found := false
			for _, l := range lines {
				found = found || l == want
			}
			ok = ok && found
		}
		if !ok {
			t.Errorf("%s: %d www-authenticate %q body %q, want %d %q with lines %q", tc.what, ans.code, ans.header.Get("www-authenticate"), ans.body, tc.code, tc.www, tc.body)
		}
	}

}
