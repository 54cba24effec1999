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
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/translate"
)

// extAuthzNginxConf is stock nginx running amesh.rbac's steps, ext_authz's among them
// (through extauthzcheck.lua), in front of a handler that echoes the request's headers.
const extAuthzNginxConf = stockLuaNginx + `
    server {
        listen 127.0.0.1:{{.Port}};
        location / {
            rewrite_by_lua_block { require("extauthzcheck").run("{{.Cases}}") }
            content_by_lua_block { require("extauthzcheck").echo() }
        }
    }
}
`

// authzCall is one request the authorization server received.
type authzCall struct {
	Method, Target string
	Header         http.Header
	Host           string
	ContentLength  int64
}

// authzServer is an HTTP authorization service: the request header x-ext-authz says
// how it answers (allow, deny, unauthorized, error, slow).
type authzServer struct {
	mu    sync.Mutex
	calls []authzCall
	addr  *net.TCPAddr
}

func startAuthzServer(t *testing.T) *authzServer {
	t.Helper()
	s := &authzServer{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr = ln.Addr().(*net.TCPAddr)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls = append(s.calls, authzCall{Method: r.Method, Target: r.RequestURI, Header: r.Header.Clone(), Host: r.Host, ContentLength: r.ContentLength})
		s.mu.Unlock()
		h := w.Header()
		switch r.Header.Get("x-ext-authz") {
		case "allow":
			h.Set("x-ext-authz-check-result", "allowed")
			h.Set("x-auth-user", "alice")
			h.Set("x-not-listed", "no")
			w.WriteHeader(200)
			io.WriteString(w, "ignored")
		case "deny":
			h.Set("x-ext-authz-check-result", "denied")
			h.Set("x-secret", "not for the client")
			h.Set("content-type", "text/html")
			w.WriteHeader(403)
			io.WriteString(w, "denied by ext authz")
		case "unauthorized":
			h.Set("www-authenticate", `Bearer realm="mesh"`)
			w.WriteHeader(401)
		case "error":
			w.WriteHeader(500)
			io.WriteString(w, "authz broke")
		case "slow":
			time.Sleep(1500 * time.Millisecond)
			w.WriteHeader(200)
		default:
			w.WriteHeader(403)
		}
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s
}

func (s *authzServer) taken() []authzCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls
	s.calls = nil
	return c
}

// istiodExtAuthzConfs translates the productpage sidecar's inbound listener istiod
// sends for CUSTOM, DENY and ALLOW policies (testdata/istiod/extauthz) and returns
// the amesh-rbac config of an inbound route, validated against the plugin's schema,
// and the authorization service's upstream id.
func istiodExtAuthzConfs(t *testing.T) (rbac map[string]any, upID string) {
	t.Helper()
	return inboundRBACConf(t, "extauthz", nil)
}

// inboundRBACConf translates productpage's inbound listener of the capture
// testdata/istiod/<capture> (edited by edit when set) with the authorization service's
// cluster and endpoints, and returns the amesh-rbac config of an inbound route for
// 19080, validated against the plugin's schema, and the upstream id its ext_authz step
// names.
func inboundRBACConf(t *testing.T, capture string, edit func(*listenerv3.Listener)) (rbac map[string]any, upID string) {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "istiod", capture)
	read := func(name string, m proto.Message) proto.Message {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := protojson.Unmarshal(b, m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	const cluster = "outbound_8000__ext-authz.default.svc.cluster.local.json"
	l := read("lds/productpage-virtualInbound.json", &listenerv3.Listener{}).(*listenerv3.Listener)
	if edit != nil {
		edit(l)
	}
	// Inbound routes need the original destination's port; the default variable's.
	objs := expectedWith(t, resourcesOf(
		l,
		read("cds/"+cluster, &clusterv3.Cluster{}),
		read("eds/"+cluster, &endpointv3.ClusterLoadAssignment{}),
	), translate.Options{})
	keys := make([]string, 0, len(objs))
	for k := range objs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !strings.HasPrefix(k, "/routes/in-19080.") || strings.HasSuffix(k, ".nr") {
			continue
		}
		var r struct {
			Plugins map[string]json.RawMessage `json:"plugins"`
		}
		if err := json.Unmarshal([]byte(objs[k]), &r); err != nil {
			t.Fatal(err)
		}
		if err := schema.ValidatePlugin("amesh-rbac", r.Plugins["amesh-rbac"]); err != nil {
			t.Fatalf("%s: amesh-rbac does not validate: %v\n%s", k, err, r.Plugins["amesh-rbac"])
		}
		if _, ok := r.Plugins["amesh-ext-authz"]; ok {
			t.Fatalf("%s has a plugin of its own for ext_authz", k)
		}
		if err := json.Unmarshal(r.Plugins["amesh-rbac"], &rbac); err != nil {
			t.Fatal(err)
		}
		upID, _ = checkOf(rbac)["upstream_id"].(string)
		if upID == "" || objs["/upstreams/"+upID] == "" {
			t.Fatalf("the ext_authz step names no upstream the translation has: %v", rbac)
		}
		return rbac, upID
	}
	t.Fatalf("no inbound route for 19080 among %v", keys)
	return nil, ""
}

// checkOf returns the ext_authz config of the EXT_AUTHZ step of an amesh-rbac config.
func checkOf(rbac map[string]any) map[string]any {
	fs, _ := rbac["filters"].([]any)
	for _, f := range fs {
		if m, _ := f.(map[string]any); m["action"] == "EXT_AUTHZ" {
			c, _ := m["ext_authz"].(map[string]any)
			return c
		}
	}
	return nil
}

type extAuthzNginx struct {
	port  int
	cases string
}

// writeCase writes case c: the amesh-rbac config with its ext_authz step edited by
// edit (nil: as translated), and the authorization service's upstream with the one
// endpoint addr (the Go server's, or a closed port).
func (n *extAuthzNginx) writeCase(t *testing.T, c string, rbac map[string]any, upID string, addr *net.TCPAddr, edit func(chk map[string]any)) {
	t.Helper()
	b, _ := json.Marshal(rbac)
	var conf map[string]any
	json.Unmarshal(b, &conf)
	if edit != nil {
		edit(checkOf(conf))
	}
	doc := map[string]any{
		"rbac": conf,
		"upstreams": map[string]any{upID: map[string]any{
			"nodes":   []any{map[string]any{"host": addr.IP.String(), "port": addr.Port, "weight": 1}},
			"timeout": map[string]any{"connect": 1, "send": 10, "read": 10},
		}},
	}
	out, _ := json.Marshal(doc)
	if err := os.WriteFile(filepath.Join(n.cases, c+".json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
}

// extAuthzResp is what the client got.
type extAuthzResp struct {
	status int
	header http.Header
	body   string
}

func (n *extAuthzNginx) send(t *testing.T, c, method, target string, headers ...[2]string) extAuthzResp {
	t.Helper()
	conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: productpage:9080\r\nX-Case: %s\r\n", method, target, c)
	for _, h := range headers {
		fmt.Fprintf(&b, "%s: %s\r\n", h[0], h[1])
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return extAuthzResp{resp.StatusCode, resp.Header, string(body)}
}

// echoed decodes the headers the application saw.
func echoed(t *testing.T, r extAuthzResp) map[string]any {
	t.Helper()
	var h map[string]any
	if err := json.Unmarshal([]byte(r.body), &h); err != nil {
		t.Fatalf("the application's answer is not its headers: %d %q", r.status, r.body)
	}
	return h
}

// istiod's CUSTOM policy (paths /admin/* and /login, POST /api/*; the http-authz
// provider with pathPrefix /check, statusOnError 503, includeRequestHeadersInCheck
// x-ext-authz and x-user-*, includeAdditionalHeadersInCheck, headersToUpstreamOnAllow,
// headersToDownstreamOnDeny), its DENY (/debug) and ALLOW (GET, POST) policies, as
// amesh translates them, run in stock nginx against a real HTTP authorization server,
// with Envoy's outcomes.
func TestExtAuthzLua(t *testing.T) {
	requireNginx(t)
	rbac, upID := istiodExtAuthzConfs(t)
	srv := startAuthzServer(t)
	closed := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: freePort(t)}
	prefix := t.TempDir()
	n := &extAuthzNginx{port: freePort(t), cases: filepath.Join(prefix, "cases")}
	if err := os.Mkdir(n.cases, 0o755); err != nil {
		t.Fatal(err)
	}
	n.writeCase(t, "istiod", rbac, upID, srv.addr, nil)
	n.writeCase(t, "down", rbac, upID, closed, nil)
	n.writeCase(t, "down-open", rbac, upID, closed, func(c map[string]any) { c["failure_mode_allow"] = true })
	n.writeCase(t, "short", rbac, upID, srv.addr, func(c map[string]any) { c["timeout"] = 0.3 })
	n.writeCase(t, "short-open", rbac, upID, srv.addr, func(c map[string]any) {
		c["timeout"], c["failure_mode_allow"], c["failure_mode_allow_header_add"] = 0.3, true, true
	})
	startStockNginx(t, prefix, extAuthzNginxConf, map[string]any{"Port": n.port, "Cases": n.cases}, n.port)

	t.Run("allowed", func(t *testing.T) {
		r := n.send(t, "istiod", "GET", "/admin/users?id=7",
			[2]string{"x-ext-authz", "allow"}, [2]string{"X-User-Id", "7"}, [2]string{"Authorization", "Bearer t0k"},
			[2]string{"x-other", "not sent"}, [2]string{"x-auth-user", "mallory"})
		if r.status != 200 {
			t.Fatalf("allowed request: %d %q", r.status, r.body)
		}
		h := echoed(t, r)
		if h["x-auth-user"] != "alice" || h["x-ext-authz-check-result"] != "allowed" {
			t.Errorf("the application did not get the server's allowed upstream headers: %v", h)
		}
		if _, ok := h["x-not-listed"]; ok {
			t.Errorf("a header not in headersToUpstreamOnAllow reached the application: %v", h)
		}
		calls := srv.taken()
		if len(calls) != 1 {
			t.Fatalf("the server got %d calls, want 1", len(calls))
		}
		c := calls[0]
		if c.Method != "GET" || c.Target != "/check/admin/users?id=7" || c.Host != "productpage:9080" || c.ContentLength != 0 {
			t.Errorf("authorization request %s %s host %q length %d, want GET /check/admin/users?id=7 to productpage:9080 without a body", c.Method, c.Target, c.Host, c.ContentLength)
		}
		for k, v := range map[string]string{"X-Ext-Authz": "allow", "X-User-Id": "7", "Authorization": "Bearer t0k", "X-Authz-From": "amesh-test", "Content-Length": "0"} {
			if got := c.Header.Get(k); got != v && !(k == "Content-Length" && c.ContentLength == 0) {
				t.Errorf("authorization request header %s = %q, want %q (%v)", k, got, v, c.Header)
			}
		}
		for _, k := range []string{"X-Other", "X-Case", "X-Auth-User"} {
			if c.Header.Get(k) != "" {
				t.Errorf("authorization request has %s, which includeRequestHeadersInCheck does not name", k)
			}
		}
	})
	t.Run("POST under CUSTOM", func(t *testing.T) {
		if r := n.send(t, "istiod", "POST", "/api/orders", [2]string{"x-ext-authz", "allow"}); r.status != 200 {
			t.Errorf("POST /api/orders: %d %q", r.status, r.body)
		}
		if calls := srv.taken(); len(calls) != 1 || calls[0].Method != "POST" || calls[0].Target != "/check/api/orders" {
			t.Errorf("POST /api/orders: calls %+v, want one POST /check/api/orders", calls)
		}
	})
	t.Run("denied", func(t *testing.T) {
		r := n.send(t, "istiod", "GET", "/login", [2]string{"x-ext-authz", "deny"})
		if r.status != 403 || r.body != "denied by ext authz" {
			t.Errorf("denied request: %d %q, want the server's 403 and body", r.status, r.body)
		}
		if r.header.Get("x-ext-authz-check-result") != "denied" {
			t.Errorf("headersToDownstreamOnDeny not passed on: %v", r.header)
		}
		if r.header.Get("x-secret") != "" || r.header.Get("content-type") != "text/plain" {
			t.Errorf("the client got headers headersToDownstreamOnDeny does not name: %v", r.header)
		}
		if len(srv.taken()) != 1 {
			t.Error("the server was not asked once")
		}
		r = n.send(t, "istiod", "GET", "/login", [2]string{"x-ext-authz", "unauthorized"})
		if r.status != 401 || r.header.Get("www-authenticate") != `Bearer realm="mesh"` {
			t.Errorf("401 with WWW-Authenticate: %d %v", r.status, r.header)
		}
		srv.taken()
	})
	t.Run("not under CUSTOM", func(t *testing.T) {
		for _, tc := range [][2]string{{"GET", "/productpage"}, {"GET", "/api/orders"}, {"GET", "/adminx"}} {
			if r := n.send(t, "istiod", tc[0], tc[1], [2]string{"x-ext-authz", "deny"}); r.status != 200 {
				t.Errorf("%s %s: %d %q, want the application", tc[0], tc[1], r.status, r.body)
			}
		}
		if calls := srv.taken(); len(calls) != 0 {
			t.Errorf("the server was asked about requests the CUSTOM rules do not match: %+v", calls)
		}
	})
	t.Run("normalised path", func(t *testing.T) {
		// Envoy normalises the path (normalize_path) before the RBAC shadow rules.
		if r := n.send(t, "istiod", "GET", "/x/../admin/a", [2]string{"x-ext-authz", "deny"}); r.status != 403 {
			t.Errorf("/x/../admin/a: %d, want the server's 403", r.status)
		}
		if calls := srv.taken(); len(calls) != 1 || calls[0].Target != "/check/admin/a" {
			t.Errorf("calls %+v, want one for /check/admin/a", calls)
		}
	})
	t.Run("errors", func(t *testing.T) {
		for _, tc := range []struct {
			c, mode string
			status  int
			calls   int
		}{
			{"istiod", "error", 503, 1},    // a 5xx is an error: statusOnError
			{"down", "allow", 503, 0},      // connection refused
			{"down-open", "allow", 200, 0}, // failOpen
			{"short", "slow", 503, 1},      // timeout
			{"short-open", "slow", 200, 1},
		} {
			r := n.send(t, tc.c, "GET", "/admin/x", [2]string{"x-ext-authz", tc.mode})
			if r.status != tc.status {
				t.Errorf("%s %s: %d %q, want %d", tc.c, tc.mode, r.status, r.body, tc.status)
			}
			if tc.status == 503 && r.body != "" {
				t.Errorf("%s %s: body %q, want none", tc.c, tc.mode, r.body)
			}
			if tc.c == "short-open" && echoed(t, r)["x-envoy-auth-failure-mode-allowed"] != "true" {
				t.Errorf("failure_mode_allow_header_add: %q", r.body)
			}
			if calls := srv.taken(); len(calls) != tc.calls {
				t.Errorf("%s %s: %d calls, want %d", tc.c, tc.mode, len(calls), tc.calls)
			}
		}
	})
	t.Run("order with DENY and ALLOW", func(t *testing.T) {
		// CUSTOM comes first: its denial beats the ALLOW policy that allows GET.
		if r := n.send(t, "istiod", "GET", "/admin/x", [2]string{"x-ext-authz", "deny"}); r.status != 403 || r.body != "denied by ext authz" {
			t.Errorf("CUSTOM's denial of an ALLOWed request: %d %q", r.status, r.body)
		}
		// An allowed CUSTOM check does not lift ALLOW's verdict: PUT is not allowed, and
		// the server was asked first.
		if r := n.send(t, "istiod", "PUT", "/admin/x", [2]string{"x-ext-authz", "allow"}); r.status != 403 || r.body != "RBAC: access denied" {
			t.Errorf("PUT /admin/x: %d %q, want RBAC's 403", r.status, r.body)
		}
		if calls := srv.taken(); len(calls) != 2 || calls[1].Method != "PUT" {
			t.Errorf("calls %+v, want the server asked about both", calls)
		}
		// DENY's path is not under CUSTOM: RBAC answers without the server.
		if r := n.send(t, "istiod", "GET", "/debug", [2]string{"x-ext-authz", "allow"}); r.status != 403 || r.body != "RBAC: access denied" {
			t.Errorf("GET /debug: %d %q, want RBAC's 403", r.status, r.body)
		}
		if calls := srv.taken(); len(calls) != 0 {
			t.Errorf("the server was asked about /debug: %+v", calls)
		}
	})
}
