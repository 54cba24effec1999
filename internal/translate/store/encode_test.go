package store

import (
	"bytes"
	"math"
	"math/rand/v2"
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
	var e Encoder
	for i, o := range objs {
		want, err := apisix.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("object %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// fuzzObjects builds upstreams and routes from data, covering every field, nil versus
// empty slices, strings that need escaping and floats in every range.
func fuzzObjects(data []byte) []any {
	pos := 0
	next := func() byte {
		if pos >= len(data) {
			return 0
		}
		pos++
		return data[pos-1]
	}
	strs := []string{"", "a", "10.0.0.1", "outbound|9080||x", `q"uote`, `back\slash`, "tab\t", "ctl\x01",
		"<&>", "é", "\u2028", "bad\xff", "/api/*"}
	str := func() string { return strs[int(next())%len(strs)] }
	floats := []float64{0, 1, 0.5, 1e-7, 1e-6, 123456789, 1e20, 1e21, 86400, 0.001, -2.5, 1.0 / 3}
	fl := func() float64 { return floats[int(next())%len(floats)] }
	num := func() int { return int(int8(next())) }
	ptr := func() bool { return next()%2 == 1 }
	strList := func() []string {
		switch n := next() % 4; n {
		case 0:
			return nil
		case 1:
			return []string{}
		default:
			out := make([]string, n)
			for i := range out {
				out[i] = str()
			}
			return out
		}
	}
	timeout := func() *apisix.Timeout {
		if !ptr() {
			return nil
		}
		return &apisix.Timeout{Connect: fl(), Send: fl(), Read: fl()}
	}
	labels := func() map[string]string {
		if !ptr() {
			return nil
		}
		return map[string]string{str(): str(), "z": str()}
	}
	var out []any
	for pos < len(data) {
		if next()%2 == 0 {
			u := &apisix.Upstream{ID: str(), Name: str(), Desc: str(), Type: str(), HashOn: str(), Key: str(),
				Scheme: str(), PassHost: str(), UpstreamHost: str(), Timeout: timeout(), Labels: labels()}
			if n := int(next() % 4); n > 0 {
				u.Nodes = make([]apisix.Node, n-1)
				for i := range u.Nodes {
					u.Nodes[i] = apisix.Node{Host: str(), Port: num(), Weight: num(), Priority: num()}
					if ptr() {
						u.Nodes[i].Metadata = map[string]any{"k": str()}
					}
				}
			}
			if ptr() {
				r := num()
				u.Retries = &r
			}
			if ptr() {
				f := fl()
				u.RetryTimeout = &f
			}
			if ptr() {
				u.KeepalivePool = &apisix.KeepalivePool{Size: num(), IdleTimeout: fl(), Requests: num()}
			}
			if ptr() {
				u.Checks = &apisix.HealthChecks{Passive: map[string]any{"type": str()}}
			}
			out = append(out, u)
			continue
		}
		r := &apisix.Route{ID: str(), Name: str(), Desc: str(), URI: str(), URIs: strList(), Hosts: strList(),
			Methods: strList(), Priority: num(), UpstreamID: str(), Timeout: timeout(), Labels: labels(),
			EnableWebsocket: ptr()}
		for n := next() % 3; n > 0; n-- {
			switch next() % 4 {
			case 0:
				r.Vars = append(r.Vars, apisix.Expr{str(), "==", str()})
			case 1:
				r.Vars = append(r.Vars, apisix.Expr{"!", str(), "in", strList()})
			case 2:
				r.Vars = append(r.Vars, apisix.Expr{"OR", apisix.Expr{str(), "~~", str()}, nil, num(), fl()})
			default:
				r.Vars = append(r.Vars, nil)
			}
		}
		if ptr() {
			r.Plugins = map[string]any{"proxy-rewrite": map[string]any{"uri": str()}, "cors": struct{}{}}
		}
		out = append(out, r)
	}
	return out
}

func checkEncoder(t *testing.T, e *Encoder, objs []any) {
	t.Helper()
	for i, o := range objs {
		want, err := apisix.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		got, err := e.Encode(o)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("object %d:\n got %s\nwant %s", i, got, want)
		}
	}
}

// The hand-written paths must match encoding/json on random objects.
func TestEncoderRandomObjects(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var e Encoder
	for range 2000 {
		data := make([]byte, 64+rng.IntN(128))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		checkEncoder(t, &e, fuzzObjects(data))
	}
}

func FuzzEncoder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{1, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18})
	f.Fuzz(func(t *testing.T, data []byte) {
		var e Encoder
		checkEncoder(t, &e, fuzzObjects(data))
	})
}

// Encoding errors (a NaN timeout) are reported, not written as broken JSON.
func TestEncoderError(t *testing.T) {
	var e Encoder
	if _, err := e.Encode(&apisix.Upstream{ID: "u", Timeout: &apisix.Timeout{Connect: math.NaN()}}); err == nil {
		t.Fatal("NaN timeout encoded without error")
	}
	if b, err := e.Encode(&apisix.Route{ID: "after"}); err != nil || string(b) != `{"id":"after"}` {
		t.Fatalf("encoder not reset after an error: %s, %v", b, err)
	}
}
