package istiod_test

import (
	"context"
	"encoding/json"
	"flag"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

var updateJWTRemote = flag.Bool("update-jwt-remote", false, "rewrite testdata/istiod/jwt-remote (the xDS istiod sends for a RequestAuthentication whose JWKS the proxy fetches)")

// jwtRemoteGolden is where istiod's xDS for the remote JWKS scenario is kept.
var jwtRemoteGolden = filepath.Join("..", "..", "testdata", "istiod", "jwt-remote")

const (
	jwksHost    = "jwks.auth.example"
	jwksCluster = "outbound|8000||" + jwksHost
	jwksURI     = "http://" + jwksHost + ":8000/jwks.json"
)

// jwksServe serves a JWKS with one key of the kid it holds, and remembers the Host of
// the last request.
type jwksServe struct {
	kid, host atomic.Value
	hits      atomic.Int64
}

func (s *jwksServe) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.hits.Add(1)
	s.host.Store(r.Host)
	if r.URL.Path != "/jwks.json" {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("content-type", "application/json")
	_, _ = io.WriteString(w, `{"keys":[{"kty":"EC","crv":"P-256","kid":"`+s.kid.Load().(string)+
		`","x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY","y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"}]}`)
}

// TestRemoteJWKS: istiod runs with PILOT_JWT_ENABLE_REMOTE_JWKS=true (main_test.go),
// so for a RequestAuthentication whose jwksUri is a service of the mesh (here a
// ServiceEntry on port 8000 whose endpoint is the test's JWKS server) it leaves the
// fetch to the proxy: the provider has remote_jwks over outbound|8000||<host>, a
// 5-minute cache and istiod's 5 s timeout, and the cluster's endpoint is the server.
// amesh's pipeline (agent, translator, jwks.Fetcher as the sidecar wires them) fetches
// the JWKS from that endpoint with the URI's host in Host, before which the
// productpage routes' provider fails its tokens, and after which it carries the
// served key. The shapes are kept in testdata/istiod/jwt-remote (-update-jwt-remote).
func TestRemoteJWKS(t *testing.T) {
	requireEnv(t)
	srv := &jwksServe{}
	srv.kid.Store("remote-ec")
	srv.host.Store("")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	port := ln.Addr().(*net.TCPAddr).Port

	objs := []harness.Object{
		{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
			"metadata": map[string]any{"name": "jwks", "namespace": namespace},
			"spec": map[string]any{"hosts": []any{jwksHost}, "location": "MESH_EXTERNAL", "resolution": "STATIC",
				"ports":     []any{map[string]any{"number": 8000, "name": "http", "protocol": "HTTP"}},
				"endpoints": []any{map[string]any{"address": "127.0.0.1", "ports": map[string]any{"http": port}}}}},
		{"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
			"metadata": map[string]any{"name": "jwt-remote", "namespace": namespace},
			"spec": map[string]any{
				"selector": map[string]any{"matchLabels": map[string]any{"app": "productpage"}},
				"jwtRules": []any{map[string]any{"issuer": "https://remote.example", "jwksUri": jwksURI}},
			}},
	}
	apply(t, objs...)
	environ := sidecarEnv(t, env.istiod.GRPCAddr, client.Delta)
	b, err := bootstrap.FromEnviron(environ)
	if err != nil {
		t.Fatal(err)
	}
	remoteOf := func(l *listenerv3.Listener) string {
		j, _ := inboundHTTPFilters(l)
		for _, p := range j.GetProviders() {
			if u := p.GetRemoteJwks().GetHttpUri(); u != nil {
				return u.GetUri() + " " + u.GetCluster()
			}
		}
		return ""
	}
	t.Cleanup(func() {
		deleteAll(t, objs)
		waitRaw(t, b.Node, "productpage's xDS without the remote JWKS", func(x rawXDS) bool {
			l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
			return x[typeCluster][jwksCluster] == nil && remoteOf(l) == ""
		})
	})
	raw := waitRaw(t, b.Node, "istiod's remote_jwks provider and its cluster", func(x rawXDS) bool {
		l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
		return remoteOf(l) == jwksURI+" "+jwksCluster && x[typeCluster][jwksCluster] != nil && x[typeCLA][jwksCluster] != nil
	})
	l := raw[typeListener]["virtualInbound"].(*listenerv3.Listener)
	j, _ := inboundHTTPFilters(l)
	for name, p := range j.GetProviders() {
		rj := p.GetRemoteJwks()
		if rj == nil {
			continue
		}
		if d := rj.GetCacheDuration().AsDuration(); d != 5*time.Minute {
			t.Errorf("provider %s: cache_duration %v, want istiod's 5m", name, d)
		}
		if d := rj.GetHttpUri().GetTimeout().AsDuration(); d != 5*time.Second {
			t.Errorf("provider %s: timeout %v, want istiod's 5s", name, d)
		}
	}
	cla := marshalIndent(t, raw[typeCLA][jwksCluster])
	if !strings.Contains(string(cla), `"127.0.0.1"`) || !strings.Contains(string(cla), strconv.Itoa(port)) {
		t.Fatalf("the JWKS cluster's endpoints are not the server:\n%s", cla)
	}
	files := map[string][]byte{
		"lds/" + fileName("virtualInbound"): marshalIndent(t, l),
		"cds/" + fileName(jwksCluster):      marshalIndent(t, raw[typeCluster][jwksCluster]),
	}
	goldenFiles(t, jwtRemoteGolden, files, *updateJWTRemote, "-update-jwt-remote")

	// amesh's pipeline, fetcher included, on a stream of its own.
	a := startSidecar(t, environ)
	sink := newMemSink()
	fetcher := jwks.New(jwks.Options{Logger: testLogger(t)})
	ag := agent.New(a.c, func() agent.Translator { return translate.New(translate.Options{}) }, sink,
		agent.Options{Logger: testLogger(t), JWKS: fetcher})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = ag.Run(ctx); done <- struct{}{} }()
	go func() { _ = fetcher.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() { cancel(); <-done; <-done })
	am := &amesh{sc: a, ag: ag, sink: sink}
	am.waitFor(t, "productpage's inbound routes with the fetched key", func(objs map[string][]byte) bool {
		n := 0
		for k, v := range objs {
			if !strings.HasPrefix(k, "/routes/in-") {
				continue
			}
			p := remoteProvider(v)
			if p == nil {
				continue
			}
			if p.FetchFailed || len(p.Keys) != 1 || p.Keys[0].Kid != "remote-ec" {
				return false
			}
			n++
		}
		return n > 0
	})
	if h := srv.host.Load().(string); h != jwksHost+":8000" {
		t.Errorf("the fetch sent Host %q, want the URI's %s:8000", h, jwksHost)
	}
	if got, _ := fetcher.Current(); got[jwks.Source{URI: jwksURI, Cluster: jwksCluster}].JWKS == "" {
		t.Errorf("the fetcher holds no result for %s via %s: %v", jwksURI, jwksCluster, got)
	}
}

// jwtProviderJSON is what the test reads of a provider of amesh-rbac's JWT step.
type jwtProviderJSON struct {
	Iss  string `json:"iss"`
	Keys []struct {
		Kid string `json:"kid"`
	} `json:"keys"`
	FetchFailed bool `json:"jwks_fetch_failed"`
}

// remoteProvider returns the JWT provider with issuer https://remote.example of a
// route's amesh-rbac, nil without one.
func remoteProvider(route []byte) *jwtProviderJSON {
	var r struct {
		Plugins struct {
			RBAC struct {
				Filters []struct {
					JWT *struct {
						Providers map[string]jwtProviderJSON `json:"providers"`
					} `json:"jwt"`
				} `json:"filters"`
			} `json:"amesh-rbac"`
		} `json:"plugins"`
	}
	if json.Unmarshal(route, &r) != nil {
		return nil
	}
	for _, f := range r.Plugins.RBAC.Filters {
		if f.JWT == nil {
			continue
		}
		for _, p := range f.JWT.Providers {
			if p.Iss == "https://remote.example" {
				return &p
			}
		}
	}
	return nil
}
