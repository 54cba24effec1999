package nginx

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
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
	files := map[string]string{
		"istiod":      string(golden),
		"bad-action":  `{"port_var":"server_port","filters":[{"name":"f","action":"MAYBE","policies":[]}]}`,
		"deep-bogus":  strings.Replace(string(golden), `"name": ":method",`, `"name": ":method", "bogus": 1,`, 1),
		"no-port-var": `{"filters":[]}`,
	}
	want := map[string]string{"istiod": "ok", "bad-action": "invalid", "deep-bogus": "invalid", "no-port-var": "invalid"}
	names := []string{"istiod", "bad-action", "deep-bogus", "no-port-var"}
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
