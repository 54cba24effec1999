package plugins

import (
	"os"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"

	_ "github.com/amesh-dev/amesh/internal/xds/resource" // registers istiod's extension types
)

// loadRDS reads a route configuration istiod sent (testdata/istiod-rds-9080.json is
// ../shared/testdata/istiod/sotw/rds/9080.json, for the VirtualServices in
// ../shared/testdata/istiod/config).
func loadRDS(t testing.TB) *routev3.RouteConfiguration {
	t.Helper()
	b, err := os.ReadFile("testdata/istiod-rds-9080.json")
	if err != nil {
		t.Fatal(err)
	}
	rc := &routev3.RouteConfiguration{}
	if err := protojson.Unmarshal(b, rc); err != nil {
		t.Fatal(err)
	}
	return rc
}

func mirrorTargets(cluster string) (string, bool) {
	switch cluster {
	case "outbound|9080|v1|ratings.default.svc.cluster.local":
		return "http://10.0.0.7:9080", true
	}
	return "", false
}

// TestIstiodRoutes translates every route istiod sent for the bookinfo-style config and
// checks the exact plugins.
func TestIstiodRoutes(t *testing.T) {
	want := map[string]struct {
		plugins  string
		terminal bool
	}{
		"productpage.default.svc.cluster.local:9080/default":         {},
		"ratings.default.svc.cluster.local:9080/v2-by-header-prefix": {},
		"ratings.default.svc.cluster.local:9080/default":             {},
		"reviews.default.svc.cluster.local:9080/jason-v2-fault": {plugins: `{
			"fault-injection": {
				"delay": {"duration": 2, "percentage": 50},
				"abort": {"http_status": 503, "percentage": 10, "body": "fault filter abort",
				          "headers": {"content-type": "text/plain"}}}}`},
		"reviews.default.svc.cluster.local:9080/health-exact": {},
		"reviews.default.svc.cluster.local:9080/api-regex-rewrite": {plugins: `{
			"proxy-rewrite": {
				"uri": "/reviews/",
				"host": "reviews.internal",
				"headers": {
					"set": {"x-istio-set": "1", "x-dest": "v1"},
					"add": {"x-istio-add": "added"},
					"remove": ["x-remove-me"]}},
			"response-rewrite": {
				"headers": {"set": {"x-resp-set": "yes"}, "remove": ["x-internal-debug"]}}}`},
		"reviews.default.svc.cluster.local:9080/old-redirect": {terminal: true, plugins: `{
			"redirect": {"ret_code": 301, "uri": "$scheme://$http_host/reviews", "append_query_string": true}}`},
		"reviews.default.svc.cluster.local:9080/teapot": {terminal: true, plugins: `{
			"mocking": {"response_status": 418, "response_example": "I'm a teapot",
			            "content_type": "text/plain", "with_mock_header": false}}`},
		"reviews.default.svc.cluster.local:9080/default-weighted": {plugins: `{
			"proxy-mirror": {"host": "http://10.0.0.7:9080", "sample_ratio": 0.25},
			"cors": {
				"allow_origins": "**",
				"allow_methods": "GET,POST,PUT",
				"allow_headers": "x-custom-header,authorization",
				"expose_headers": "x-exposed",
				"max_age": 86400,
				"allow_credential": true,
				"_meta": {"filter": [
					["http_origin", "~~", "."],
					["OR", ["http_origin", "==", "https://example.com"],
					       ["http_origin", "~~", "\\A(?:https\\:\\/\\/(?:[^\\n])*\\.example\\.org)\\z"]],
					["OR", ["request_method", "~=", "OPTIONS"],
					       ["http_access_control_request_method", "~~", "."]]]}}}`},
		"allow_any/allow_any": {},
	}
	rc := loadRDS(t)
	seen := 0
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			key := vh.GetName() + "/" + r.GetName()
			w, ok := want[key]
			if !ok {
				t.Errorf("unexpected route %s", key)
				continue
			}
			seen++
			out := ForRoute(Input{RouteConfig: rc, VirtualHost: vh, Route: r, MirrorTarget: mirrorTargets})
			if out.FailClosed {
				t.Errorf("%s: fails closed: %v", key, out.Report)
			}
			if out.Terminal != w.terminal {
				t.Errorf("%s: Terminal = %v, want %v", key, out.Terminal, w.terminal)
			}
			t.Run(key, func(t *testing.T) { diffJSON(t, w.plugins, out.Plugins) })
			checkSchemas(t, out.Plugins)
			for _, e := range out.Report {
				if e.Severity != "approximated" && e.Severity != "ignored" {
					t.Errorf("%s: unexpected report entry %+v", key, e)
				}
			}
		}
	}
	if seen != len(want) {
		t.Errorf("saw %d routes, want %d", seen, len(want))
	}
}
