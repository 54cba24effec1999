package istiod_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	// istiod gives the gRPC provider's workload a network ext_authz filter on its TCP chains.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

var updateExtAuthz = flag.Bool("update-extauthz", false, "rewrite testdata/istiod/extauthz (the xDS istiod sends for testdata/extauthz.yaml)")

// extAuthzGolden is where istiod's xDS for testdata/extauthz.yaml is kept, for the
// translation's tests.
var extAuthzGolden = filepath.Join("..", "..", "testdata", "istiod", "extauthz")

// extAuthzProviders is the meshConfig of the scenario: an HTTP provider with every
// option Istio's envoyExtAuthzHttp has that amesh enforces, and a gRPC provider.
const extAuthzProviders = `extensionProviders:
- name: http-authz
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    pathPrefix: /check
    timeout: 2.5s
    failOpen: false
    statusOnError: "503"
    includeRequestHeadersInCheck: [x-ext-authz, "x-user-*"]
    includeAdditionalHeadersInCheck: {x-authz-from: amesh-test}
    headersToUpstreamOnAllow: [x-ext-authz-check-result, "x-auth-*"]
    headersToDownstreamOnDeny: [x-ext-authz-check-result, www-authenticate]
- name: grpc-authz
  envoyExtAuthzGrpc:
    service: ext-authz.default.svc.cluster.local
    port: 9000
    timeout: 1s
    failOpen: true
`

// The workloads' ports: productpage's targetPort, reviews'.
const ppPort, rvPort = 19080, 9080

// extAuthzCluster is the HTTP provider's cluster.
const extAuthzCluster = "outbound|8000||ext-authz.default.svc.cluster.local"

// withExtAuthzProviders gives istiod's mesh configuration extAuthzProviders until the
// test ends.
func withExtAuthzProviders(t *testing.T) {
	t.Helper()
	if err := env.istiod.SetMeshExtra(extAuthzProviders); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.istiod.SetMeshExtra(""); err != nil {
			t.Error(err)
		}
	})
	waitUntil(t, "istiod's mesh configuration with the extension providers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		b, err := env.istiod.Debug(ctx, "mesh")
		return err == nil && strings.Contains(string(b), "grpc-authz")
	})
}

// httpFilterTypes lists the names and types of the HTTP filters of l's plaintext HTTP
// chain for the workload's port, in order.
func httpFilterTypes(l *listenerv3.Listener, port uint32) []string {
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			h, err := resource.HCMOf(f)
			if err != nil || h == nil {
				continue
			}
			var out []string
			for _, hf := range h.GetHttpFilters() {
				typ, _ := resource.FilterTypeName(hf.GetTypedConfig())
				out = append(out, hf.GetName()+" "+typ)
			}
			if m := fc.GetFilterChainMatch(); m.GetDestinationPort().GetValue() == port && m.GetTransportProtocol() != "tls" {
				return out
			}
		}
	}
	return nil
}

func hasFilterType(l *listenerv3.Listener, port uint32, typ string) bool {
	for _, f := range httpFilterTypes(l, port) {
		if strings.HasSuffix(f, " "+typ) {
			return true
		}
	}
	return false
}

// TestExtAuthzShapes: with meshConfig extensionProviders (HTTP and gRPC) and CUSTOM
// AuthorizationPolicies next to DENY and ALLOW ones, istiod puts in the inbound chains
// an RBAC filter whose shadow rules (stat prefix istio_ext_authz_) hold the CUSTOM
// rules, then an ext_authz filter gated by filter_enabled_metadata on that RBAC
// filter's shadow effective policy id, then the DENY and the ALLOW RBAC filters: the
// shapes (kept in testdata/istiod/extauthz, -update-extauthz rewrites them) that the
// translation's tests read.
func TestExtAuthzShapes(t *testing.T) {
	requireEnv(t)
	withExtAuthzProviders(t)
	objs, err := readObjects("extauthz.yaml")
	if err != nil {
		t.Fatal(err)
	}
	apply(t, objs...)
	pp, err := bootstrap.FromEnviron(sidecarEnv(t, env.istiod.GRPCAddr, client.SotW))
	if err != nil {
		t.Fatal(err)
	}
	rv, err := bootstrap.FromEnviron(sidecarEnvAs(t, env.istiod.GRPCAddr, client.SotW, "reviews-v1", "192.0.2.21", "reviews", "app=\"reviews\"\nversion=\"v1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	inbound := func(x rawXDS) *listenerv3.Listener {
		l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
		return l
	}
	t.Cleanup(func() {
		deleteAll(t, objs)
		// The tests after this one start from istiod's configuration without it.
		waitRaw(t, pp.Node, "productpage's xDS without the scenario", func(x rawXDS) bool {
			return x[typeListener]["0.0.0.0_8000"] == nil && x[typeCluster][extAuthzCluster] == nil &&
				!hasFilterType(inbound(x), ppPort, "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz")
		})
	})
	ppRaw := waitRaw(t, pp.Node, "productpage's inbound ext_authz filter", func(x rawXDS) bool {
		l := inbound(x)
		return hasFilterType(l, ppPort, "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz") &&
			x[typeCluster][extAuthzCluster] != nil && x[typeCLA][extAuthzCluster] != nil
	})
	rvRaw := waitRaw(t, rv.Node, "reviews' inbound ext_authz filter", func(x rawXDS) bool {
		return hasFilterType(inbound(x), rvPort, "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz")
	})

	// The order istiod emits: CUSTOM's shadow RBAC filter and ext_authz first, then
	// DENY's RBAC filter, then ALLOW's, then the filters that act on the routes.
	got := httpFilterTypes(inbound(ppRaw), ppPort)
	want := []string{
		"istio.metadata_exchange io.istio.http.peer_metadata.Config",
		"envoy.filters.http.rbac envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.filters.http.ext_authz envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"envoy.filters.http.rbac envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.filters.http.rbac envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.filters.http.grpc_stats envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
		"envoy.filters.http.fault envoy.extensions.filters.http.fault.v3.HTTPFault",
		"envoy.filters.http.cors envoy.extensions.filters.http.cors.v3.Cors",
	}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("productpage's inbound HTTP filters do not start CUSTOM (rbac, ext_authz), DENY, ALLOW:\n%s", strings.Join(got, "\n"))
	}
	checkCustomPair(t, inbound(ppRaw), ppPort, "http-authz", true)
	checkCustomPair(t, inbound(rvRaw), rvPort, "grpc-authz", false)

	files := map[string][]byte{
		"lds/productpage-virtualInbound.json": marshalIndent(t, inbound(ppRaw)),
		"lds/reviews-virtualInbound.json":     marshalIndent(t, inbound(rvRaw)),
		"cds/" + fileName(extAuthzCluster):    marshalIndent(t, ppRaw[typeCluster][extAuthzCluster]),
		"eds/" + fileName(extAuthzCluster):    marshalIndent(t, ppRaw[typeCLA][extAuthzCluster]),
	}
	goldenFiles(t, extAuthzGolden, files, *updateExtAuthz, "-update-extauthz")
}

// goldenFiles writes files (path under dir -> content) when update is set, and
// otherwise compares each with its golden copy as JSON; flag names the update flag.
func goldenFiles(t *testing.T, dir string, files map[string][]byte, update bool, flag string) {
	t.Helper()
	for name, b := range files {
		path := filepath.Join(dir, name)
		if update {
			if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		golden, err := os.ReadFile(path)
		if err != nil || !sameJSON(golden, b) {
			t.Errorf("istiod's %s is not %s (%v; run with %s):\n%s", name, path, err, flag, b)
		}
	}
}

// checkCustomPair checks the CUSTOM pair of l's plaintext chain for port: an RBAC filter
// with shadow rules only (action DENY, policies named istio-ext-authz-<provider>-...,
// stat prefix istio_ext_authz_) right before an ext_authz filter enabled by the
// metadata key istio_ext_authz_shadow_effective_policy_id of envoy.filters.http.rbac
// with the prefix istio-ext-authz-<provider>, over HTTP (httpService) or gRPC.
func checkCustomPair(t *testing.T, l *listenerv3.Listener, port uint32, provider string, httpService bool) {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		if m := fc.GetFilterChainMatch(); m.GetDestinationPort().GetValue() != port || m.GetTransportProtocol() == "tls" {
			continue
		}
		for _, f := range fc.GetFilters() {
			h, err := resource.HCMOf(f)
			if err != nil || h == nil {
				continue
			}
			hf := h.GetHttpFilters()
			for i := 1; i < len(hf); i++ {
				ea := &extauthzv3.ExtAuthz{}
				if resource.UnpackFilterConfig(hf[i].GetTypedConfig(), ea) != nil {
					continue
				}
				rb := &rbachttpv3.RBAC{}
				if err := resource.UnpackFilterConfig(hf[i-1].GetTypedConfig(), rb); err != nil {
					t.Fatalf("the filter before ext_authz is not RBAC: %v", err)
				}
				if rb.GetRules() != nil || rb.GetShadowRulesStatPrefix() != "istio_ext_authz_" || len(rb.GetShadowRules().GetPolicies()) == 0 ||
					rb.GetShadowRules().GetAction().String() != "DENY" {
					t.Errorf("%s: CUSTOM's RBAC filter is not shadow rules only (DENY, istio_ext_authz_): %v", provider, rb)
				}
				for name := range rb.GetShadowRules().GetPolicies() {
					if !strings.HasPrefix(name, "istio-ext-authz-"+provider+"-ns[default]-policy[") {
						t.Errorf("%s: shadow policy %s", provider, name)
					}
				}
				m := ea.GetFilterEnabledMetadata()
				if m.GetFilter() != "envoy.filters.http.rbac" || len(m.GetPath()) != 1 ||
					m.GetPath()[0].GetKey() != "istio_ext_authz_shadow_effective_policy_id" ||
					m.GetValue().GetStringMatch().GetPrefix() != "istio-ext-authz-"+provider {
					t.Errorf("%s: filter_enabled_metadata %v", provider, m)
				}
				if (ea.GetHttpService() != nil) != httpService || (ea.GetGrpcService() != nil) == httpService {
					t.Errorf("%s: services %v", provider, ea)
				}
				return
			}
		}
	}
	t.Errorf("%s: no ext_authz filter after an RBAC filter on port %d", provider, port)
}
