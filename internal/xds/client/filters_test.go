package client_test

import (
	"encoding/json"
	"strings"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// The client and translation end to end over both protocols: a listener whose filters
// Envoy would reject is NACKed and the last good output stays; filters that decide who
// gets in are enforced or fail their routes closed; the other listener's routes never
// change.

// output translates the snapshots a client publishes and keeps the complete output.
type output struct {
	tr   *translate.Translator
	objs map[string][]byte
	rep  []report.Entry
}

func newOutput() *output {
	return &output{tr: translate.New(translate.Options{}), objs: map[string][]byte{}}
}

func (o *output) apply(s *resource.State) {
	r := o.tr.Translate(s)
	r.Changes.ApplyTo(o.objs)
	o.rep = r.Report
}

// routes returns the route objects of a context ("out-9080") by route name.
func (o *output) routes(t *testing.T, ctx string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range o.objs {
		if !strings.HasPrefix(k, "/routes/"+ctx+".") {
			continue
		}
		var m struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatal(err)
		}
		out[m.Name] = string(v)
	}
	if len(out) == 0 {
		t.Fatalf("no routes of %s", ctx)
	}
	return out
}

// abort returns the status a route answers itself (0 when it forwards) and its body.
func abort(t *testing.T, route string) (int, string) {
	t.Helper()
	var m struct {
		UpstreamID string `json:"upstream_id"`
		Plugins    struct {
			Fault *struct {
				Abort struct {
					Status int    `json:"http_status"`
					Body   string `json:"body"`
				} `json:"abort"`
			} `json:"fault-injection"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(route), &m); err != nil {
		t.Fatal(err)
	}
	if m.Plugins.Fault == nil {
		return 0, ""
	}
	if m.UpstreamID != "" {
		t.Errorf("route answers %d itself but names upstream %s", m.Plugins.Fault.Abort.Status, m.UpstreamID)
	}
	return m.Plugins.Fault.Abort.Status, m.Plugins.Fault.Abort.Body
}

// twoListeners serves basicMesh plus an unrelated listener on 8080 (route config
// "8080" to cluster b).
func twoListeners(t *testing.T, srv *xdstest.Server) {
	t.Helper()
	basicMesh(t, srv)
	srv.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""), xdstest.Listener("0.0.0.0_8080", 8080, []string{"8080"}, ""))
	srv.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", "outbound|9080||a"), xdstest.RouteConfig("8080", "outbound|9080||b"))
}

// startTwoListeners serves twoListeners to a client of protocol p and translates its
// first complete snapshot.
func startTwoListeners(t *testing.T, p client.Protocol) (*xdstest.Server, *client.Client, *output, *resource.State) {
	t.Helper()
	srv := newServer(t, xdsOpts())
	twoListeners(t, srv)
	c := startClient(t, srv, p, nil)
	out := newOutput()
	first := waitSnapshot(t, c, hasCounts(counts{2, 2, 3, 2}))
	out.apply(first)
	return srv, c, out, first
}

// listener9080 is the 9080 listener with its connection manager changed by edit.
func listener9080(t *testing.T, edit func(h *hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	t.Helper()
	l := xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, "")
	f := l.FilterChains[0].Filters[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	edit(h)
	a, err := anypb.New(h)
	if err != nil {
		t.Fatal(err)
	}
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
	return l
}

// hcmFilter9080 is the 9080 listener with its connection manager filter changed by edit.
func hcmFilter9080(edit func(f *listenerv3.Filter)) *listenerv3.Listener {
	l := xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, "")
	edit(l.FilterChains[0].Filters[0])
	return l
}

// before adds HTTP filters in front of the router.
func before(t *testing.T, fs ...*hcmv3.HttpFilter) *listenerv3.Listener {
	return listener9080(t, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = append(fs, h.HttpFilters...) })
}

func typed(t *testing.T, name string, m proto.Message) *hcmv3.HttpFilter {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

// Each listener Envoy would reject is NACKed with Envoy's reason; no snapshot is
// published, so the output stays the last good one; a later change of the other
// listener's routes still applies, and the 9080 routes stay as they were.
func TestFilterNACKs(t *testing.T) {
	cases := []struct {
		name string
		bad  func(t *testing.T) *listenerv3.Listener
		want []string
	}{
		{"unknown HTTP filter", func(t *testing.T) *listenerv3.Listener {
			return before(t, &hcmv3.HttpFilter{Name: "vendor.authz", ConfigType: &hcmv3.HttpFilter_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/vendor.Authz"}}})
		}, []string{`listener "0.0.0.0_9080"`, "http filter vendor.authz", "Didn't find a registered implementation for 'vendor.authz' with type URL: 'vendor.Authz'"}},
		{"connection manager of unknown type", func(t *testing.T) *listenerv3.Listener {
			return hcmFilter9080(func(f *listenerv3.Filter) {
				f.GetTypedConfig().TypeUrl = "type.googleapis.com/vendor.HttpConnectionManager"
			})
		}, []string{`listener "0.0.0.0_9080"`, "Didn't find a registered implementation for 'envoy.filters.network.http_connection_manager' with type URL: 'vendor.HttpConnectionManager'"}},
		{"connection manager that does not decode", func(t *testing.T) *listenerv3.Listener {
			return hcmFilter9080(func(f *listenerv3.Filter) { f.GetTypedConfig().Value = []byte{0x0a, 0xff} })
		}, []string{`listener "0.0.0.0_9080"`, "filter envoy.filters.network.http_connection_manager"}},
		{"invalid RBAC config", func(t *testing.T) *listenerv3.Listener {
			return before(t, typed(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {}}}}))
		}, []string{`listener "0.0.0.0_9080"`, "http filter envoy.filters.http.rbac", "Permissions"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range protocols {
				t.Run(string(p), func(t *testing.T) {
					srv, c, out, first := startTwoListeners(t, p)
					good9080, good8080 := out.routes(t, "out-9080"), out.routes(t, "out-8080")

					mark := srv.Mark()
					if err := srv.Update(tc.bad(t)); err != nil {
						t.Fatal(err)
					}
					nack, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool { return r.IsNACK() })
					if err != nil {
						t.Fatal(err)
					}
					if nack.TypeURL() != resource.ListenerType {
						t.Fatalf("NACK of %s, want listeners", nack.TypeURL())
					}
					for _, w := range tc.want {
						if !strings.Contains(nack.ErrorDetail(), w) {
							t.Errorf("error_detail %q does not mention %q", nack.ErrorDetail(), w)
						}
					}
					if st := c.Status(); st.Seq != first.Seq {
						t.Fatalf("a snapshot was published for the NACKed listener (seq %d, was %d)", st.Seq, first.Seq)
					}

					// The other listener's routes change; the rejected one's stay.
					if err := srv.Update(xdstest.RouteConfig("8080", "outbound|9080||a")); err != nil {
						t.Fatal(err)
					}
					s := waitSnapshot(t, c, func(s *resource.State) bool { _, ok := s.Changes.RouteConfigs["8080"]; return ok })
					if s.Listeners["0.0.0.0_9080"] != first.Listeners["0.0.0.0_9080"] {
						t.Error("the rejected listener replaced the last good one")
					}
					out.apply(s)
					if got := out.routes(t, "out-9080"); !equalMaps(got, good9080) {
						t.Errorf("9080 routes changed after the NACK:\n%v\nwas\n%v", got, good9080)
					}
					if got := out.routes(t, "out-8080"); equalMaps(got, good8080) {
						t.Error("the 8080 route change did not apply")
					}
				})
			}
		})
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// Valid listeners with filters that decide who gets in are ACKed; their routes answer
// 403 (exactly as Envoy where RBAC denies every request, failing closed where amesh
// cannot enforce the filter) or carry amesh-rbac (RBAC that depends on the request); a
// connection manager under another name is translated like one under the usual name;
// the other listener's routes never change.
func TestFiltersEnforced(t *testing.T) {
	denyPath := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"ns[default]-policy[deny-admin]-rule[0]": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
			Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/admin"}}}}}}},
		Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}}}
	cases := []struct {
		name   string
		l      func(t *testing.T) *listenerv3.Listener
		status int    // of every 9080 route; 0: they forward
		body   string // prefix of the body
		field  string // report entry naming the filter
		plugin string // a plugin every forwarding 9080 route carries ("": none added)
	}{
		{"RBAC allowing nothing", func(t *testing.T) *listenerv3.Listener {
			return before(t, typed(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}}))
		}, 403, "RBAC: access denied", "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.rbac]", ""},
		{"RBAC denying a path", func(t *testing.T) *listenerv3.Listener {
			return before(t, typed(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: denyPath}))
		}, 0, "", "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.rbac]", "amesh-rbac"},
		{"ext_authz", func(t *testing.T) *listenerv3.Listener {
			return before(t, typed(t, "envoy.filters.http.ext_authz", &extauthzv3.ExtAuthz{}))
		}, 403, "amesh: ext_authz filter envoy.filters.http.ext_authz: no authorization service", "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.ext_authz]", ""},
		// A jwt_authn rule without a requirement verifies nothing (Envoy): the routes stay.
		{"jwt_authn", func(t *testing.T) *listenerv3.Listener {
			return before(t, typed(t, "envoy.filters.http.jwt_authn", &jwtv3.JwtAuthentication{Rules: []*jwtv3.RequirementRule{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}}}}))
		}, 0, "", "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.jwt_authn]", ""},
		{"RBAC without rules", func(t *testing.T) *listenerv3.Listener {
			return before(t, typed(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{}))
		}, 0, "", "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.rbac]", ""},
		{"connection manager under another name", func(t *testing.T) *listenerv3.Listener {
			return hcmFilter9080(func(f *listenerv3.Filter) { f.Name = "istio.hcm" })
		}, 0, "", "filter_chains.filters", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, p := range protocols {
				t.Run(string(p), func(t *testing.T) {
					srv, c, out, first := startTwoListeners(t, p)
					good9080, good8080 := out.routes(t, "out-9080"), out.routes(t, "out-8080")

					mark := srv.Mark()
					if err := srv.Update(tc.l(t)); err != nil {
						t.Fatal(err)
					}
					s := waitSnapshot(t, c, func(s *resource.State) bool { return s.Listeners["0.0.0.0_9080"] != first.Listeners["0.0.0.0_9080"] })
					if _, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool {
						return r.TypeURL() == resource.ListenerType && r.Nonce() != "" && !r.IsNACK()
					}); err != nil {
						t.Fatal(err)
					}
					for _, r := range srv.Requests()[mark:] {
						if r.IsNACK() {
							t.Fatalf("NACKed: %s", r.ErrorDetail())
						}
					}
					out.apply(s)
					routes := out.routes(t, "out-9080")
					for name, r := range routes {
						st, body := abort(t, r)
						want := tc.status
						if want == 0 && name == "no-route" {
							want = 404
						}
						if st != want || !strings.HasPrefix(body, tc.body) {
							t.Errorf("route %q answers %d %q, want %d %q...", name, st, body, want, tc.body)
						}
						if tc.plugin != "" && name != "no-route" && !strings.Contains(r, `"`+tc.plugin+`":`) {
							t.Errorf("route %q lacks plugin %s: %s", name, tc.plugin, r)
						}
					}
					if tc.status == 0 && tc.plugin == "" && !equalMaps(routes, good9080) {
						t.Errorf("9080 routes changed:\n%v\nwas\n%v", routes, good9080)
					}
					if got := out.routes(t, "out-8080"); !equalMaps(got, good8080) {
						t.Errorf("the other listener's routes changed:\n%v\nwas\n%v", got, good8080)
					}
					found := false
					for _, e := range out.rep {
						found = found || e.Resource == "0.0.0.0_9080" && e.Field == tc.field
					}
					if !found {
						t.Errorf("no report entry %s for listener 0.0.0.0_9080: %v", tc.field, out.rep)
					}
				})
			}
		})
	}
}
