package translate

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// remoteJWT is a jwt_authn filter whose provider p fetches its JWKS from uri over
// cluster, as istiod configures it under PILOT_JWT_ENABLE_REMOTE_JWKS.
func remoteJWT(uri, cluster string) *jwtv3.JwtAuthentication {
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"p": {Issuer: "i", JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri:       &corev3.HttpUri{Uri: uri, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster}, Timeout: durationpb.New(3 * time.Second)},
			CacheDuration: durationpb.New(time.Minute),
		}}}},
		Rules: []*jwtv3.RequirementRule{requireProvider("p")},
	}
}

// providerOf returns provider p of the JWT step of a route.
func providerOf(t *testing.T, r map[string]any) map[string]any {
	t.Helper()
	fs := rbacFiltersOf(t, r)
	if len(fs) != 1 || fs[0]["action"] != "JWT" {
		t.Fatalf("route %v: want one JWT step, got %v", r["name"], fs)
	}
	jwt, _ := fs[0]["jwt"].(map[string]any)
	ps, _ := jwt["providers"].(map[string]any)
	p, _ := ps["p"].(map[string]any)
	return p
}

// A provider with a remote JWKS: the translation hands on how Envoy would fetch it (the
// cluster's endpoints, each with the transport socket Envoy gives it: Istio mTLS with
// the workload certificate, the cluster's SNI, ALPN and SAN for the tlsMode=istio
// endpoint, plaintext for the other), and until a fetch succeeds the provider's tokens
// fail ("Jwks remote fetch is failed"), reported. A fetched set rewrites the routes of
// that listener only, with its keys inlined; a failed fetch or a set without a usable
// key fails the tokens again. The routes validate against APISIX's schemas throughout.
func TestJWTRemoteJWKS(t *testing.T) {
	const uri = "http://mixed.default.svc.cluster.local:8080/jwks"
	src := jwks.Source{URI: uri, Cluster: mixedCluster}
	ca, err := identitytest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := ca.IssueIdentity(identitytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap := withListener(istiodSnapshot(t, "mtls"), guardedListener(80, "80", nil, httpFilter("envoy.filters.http.jwt_authn", remoteJWT(uri, mixedCluster))), staticCluster("c"))
	snap.RouteConfigs = maps.Clone(snap.RouteConfigs)
	snap.RouteConfigs["80"] = resource.MustRouteConfig(twoRoutes("80"))
	tr := newTracked(meshOpts)
	tr.SetIdentity(identity.State{Identity: id})
	r := tr.Translate(snap)
	validateAll(t, tr.Objects())

	mtls := &jwks.TLS{ServerName: "outbound_.8080_._.mixed.default.svc.cluster.local", ALPN: []string{"istio-peer-exchange", "istio"},
		CertPEM: id.CertChain, Key: id.Key, RootsFile: meshOpts.MeshRootFile,
		SANs: []jwks.SANMatcher{{Match: "exact", Value: "spiffe://cluster.local/ns/default/sa/mixed"}}, MinVersion: 0x0303, MaxVersion: 0x0304}
	want := []jwks.Plan{{Source: src, Timeout: 3 * time.Second, CacheDuration: time.Minute, Nodes: []jwks.Node{
		{Addr: "192.0.2.71:8080", TLS: mtls}, {Addr: "192.0.2.72:8080"}}}}
	if diff := cmp.Diff(want, r.JWKS, cmp.Comparer(identity.Secret.Equal)); diff != "" {
		t.Errorf("fetch plan (-want +got):\n%s", diff)
	}
	field := "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.jwt_authn]"
	check := func(what string, rep []report.Entry, failed bool, note string) {
		t.Helper()
		for name, rt := range routeObjs(t, tr.Objects(), "out-80") {
			if st, _ := abortOf(rt); st != 0 && name != "no-route" {
				t.Errorf("%s: route %q answers %d itself", what, name, st)
			}
			p := providerOf(t, rt)
			keys, _ := p["keys"].([]any)
			if got, _ := p["jwks_fetch_failed"].(bool); got != failed || failed != (len(keys) == 0) {
				t.Errorf("%s: route %q provider %v, want fetch failed %v", what, name, p, failed)
			}
		}
		if note != "" && !findEntry(rep, field, report.Approximated, "provider p", note, "Jwks remote fetch is failed") {
			t.Errorf("%s: not reported: %v", what, rep)
		}
		validateAll(t, tr.Objects())
	}
	check("before a fetch", r.Report, true, "no fetch of "+src.String()+" has completed")

	routes := slices.Sorted(maps.Keys(routeObjs(t, tr.Objects(), "out-80")))
	tr.SetJWKS(jwks.Set{src: {JWKS: rsaJWKS("k")}})
	snap = unchanged(snap)
	r = tr.Translate(snap)
	check("fetched", r.Report, false, "")
	var put []string
	for k := range r.Changes.Put {
		put = append(put, k)
	}
	slices.Sort(put)
	var wantPut []string
	for _, k := range routes {
		wantPut = append(wantPut, apisix.Key(apisix.KindRoutes, "out-80.vh.any."+map[string]string{"a": "0", "b": "1", "no-route": "nr"}[k]))
	}
	slices.Sort(wantPut)
	if !slices.Equal(put, wantPut) || len(r.Changes.Delete) != 0 {
		t.Errorf("the fetched set rewrote %v, deleted %v; want the listener's routes %v", put, r.Changes.Delete, wantPut)
	}
	if p := providerOf(t, routeObjs(t, tr.Objects(), "out-80")["a"]); len(p["keys"].([]any)) != 1 {
		t.Errorf("the fetched key is not inlined: %v", p)
	}

	// The same set again changes nothing.
	tr.SetJWKS(jwks.Set{src: {JWKS: rsaJWKS("k"), Fetched: time.Now()}})
	snap = unchanged(snap)
	if r = tr.Translate(snap); len(r.Changes.Put)+len(r.Changes.Delete) != 0 {
		t.Errorf("a refetch of the same keys rewrote %v", slices.Sorted(maps.Keys(r.Changes.Put)))
	}

	tr.SetJWKS(jwks.Set{src: {Err: "status 503"}})
	snap = unchanged(snap)
	check("failed", tr.Translate(snap).Report, true, "status 503")

	tr.SetJWKS(jwks.Set{src: {JWKS: `{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`}})
	snap = unchanged(snap)
	check("unusable", tr.Translate(snap).Report, true, "not usable")

	// Without the listener, nothing is to be fetched.
	next := *snap
	next.Listeners = maps.Clone(snap.Listeners)
	delete(next.Listeners, "0.0.0.0_80")
	next.Seq++
	next.Changes = resource.Changes{Since: snap.Seq, Listeners: map[string]struct{}{"0.0.0.0_80": {}}}
	if r := tr.Translate(&next); len(r.JWKS) != 0 {
		t.Errorf("plans without the listener: %v", r.JWKS)
	}
}

// A remote JWKS over a cluster the configuration lacks has a plan that says so (the
// fetch fails, the tokens fail, as in Envoy); routes whose per-route config names a
// requirement on a remote provider follow its fetches too.
func TestJWTRemoteJWKSPerRoute(t *testing.T) {
	const uri = "http://jwks.example/jwks"
	src := jwks.Source{URI: uri, Cluster: "outbound|80||jwks.example"}
	c := remoteJWT(uri, src.Cluster)
	c.RequirementMap = map[string]*jwtv3.JwtRequirement{"r": c.Rules[0].GetRequires()}
	c.Rules = nil
	rc := twoRoutes("80")
	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.jwt_authn": mustAny(&jwtv3.PerRouteConfig{
		RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "r"}})}
	snap := snapshotOf([]*listenerv3.Listener{guardedListener(80, "80", nil, httpFilter("envoy.filters.http.jwt_authn", c))},
		[]*routev3.RouteConfiguration{rc}, nil)
	snap.Clusters["c"] = resource.MustCluster(staticCluster("c"))
	tr := newTracked(Options{})
	r := tr.Translate(snap)
	if len(r.JWKS) != 1 || r.JWKS[0].Source != src || !strings.Contains(r.JWKS[0].Why, "not in the configuration") {
		t.Fatalf("plans %+v", r.JWKS)
	}
	if p := providerOf(t, routeObjs(t, tr.Objects(), "out-80")["a"]); p["jwks_fetch_failed"] != true {
		t.Errorf("before a fetch: %v", p)
	}
	tr.SetJWKS(jwks.Set{src: {JWKS: rsaJWKS("k")}})
	snap = unchanged(snap)
	tr.Translate(snap)
	validateAll(t, tr.Objects())
	if p := providerOf(t, routeObjs(t, tr.Objects(), "out-80")["a"]); p["jwks_fetch_failed"] != nil || len(p["keys"].([]any)) != 1 {
		t.Errorf("after the fetch, route a's provider is %v", p)
	}
}
