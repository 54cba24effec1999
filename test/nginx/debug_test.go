package nginx

import (
	"encoding/json"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/meshgen"
)

// statusBody returns a view of the library's status server.
func (n *instance) statusBody(t *testing.T, path string) []byte {
	t.Helper()
	resp, err := httpClient.Get("http://" + n.statusAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// statusJSON decodes a JSON view of the library's status server.
func (n *instance) statusJSON(t *testing.T, path string, v any) {
	t.Helper()
	b := n.statusBody(t, path)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

// decodeAll decodes every value of kv as JSON, so that the dict's compact objects and
// the status server's indented ones compare by content.
func decodeAll(t *testing.T, kv map[string]string) map[string]any {
	t.Helper()
	out := map[string]any{}
	for k, v := range kv {
		var x any
		if err := json.Unmarshal([]byte(v), &x); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		out[k] = x
	}
	return out
}

// TestDebugAPISIXShowsTheDict: the status server inside nginx (AMESH_STATUS_ADDR)
// shows, in /debug/apisix, exactly the objects the shared dict holds, as `amesh agent`
// shows the file's: each object whole, however much longer than the read buffer.
func TestDebugAPISIXShowsTheDict(t *testing.T) {
	// 30 endpoints make upstreams of over 1 KiB, longer than the read buffer.
	res := meshgen.Generate(meshgen.Options{Services: 3, Subsets: 1, EndpointsPerCluster: 30}).Resources()
	n := start(t, newXDS(t, res), options{Workers: 1})
	want := expected(t, res)
	d := n.waitDump("the initial configuration", func(d dump) bool { return d.version() != 0 && len(d.Keys) == len(want) })
	long := 0
	for _, v := range d.Keys {
		if len(v) > 1024 {
			long++
		}
	}
	if long == 0 {
		t.Fatal("no object longer than 1 KiB: the test would not show that long values are read whole")
	}

	var got map[string]any
	n.statusJSON(t, "/debug/apisix", &got)
	if diff := cmp.Diff(decodeAll(t, d.Keys), got); diff != "" {
		t.Errorf("/debug/apisix differs from the dict (-dict +view):\n%s", diff)
	}
	var routes map[string]any
	n.statusJSON(t, "/debug/apisix?kind=routes", &routes)
	wantRoutes := map[string]string{}
	for k, v := range d.Keys {
		if len(k) > 8 && k[:8] == "/routes/" {
			wantRoutes[k] = v
		}
	}
	if diff := cmp.Diff(decodeAll(t, wantRoutes), routes); diff != "" || len(routes) == 0 {
		t.Errorf("/debug/apisix?kind=routes differs from the dict's routes (-dict +view):\n%s", diff)
	}
}
