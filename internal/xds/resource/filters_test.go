package resource_test

import (
	"path/filepath"
	"strings"
	"testing"

	udpav1 "github.com/cncf/xds/go/udpa/type/v1"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// withHTTPFilters is an outbound listener whose connection manager (RDS "80") has
// filters, the router last unless they say otherwise.
func withHTTPFilters(t testing.TB, fs ...*hcmv3.HttpFilter) *listenerv3.Listener {
	t.Helper()
	l := xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")
	f := l.FilterChains[0].Filters[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	h.HttpFilters = fs
	f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)}
	return l
}

func hf(t testing.TB, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func router(t testing.TB) *hcmv3.HttpFilter {
	return hf(t, "envoy.filters.http.router", &routerv3.Router{})
}

func opaque(name, url string) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: url}}}
}

func typedStruct(t testing.TB, m proto.Message) *anypb.Any {
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(b, st); err != nil {
		t.Fatal(err)
	}
	return mustAny(t, &udpav1.TypedStruct{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: st})
}

// Listeners Envoy accepts: istiod's filters (TypedStruct configs of istio-proxy's own
// types), an optional filter of a type Envoy does not implement, a connection manager
// under another name or in a TypedStruct (it is found by type: its RDS name is a
// dependency), a filter disabled by default before the router.
func TestListenerFiltersAccepted(t *testing.T) {
	for name, l := range acceptedListeners(t) {
		d, err := resource.Decode(resource.ListenerType, mustAny(t, l), "")
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if strings.Join(d.Deps, ",") != "80" {
			t.Errorf("%s: deps %v, want [80]", name, d.Deps)
		}
	}
}

// acceptedListeners are the shapes of TestListenerFiltersAccepted.
func acceptedListeners(t testing.TB) map[string]*listenerv3.Listener {
	istio := withHTTPFilters(t,
		&hcmv3.HttpFilter{Name: "istio.metadata_exchange", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t,
			&udpav1.TypedStruct{TypeUrl: "type.googleapis.com/io.istio.http.peer_metadata.Config"})}},
		opaque("istio.alpn", "type.googleapis.com/istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"),
		hf(t, "envoy.filters.http.fault", &faultv3.HTTPFault{}),
		hf(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}}),
		router(t))
	optional := withHTTPFilters(t, &hcmv3.HttpFilter{Name: "vendor", IsOptional: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/vendor.Filter"}}}, router(t))
	renamed := xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")
	renamed.FilterChains[0].Filters[0].Name = "my-connection-manager"
	inStruct := xdstest.Listener("0.0.0.0_80", 80, nil, "")
	h := &hcmv3.HttpConnectionManager{}
	if err := xdstest.HCM("80").GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	inStruct.FilterChains = []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "hcm",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: typedStruct(t, h)}}}}}
	disabled := withHTTPFilters(t, &hcmv3.HttpFilter{Name: "envoy.filters.http.fault", Disabled: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &faultv3.HTTPFault{})}}, router(t))
	return map[string]*listenerv3.Listener{
		"istio": istio, "optional": optional, "renamed": renamed, "typed struct": inStruct, "disabled": disabled,
	}
}

// What Envoy rejects is NACKed, with Envoy's words naming the chain and the filter.
func TestListenerFiltersRejected(t *testing.T) {
	for _, tc := range rejectedListeners(t) {
		_, err := resource.Decode(resource.ListenerType, mustAny(t, tc.l), "")
		if err == nil {
			t.Errorf("%s: accepted", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %q does not mention %q", tc.name, err, w)
			}
		}
	}
}

// rejectedListener is a listener Envoy rejects and what its error says.
type rejectedListener struct {
	name string
	l    *listenerv3.Listener
	want []string
}

// rejectedListeners are the shapes of TestListenerFiltersRejected.
func rejectedListeners(t testing.TB) []rejectedListener {

	garbledHCM := xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")
	garbledHCM.FilterChains[0].Filters[0].GetTypedConfig().Value = []byte{0xff, 0xff, 0xff}
	wrongType := xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")
	wrongType.FilterChains[0].Filters[0].GetTypedConfig().TypeUrl = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v2.HttpConnectionManager"
	noConfig := xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")
	noConfig.FilterChains[0].Filters[0].ConfigType = nil
	afterHCM := xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")
	afterHCM.FilterChains[0].Filters = append(afterHCM.FilterChains[0].Filters, &listenerv3.Filter{Name: "envoy.filters.network.rbac",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"}}})
	ecds := func(cd *corev3.ExtensionConfigSource) *hcmv3.HttpFilter {
		cd.ConfigSource = &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
		return &hcmv3.HttpFilter{Name: "ecds", ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{ConfigDiscovery: cd}}
	}
	inline := func(rc *routev3.RouteConfiguration) *listenerv3.Listener {
		l := withHTTPFilters(t, router(t))
		f := l.FilterChains[0].Filters[0]
		h := &hcmv3.HttpConnectionManager{}
		if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
			t.Fatal(err)
		}
		h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
		f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, h)}
		return l
	}
	regexRoute := func(re string) *routev3.Route {
		return &routev3.Route{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}},
			Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200}}}
	}
	return []rejectedListener{
		{"inline route config: invalid regex", inline(&routev3.RouteConfiguration{Name: "in", VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{regexRoute("/api/(unclosed")}}}}),
			[]string{"missing closing )"}},
		{"inline route config: duplicate domains", inline(&routev3.RouteConfiguration{Name: "in", VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"x.example"}}, {Name: "b", Domains: []string{"X.example"}}}}),
			[]string{"route_config", "duplicate entry of domain x.example"}},
		{"inline route config: negative timeout", inline(&routev3.RouteConfiguration{Name: "in", VirtualHosts: []*routev3.VirtualHost{
			{Name: "a", Domains: []string{"a"}, Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"},
					Timeout: &durationpb.Duration{Seconds: -1}}}}}}}}),
			[]string{"timeout"}},
		{"unknown HTTP filter", withHTTPFilters(t, opaque("vendor.auth", "type.googleapis.com/vendor.Auth"), router(t)),
			[]string{`listener "0.0.0.0_80"`, "filter chain chain-80", "http filter vendor.auth", "Didn't find a registered implementation for 'vendor.auth' with type URL: 'vendor.Auth'"}},
		{"unknown in TypedStruct", withHTTPFilters(t, &hcmv3.HttpFilter{Name: "x", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t,
			&udpav1.TypedStruct{TypeUrl: "type.googleapis.com/vendor.Auth"})}}, router(t)),
			[]string{"type URL: 'vendor.Auth'"}},
		{"HTTP filter without config", withHTTPFilters(t, &hcmv3.HttpFilter{Name: "bare"}, router(t)),
			[]string{"Didn't find a registered implementation for 'bare' with type URL: ''"}},
		{"invalid RBAC", withHTTPFilters(t, hf(t, "envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {}}}}), router(t)),
			[]string{"http filter envoy.filters.http.rbac", "Permissions"}},
		{"undecodable RBAC", withHTTPFilters(t, &hcmv3.HttpFilter{Name: "envoy.filters.http.rbac", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: &anypb.Any{
			TypeUrl: "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC", Value: []byte{0xff}}}}, router(t)),
			[]string{"cannot decode envoy.extensions.filters.http.rbac.v3.RBAC"}},
		{"router not last", withHTTPFilters(t, router(t), hf(t, "envoy.filters.http.fault", &faultv3.HTTPFault{})),
			[]string{"Error: terminal filter named envoy.filters.http.router of type envoy.filters.http.router must be the last filter in a http filter chain."}},
		{"no router last", withHTTPFilters(t, hf(t, "envoy.filters.http.fault", &faultv3.HTTPFault{})),
			[]string{"Error: non-terminal filter named envoy.filters.http.fault of type envoy.filters.http.fault is the last filter in a http filter chain."}},
		{"last disabled", withHTTPFilters(t, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", Disabled: true, ConfigType: router(t).ConfigType}),
			[]string{"the last (terminal) filter (envoy.filters.http.router) in the chain cannot be disabled by default"}},
		{"ECDS of unknown type", withHTTPFilters(t, ecds(&corev3.ExtensionConfigSource{TypeUrls: []string{"type.googleapis.com/vendor.Auth"}}), router(t)),
			[]string{"no factory found for a required type URL vendor.Auth"}},
		{"ECDS without default", withHTTPFilters(t, ecds(&corev3.ExtensionConfigSource{ApplyDefaultConfigWithoutWarming: true,
			TypeUrls: []string{"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"}}), router(t)),
			[]string{"applied without warming but has no default config"}},
		{"unknown network filter type", wrongType,
			[]string{"filter envoy.filters.network.http_connection_manager", "Didn't find a registered implementation for 'envoy.filters.network.http_connection_manager' with type URL: 'envoy.extensions.filters.network.http_connection_manager.v2.HttpConnectionManager'"}},
		{"network filter without config", noConfig, []string{"with type URL: ''"}},
		{"connection manager does not decode", garbledHCM, []string{"filter chain chain-80, filter envoy.filters.network.http_connection_manager"}},
		{"filter after the connection manager", afterHCM,
			[]string{"terminal filter named envoy.filters.network.http_connection_manager of type envoy.filters.network.http_connection_manager must be the last filter in a network filter chain"}},
	}
}

// The roles of the filters amesh reads are decided by type, whatever the name.
func TestFilterRoles(t *testing.T) {
	for _, tc := range []struct {
		a    *anypb.Any
		want resource.FilterRole
	}{
		{mustAny(t, &rbachttpv3.RBAC{}), resource.RoleRBAC},
		{mustAny(t, &routerv3.Router{}), resource.RoleRouter},
		{mustAny(t, &udpav1.TypedStruct{TypeUrl: "type.googleapis.com/io.istio.http.peer_metadata.Config"}), resource.RoleObserve},
		{&anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"}, resource.RoleAccess},
		{&anypb.Any{TypeUrl: "type.googleapis.com/envoy.extensions.filters.http.compressor.v3.Compressor"}, resource.RoleOther},
		{&anypb.Any{TypeUrl: "type.googleapis.com/vendor.X"}, resource.RoleUnknown},
	} {
		typ, err := resource.FilterTypeName(tc.a)
		if err != nil {
			t.Fatal(err)
		}
		if got := resource.HTTPFilterRole(typ, tc.a); got != tc.want {
			t.Errorf("%s: role %d, want %d", tc.a.GetTypeUrl(), got, tc.want)
		}
	}
}

// FuzzDecodeListener feeds listener bytes (seeded with the filter shapes above and
// istiod's listeners) to the decoder: it never panics, decides the same way twice, and
// what it accepts translates (twice alike) without panicking.
func FuzzDecodeListener(f *testing.F) {
	for _, l := range acceptedListeners(f) {
		f.Add(marshal(f, l))
	}
	for _, tc := range rejectedListeners(f) {
		f.Add(marshal(f, tc.l))
	}
	for _, mode := range []string{"sotw", "delta", "sotw-interception-none"} {
		res, err := dump.LoadDir(filepath.Join("..", "..", "..", "testdata", "istiod", mode))
		if err != nil {
			f.Fatal(err)
		}
		for _, l := range res.Listeners {
			f.Add(marshal(f, l))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d1, err1 := resource.DecodeBytes(resource.ListenerType, b, "", clientOpts)
		d2, err2 := resource.DecodeBytes(resource.ListenerType, b, "", clientOpts)
		if (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() {
			t.Fatalf("two decodes disagree: %v / %v", err1, err2)
		}
		if err1 != nil {
			return
		}
		if !proto.Equal(d1.Msg.(proto.Message), d2.Msg.(proto.Message)) || strings.Join(d1.Deps, ",") != strings.Join(d2.Deps, ",") {
			t.Fatal("two decodes of the same bytes differ")
		}
		l := d1.Msg.(*listenerv3.Listener)
		snap := func() *resource.State {
			return &resource.State{Seq: 1, Changes: resource.Changes{Full: true},
				Listeners: map[string]*listenerv3.Listener{l.GetName(): l}, RouteConfigs: map[string]*resource.RouteConfig{},
				Clusters: map[string]*resource.Cluster{}, Endpoints: map[string]*resource.LoadAssignment{}}
		}
		r1 := translate.New(translate.Options{}).Translate(snap())
		r2 := translate.New(translate.Options{}).Translate(snap())
		if len(r1.Report) != len(r2.Report) || len(r1.Changes.Put) != len(r2.Changes.Put) {
			t.Fatal("two translations of the same listener differ")
		}
		for i := range r1.Report {
			if r1.Report[i] != r2.Report[i] {
				t.Fatalf("two translations report differently: %+v / %+v", r1.Report[i], r2.Report[i])
			}
		}
	})
}
