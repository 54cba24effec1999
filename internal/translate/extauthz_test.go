package translate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	// reviews' listener has istiod's network ext_authz filter on its TCP chains.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// extAuthzDir is istiod's xDS for CUSTOM policies (testdata/istiod/extauthz/README.md).
const extAuthzDir = "../../testdata/istiod/extauthz"

const extAuthzCluster = "outbound|8000||ext-authz.default.svc.cluster.local"

// extAuthzSnapshot is the scenario's istiod xDS (testdata/istiod/sotw, the same
// productpage sidecar) with the inbound listener istiod sends once the CUSTOM, DENY and
// ALLOW policies of test/istiod/testdata/extauthz.yaml apply (from pod's file, edited
// by edit when set), and the authorization service's cluster and endpoints.
func extAuthzSnapshot(t *testing.T, pod string, edit func(*listenerv3.Listener)) *resource.State {
	t.Helper()
	return captureSnapshot(t, extAuthzDir, pod, edit)
}

// captureSnapshot is testdata/istiod/sotw with the inbound listener of pod from
// capture dir (edited by edit when set) and the authorization service's cluster and
// endpoints from there.
func captureSnapshot(t *testing.T, capture, pod string, edit func(*listenerv3.Listener)) *resource.State {
	t.Helper()
	dir := t.TempDir()
	src := istiodDir(t, "sotw")
	for _, sub := range []string{"lds", "rds", "cds", "eds"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		es, err := os.ReadDir(filepath.Join(src, sub))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			b, err := os.ReadFile(filepath.Join(src, sub, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, sub, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	l := &listenerv3.Listener{}
	b, err := os.ReadFile(filepath.Join(capture, "lds", pod+"-virtualInbound.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(b, l); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(l)
	}
	if b, err = protojson.Marshal(l); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"lds/virtualInbound.json": b}
	for _, sub := range []string{"cds", "eds"} {
		name := sub + "/outbound_8000__ext-authz.default.svc.cluster.local.json"
		if files[name], err = os.ReadFile(filepath.Join(capture, name)); err != nil {
			t.Fatal(err)
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := dump.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return res.Snapshot()
}

// inboundRoutes returns the objects of the inbound routes for productpage's port.
func inboundRoutes(t *testing.T, objs map[string][]byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/in-") || !strings.Contains(k, "19080") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatal(err)
		}
		out[k] = m
	}
	if len(out) == 0 {
		t.Fatalf("no inbound routes for 19080 among %v", keysOf(objs))
	}
	return out
}

// stepDecoded is one step of amesh-rbac's list, whatever its action.
type stepDecoded struct {
	rbacEnforced
	Key   string      `json:"key"`
	Check *authzCheck `json:"ext_authz"`
	JWT   *jwtConf    `json:"jwt"`
}

type stepsDecoded struct {
	PortVar       string `json:"port_var"`
	NormalizePath bool   `json:"normalize_path"`
	Filters       []stepDecoded
}

// stepsOf decodes a route's amesh-rbac config with every kind of step.
func stepsOf(t *testing.T, r map[string]any) (stepsDecoded, bool) {
	t.Helper()
	p, _ := r["plugins"].(map[string]any)
	c, ok := p[rbacPluginName]
	if !ok {
		return stepsDecoded{}, false
	}
	b, _ := json.Marshal(c)
	var d stepsDecoded
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d, true
}

// actions lists the steps' actions in order.
func (d stepsDecoded) actions() string {
	var out []string
	for _, f := range d.Filters {
		out = append(out, f.Action)
	}
	return strings.Join(out, " ")
}

// hasExtAuthzStep: the route's amesh-rbac config has an ext_authz step.
func hasExtAuthzStep(t *testing.T, r map[string]any) bool {
	d, _ := stepsOf(t, r)
	return strings.Contains(d.actions(), extAuthzAction)
}

// istiod's CUSTOM policy (an RBAC filter with shadow rules and an ext_authz filter over
// HTTP, then DENY's and ALLOW's RBAC filters) becomes, on every inbound route of the
// workload's port, amesh-rbac's steps in filter order: the shadow step, the ext_authz
// step (every option of the provider in place, the upstream of the service's cluster),
// DENY, ALLOW; the objects validate; the report says so.
func TestIstiodExtAuthz(t *testing.T) {
	tr := newTracked(Options{})
	r := tr.Translate(extAuthzSnapshot(t, "productpage", nil))
	objs := tr.Objects()
	validateAll(t, objs)
	upID := ""
	for k, v := range objs {
		if strings.HasPrefix(k, "/upstreams/") && strings.Contains(string(v), `"name":"`+extAuthzCluster+`"`) {
			if upID != "" {
				t.Errorf("two upstreams of %s", extAuthzCluster)
			}
			upID = strings.TrimPrefix(k, "/upstreams/")
			if !strings.Contains(string(v), `"host":"192.0.2.81","port":8000`) {
				t.Errorf("the authorization service's upstream has not its endpoint: %s", v)
			}
		}
	}
	if upID == "" {
		t.Fatalf("no upstream of %s", extAuthzCluster)
	}
	for k, route := range inboundRoutes(t, objs) {
		if st, body := abortOf(route); st != 0 && st != 404 {
			t.Errorf("%s answers %d %q itself", k, st, body)
		}
		if p, _ := route["plugins"].(map[string]any); p["amesh-ext-authz"] != nil {
			t.Errorf("%s carries a plugin of its own for ext_authz: %v", k, p)
		}
		d, ok := stepsOf(t, route)
		if !ok || d.actions() != "SHADOW EXT_AUTHZ DENY ALLOW" {
			t.Fatalf("%s: amesh-rbac %+v, want the shadow step, the ext_authz step, DENY, ALLOW", k, d)
		}
		sh := d.Filters[0]
		if sh.Key != "istio_ext_authz_shadow_effective_policy_id" || sh.Name != "envoy.filters.http.rbac" || len(sh.Policies) != 2 ||
			sh.Policies[0].Name != "istio-ext-authz-http-authz-ns[default]-policy[custom-admin]-rule[0]" {
			t.Errorf("%s: shadow step %+v", k, sh)
		}
		shadow, _ := json.Marshal(sh.Policies)
		for _, part := range []string{`"v":"/admin/"`, `"v":"/login"`, `"v":"POST"`, `"v":"/api/"`} {
			if !strings.Contains(string(shadow), part) {
				t.Errorf("%s: shadow rules lack %s: %s", k, part, shadow)
			}
		}
		if d.Filters[1].Name != "envoy.filters.http.ext_authz" {
			t.Errorf("%s: ext_authz step named %q", k, d.Filters[1].Name)
		}
		want := &authzCheck{
			Cluster: extAuthzCluster, UpstreamID: upID, PathPrefix: "/check", Timeout: 2.5,
			AllowedHeaders: []rbacString{{Op: "exact", V: "x-ext-authz", ICase: true}, {Op: "prefix", V: "x-user-", ICase: true},
				{Op: "exact", V: "authorization"}, {Op: "exact", V: ":method"}, {Op: "exact", V: ":path"}, {Op: "exact", V: ":authority"}},
			HeadersToAdd:    [][2]string{{"x-authz-from", "amesh-test"}},
			UpstreamHeaders: []rbacString{{Op: "exact", V: "x-ext-authz-check-result", ICase: true}, {Op: "prefix", V: "x-auth-", ICase: true}},
			ClientHeaders: []rbacString{{Op: "exact", V: "x-ext-authz-check-result", ICase: true}, {Op: "exact", V: "www-authenticate", ICase: true},
				{Op: "exact", V: ":status"}, {Op: "exact", V: "content-length"}, {Op: "exact", V: "www-authenticate"}, {Op: "exact", V: "location"}},
			StatusOnError: 503,
			EnabledBy:     &authzEnabled{Key: "istio_ext_authz_shadow_effective_policy_id", Str: rbacString{Op: "prefix", V: "istio-ext-authz-http-authz"}},
		}
		got, _ := json.Marshal(d.Filters[1].Check)
		wantJSON, _ := json.Marshal(want)
		if string(got) != string(wantJSON) {
			t.Errorf("%s: ext_authz step\n got %s\nwant %s", k, got, wantJSON)
		}
		if !d.NormalizePath || d.PortVar == "" {
			t.Errorf("%s: the connection manager's path options are not the plugin's: %+v", k, d)
		}
	}
	if !findEntry(r.Report, "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.ext_authz]", report.Approximated,
		"asks cluster "+extAuthzCluster+" over HTTP", "enforced per request by amesh-rbac in HTTP filter order") {
		t.Errorf("the report does not say how ext_authz is enforced: %v", entriesFor(r.Report, "virtualInbound"))
	}
	if !findEntry(r.Report, rbacField, report.Ignored, "istio_ext_authz_shadow_effective_policy_id", "amesh-rbac evaluates them in filter order") {
		t.Errorf("the report does not say what the shadow rules do: %v", entriesFor(r.Report, "virtualInbound"))
	}
}

func entriesFor(es []report.Entry, res string) []report.Entry {
	var out []report.Entry
	for _, e := range es {
		if e.Resource == res {
			out = append(out, e)
		}
	}
	return out
}

// editHTTPFilters changes the HTTP filters of every connection manager of l.
func editHTTPFilters(t *testing.T, l *listenerv3.Listener, edit func([]*hcmv3.HttpFilter) []*hcmv3.HttpFilter) {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			h := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().GetTypeUrl() != "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager" {
				continue
			}
			if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
			h.HttpFilters = edit(h.HttpFilters)
			a, err := anypb.New(h)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
}

// editExtAuthz changes the config of the ext_authz filters of l.
func editExtAuthz(t *testing.T, edit func(*extauthzv3.ExtAuthz)) func(*listenerv3.Listener) {
	return func(l *listenerv3.Listener) {
		editHTTPFilters(t, l, func(fs []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			for _, f := range fs {
				c := &extauthzv3.ExtAuthz{}
				if f.GetTypedConfig().UnmarshalTo(c) != nil {
					continue
				}
				edit(c)
				f.ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(c)}
			}
			return fs
		})
	}
}

// CUSTOM's filters after DENY's (an order istiod does not emit, which Envoy runs as
// given): amesh-rbac's steps keep the HTTP filter order, DENY, the shadow step, the
// ext_authz step, ALLOW.
func TestExtAuthzAfterDENYKeepsOrder(t *testing.T) {
	// metadata_exchange, CUSTOM rbac, ext_authz, DENY rbac, ...: DENY first.
	steps, _ := inboundSteps(t, extAuthzSnapshot(t, "productpage", afterCustom(t)))
	for k, d := range steps {
		if got := d.actions(); got != "DENY SHADOW EXT_AUTHZ ALLOW" {
			t.Errorf("%s: steps %s, want DENY SHADOW EXT_AUTHZ ALLOW", k, got)
		}
	}
}

// inboundSteps translates snap and returns the amesh-rbac steps of the inbound routes
// for productpage's port, checking that the objects validate and that no route answers
// itself, and the objects.
func inboundSteps(t *testing.T, snap *resource.State) (map[string]stepsDecoded, map[string][]byte) {
	t.Helper()
	tr := newTracked(Options{})
	tr.Translate(snap)
	objs := tr.Objects()
	validateAll(t, objs)
	out := map[string]stepsDecoded{}
	for k, route := range inboundRoutes(t, objs) {
		if st, body := abortOf(route); st != 0 && st != 404 {
			t.Errorf("%s answers %d %q itself", k, st, body)
		}
		out[k], _ = stepsOf(t, route)
	}
	return out, objs
}

// afterCustom moves the HTTP filter after CUSTOM's RBAC and ext_authz filters (the
// second and third, after istio.metadata_exchange) in front of them.
func afterCustom(t *testing.T) func(*listenerv3.Listener) {
	return func(l *listenerv3.Listener) {
		editHTTPFilters(t, l, func(fs []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			out := slices.Clone(fs)
			out[1], out[2], out[3] = fs[3], fs[1], fs[2]
			return out
		})
	}
}

// What amesh-rbac cannot do as Envoy does fails the workload's inbound routes closed
// (403, with the reason in the body): the gRPC provider, shadow policies whose names
// enable the filter for some only, options the plugin does not reproduce, headers the
// connection manager rewrites, and the authorization service's cluster with TLS.
func TestExtAuthzFailsClosed(t *testing.T) {
	mixedNames := func(l *listenerv3.Listener) {
		editHTTPFilters(t, l, func(fs []*hcmv3.HttpFilter) []*hcmv3.HttpFilter {
			c := &rbachttpv3.RBAC{}
			if err := fs[1].GetTypedConfig().UnmarshalTo(c); err != nil {
				t.Fatal(err)
			}
			ps := c.GetShadowRules().GetPolicies()
			for n, p := range ps {
				if strings.HasSuffix(n, "rule[1]") {
					delete(ps, n)
					ps["other-"+n] = p
				}
			}
			fs[1].ConfigType = &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(c)}
			return fs
		})
	}
	for _, tc := range []struct {
		name, pod string
		edit      func(*listenerv3.Listener)
		body      string
	}{
		{"gRPC provider", "reviews", nil, "speaks gRPC"},
		{"shadow names disagree", "productpage", mixedNames, "for some names only"},
		{"request body", "productpage", editExtAuthz(t, func(c *extauthzv3.ExtAuthz) {
			c.WithRequestBody = &extauthzv3.BufferSettings{MaxRequestBytes: 100}
		}), "options amesh does not enforce: with_request_body"},
		{"headers on success", "productpage", editExtAuthz(t, func(c *extauthzv3.ExtAuthz) {
			c.GetHttpService().GetAuthorizationResponse().AllowedClientHeadersOnSuccess = c.GetHttpService().GetAuthorizationResponse().GetAllowedUpstreamHeaders()
		}), "allowed_client_headers_on_success"},
		{"rewritten header", "productpage", editExtAuthz(t, func(c *extauthzv3.ExtAuthz) {
			c.AllowedHeaders.Patterns = append(c.AllowedHeaders.Patterns, exactSM("x-request-id"))
		}), "x-request-id"},
		{"metadata of another filter", "productpage", editExtAuthz(t, func(c *extauthzv3.ExtAuthz) {
			c.FilterEnabledMetadata.Filter = "envoy.filters.http.jwt_authn"
		}), "filter_enabled_metadata"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTracked(Options{})
			tr.Translate(extAuthzSnapshot(t, tc.pod, tc.edit))
			objs := tr.Objects()
			validateAll(t, objs)
			n := 0
			for k, v := range objs {
				if !strings.HasPrefix(k, "/routes/in-") || strings.Contains(k, ".nr") {
					continue
				}
				var route map[string]any
				if err := json.Unmarshal(v, &route); err != nil {
					t.Fatal(err)
				}
				if hasExtAuthzStep(t, route) {
					t.Errorf("%s carries an ext_authz step", k)
				}
				st, body := abortOf(route)
				if st == 403 && strings.Contains(body, tc.body) {
					n++
				}
			}
			if n == 0 {
				t.Errorf("no inbound route fails closed with %q", tc.body)
			}
		})
	}
}

// Without TLS to it, the authorization service's cluster is reached through its
// upstream; a cluster Envoy reaches with TLS fails the routes closed.
func TestExtAuthzClusterWithTLS(t *testing.T) {
	snap := extAuthzSnapshot(t, "productpage", nil)
	mtls := istiodSnapshot(t, "mtls")
	// A cluster of the mtls capture whose endpoints have Istio's mTLS.
	const tlsCluster = "outbound|8080||secure.default.svc.cluster.local"
	if mtls.Clusters[tlsCluster] == nil {
		t.Skip("mtls capture without " + tlsCluster)
	}
	snap.Clusters[extAuthzCluster] = mtls.Clusters[tlsCluster]
	for n, e := range mtls.Endpoints {
		snap.Endpoints[n] = e
	}
	tr := newTracked(Options{})
	tr.Translate(snap)
	for k, route := range inboundRoutes(t, tr.Objects()) {
		if st, body := abortOf(route); st != 403 || !strings.Contains(body, "TLS") {
			t.Errorf("%s answers %d %q, want 403 for the authorization service's TLS", k, st, body)
		}
	}
}

// jwtExtAuthzDir is istiod's xDS for a RequestAuthentication with CUSTOM, DENY and
// ALLOW policies (testdata/istiod/jwt-extauthz/README.md).
const jwtExtAuthzDir = "../../testdata/istiod/jwt-extauthz"

// istiod's filters for a RequestAuthentication next to CUSTOM (one rule on a JWT
// claim), DENY and ALLOW policies become one amesh-rbac list in HTTP filter order on
// every inbound route of the workload's port: CUSTOM's shadow step (its claim rule a
// condition on jwt_authn's payload), the ext_authz step (the authorization service's
// upstream), the jwt_authn step, DENY, ALLOW; with jwt_authn moved in front of CUSTOM's
// filters, the jwt_authn step comes first. No route fails closed; the objects validate.
func TestIstiodJWTExtAuthz(t *testing.T) {
	// metadata_exchange, CUSTOM rbac, ext_authz, jwt_authn, ...: jwt_authn first.
	jwtFirst := afterCustom(t)
	for _, tc := range []struct {
		name string
		edit func(*listenerv3.Listener)
		want string
	}{
		{"istiod's order", nil, "SHADOW EXT_AUTHZ JWT DENY ALLOW"},
		{"jwt_authn first", jwtFirst, "JWT SHADOW EXT_AUTHZ DENY ALLOW"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			all, objs := inboundSteps(t, captureSnapshot(t, jwtExtAuthzDir, "productpage", tc.edit))
			for k, d := range all {
				if got := d.actions(); got != tc.want {
					t.Fatalf("%s: steps %s, want %s", k, got, tc.want)
				}
				steps := map[string]stepDecoded{}
				for _, f := range d.Filters {
					steps[f.Action] = f
				}
				sh := steps["SHADOW"]
				if sh.Key != "istio_ext_authz_shadow_effective_policy_id" || len(sh.Policies) != 2 ||
					sh.Policies[1].Name != "istio-ext-authz-http-authz-ns[default]-policy[custom-admin]-rule[1]" {
					t.Errorf("%s: shadow step %+v", k, sh)
				}
				claim, _ := json.Marshal(sh.Policies[1])
				for _, part := range []string{`"v":"/claims/"`, `"f":"envoy.filters.http.jwt_authn","path":["payload","groups"]`, `"v":"checked"`} {
					if !strings.Contains(string(claim), part) {
						t.Errorf("%s: the claim rule lacks %s: %s", k, part, claim)
					}
				}
				if bytes.Contains(claim, []byte(`"const"`)) {
					t.Errorf("%s: the claim rule is not evaluated on the payload: %s", k, claim)
				}
				chk := steps["EXT_AUTHZ"].Check
				if chk == nil || chk.Cluster != extAuthzCluster || chk.UpstreamID == "" || objs["/upstreams/"+chk.UpstreamID] == nil ||
					chk.EnabledBy == nil || chk.EnabledBy.Key != sh.Key || chk.StatusOnError != 503 {
					t.Errorf("%s: ext_authz step %+v", k, chk)
				}
				j := steps["JWT"].JWT
				if j == nil || len(j.Providers) != 1 || j.Providers["origins-0"] == nil || j.Providers["origins-0"].Issuer != "https://issuer.example" ||
					j.Providers["origins-0"].PayloadMetadata != "payload" || j.Providers["origins-0"].Forward {
					t.Errorf("%s: jwt_authn step %+v", k, j)
				}
				if steps["DENY"].Name != "envoy.filters.http.rbac" || steps["ALLOW"].Name != "envoy.filters.http.rbac" {
					t.Errorf("%s: DENY %+v, ALLOW %+v", k, steps["DENY"], steps["ALLOW"])
				}
			}
		})
	}
}
