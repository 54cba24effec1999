package nginx

import (
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// APISIX's own schema validator (api7/jsonschema, which core.schema.check runs on a
// route's plugins) accepts the amesh-rbac config the translator makes of istiod's
// policy against the schema the plugin holds, recursive rules included, and rejects
// configs that break it at the top or deep in a rule.
func TestAPISIXRBACSchema(t *testing.T) {
	home := requireAPISIX(t)
	dir := t.TempDir()
	golden, err := os.ReadFile(filepath.Join("testdata", "istiod-rbac-allow.json"))
	if err != nil {
		t.Fatal(err)
	}
	// A JWT provider reading cookies, and one whose remote JWKS is not fetched.
	jwt := &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{
			"cookie": {Issuer: "a", FromCookies: []string{"session"}, JwksSourceSpecifier: &jwtv3.JwtProvider_LocalJwks{
				LocalJwks: &corev3.DataSource{Specifier: inlineString(jwks(t, map[string]crypto.PrivateKey{"k": newTestKeys(t).p256}))}}},
			"remote": {Issuer: "b", JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
				HttpUri: &corev3.HttpUri{Uri: "http://jwks.example/jwks.json", HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|80||jwks.example"}}}}},
		},
		Rules: []*jwtv3.RequirementRule{{Match: prefixMatch("/"), RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_RequiresAny{RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
				{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "cookie"}},
				{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "remote"}}}}}}}}},
	}
	a, err := anypb.New(jwt)
	if err != nil {
		t.Fatal(err)
	}
	jwtConf := rbacConf(t, nil, &hcmv3.HttpFilter{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}})
	if !strings.Contains(string(jwtConf), `"cookies"`) || !strings.Contains(string(jwtConf), `"jwks_fetch_failed"`) {
		t.Fatalf("the JWT config lacks the fields under test: %s", jwtConf)
	}
	files := map[string]string{
		"istiod":      string(golden),
		"jwt":         string(jwtConf),
		"bad-action":  `{"port_var":"server_port","filters":[{"name":"f","action":"MAYBE","policies":[]}]}`,
		"deep-bogus":  strings.Replace(string(golden), `"name": ":method",`, `"name": ":method", "bogus": 1,`, 1),
		"no-port-var": `{"filters":[]}`,
	}
	want := map[string]string{"istiod": "ok", "jwt": "ok", "bad-action": "invalid", "deep-bogus": "invalid", "no-port-var": "invalid"}
	names := []string{"istiod", "jwt", "bad-action", "deep-bogus", "no-port-var"}
	args := []string{"-I", filepath.Join(home, "deps", "share", "lua", "5.1"), filepath.Join("apisixlua", "rbacschema.lua"),
		filepath.Join("..", "..", "lua", "apisix", "plugins", "amesh-rbac.lua")}
	for _, n := range names {
		p := filepath.Join(dir, n+".json")
		if err := os.WriteFile(p, []byte(files[n]), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, p)
	}
	out, err := exec.Command(filepath.Join(home, "openresty", "bin", "resty"), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("resty: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(names) {
		t.Fatalf("output %q, want one line per config", out)
	}
	for i, n := range names {
		if !strings.HasPrefix(lines[i], want[n]) {
			t.Errorf("%s: %s, want %s", n, lines[i], want[n])
		}
	}
}
