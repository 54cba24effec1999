package translate

import (
	"encoding/json"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/report"
)

// networkRBACOf returns the amesh-network-rbac filters of stream route id, nil without.
func networkRBACOf(t *testing.T, objs map[string][]byte, id string) []rbacEnforced {
	t.Helper()
	for _, r := range streamRoutesOf(t, objs) {
		if r.ID != id {
			continue
		}
		raw, ok := r.Plugins[networkRBACPlugin]
		if !ok {
			return nil
		}
		var conf struct {
			Filters []rbacEnforced `json:"filters"`
		}
		if err := json.Unmarshal(raw, &conf); err != nil {
			t.Fatal(err)
		}
		return conf.Filters
	}
	t.Fatalf("no stream route %s", id)
	return nil
}

// Istio's AuthorizationPolicy on a TCP port (istiod's network RBAC filters in front of
// tcp_proxy, DENY before ALLOW) is enforced per connection on the route that takes
// the terminated Istio mTLS, with the rules as Envoy's network filter reads them:
// principals from the TLS peer, the source address, the destination port. Nothing is
// left to fail closed, and the report says what is approximated.
func TestNetworkRBACFromIstiod(t *testing.T) {
	tr := newTracked(Options{})
	rep := tr.Translate(peerAuthSnapshot(t, "strict-tcp-authz")).Report
	objs := tr.Objects()
	validateAll(t, objs)
	fs := networkRBACOf(t, objs, "15006-19306-mtls")
	if len(fs) != 2 || fs[0].Action != "DENY" || fs[1].Action != "ALLOW" {
		t.Fatalf("15006-19306-mtls: network RBAC %+v; want istiod's DENY filter, then its ALLOW filter", fs)
	}
	b, _ := json.Marshal(fs)
	text := string(b)
	for _, part := range []string{
		`"auth":{"n":{"op":"exact","v":"spiffe://cluster.local/ns/default/sa/ratings"}}`,
		`"ip":{"src":"direct","addr":"192.0.2.2","len":32}`,
		`"ports":[19306,19307]`,
		`"auth":{"n":{"op":"exact","v":"spiffe://cluster.local/ns/default/sa/reviews"}}`,
	} {
		if !strings.Contains(text, part) {
			t.Errorf("15006-19306-mtls: network RBAC lacks %s:\n%s", part, text)
		}
	}
	if strings.Contains(text, `"const"`) {
		t.Errorf("15006-19306-mtls: a condition of istiod's rules was decided at translation:\n%s", text)
	}
	// The connections still reach the TCP port's cluster, after the checks.
	got := streamAnswerOf(t, objs, conn{listen: "15006", addr: "10.244.0.7", port: 19306, terminated: true, peer: "spiffe://cluster.local/ns/default/sa/reviews"})
	if got.upstream != "inbound|19306||" || got.refused || got.closed {
		t.Errorf("terminated mTLS to the TCP port: %v; want its cluster", got)
	}
	if findEntry(rep, "filter_chains.filters[envoy.filters.network.rbac]", report.Unsupported) {
		t.Errorf("the report says istiod's network RBAC is not translated: %v", rep)
	}
	if !findEntry(rep, "filter_chains.filters[envoy.filters.network.rbac]", report.Approximated, "enforced per connection by amesh-network-rbac") {
		t.Errorf("the report does not say that network RBAC is enforced per connection: %v", rep)
	}
}

// What a network filter cannot see evaluates as Envoy's network RBAC evaluates it: no
// header is present (a matcher takes its value for a missing header), no path matches,
// destination_ip is the original destination; remote_ip is the connection's peer.
func TestNetworkRBACCompile(t *testing.T) {
	hdr := func(h *routev3.HeaderMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
	}
	present := func(name string, want, invert bool) *rbacv3.Permission {
		return hdr(&routev3.HeaderMatcher{Name: name, InvertMatch: invert, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: want}})
	}
	cidr := &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}
	for _, c := range []struct {
		name string
		p    *rbacv3.Permission
		want string
	}{
		{"header present", present("x-team", true, false), `{"const":false}`},
		{"header absent", present("x-team", false, false), `{"const":true}`},
		{"header present, inverted", present("x-team", true, true), `{"const":true}`},
		{"header exact", hdr(&routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}}), `{"const":false}`},
		{"host header", present("host", true, false), `{"const":false}`},
		{"url_path", &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
			Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/"}}}}}}, `{"const":false}`},
		{"destination_ip", &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr}}, `{"ip":{"src":"dest","addr":"10.0.0.0","len":8}}`},
	} {
		for _, act := range []rbacv3.RBAC_Action{rbacv3.RBAC_ALLOW, rbacv3.RBAC_DENY} {
			rules := &rbacv3.RBAC{Action: act, Policies: map[string]*rbacv3.Policy{"p": {
				Permissions: []*rbacv3.Permission{c.p},
				Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
			}}}
			f, gaps := compileRBAC("n", rules, rbacEnv{network: true})
			b, _ := json.Marshal(f.Policies[0].Permissions[0])
			got := strings.Replace(string(b), `,"u":true`, "", 1)
			if got != c.want || len(gaps) != 0 {
				t.Errorf("%s (%v): %s, gaps %v; want %s", c.name, act, b, gaps, c.want)
			}
		}
	}
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"p": {
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr}}},
	}}}
	// Without a connection manager there is no x-forwarded-for: the peer.
	f, gaps := compileRBAC("n", rules, rbacEnv{network: true})
	if b, _ := json.Marshal(f.Policies[0].Principals[0]); string(b) != `{"ip":{"src":"remote","addr":"10.0.0.0","len":8}}` || len(gaps) != 0 {
		t.Errorf("remote_ip: %s, gaps %v", b, gaps)
	}
}
