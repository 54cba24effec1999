package install_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
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

func b64url(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// es256 signs a JWT with key (kid in its header) over claims.
func es256(t *testing.T, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "typ": "JWT", "kid": kid})
	p, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	input := b64url(h) + "." + b64url(p)
	d := sha256.Sum256([]byte(input))
	r, s, err := ecdsa.Sign(rand.Reader, key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return input + "." + b64url(sig)
}

// ecJWKS is a JWKS with the public key of key under kid.
func ecJWKS(key *ecdsa.PrivateKey, kid string) string {
	x, y := make([]byte, 32), make([]byte, 32)
	key.X.FillBytes(x)
	key.Y.FillBytes(y)
	b, _ := json.Marshal(map[string]any{"keys": []any{map[string]string{"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": kid, "x": b64url(x), "y": b64url(y)}}})
	return string(b)
}

// TestSidecarRemoteJWKS: in real APISIX under Istio's capture, a jwt_authn provider
// whose JWKS Envoy would fetch itself (remote_jwks over a cluster, as istiod sends it
// with PILOT_JWT_ENABLE_REMOTE_JWKS) is fetched by the libxds.so inside nginx, from the
// cluster's endpoint outside the pod (the proxy UID is exempt from capture), with the
// URI's host in Host. While the server fails, a valid token gets Envoy's 401 "Jwks
// remote fetch is failed" and never reaches the application; once the server answers,
// the fetch is retried without any xDS change and the same token gets through, while a
// token of another key or none is refused as Envoy refuses it.
func TestSidecarRemoteJWKS(t *testing.T) {
	s := startSidecar(t)
	p := s.pod
	var appHits atomic.Int64
	backend := serveIn(t, p, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		appHits.Add(1)
		_, _ = io.WriteString(w, "reviews")
	}))
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var failing atomic.Bool
	failing.Store(true)
	var jwksHits atomic.Int64
	var host atomic.Value
	host.Store("")
	jwksAddr := serveIn(t, s.client, peerIP+":0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jwksHits.Add(1)
		host.Store(r.Host)
		if failing.Load() || r.URL.Path != "/jwks.json" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, ecJWKS(key, "k1"))
	}))

	const cluster = "outbound|9080||reviews.default.svc.cluster.local"
	const jwksCluster = "outbound|8000||jwks.auth.example"
	jwt := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": {Issuer: "https://issuer.example", JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{
			RemoteJwks: &jwtv3.RemoteJwks{
				HttpUri: &corev3.HttpUri{Uri: "http://jwks.auth.example:8000/jwks.json",
					HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: jwksCluster}, Timeout: durationpb.New(5 * time.Second)},
				CacheDuration: durationpb.New(5 * time.Minute),
			}}}},
		Rules: []*jwtv3.RequirementRule{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
				RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}}}}},
	}
	xds := s.serve(t)
	xds.Set(resource.ListenerType, xdstest.ListenerWithFilters("0.0.0.0_9080", 9080,
		xdstest.HCMWithFilters("9080", xdstest.HTTPFilter("envoy.filters.http.jwt_authn", jwt))))
	xds.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", cluster))
	xds.Set(resource.ClusterType, xdstest.EDSCluster(cluster), xdstest.EDSCluster(jwksCluster))
	xds.Set(resource.EndpointType, xdstest.Endpoints(cluster, backend), xdstest.Endpoints(jwksCluster, jwksAddr))
	s.waitReady(t)

	now := time.Now().Unix()
	good := es256(t, key, "k1", map[string]any{"iss": "https://issuer.example", "sub": "alice", "exp": now + 600})
	svc := net.JoinHostPort(serviceIP, "9080")
	const svcHost = "reviews.default.svc.cluster.local:9080"
	call := func(tok string) (int, string, error) {
		h := http.Header{}
		if tok != "" {
			h.Set("Authorization", "Bearer "+tok)
		}
		return getWith(p, svc, svcHost, "/", 5*time.Second, h)
	}

	waitFor(t, "a valid token refused while the JWKS server fails", 30*time.Second, func() (bool, string) {
		code, body, err := call(good)
		return err == nil && code == http.StatusUnauthorized && body == "Jwks remote fetch is failed", fmt.Sprintf("%d %q %v", code, body, err)
	})
	if n := appHits.Load(); n != 0 {
		t.Errorf("%d requests reached the application before the keys were fetched", n)
	}
	if jwksHits.Load() == 0 {
		t.Fatalf("the JWKS server got no request")
	}

	failing.Store(false)
	waitFor(t, "the valid token accepted once the JWKS server answers", 60*time.Second, func() (bool, string) {
		code, body, err := call(good)
		return err == nil && code == http.StatusOK && body == "reviews", fmt.Sprintf("%d %q %v", code, body, err)
	})
	if h := host.Load().(string); h != "jwks.auth.example:8000" {
		t.Errorf("the fetch sent Host %q, want the URI's", h)
	}
	for _, c := range []struct {
		what, tok, body string
	}{
		{"a token of another key", es256(t, other, "k1", map[string]any{"iss": "https://issuer.example", "sub": "mallory", "exp": now + 600}), "Jwt verification fails"},
		{"no token", "", "Jwt is missing"},
	} {
		before := appHits.Load()
		code, body, err := call(c.tok)
		if err != nil || code != http.StatusUnauthorized || body != c.body || appHits.Load() != before {
			t.Errorf("%s: %d %q %v, want 401 %q and nothing at the application", c.what, code, body, err, c.body)
		}
	}
	if strings.Contains(s.stderr.String(), "BEGIN") {
		t.Errorf("nginx's error log holds PEM material")
	}
	s.errorLogClean(t)
}
