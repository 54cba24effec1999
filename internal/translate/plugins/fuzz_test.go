package plugins

import (
	"encoding/json"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// FuzzForRoute feeds arbitrary wire-format routes, virtual hosts and route
// configurations (seeded with istiod's) through ForRoute: it must not panic, must give
// the same output twice, and every plugin config must pass APISIX's schema.
func FuzzForRoute(f *testing.F) {
	rc := loadRDS(f)
	rcOnly := proto.Clone(rc).(*routev3.RouteConfiguration)
	rcOnly.VirtualHosts = nil
	rcBytes, _ := proto.Marshal(rcOnly)
	for _, vh := range rc.GetVirtualHosts() {
		vhOnly := proto.Clone(vh).(*routev3.VirtualHost)
		vhOnly.Routes = nil
		vhBytes, _ := proto.Marshal(vhOnly)
		for _, r := range vh.GetRoutes() {
			rb, _ := proto.Marshal(r)
			f.Add(rb, vhBytes, rcBytes)
		}
	}
	// Feature-rich routes, so that mutations start from every translated field.
	seeds := []*routev3.Route{
		redirectRoute(prefixMatch("/old/"), &routev3.RedirectAction{
			HostRedirect: "h.example", SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
			PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"},
		}),
		withReqHeaders(rewriteRoute(prefixMatch("/api"), prefixRewrite("/")),
			[]*corev3.HeaderValueOption{hv("x", "1", overwriteOrAdd), hv("y", "2", appendOrAdd)}, "z"),
		withFilter(f, withFilter(f, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
			AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a"), {MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "^https://.*$"}}}},
			AllowMethods:           "GET", MaxAge: "10", AllowCredentials: wrapperspb.Bool(true),
		}), filterFault, &faultv3.HTTPFault{
			Delay: delay(durationpb.New(5e8), pct(3, typev3.FractionalPercent_TEN_THOUSAND)),
			Abort: abort(503, pct(20, typev3.FractionalPercent_HUNDRED)),
		}),
	}
	for _, r := range seeds {
		rb, _ := proto.Marshal(r)
		f.Add(rb, []byte(nil), rcBytes)
	}
	f.Fuzz(func(t *testing.T, rb, vhb, rcb []byte) {
		r, vh, rc := &routev3.Route{}, &routev3.VirtualHost{}, &routev3.RouteConfiguration{}
		if proto.Unmarshal(rb, r) != nil || proto.Unmarshal(vhb, vh) != nil || proto.Unmarshal(rcb, rc) != nil {
			return
		}
		in := Input{RouteConfig: rc, VirtualHost: vh, Route: r, MirrorTarget: mirrorTargets}
		a, b := ForRoute(in), ForRoute(in)
		ja, err := json.Marshal(a)
		if err != nil {
			t.Fatalf("output is not JSON-encodable: %v", err)
		}
		jb, _ := json.Marshal(b)
		if string(ja) != string(jb) {
			t.Fatalf("non-deterministic output:\n%s\n%s", ja, jb)
		}
		if a.FailClosed && a.Plugins != nil {
			t.Fatalf("FailClosed with plugins: %s", ja)
		}
		switch r.GetAction().(type) {
		case *routev3.Route_Redirect, *routev3.Route_DirectResponse:
			if !a.Terminal {
				t.Fatalf("terminal action not marked Terminal: %s", ja)
			}
		default:
			if a.Terminal {
				t.Fatalf("forwarding route marked Terminal: %s", ja)
			}
		}
		for _, e := range a.Report {
			if e.Field == "" || e.Message == "" || e.Severity == "" {
				t.Fatalf("incomplete report entry %+v", e)
			}
		}
		checkSchemas(t, a.Plugins)
	})
}
