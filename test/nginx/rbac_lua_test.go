package nginx

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// rbacNginxConf is stock nginx running amesh.rbac (through rbaccheck.lua) in front of
// a handler that answers "allowed": two ports (destination port rules), IPv4 and IPv6
// loopback, and a PROXY protocol port whose $remote_addr is the PROXY header's source
// (Envoy's source address with its proxy_protocol listener filter; the physical peer
// stays in $realip_remote_addr).
const rbacNginxConf = stockLuaNginx + `
    server {
        listen 127.0.0.1:{{.P1}};
        listen [::1]:{{.P1}};
        listen 127.0.0.1:{{.P2}};
        location / {
            rewrite_by_lua_block { require("rbaccheck").run("{{.Cases}}") }
            content_by_lua_block { ngx.print("allowed") }
        }
    }
    server {
        listen 127.0.0.1:{{.PP}} proxy_protocol;
        set_real_ip_from 127.0.0.1;
        real_ip_header proxy_protocol;
        location / {
            rewrite_by_lua_block { require("rbaccheck").run("{{.Cases}}") }
            content_by_lua_block { ngx.print("allowed") }
        }
    }
}
`

type rbacNginx struct {
	t          *testing.T
	cases      string
	p1, p2, pp int
}

func startRBACNginx(t *testing.T) *rbacNginx {
	t.Helper()
	requireNginx(t)
	prefix := t.TempDir()
	n := &rbacNginx{t: t, cases: filepath.Join(prefix, "cases"), p1: freePort(t), p2: freePort(t), pp: freePort(t)}
	if err := os.Mkdir(n.cases, 0o755); err != nil {
		t.Fatal(err)
	}
	startStockNginx(t, prefix, rbacNginxConf, map[string]any{"P1": n.p1, "P2": n.p2, "PP": n.pp, "Cases": n.cases}, n.p1)
	return n
}

// rbacReq is one request of a case and the decision Envoy documents for it.
type rbacReq struct {
	method  string      // "" GET
	target  string      // the request target, sent as is
	headers [][2]string // in order; repeated names are repeated headers
	from    string      // local address to send from: 127.0.0.x or ::1 ("" 127.0.0.1)
	proxy   string      // when set, sent to the PROXY protocol port with this source
	port2   bool        // to the second port
	allow   bool
	filter  string // for a denial, the filter that denies ("" any)
}

// send sends r for case c and returns the status, body and the denying filter.
func (n *rbacNginx) send(c string, r rbacReq) (int, string, string, error) {
	code, body, h, err := n.exchange(c, r)
	return code, body, h.Get("X-Rbac-Filter"), err
}

// exchange sends r for case c and returns the status, body and response headers.
func (n *rbacNginx) exchange(c string, r rbacReq) (int, string, http.Header, error) {
	port := n.p1
	switch {
	case r.proxy != "":
		port = n.pp
	case r.port2:
		port = n.p2
	}
	host := "127.0.0.1"
	d := net.Dialer{Timeout: 5 * time.Second}
	if r.from != "" {
		if strings.Contains(r.from, ":") {
			host = "::1"
		}
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(r.from)}
	}
	conn, err := d.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
	if err != nil {
		return 0, "", nil, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	if r.proxy != "" {
		fam := "TCP4"
		if strings.Contains(r.proxy, ":") {
			fam = "TCP6"
		}
		dst := "127.0.0.1"
		if fam == "TCP6" {
			dst = "::1"
		}
		fmt.Fprintf(&b, "PROXY %s %s %s 40000 %d\r\n", fam, r.proxy, dst, port)
	}
	method := r.method
	if method == "" {
		method = "GET"
	}
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: test\r\nX-Rbac-Case: %s\r\n", method, r.target, c)
	for _, h := range r.headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return 0, "", nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), resp.Header, err
}

// rbacConf is amesh-rbac's config on the route of a listener whose connection manager
// (changed by hcm, when set) runs filters in front of the router, as the real
// translator emits it; it must validate against the plugin's schema.
func rbacConf(t *testing.T, hcm func(*hcmv3.HttpConnectionManager), filters ...*hcmv3.HttpFilter) []byte {
	t.Helper()
	c, ok := routePlugins(t, hcm, filters...)["amesh-rbac"]
	if !ok {
		t.Fatal("route r has no amesh-rbac plugin")
	}
	return c
}

// routePlugins are the plugins of the route of a listener whose connection manager
// (changed by hcm, when set) runs filters in front of the router, as the real
// translator emits them; each of amesh's must validate against the plugin's schema.
func routePlugins(t *testing.T, hcm func(*hcmv3.HttpConnectionManager), filters ...*hcmv3.HttpFilter) map[string]json.RawMessage {
	t.Helper()
	f := editHCM(xdstest.HCMWithFilters("r80", filters...), hcm)
	res := resourcesOf(
		xdstest.ListenerWithFilters("0.0.0.0_80", 80, f),
		routeConfig("r80", &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("r", prefixMatch("/"), "c", nil),
		}}),
		xdstest.EDSCluster("c"), xdstest.Endpoints("c"),
	)
	for k, v := range expected(t, res) {
		if !strings.HasPrefix(k, "/routes/") {
			continue
		}
		var r struct {
			Name    string                     `json:"name"`
			Plugins map[string]json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			t.Fatal(err)
		}
		if r.Name != "r" {
			continue
		}
		for name, c := range r.Plugins {
			if !strings.HasPrefix(name, "amesh-") {
				continue
			}
			if err := schema.ValidatePlugin(name, c); err != nil {
				t.Fatalf("%s config does not validate against the plugin's schema: %v\n%s", name, err, c)
			}
		}
		return r.Plugins
	}
	t.Fatal("no route r in the translation")
	return nil
}

// editHCM changes the connection manager of filter f (nil edit: none).
func editHCM(f *listenerv3.Filter, edit func(*hcmv3.HttpConnectionManager)) *listenerv3.Filter {
	if edit == nil {
		return f
	}
	h := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
		panic(err)
	}
	edit(h)
	a, err := anypb.New(h)
	if err != nil {
		panic(err)
	}
	f.GetTypedConfig().Value = a.Value
	return f
}

func rbacHTTP(name string, rules *rbacv3.RBAC) *hcmv3.HttpFilter {
	return xdstest.HTTPFilter(name, &rbachttpv3.RBAC{Rules: rules})
}

// Rule builders, in the shapes istiod emits.
func policy(perms []*rbacv3.Permission, princs ...*rbacv3.Principal) *rbacv3.Policy {
	if len(princs) == 0 {
		princs = []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}
	}
	return &rbacv3.Policy{Permissions: perms, Principals: princs}
}

func permAny() *rbacv3.Permission { return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}} }

func sm(kind, v string, icase bool) *matcherv3.StringMatcher {
	m := &matcherv3.StringMatcher{IgnoreCase: icase}
	switch kind {
	case "exact":
		m.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: v}
	case "prefix":
		m.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: v}
	case "suffix":
		m.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: v}
	case "contains":
		m.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: v}
	case "regex":
		m.MatchPattern = &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: v}}
	}
	return m
}

func permPath(kind, v string, icase bool) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: sm(kind, v, icase)}}}}
}

func permHeader(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

func hdrStr(name, kind, v string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm(kind, v, false)}}
}

func cidr(a string, n uint32) *corev3.CidrRange {
	return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
}

func metadataPerm() *rbacv3.Permission {
	//lint:ignore SA1019 deprecated fields are still valid xDS: the translation must keep their meaning
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: "istio_authn", Path: []*matcherv3.MetadataMatcher_PathSegment{{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "request.auth.principal"}}},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: sm("exact", "issuer/subject", false)}}}}}
}

func rules(action rbacv3.RBAC_Action, ps map[string]*rbacv3.Policy) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: action, Policies: ps}
}

func normalize(h *hcmv3.HttpConnectionManager) { h.NormalizePath = wrapperspb.Bool(true) }

// amesh.rbac in real nginx decides each request as Envoy's RBAC filter documents:
// url_path (after the connection manager's normalisation, query stripped) with every
// string matcher kind and ignore_case, :method, header matchers of every kind on
// repeated headers (joined with ","), invert_match and missing headers, destination
// ports, direct_remote_ip / remote_ip / source_ip over IPv4 and IPv6 (PROXY protocol
// giving the source), nested and/or/not, several filters in order, and conditions
// amesh cannot evaluate decided as Envoy's worst case under ALLOW, DENY and not_rule.
// Each config is what the real translator emits, validated against the plugin's schema.
func TestRBACLuaDecisions(t *testing.T) {
	n := startRBACNginx(t)
	allow, deny := true, false
	h := func(kv ...string) [][2]string {
		var out [][2]string
		for i := 0; i+1 < len(kv); i += 2 {
			out = append(out, [2]string{kv[i], kv[i+1]})
		}
		return out
	}
	istioPaths := func(ps ...*rbacv3.Permission) []*rbacv3.Permission {
		return []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: ps}}},
		}}}}}
	}
	rangeH := &routev3.HeaderMatcher{Name: "x-range", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 10, End: 20}}}
	presentH := &routev3.HeaderMatcher{Name: "x-present", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}
	absentH := &routev3.HeaderMatcher{Name: "x-absent", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}
	invertH := hdrStr("x-inv", "exact", "bad")
	invertH.InvertMatch = true
	missingEmptyH := hdrStr("x-empty", "exact", "")
	missingEmptyH.TreatMissingHeaderAsEmpty = true
	notPerm := func(p *rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
	}
	authenticated := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: sm("exact", "spiffe://cluster.local/ns/default/sa/sleep", false)}}}

	cases := []struct {
		name    string
		hcm     func(*hcmv3.HttpConnectionManager)
		filters []*hcmv3.HttpFilter
		reqs    []rbacReq
	}{
		{"deny-prefix-normalized", normalize, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"ns[default]-policy[deny-admin]-rule[0]": policy(istioPaths(permPath("prefix", "/admin", false)))}))}, []rbacReq{
			{target: "/admin/x", allow: deny},
			{target: "/admin?x=1", allow: deny},
			{target: "/a", allow: allow},
			{target: "/ADMIN", allow: allow},
			{target: "/public/../admin/x", allow: deny},   // normalize_path removes dot segments
			{target: "/./admin", allow: deny},             // likewise
			{target: "//admin", allow: allow},             // no merge_slashes: "//admin" has no prefix "/admin"
			{target: "/%61dmin", allow: deny},             // percent-encoding: not normalised by the plugin, DENY's worst case
			{target: "/public?next=/admin", allow: allow}, // the query is not the path
		}},
		{"deny-prefix-merged", func(h *hcmv3.HttpConnectionManager) { normalize(h); h.MergeSlashes = true }, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"p": policy(istioPaths(permPath("prefix", "/admin", false)))}))}, []rbacReq{
			{target: "//admin", allow: deny},
			{target: "/x//../admin", allow: allow}, // normalised first ("/x/admin"), then merged
			{target: "/b", allow: allow},
		}},
		{"deny-prefix-raw", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"p": policy(istioPaths(permPath("prefix", "/admin", false)))}))}, []rbacReq{
			{target: "/%61dmin", allow: allow},         // without normalisation Envoy matches the raw path
			{target: "/public/../admin", allow: allow}, // likewise
			{target: "/admin", allow: deny},
		}},
		{"allow-string-kinds", normalize, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": policy(istioPaths(permPath("exact", "/Health", true), permPath("suffix", ".css", false), permPath("contains", "/v1/", false), permPath("regex", "/items/[0-9]+", false)))}))}, []rbacReq{
			{target: "/health", allow: allow},
			{target: "/HEALTH?x", allow: allow},
			{target: "/healthz", allow: deny},
			{target: "/style.css", allow: allow},
			{target: "/style.CSS", allow: deny},
			{target: "/api/v1/x", allow: allow},
			{target: "/items/42", allow: allow},
			{target: "/items/42/x", allow: deny}, // safe_regex matches the whole value
			{target: "/items/4a", allow: deny},
			{target: "/other", allow: deny},
		}},
		{"allow-methods", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": policy(istioPaths(permHeader(hdrStr(":method", "exact", "GET"))))}))}, []rbacReq{
			{target: "/", allow: allow},
			{method: "POST", target: "/", allow: deny},
			{method: "DELETE", target: "/", allow: deny},
		}},
		{"allow-headers", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"exact":    policy([]*rbacv3.Permission{permHeader(hdrStr("x-exact", "exact", "a,b"))}),
			"prefix":   policy([]*rbacv3.Permission{permHeader(hdrStr("x-prefix", "prefix", "ab"))}),
			"suffix":   policy([]*rbacv3.Permission{permHeader(hdrStr("x-suffix", "suffix", "yz"))}),
			"contains": policy([]*rbacv3.Permission{permHeader(hdrStr("x-contains", "contains", "mid"))}),
			"regex":    policy([]*rbacv3.Permission{permHeader(hdrStr("x-re", "regex", "v[0-9]+"))}),
			"range":    policy([]*rbacv3.Permission{permHeader(rangeH)}),
			"present":  policy([]*rbacv3.Permission{permHeader(presentH)}),
			"invert":   policy([]*rbacv3.Permission{permHeader(invertH)}),
			"path":     policy([]*rbacv3.Permission{permHeader(hdrStr(":path", "exact", "/p?k=v"))}),
			"host":     policy([]*rbacv3.Permission{permHeader(hdrStr(":authority", "exact", "other"))}),
		}))}, []rbacReq{
			{target: "/", allow: deny},
			{target: "/", headers: h("X-Exact", "a", "x-exact", "b"), allow: allow}, // repeated: "a,b"
			{target: "/", headers: h("x-exact", "a"), allow: deny},
			{target: "/", headers: h("x-exact", "a,b"), allow: allow},
			{target: "/", headers: h("x-prefix", "abc"), allow: allow},
			{target: "/", headers: h("x-prefix", "xab"), allow: deny},
			{target: "/", headers: h("x-suffix", "xyz"), allow: allow},
			{target: "/", headers: h("x-contains", "amidst"), allow: allow},
			{target: "/", headers: h("x-re", "v12"), allow: allow},
			{target: "/", headers: h("x-re", "v12x"), allow: deny},
			{target: "/", headers: h("x-range", "15"), allow: allow},
			{target: "/", headers: h("x-range", "-5"), allow: deny},
			{target: "/", headers: h("x-range", "20"), allow: deny}, // the range's end is exclusive
			{target: "/", headers: h("x-range", "1x"), allow: deny},
			{target: "/", headers: h("x-present", ""), allow: allow},
			{target: "/", headers: h("x-inv", "good"), allow: allow},
			{target: "/", headers: h("x-inv", "bad"), allow: deny},
			{target: "/p?k=v", allow: allow},
			{target: "/p?k=w", allow: deny},
		}},
		{"deny-missing-headers", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"absent": policy([]*rbacv3.Permission{permHeader(absentH)}),
			"empty":  policy([]*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{permHeader(missingEmptyH), permHeader(presentH)}}}}}),
		}))}, []rbacReq{
			{target: "/", allow: deny},                                                // x-absent is missing: present_match false matches
			{target: "/", headers: h("x-absent", "1"), allow: allow},                  // present
			{target: "/", headers: h("x-absent", "1", "x-present", "1"), allow: deny}, // x-empty missing, treated as ""
			{target: "/", headers: h("x-absent", "1", "x-present", "1", "x-empty", "z"), allow: allow},
		}},
		// RE2 reads bytes that are not UTF-8 as U+FFFD and "a.*" matches "a\xff"; PCRE
		// in UTF mode refuses such a subject, and the plugin takes DENY's worst case.
		{"regex-not-utf8", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"p": policy([]*rbacv3.Permission{permHeader(hdrStr("x-any", "regex", "a.*"))}),
		}))}, []rbacReq{
			{target: "/", headers: h("x-any", "abc"), allow: deny},
			{target: "/", headers: h("x-any", "b"), allow: allow},
			{target: "/", headers: h("x-any", "a\xff"), allow: deny},
			{target: "/", headers: h("x-any", "b\xff"), allow: deny}, // not a match in RE2: what amesh denies more
		}},
		{"ports", nil, nil, nil}, // filled in below: the ports are the test's
		{"ips-v4", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("127.0.0.0", 30)}}),
		}))}, []rbacReq{
			{target: "/", from: "127.0.0.2", allow: allow},
			{target: "/", from: "127.0.0.3", allow: allow},
			{target: "/", from: "127.0.0.5", allow: deny},
			{target: "/", from: "::1", allow: deny}, // another family
		}},
		{"ips-v6", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("::1", 128)}}),
		}))}, []rbacReq{
			{target: "/", from: "::1", allow: allow},
			{target: "/", from: "127.0.0.1", allow: deny},
		}},
		{"ips-proxy-source", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			//lint:ignore SA1019 deprecated fields are still valid xDS: the translation must keep their meaning
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("2001:db8::", 32)}}),
		}))}, []rbacReq{
			{target: "/", proxy: "2001:db8:0:1::5", allow: allow},
			{target: "/", proxy: "2001:db9::5", allow: deny},
			{target: "/", proxy: "2001:db8::", allow: allow},
			{target: "/", proxy: "2001:0db8:ffff:ffff:ffff:ffff:ffff:ffff", allow: allow},
			{target: "/", proxy: "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", allow: deny},
			{target: "/", proxy: "10.1.2.3", allow: deny},
			{target: "/", allow: deny},
		}},
		{"ips-v6-odd-prefix", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			//lint:ignore SA1019 deprecated fields are still valid xDS: the translation must keep their meaning
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("2001:db8:8000::", 33)}}),
		}))}, []rbacReq{
			{target: "/", proxy: "2001:db8:8000::1", allow: deny},
			{target: "/", proxy: "2001:db8:ffff::1", allow: deny},
			{target: "/", proxy: "2001:db8:7fff::1", allow: allow},
			{target: "/", proxy: "10.0.0.1", allow: allow},
		}},
		{"ips-proxy-direct", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("2001:db8::", 32)}}),
		}))}, []rbacReq{
			{target: "/", proxy: "2001:db8::5", allow: deny}, // the physical peer is 127.0.0.1
		}},
		{"ips-remote", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.1.0.0", 16)}}),
		}))}, []rbacReq{
			{target: "/", proxy: "10.1.2.3", allow: allow},
			{target: "/", proxy: "10.2.2.3", allow: deny},
			// use_remote_address false: Envoy's remote address is x-forwarded-for's
			// last entry when it is an IP address, else the connection's.
			{target: "/", proxy: "10.2.2.3", headers: h("x-forwarded-for", "10.1.9.9"), allow: allow},
			{target: "/", proxy: "10.1.2.3", headers: h("x-forwarded-for", "10.2.0.1"), allow: deny},
			{target: "/", proxy: "10.2.2.3", headers: h("x-forwarded-for", "10.2.0.1, 10.1.9.9"), allow: allow},
			{target: "/", proxy: "10.2.2.3", headers: h("x-forwarded-for", "10.2.0.1", "X-Forwarded-For", " 10.1.9.9 "), allow: allow},
			{target: "/", proxy: "10.1.2.3", headers: h("x-forwarded-for", "unknown"), allow: allow},
			{target: "/", proxy: "10.2.2.3", headers: h("x-forwarded-for", "10.1.9.9,"), allow: deny},
			{target: "/", proxy: "10.2.2.3", headers: h("x-forwarded-for", "10.1.9.9, 10.2.0.1"), allow: deny},
		}},
		{"unknown-allow", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
			"jwt":     policy([]*rbacv3.Permission{metadataPerm()}),
			"not-jwt": policy([]*rbacv3.Permission{notPerm(metadataPerm())}),
			"mtls":    policy([]*rbacv3.Permission{permAny()}, authenticated),
			"path":    policy([]*rbacv3.Permission{permPath("exact", "/open", false)}),
		}))}, []rbacReq{
			{target: "/", allow: deny}, // neither JWT form nor a plaintext peer's identity may allow
			{target: "/open", allow: allow},
		}},
		{"unknown-deny", nil, []*hcmv3.HttpFilter{rbacHTTP("envoy.filters.http.rbac", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
			"not-jwt-on-admin": policy([]*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				permPath("prefix", "/admin", false), notPerm(metadataPerm())}}}}}),
			"not-mtls": policy([]*rbacv3.Permission{permPath("prefix", "/mtls", false)}, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: authenticated}}),
		}))}, []rbacReq{
			{target: "/admin", allow: deny}, // the JWT may be missing: DENY's worst case
			{target: "/mtls", allow: deny},  // a plaintext peer is never authenticated: exact
			{target: "/other", allow: allow},
		}},
		{"order", nil, []*hcmv3.HttpFilter{
			rbacHTTP("istio-deny", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{"p": policy([]*rbacv3.Permission{permPath("exact", "/deny", false)})})),
			xdstest.HTTPFilter("istio-allow", &rbachttpv3.RBAC{Rules: rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"p": policy([]*rbacv3.Permission{permPath("prefix", "/d", false)})}),
				// Shadow rules are only reported: this one would deny everything.
				ShadowRules: rules(rbacv3.RBAC_ALLOW, nil)}),
			rbacHTTP("istio-log", rules(rbacv3.RBAC_LOG, map[string]*rbacv3.Policy{"p": policy([]*rbacv3.Permission{permAny()})})),
		}, []rbacReq{
			{target: "/deny", allow: deny, filter: "istio-deny"},
			{target: "/dok", allow: allow},
			{target: "/other", allow: deny, filter: "istio-allow"},
		}},
	}
	for i := range cases {
		if cases[i].name != "ports" {
			continue
		}
		cases[i].filters = []*hcmv3.HttpFilter{
			rbacHTTP("allow-p1", rules(rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{"p": policy([]*rbacv3.Permission{{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: uint32(n.p1)}},
				{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: int32(n.p2), End: int32(n.p2) + 1}}},
			}}}}})})),
			rbacHTTP("deny-range", rules(rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{"p": policy([]*rbacv3.Permission{
				{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
					{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: int32(n.p2), End: int32(n.p2) + 1}}},
					permPath("prefix", "/no", false),
				}}}},
			})})),
		}
		cases[i].reqs = []rbacReq{
			{target: "/", allow: allow},
			{target: "/", port2: true, allow: allow},
			{target: "/no", port2: true, allow: deny, filter: "deny-range"},
			{target: "/no", allow: allow},
			{target: "/", proxy: "10.0.0.1", allow: deny, filter: "allow-p1"}, // a third port
		}
	}
	// What istiod's policies become, translated (test/istiod keeps the goldens up to
	// date), with the port variable of this nginx, as case name.
	istiodCase := func(golden, name string) {
		b, err := os.ReadFile(filepath.Join("testdata", golden))
		if err != nil {
			t.Fatal(err)
		}
		var istiod map[string]any
		if err := json.Unmarshal(b, &istiod); err != nil {
			t.Fatal(err)
		}
		istiod["port_var"] = "server_port"
		conf, _ := json.Marshal(istiod)
		if err := schema.ValidatePlugin("amesh-rbac", conf); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n.cases, name+".json"), conf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// An ALLOW AuthorizationPolicy (TestAuthorizationPolicyRules).
	istiodCase("istiod-rbac-allow.json", "istiod-allow")
	// An AUDIT policy (paths /audited*) next to an ALLOW one (paths /public*,
	// /audited/ok) (TestAuthorizationPolicyAudit): istiod's LOG filter never denies, so
	// the config holds the ALLOW filter only and an audited request is decided by it
	// alone, allowed or denied as without the AUDIT policy.
	istiodCase("istiod-rbac-audit.json", "istiod-audit")
	blue := h("x-team", "blue-1")
	cases = append(cases, struct {
		name    string
		hcm     func(*hcmv3.HttpConnectionManager)
		filters []*hcmv3.HttpFilter
		reqs    []rbacReq
	}{"istiod-allow", nil, nil, []rbacReq{
		{target: "/public", headers: blue, allow: allow}, // rule 1: GET, not /private*, from 127/8, x-team blue*
		{method: "HEAD", target: "/public", headers: blue, allow: allow},
		{target: "/public", headers: h("x-team", "red"), allow: deny},
		{method: "POST", target: "/public", headers: blue, allow: deny},
		{target: "/private/x", headers: blue, allow: deny},
		{target: "/./private/x", headers: blue, allow: deny},
		{target: "/%70rivate", headers: blue, allow: deny},
		{target: "/public", headers: blue, from: "127.0.0.9", allow: deny}, // notRemoteIpBlocks
		{target: "/public", headers: blue, from: "::1", allow: deny},       // not in 2001:db8::/32
		{target: "/public", headers: h("x-team", "blue", "x-forwarded-for", "10.0.0.1"), allow: allow},
		{target: "/public", headers: h("x-team", "blue", "x-forwarded-for", "127.0.0.9"), allow: deny}, // the remote address, from x-forwarded-for
		{target: "/api/x", allow: deny},                                                                // rule 0 needs the mTLS peer sleep
		{target: "/health", allow: deny},                                                               // rule 2 needs a JWT claim
	}}, struct {
		name    string
		hcm     func(*hcmv3.HttpConnectionManager)
		filters []*hcmv3.HttpFilter
		reqs    []rbacReq
	}{"istiod-audit", nil, nil, []rbacReq{
		{target: "/audited/ok", allow: allow}, // audited and allowed
		{target: "/audited/no", allow: deny, filter: "envoy.filters.http.rbac"},
		{target: "/audited", allow: deny},
		{target: "/public/x", allow: allow}, // allowed, not audited
		{target: "/other", allow: deny},
	}})
	for _, c := range cases {
		if c.filters == nil {
			continue
		}
		conf := rbacConf(t, c.hcm, c.filters...)
		if err := os.WriteFile(filepath.Join(n.cases, c.name+".json"), conf, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %s", c.name, conf)
	}
	for _, c := range cases {
		for _, r := range c.reqs {
			code, body, filter, err := n.send(c.name, r)
			if err != nil {
				t.Errorf("%s: %s %v: %v", c.name, r.target, r.headers, err)
				continue
			}
			want := 200
			if !r.allow {
				want = 403
			}
			if code != want || (want == 403 && body != "RBAC: access denied") || (want == 200 && r.method != "HEAD" && body != "allowed") {
				t.Errorf("%s: %s headers %v from %q proxy %q port2 %t: %d %q, want %d", c.name, r.target, r.headers, r.from, r.proxy, r.port2, code, body, want)
			}
			if r.filter != "" && filter != r.filter {
				t.Errorf("%s: %s denied by %q, want %q", c.name, r.target, filter, r.filter)
			}
		}
	}
}
