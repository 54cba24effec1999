package translate

import (
	"bytes"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// The reused encoder must produce exactly apisix.Encode's bytes, call after call.
func TestEncoderMatchesApisixEncode(t *testing.T) {
	objs := []any{
		&apisix.Route{ID: "a", URI: "/<x>&y", Hosts: []string{"h"}, Vars: []apisix.Expr{{"http_x", "~~", `\A<a>\z`}},
			Plugins: map[string]any{"z": 1, "a": map[string]any{"k": "v&<>"}}},
		&apisix.Upstream{ID: "u", Nodes: []apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}}},
		&apisix.Route{ID: "b"},
	}
	var e encoder
	for i, o := range objs {
		want, err := apisix.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.encode(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("object %d:\n got %s\nwant %s", i, got, want)
		}
	}
}
