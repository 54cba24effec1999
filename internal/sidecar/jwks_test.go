package sidecar

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// jwksOf is a JWKS with one EC key of kid (a P-256 point: the generator).
func jwksOf(kid string) string {
	return `{"keys":[{"kty":"EC","crv":"P-256","kid":"` + kid + `","x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}]}`
}

// A jwt_authn provider with a remote JWKS (istiod's PILOT_JWT_ENABLE_REMOTE_JWKS): the
// sidecar fetches it from the endpoints of the cluster the provider names, with the
// URI's host in Host, and the routes carry its keys; after the cache duration it is
// fetched again, and a changed set reaches the routes without any xDS change.
func TestRemoteJWKSFetched(t *testing.T) {
	var kid atomic.Value
	kid.Store("first")
	var hosts atomic.Value
	hosts.Store("")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hosts.Store(r.Host)
		if r.URL.Path != "/jwks.json" {
			http.NotFound(w, r)
			return
		}
		io.WriteString(w, jwksOf(kid.Load().(string)))
	}))
	t.Cleanup(srv.Close)

	const jwksCluster = "outbound|8000||jwks.auth.svc.cluster.local"
	const uri = "http://jwks.auth.svc.cluster.local:8000/jwks.json"
	jwt := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": {Issuer: "https://issuer.example", JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{
			RemoteJwks: &jwtv3.RemoteJwks{
				HttpUri:       &corev3.HttpUri{Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: jwksCluster}, Timeout: durationpb.New(5 * time.Second)},
				CacheDuration: durationpb.New(300 * time.Millisecond),
			}}}},
		Rules: []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}}}}},
	}
	xds, err := xdstest.New(xdstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(xds.Close)
	xds.Set(resource.ListenerType, xdstest.ListenerWithFilters("0.0.0.0_9080", 9080,
		xdstest.HCMWithFilters("9080", xdstest.HTTPFilter("envoy.filters.http.jwt_authn", jwt))))
	xds.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", cluster))
	xds.Set(resource.ClusterType, xdstest.EDSCluster(cluster), xdstest.EDSCluster(jwksCluster))
	xds.Set(resource.EndpointType, xdstest.Endpoints(cluster, "10.1.0.1:9080"), xdstest.Endpoints(jwksCluster, srv.Listener.Addr().String()))
	_, out := start(t, loadConfig(t, "AMESH_XDS_ADDRESS="+xds.Addr()))

	hasKid := func(want string) func(map[string]any) bool {
		return func(r map[string]any) bool {
			conf := pluginConf(r, "amesh-rbac")
			fs, _ := conf["filters"].([]any)
			if len(fs) != 1 {
				return false
			}
			f, _ := fs[0].(map[string]any)
			j, _ := f["jwt"].(map[string]any)
			ps, _ := j["providers"].(map[string]any)
			p, _ := ps["origins-0"].(map[string]any)
			keys, _ := p["keys"].([]any)
			if len(keys) != 1 || p["jwks_fetch_failed"] != nil {
				return false
			}
			k, _ := keys[0].(map[string]any)
			return k["kid"] == want
		}
	}
	waitRoutes(t, out, "with the fetched key", hasKid("first"))
	if h := hosts.Load().(string); h != "jwks.auth.svc.cluster.local:8000" {
		t.Errorf("the fetch sent Host %q, want the URI's", h)
	}
	kid.Store("second")
	waitRoutes(t, out, "with the key fetched after the cache duration", hasKid("second"))
	if strings.Contains(hosts.Load().(string), srv.Listener.Addr().String()) {
		t.Errorf("Host named the endpoint's address")
	}
}
