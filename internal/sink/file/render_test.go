package file

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// testObjects has values chosen to trip a naive YAML writer: strings that look like
// numbers, booleans or null, YAML indicators, newlines, unicode, empty collections,
// nested lists (lua-resty-expr vars) and map keys that need quoting.
func testObjects(t *testing.T) map[string][]byte {
	t.Helper()
	enc := func(v any) []byte {
		b, err := apisix.Encode(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	retries := 0
	return map[string][]byte{
		"/upstreams/u1": enc(apisix.Upstream{ID: "u1", Type: "roundrobin", Retries: &retries,
			Nodes:  []apisix.Node{{Host: "10.0.0.1", Port: 9080, Weight: 1}, {Host: "::1", Port: 80, Weight: 0, Priority: -1}},
			Labels: map[string]string{"on": "yes", "version": "1.0", "k: v": "- x"}}),
		"/upstreams/empty": enc(apisix.Upstream{ID: "empty", Nodes: []apisix.Node{}}),
		"/routes/r1": enc(apisix.Route{ID: "r1", URI: "/api/*", Hosts: []string{"*.example.com", "reviews"},
			Vars: []apisix.Expr{{"connection_original_dst", "==", "9080"}, {"!", "http_x", "~~", "^a#b$"},
				{"OR", apisix.Expr{"arg_q", "==", "null"}, apisix.Expr{"http_y", "==", ""}}},
			Priority: -3, UpstreamID: "u1", Timeout: &apisix.Timeout{Connect: 0.25, Send: 1e21, Read: 1e-7},
			Plugins: map[string]any{
				"fault-injection": map[string]any{"abort": map[string]any{"http_status": 503, "body": "line1\nline2 \"q\" \u00e9 <&>"}},
				"cors":            map[string]any{},
				"traffic-split":   map[string]any{"rules": []any{map[string]any{"weighted_upstreams": []any{map[string]any{"weight": 90}, map[string]any{"upstream_id": "u1", "weight": 10}}}}},
			}}),
		"/stream_routes/s1": enc(apisix.StreamRoute{ID: "s1", ServerPort: 3306, UpstreamID: "u1"}),
		"/ssls/x":           []byte(`{"id":"x","sni":"true","cert":"-----BEGIN\n"}`),
	}
}

// decodeRendered turns a rendered file (either format) into generic JSON values.
func decodeRendered(t *testing.T, b []byte, f Format) map[string][]any {
	t.Helper()
	if f == YAML {
		var err error
		b, err = yaml.YAMLToJSON(b)
		if err != nil {
			t.Fatalf("rendered YAML does not parse: %v", err)
		}
	}
	var got map[string][]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("rendered %s does not parse: %v\n%s", f, err, b)
	}
	return got
}

func TestRenderRoundTrip(t *testing.T) {
	objs := testObjects(t)
	// Expected: per kind, the objects decoded from their JSON, sorted by key.
	want := map[string][]any{}
	for _, k := range apisix.KindOrder {
		want[string(k)] = []any{}
	}
	for _, key := range []string{"/routes/r1", "/ssls/x", "/stream_routes/s1", "/upstreams/empty", "/upstreams/u1"} {
		var v any
		if err := json.Unmarshal(objs[key], &v); err != nil {
			t.Fatal(err)
		}
		kind, _, _ := splitKey(key)
		want[kind] = append(want[kind], v)
	}
	for _, f := range []Format{YAML, JSON} {
		t.Run(string(f), func(t *testing.T) {
			b, err := Render(objs, f)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, decodeRendered(t, b, f)); diff != "" {
				t.Errorf("round trip differs (-want +got):\n%s\nrendered:\n%s", diff, b)
			}
			again, _ := Render(objs, f)
			if !bytes.Equal(b, again) {
				t.Error("Render is not deterministic")
			}
		})
	}
}

func TestRenderYAMLShape(t *testing.T) {
	b, err := Render(testObjects(t), YAML)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if !strings.HasSuffix(s, "\n"+EndMarker+"\n") {
		t.Errorf("YAML does not end with the %s line APISIX requires:\n%s", EndMarker, s)
	}
	for _, want := range []string{"\nroutes:\n- id: \"r1\"\n", "\nplugin_configs: []\n", "\nupstreams:\n- id: \"empty\"\n  nodes: []\n", "  timeout:\n    connect: 0.25\n    send: 1.0e+21\n    read: 1.0e-7\n", "  vars:\n    - [\"connection_original_dst\", \"==\", \"9080\"]\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("YAML lacks %q:\n%s", want, s)
		}
	}
	for i, line := range strings.Split(s, "\n") {
		if strings.HasSuffix(line, " ") {
			t.Errorf("line %d has trailing space: %q", i+1, line)
		}
	}
}

func TestRenderEmpty(t *testing.T) {
	for _, f := range []Format{YAML, JSON} {
		b, err := Render(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		got := decodeRendered(t, b, f)
		if len(got) != len(apisix.KindOrder) {
			t.Errorf("%s: empty config has kinds %v, want all of %v", f, got, apisix.KindOrder)
		}
		for k, v := range got {
			if len(v) != 0 {
				t.Errorf("%s: kind %s not empty: %v", f, k, v)
			}
		}
	}
}

func TestRenderBadInput(t *testing.T) {
	for _, objs := range []map[string][]byte{
		{"routes/x": []byte(`{}`)},
		{"/routes/": []byte(`{}`)},
		{"/routes/x": []byte(`{"id":`)},
	} {
		for _, f := range []Format{YAML, JSON} {
			if _, err := Render(objs, f); err == nil {
				t.Errorf("Render(%q, %s) succeeded, want error", objs, f)
			}
		}
	}
	if _, err := Render(nil, "toml"); err == nil {
		t.Error("unknown format accepted")
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"yaml": YAML, "JSON": JSON} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("yml2"); err == nil {
		t.Error("ParseFormat accepted yml2")
	}
}

// TestRendererCache checks that re-rendering with cached fragments gives exactly what a
// fresh Render gives, through changes of content under the same key, additions and
// removals.
func TestRendererCache(t *testing.T) {
	for _, f := range []Format{YAML, JSON} {
		r := renderer{format: f, frags: map[string]fragment{}}
		objs := testObjects(t)
		steps := []func(){
			func() {},
			func() { objs["/routes/r1"] = []byte(`{"id":"r1","uri":"/changed"}`) },
			func() { delete(objs, "/upstreams/empty") },
			func() { objs["/routes/new"] = []byte(`{"id":"new"}`) },
			func() { objs["/routes/r1"] = []byte(`{"id":"r1","uri":"/changed","priority":1}`) },
		}
		for i, step := range steps {
			step()
			got, commit, err := r.stage(apisix.Diff(r.objects(), objs))
			if err != nil {
				t.Fatal(err)
			}
			commit()
			want, _ := Render(objs, f)
			if !bytes.Equal(got, want) {
				t.Fatalf("%s step %d: cached render differs:\n%s\nwant:\n%s", f, i, got, want)
			}
		}
		if len(r.frags) != len(objs) {
			t.Errorf("%s: cache holds %d fragments for %d objects (stale entries kept?)", f, len(r.frags), len(objs))
		}
	}
}
