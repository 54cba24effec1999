package schema

import (
	"strings"
	"sync"
	"testing"
)

func TestEmbeddedSchemasCompile(t *testing.T) {
	if _, err := load(); err != nil {
		t.Fatal(err)
	}
	got := Plugins()
	apisixOnes := 0
	for _, p := range got {
		if !strings.HasPrefix(p, "amesh-") {
			apisixOnes++
		}
	}
	if apisixOnes != 18 {
		t.Errorf("%d APISIX plugin schemas, want the 18 exported ones: %v", apisixOnes, got)
	}
	for _, p := range []string{"traffic-split", "proxy-rewrite", "fault-injection", "cors", "proxy-mirror", "redirect", "response-rewrite", "amesh-original-dst", "amesh-rbac"} {
		if !KnownPlugin(p) {
			t.Errorf("KnownPlugin(%q) = false", p)
		}
	}
	if KnownPlugin("no-such-plugin") {
		t.Error("KnownPlugin(no-such-plugin) = true")
	}
	// The stream plugins amesh's stream routes use, and no other: an HTTP plugin of the
	// same name does not make a stream plugin known.
	s, _ := load()
	if want := []string{"amesh-http", "amesh-mtls", "amesh-mtls-peer", "amesh-network-rbac", "amesh-original-dst", "amesh-upstream-tls"}; strings.Join(s.streamPlugins.names, ",") != strings.Join(want, ",") {
		t.Errorf("stream plugin schemas %v, want %v", s.streamPlugins.names, want)
	}
	if KnownPlugin("amesh-http") {
		t.Error("the stream plugin amesh-http is known as an HTTP plugin")
	}
	// The stream amesh-upstream-tls takes what the HTTP one takes: the translation hands
	// both a cluster's TLS configuration.
	h, _ := files.ReadFile(pluginDir + "amesh-upstream-tls.json")
	st, _ := files.ReadFile(streamPluginDir + "amesh-upstream-tls.json")
	if len(h) == 0 || string(h) != string(st) {
		t.Error("the stream amesh-upstream-tls schema is not the HTTP plugin's")
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, key, obj string
		wantErr        string // "" = valid
	}{
		// The objects APISIX's own xDS library test writes (t/xds-library/main.go).
		{"apisix example route", "/routes/1", `{"status":1,"update_time":1647250524,"create_time":1646972532,"uri":"/hello","priority":0,"id":"1","upstream_id":"1"}`, ""},
		{"apisix example upstream", "/upstreams/1", `{"nodes":[{"port":1980,"priority":0,"host":"127.0.0.1","weight":1}],"type":"roundrobin","id":"1"}`, ""},
		{"route with plugins", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","plugins":{"proxy-rewrite":{"uri":"/b"},"fault-injection":{"abort":{"http_status":503,"percentage":10}}}}`, ""},
		{"route without uri", "/routes/r", `{"id":"r","upstream_id":"u"}`, "/routes/r"},
		{"original destination", "/routes/r", `{"id":"r","uri":"/*","upstream_id":"u","plugins":{"amesh-original-dst":{"bind":"127.0.0.6","bind6":"::6","port":8080}}}`, ""},
		{"original destination, bind not an address", "/routes/r", `{"id":"r","uri":"/*","upstream_id":"u","plugins":{"amesh-original-dst":{"bind":"localhost"}}}`, "bind"},
		{"original destination, unknown field", "/routes/r", `{"id":"r","uri":"/*","upstream_id":"u","plugins":{"amesh-original-dst":{"addr":"10.0.0.1"}}}`, "addr"},
		{"unknown property", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","bogus":1}`, "bogus"},
		{"upstream timeout without read", "/upstreams/u", `{"id":"u","nodes":[],"timeout":{"connect":1,"send":1}}`, "read"},
		{"zero timeout", "/upstreams/u", `{"id":"u","nodes":[],"timeout":{"connect":0,"send":1,"read":1}}`, "connect"},
		{"sub-second timeout", "/upstreams/u", `{"id":"u","nodes":[],"timeout":{"connect":0.25,"send":1,"read":1}}`, ""},
		{"empty nodes", "/upstreams/u", `{"id":"u","type":"roundrobin","nodes":[]}`, ""},
		{"unknown plugin", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","plugins":{"no-such":{}}}`, "unknown plugin"},
		{"invalid plugin conf", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","plugins":{"fault-injection":{"abort":{"body":"x"}}}}`, "fault-injection"},
		{"traffic-split negative weight", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","plugins":{"traffic-split":{"rules":[{"weighted_upstreams":[{"upstream_id":"x","weight":-1}]}]}}}`, "traffic-split"},
		{"id mismatch", "/routes/r", `{"id":"other","uri":"/a","upstream_id":"u"}`, "differs"},
		{"chash without key", "/upstreams/u", `{"id":"u","type":"chash","hash_on":"header","nodes":[]}`, "needs a key"},
		{"chash bad header key", "/upstreams/u", `{"id":"u","type":"chash","hash_on":"header","key":"x y","nodes":[]}`, "not a valid header"},
		{"chash vars key", "/upstreams/u", `{"id":"u","type":"chash","hash_on":"vars","key":"remote_addr","nodes":[]}`, ""},
		{"chash bad vars key", "/upstreams/u", `{"id":"u","type":"chash","key":"http_x","nodes":[]}`, "hash_on vars"},
		{"pass_host rewrite without host", "/upstreams/u", `{"id":"u","pass_host":"rewrite","nodes":[]}`, "upstream_host"},
		{"inline upstream checked", "/routes/r", `{"id":"r","uri":"/a","upstream":{"type":"chash","hash_on":"cookie","nodes":[]}}`, "needs a key"},
		{"traffic-split upstream checked", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","plugins":{"traffic-split":{"rules":[{"weighted_upstreams":[{"upstream":{"type":"chash","key":"bad key","hash_on":"header","nodes":[]},"weight":1}]}]}}}`, "weighted_upstreams[0]"},
		{"stream route", "/stream_routes/s", `{"id":"s","server_port":3306,"upstream_id":"u"}`, ""},
		{"stream route plugins", "/stream_routes/s", `{"id":"s","upstream_id":"u","plugins":{"ip-restriction":{}}}`, "unknown stream plugin"},
		{"stream route to the http server", "/stream_routes/s", `{"id":"s","server_port":9080,"labels":{"amesh-listen":"15001","amesh-protocol":"http"},"plugins":{"amesh-http":{}}}`, ""},
		{"stream amesh-http with a setting", "/stream_routes/s", `{"id":"s","plugins":{"amesh-http":{"socket":"/x"}}}`, "socket"},
		{"stream original destination", "/stream_routes/s", `{"id":"s","labels":{"amesh-listen":"15006"},"upstream_id":"u","plugins":{"amesh-original-dst":{"bind":"127.0.0.6"}}}`, ""},
		{"stream original destination, bind not an address", "/stream_routes/s", `{"id":"s","upstream_id":"u","plugins":{"amesh-original-dst":{"bind":"localhost"}}}`, "bind"},
		{"stream upstream TLS", "/stream_routes/s", `{"id":"s","upstream_id":"u","plugins":{"amesh-upstream-tls":{"upstreams":{"u":{"sni":"outbound_.3306_._.db.default.svc.cluster.local","alpn":["istio-peer-exchange","istio"],"cert":{"ssl_id":"amesh-workload"},"ca":{"file":"/r.pem"},"sans":[{"match":"exact","value":"spiffe://cluster.local/ns/default/sa/db"}]}}}}}`, ""},
		{"stream upstream TLS without upstreams", "/stream_routes/s", `{"id":"s","upstream_id":"u","plugins":{"amesh-upstream-tls":{"upstreams":{}}}}`, "amesh-upstream-tls"},
		{"stream route with an http plugin", "/stream_routes/s", `{"id":"s","upstream_id":"u","plugins":{"fault-injection":{"abort":{"http_status":503}}}}`, "unknown stream plugin"},
		{"route with a stream plugin", "/routes/r", `{"id":"r","uri":"/a","upstream_id":"u","plugins":{"amesh-http":{}}}`, "unknown plugin"},
		{"stream route with a CIDR", "/stream_routes/s", `{"id":"s","server_addr":"10.0.0.0/8","server_port":3306}`, ""},
		{"stream route with an IPv6 address", "/stream_routes/s", `{"id":"s","server_addr":"fd00::1","server_port":3306}`, ""},
		{"stream route with a host name", "/stream_routes/s", `{"id":"s","server_addr":"db.example","server_port":3306}`, "server_addr"},
		{"stream route with an empty label", "/stream_routes/s", `{"id":"s","labels":{"amesh-listen":""}}`, "labels"},
		{"bad id chars", "/upstreams/a b", `{"nodes":[]}`, "not a valid APISIX id"},
		{"id too long", "/upstreams/" + strings.Repeat("a", 65), `{"nodes":[]}`, "not a valid APISIX id"},
		{"unknown kind", "/nope/x", `{}`, "unknown kind"},
		{"bad key", "routes", `{}`, "not a key"},
		{"not json", "/routes/r", `{`, "invalid JSON"},
		{"not an object", "/routes/r", `[]`, "/routes/r"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Validate(tc.key, []byte(tc.obj))
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("Validate accepted %s", tc.obj)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidatePlugin(t *testing.T) {
	if err := ValidatePlugin("cors", []byte(`{"allow_origins":"http://a.example"}`)); err != nil {
		t.Error(err)
	}
	if err := ValidatePlugin("cors", []byte(`{"max_age":"x"}`)); err == nil {
		t.Error("cors with a string max_age accepted")
	}
	if err := ValidatePlugin("proxy-rewrite", []byte(`{"_meta":{"bogus":true}}`)); err == nil {
		t.Error("unknown _meta field accepted")
	}
	if err := ValidatePlugin("nope", []byte(`{}`)); err == nil || !strings.Contains(err.Error(), "unknown plugin") {
		t.Errorf("unknown plugin: %v", err)
	}
}

// Validation runs from many goroutines (the race detector checks the shared state).
func TestValidateConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- Validate("/routes/r", []byte(`{"id":"r","uri":"/a","upstream_id":"u","plugins":{"redirect":{"uri":"/b","ret_code":301}}}`))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkValidateRoute(b *testing.B) {
	obj := []byte(`{"id":"r","uri":"/a","hosts":["a.example"],"vars":[["connection_original_dst","==","9080"]],"upstream_id":"u","plugins":{"proxy-rewrite":{"uri":"/b"}}}`)
	b.ReportAllocs()
	for b.Loop() {
		if err := Validate("/routes/r", obj); err != nil {
			b.Fatal(err)
		}
	}
}
