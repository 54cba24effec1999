package istiod_test

import (
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
)

var updateJWTExtAuthz = flag.Bool("update-jwt-extauthz", false, "rewrite testdata/istiod/jwt-extauthz (the xDS istiod sends for testdata/jwt-extauthz.yaml)")

// jwtExtAuthzGolden is where istiod's xDS for testdata/jwt-extauthz.yaml is kept, for
// the translation's tests and test/nginx's.
var jwtExtAuthzGolden = filepath.Join("..", "..", "testdata", "istiod", "jwt-extauthz")

// TestRequestAuthenticationWithCustom: a workload with a RequestAuthentication and a
// CUSTOM AuthorizationPolicy (one rule on a JWT claim) next to DENY and ALLOW ones gets
// CUSTOM's shadow RBAC filter and ext_authz first, then jwt_authn, then the DENY and
// ALLOW RBAC filters (istiod builds the CUSTOM filters before the authentication ones);
// the claim rule of the shadow rules reads jwt_authn's metadata, which Envoy has not
// written yet when it evaluates them. The shapes are kept in
// testdata/istiod/jwt-extauthz (-update-jwt-extauthz rewrites them).
func TestRequestAuthenticationWithCustom(t *testing.T) {
	requireEnv(t)
	withExtAuthzProviders(t)
	objs, err := readObjects("jwt-extauthz.yaml")
	if err != nil {
		t.Fatal(err)
	}
	apply(t, objs...)
	pp, err := bootstrap.FromEnviron(sidecarEnv(t, env.istiod.GRPCAddr, client.SotW))
	if err != nil {
		t.Fatal(err)
	}
	inbound := func(x rawXDS) *listenerv3.Listener {
		l, _ := x[typeListener]["virtualInbound"].(*listenerv3.Listener)
		return l
	}
	const jwtType = "envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
	const extAuthzType = "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
	t.Cleanup(func() {
		deleteAll(t, objs)
		waitRaw(t, pp.Node, "productpage's xDS without the scenario", func(x rawXDS) bool {
			l := inbound(x)
			return x[typeCluster][extAuthzCluster] == nil && !hasFilterType(l, ppPort, extAuthzType) && !hasFilterType(l, ppPort, jwtType)
		})
	})
	raw := waitRaw(t, pp.Node, "productpage's inbound jwt_authn and ext_authz filters", func(x rawXDS) bool {
		l := inbound(x)
		return hasFilterType(l, ppPort, jwtType) && hasFilterType(l, ppPort, extAuthzType) &&
			len(httpFilterTypes(l, ppPort)) >= 6 && x[typeCluster][extAuthzCluster] != nil && x[typeCLA][extAuthzCluster] != nil
	})
	got := httpFilterTypes(inbound(raw), ppPort)
	want := []string{
		"istio.metadata_exchange io.istio.http.peer_metadata.Config",
		"envoy.filters.http.rbac envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.filters.http.ext_authz " + extAuthzType,
		"envoy.filters.http.jwt_authn " + jwtType,
		"envoy.filters.http.rbac envoy.extensions.filters.http.rbac.v3.RBAC",
		"envoy.filters.http.rbac envoy.extensions.filters.http.rbac.v3.RBAC",
	}
	if len(got) < len(want) || !slices.Equal(got[:len(want)], want) {
		t.Errorf("productpage's inbound HTTP filters do not start CUSTOM (rbac, ext_authz), jwt_authn, DENY, ALLOW:\n%s", strings.Join(got, "\n"))
	}
	checkCustomPair(t, inbound(raw), ppPort, "http-authz", true)
	lds := marshalIndent(t, inbound(raw))
	if !strings.Contains(string(lds), `"envoy.filters.http.jwt_authn"`) || !strings.Contains(string(lds), `"checked"`) {
		t.Errorf("CUSTOM's claim rule does not read jwt_authn's metadata:\n%s", lds)
	}
	files := map[string][]byte{
		"lds/productpage-virtualInbound.json": lds,
		"cds/" + fileName(extAuthzCluster):    marshalIndent(t, raw[typeCluster][extAuthzCluster]),
		"eds/" + fileName(extAuthzCluster):    marshalIndent(t, raw[typeCLA][extAuthzCluster]),
	}
	goldenFiles(t, jwtExtAuthzGolden, files, *updateJWTExtAuthz, "-update-jwt-extauthz")
}
