package nginx

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// istiodCustomFilters returns the HTTP filters istiod puts in front of productpage's
// inbound routes for CUSTOM, DENY and ALLOW policies (testdata/istiod/extauthz): the
// CUSTOM RBAC filter with its shadow rules, ext_authz (asking cluster instead of
// istiod's), the DENY and the ALLOW RBAC filters.
func istiodCustomFilters(t *testing.T, cluster string) []*hcmv3.HttpFilter {
	t.Helper()
	return captureFilters(t, "extauthz", 4, cluster, nil)
}

// captureFilters returns the n HTTP filters after istio.metadata_exchange of the
// plaintext chain for 19080 of productpage's inbound listener in
// testdata/istiod/<capture>, changed by edit (when set), with the ext_authz filter
// asking cluster instead of istiod's.
func captureFilters(t *testing.T, capture string, n int, cluster string, edit func([]*hcmv3.HttpFilter) []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "istiod", capture, "lds", "productpage-virtualInbound.json"))
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{}
	if err := protojson.Unmarshal(b, l); err != nil {
		t.Fatal(err)
	}
	for _, fc := range l.GetFilterChains() {
		if m := fc.GetFilterChainMatch(); m.GetDestinationPort().GetValue() != 19080 || m.GetTransportProtocol() == "tls" {
			continue
		}
		for _, f := range fc.GetFilters() {
			h, err := resource.HCMOf(f)
			if err != nil || h == nil {
				continue
			}
			fs := h.GetHttpFilters()
			if edit != nil {
				fs = edit(fs)
			}
			fs = slices.Clone(fs[1 : 1+n])
			found := false
			for i, hf := range fs {
				c := &extauthzv3.ExtAuthz{}
				if hf.GetName() != "envoy.filters.http.ext_authz" {
					continue
				}
				if err := hf.GetTypedConfig().UnmarshalTo(c); err != nil {
					t.Fatalf("istiod's ext_authz filter: %v", err)
				}
				c.GetHttpService().GetServerUri().HttpUpstreamType = &corev3.HttpUri_Cluster{Cluster: cluster}
				a, err := anypb.New(c)
				if err != nil {
					t.Fatal(err)
				}
				fs[i] = proto.Clone(hf).(*hcmv3.HttpFilter)
				fs[i].ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}
				found = true
			}
			if !found {
				t.Fatalf("no ext_authz filter among %v", fs)
			}
			return fs
		}
	}
	t.Fatal("no plaintext HTTP chain for 19080 in istiod's listener")
	return nil
}

// istiod's CUSTOM, DENY and ALLOW filters in real APISIX, enforced by amesh-rbac with a
// real HTTP authorization server behind an EDS cluster: a request under the CUSTOM rules the server allows reaches the backend, one
// it denies gets its status and body, one outside the rules never reaches the server,
// DENY's path gets RBAC's 403, and with the server gone the CUSTOM paths answer
// statusOnError (503).
func TestAPISIXExtAuthz(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	app := startBackendAt(t, "127.0.0.23", "app", nil)
	srv := startAuthzServer(t)
	authz := &backend{name: "authz", ip: "127.0.0.1", port: srv.addr.Port}
	ca, cauthz := fmt.Sprintf("outbound|%d||app.test", port), "outbound|8000||ext-authz.test"
	msgs := []proto.Message{
		rbacFiltersListener(port, "guarded", istiodCustomFilters(t, cauthz)...),
		routeConfig("guarded", &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("all", prefixMatch("/"), ca, nil),
		}}),
	}
	msgs = append(append(msgs, edsCluster(ca, app)...), edsCluster(cauthz, authz)...)
	xds := newXDS(t, resourcesOf(msgs...))
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 2, Port: port})
	ap.waitServing()
	waitFor(t, "/productpage to reach the app", func() bool {
		ans, err := ap.call(port, "productpage", "/productpage")
		return err == nil && ans.code == 200
	})
	srv.taken()
	for _, c := range []struct {
		path, mode string
		code       int
		body       string
		calls      int
	}{
		{"/admin/x", "allow", 200, "app", 1},
		{"/login", "deny", 403, "denied by ext authz", 1},
		{"/admin/x", "error", 503, "", 1},
		{"/productpage", "deny", 200, "app", 0},
		{"/debug", "allow", 403, "RBAC: access denied", 0},
	} {
		ans := ap.mustCall(port, "productpage", c.path, "x-ext-authz", c.mode)
		if ans.code != c.code || ans.body != c.body {
			t.Errorf("%s (%s): %d %q, want %d %q", c.path, c.mode, ans.code, ans.body, c.code, c.body)
		}
		if calls := srv.taken(); len(calls) != c.calls {
			t.Errorf("%s (%s): the server got %d calls, want %d", c.path, c.mode, len(calls), c.calls)
		} else if c.calls == 1 && calls[0].Target != "/check"+c.path {
			t.Errorf("%s (%s): the server was asked about %s", c.path, c.mode, calls[0].Target)
		}
	}
	// The server's endpoint gone: the CUSTOM paths answer statusOnError.
	if err := xds.Update(edsCluster(cauthz, &backend{name: "gone", ip: "127.0.0.1", port: freePort(t)})...); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "/admin/x to answer 503 without the server", func() bool {
		ans, err := ap.call(port, "productpage", "/admin/x", "x-ext-authz", "allow")
		return err == nil && ans.code == 503
	})
	if ans := ap.mustCall(port, "productpage", "/productpage"); ans.code != 200 {
		t.Errorf("/productpage without the server: %d, want the app", ans.code)
	}
}
