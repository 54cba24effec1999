package istiod_test

import (
	"flag"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

var updateJWT = flag.Bool("update-jwt", false, "rewrite testdata/istiod/jwt (the xDS istiod sends for RequestAuthentication and JWT AuthorizationPolicies)")

// jwtGolden is where istiod's xDS for the RequestAuthentication scenario is kept (as
// dump.LoadDir reads it), for the translation's tests and test/nginx's.
var jwtGolden = filepath.Join("..", "..", "testdata", "istiod", "jwt")

// unreachableJWKS is a jwksUri istiod cannot fetch (nothing listens on port 1).
const unreachableJWKS = "http://127.0.0.1:1/jwks.json"

// jwtObjects are the RequestAuthentication and AuthorizationPolicies of the scenario,
// with remote the address of the JWKS server istiod fetches from.
func jwtObjects(t *testing.T, remote string) []harness.Object {
	t.Helper()
	inline, err := os.ReadFile(filepath.Join("testdata", "jwks-inline.json"))
	if err != nil {
		t.Fatal(err)
	}
	ra := harness.Object{
		"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
		"metadata": map[string]any{"name": "jwt", "namespace": namespace},
		"spec": map[string]any{
			"selector": map[string]any{"matchLabels": map[string]any{"app": "productpage"}},
			"jwtRules": []any{
				map[string]any{
					"issuer":                "https://issuer.example",
					"audiences":             []any{"aud-a", "aud-b"},
					"jwks":                  strings.TrimSpace(string(inline)),
					"fromHeaders":           []any{map[string]any{"name": "x-jwt", "prefix": "Bearer "}},
					"fromParams":            []any{"access_token"},
					"forwardOriginalToken":  true,
					"outputPayloadToHeader": "x-jwt-payload",
					"outputClaimToHeaders":  []any{map[string]any{"header": "x-jwt-sub", "claim": "sub"}},
				},
				map[string]any{"issuer": "remote-issuer", "jwksUri": "http://" + remote + "/jwks.json"},
				map[string]any{"issuer": "unreachable-issuer", "jwksUri": unreachableJWKS},
			},
		},
	}
	require := authorizationPolicy("jwt-allow", "productpage", map[string]any{
		"action": "ALLOW",
		"rules": []any{
			map[string]any{
				"from": []any{map[string]any{"source": map[string]any{"requestPrincipals": []any{"https://issuer.example/alice", "remote-issuer/*"}}}},
				"to":   []any{map[string]any{"operation": map[string]any{"paths": []any{"/api/*"}}}},
			},
			map[string]any{
				"from": []any{map[string]any{"source": map[string]any{"notRequestPrincipals": []any{"*"}}}},
				"to":   []any{map[string]any{"operation": map[string]any{"paths": []any{"/public/*"}}}},
			},
			map[string]any{
				"to": []any{map[string]any{"operation": map[string]any{"paths": []any{"/admin/*"}}}},
				"when": []any{
					map[string]any{"key": "request.auth.claims[groups]", "values": []any{"admins"}},
					map[string]any{"key": "request.auth.audiences", "values": []any{"aud-a"}},
					map[string]any{"key": "request.auth.presenter", "values": []any{"client-x"}},
				},
			},
			map[string]any{
				"to":   []any{map[string]any{"operation": map[string]any{"paths": []any{"/nested/*"}}}},
				"when": []any{map[string]any{"key": "request.auth.claims[realm][role]", "values": []any{"ops"}}},
			},
		},
	})
	deny := authorizationPolicy("jwt-deny", "productpage", map[string]any{
		"action": "DENY",
		"rules": []any{map[string]any{
			"from": []any{map[string]any{"source": map[string]any{"notRequestPrincipals": []any{"*"}}}},
			"to":   []any{map[string]any{"operation": map[string]any{"paths": []any{"/api/secure/*"}}}},
		}},
	})
	return []harness.Object{ra, require, deny}
}

// inboundHTTPFilters returns virtualInbound's jwt_authn config and its RBAC configs
// in the first filter chain that has them.
func inboundHTTPFilters(l *listenerv3.Listener) (*jwtv3.JwtAuthentication, []*rbachttpv3.RBAC) {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			h, err := resource.HCMOf(f)
			if err != nil || h == nil {
				continue
			}
			var j *jwtv3.JwtAuthentication
			var rs []*rbachttpv3.RBAC
			for _, hf := range h.GetHttpFilters() {
				switch hf.GetName() {
				case "envoy.filters.http.jwt_authn":
					j = &jwtv3.JwtAuthentication{}
					if resource.UnpackFilterConfig(hf.GetTypedConfig(), j) != nil {
						j = nil
					}
				case "envoy.filters.http.rbac":
					r := &rbachttpv3.RBAC{}
					if resource.UnpackFilterConfig(hf.GetTypedConfig(), r) == nil {
						rs = append(rs, r)
					}
				}
			}
			if j != nil {
				return j, rs
			}
		}
	}
	return nil, nil
}

// TestRequestAuthentication: the xDS istiod sends the productpage sidecar for a
// RequestAuthentication with an inline JWKS, a jwksUri istiod fetches (from a server
// of the test) and one it cannot reach, and AuthorizationPolicies on request
// principals, notRequestPrincipals and claims, is what the translation's tests read
// from testdata/istiod/jwt (-update-jwt rewrites it): istiod inlines both remote
// JWKS, the one it could fetch with the server's keys.
func TestRequestAuthentication(t *testing.T) {
	requireEnv(t)
	remoteKeys, err := os.ReadFile(filepath.Join("testdata", "jwks-remote.json"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("content-type", "application/json")
		_, _ = w.Write(remoteKeys)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	objs := jwtObjects(t, ln.Addr().String())
	apply(t, objs...)
	b, err := bootstrap.FromEnviron(sidecarEnv(t, env.istiod.GRPCAddr, client.SotW))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteAll(t, objs)
		// The tests after this one start from istiod's configuration without it.
		waitRaw(t, b.Node, "productpage's xDS without the RequestAuthentication", func(x rawXDS) bool {
			l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
			j, _ := inboundHTTPFilters(l)
			return j == nil && !hasFilterType(l, 19080, "envoy.extensions.filters.http.rbac.v3.RBAC")
		})
	})
	raw := waitRaw(t, b.Node, "istiod's jwt_authn and RBAC filters", func(x rawXDS) bool {
		l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
		j, rs := inboundHTTPFilters(l)
		if len(j.GetProviders()) != 3 || len(rs) < 2 {
			return false
		}
		fetched := false
		for _, p := range j.GetProviders() {
			if p.GetIssuer() == "remote-issuer" {
				fetched = strings.Contains(p.GetLocalJwks().GetInlineString(), "remote-rsa")
			}
		}
		return fetched
	})
	l := raw[typeListener]["virtualInbound"].(*listenerv3.Listener)
	got := marshalIndent(t, l)
	if strings.Contains(string(got), ln.Addr().String()) {
		t.Fatalf("istiod's listener names the JWKS server's address %s, which changes every run:\n%s", ln.Addr(), got)
	}
	j, _ := inboundHTTPFilters(l)
	for _, p := range j.GetProviders() {
		if p.GetIssuer() == "unreachable-issuer" && (p.GetLocalJwks().GetInlineString() == "" || p.GetRemoteJwks() != nil) {
			t.Errorf("the JWKS istiod cannot fetch is not inlined: %v", p)
		}
	}
	if *updateJWT {
		writeDump(t, jwtGolden, raw)
		return
	}
	// virtualInbound is the same on every run (the rest names service addresses,
	// which the API server picks anew).
	path := filepath.Join(jwtGolden, "lds", fileName("virtualInbound"))
	golden, err := os.ReadFile(path)
	if err != nil || !sameJSON(golden, got) {
		t.Errorf("istiod's virtualInbound is not %s (%v; run with -update-jwt):\n%s", path, err, got)
	}
}
