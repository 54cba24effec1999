package demo

import (
	"bytes"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

func TestExprString(t *testing.T) {
	for _, c := range []struct {
		in   any
		want string
	}{
		{[]any{"http_end_user", "==", "jason"}, `http_end_user == "jason"`},
		{[]any{"!", "http_x", "~~", "^a$"}, `!(http_x ~~ "^a$")`},
		{[]any{"OR", []any{"arg_a", "==", "1"}, []any{"arg_b", "!=", "2"}}, `(arg_a == "1" OR arg_b != "2")`},
		{[]any{"connection_original_dst", "==", float64(9080)}, `connection_original_dst == 9080`},
		// The form translation emits for a negation, and a list operand.
		{[]any{"connection_original_dst", "!", "in", []any{"19080", "19443"}}, `!(connection_original_dst in ["19080", "19443"])`},
		// A regex reads as PCRE gets it: backslashes are not doubled.
		{[]any{"http_x_canary", "~~", `\A(?:yes|true)\z`}, `http_x_canary ~~ "\A(?:yes|true)\z"`},
		{[]any{"http_x", "==", "say \"hi\""}, `http_x == "say \"hi\""`},
	} {
		if got := exprString(c.in); got != c.want {
			t.Errorf("exprString(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}

func enc(t *testing.T, v any) []byte {
	t.Helper()
	b, err := apisix.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestWriteChanges(t *testing.T) {
	before := map[string][]byte{
		"/upstreams/u": enc(t, apisix.Upstream{ID: "u", Nodes: []apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 1}}}),
		"/routes/r":    enc(t, apisix.Route{ID: "r", URI: "/a", Priority: 2}),
		"/routes/gone": enc(t, apisix.Route{ID: "gone"}),
	}
	after := map[string][]byte{
		"/upstreams/u": enc(t, apisix.Upstream{ID: "u", Nodes: []apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}}}),
		"/routes/r":    enc(t, apisix.Route{ID: "r", URI: "/b", Priority: 2}),
		"/routes/new":  enc(t, apisix.Route{ID: "new"}),
	}
	var buf bytes.Buffer
	writeChanges(&buf, before, after)
	want := `  - /routes/gone
  + /routes/new
  ~ /routes/r
      uri: "/a" -> "/b"
  ~ /upstreams/u
      nodes: 10.0.0.1:80, 10.0.0.2:80 -> 10.0.0.1:80
`
	if buf.String() != want {
		t.Errorf("writeChanges:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestWriteSummary(t *testing.T) {
	objs := map[string][]byte{
		"/upstreams/a": enc(t, apisix.Upstream{ID: "a", Name: "outbound|80||a", Nodes: []apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 2, Priority: -1}}}),
		"/upstreams/b": enc(t, apisix.Upstream{ID: "b", Name: "outbound|80||b", Nodes: []apisix.Node{}}),
		"/routes/low":  enc(t, apisix.Route{ID: "low", URI: "/*", Hosts: []string{"a.svc", "a"}, UpstreamID: "a", Priority: 1}),
		"/routes/high": enc(t, apisix.Route{ID: "high", URI: "/*", Hosts: []string{"a.svc", "a"}, Priority: 5, Vars: []apisix.Expr{{"http_x", "==", "1"}},
			Plugins: map[string]any{"traffic-split": map[string]any{"rules": []any{map[string]any{"weighted_upstreams": []any{
				map[string]any{"upstream_id": "a", "weight": 90}, map[string]any{"upstream_id": "b", "weight": 10}}}}}, "fault-injection": map[string]any{}}}),
		"/stream_routes/s": enc(t, apisix.StreamRoute{ID: "s", ServerPort: 3306, UpstreamID: "b"}),
		"/stream_routes/h": enc(t, apisix.StreamRoute{ID: "h", ServerPort: 9080, Labels: map[string]string{"amesh-listen": "15001", "amesh-protocol": "http"},
			Plugins: map[string]any{"amesh-http": struct{}{}}}),
		"/stream_routes/p": enc(t, apisix.StreamRoute{ID: "p", Labels: map[string]string{"amesh-listen": "15001"}, UpstreamID: "b",
			Plugins: map[string]any{"amesh-original-dst": struct{}{}}}),
		"/stream_routes/c": enc(t, apisix.StreamRoute{ID: "c", ServerAddr: "10.0.0.1", ServerPort: 15001, Labels: map[string]string{"amesh-listen": "15001"}}),
	}
	rep := []report.Entry{{Kind: "cluster", Resource: "outbound|80||a", Field: "transport_socket_matches", Severity: report.Unsupported, Message: "plaintext"}}
	var buf bytes.Buffer
	writeSummary(&buf, objs, rep)
	s := buf.String()
	high := strings.Index(s, `[http_x == "1"]`)
	low := strings.Index(s, "-> outbound|80||a\n")
	if high < 0 || low < 0 || high > low {
		t.Errorf("routes not listed in APISIX's order (higher priority first):\n%s", s)
	}
	for _, want := range []string{
		"a.svc (+1 aliases)",
		"split outbound|80||a 90 / outbound|80||b 10; plugins: fault-injection",
		"10.0.0.1:80 w2 p-1",
		"(no endpoints: answers 503)",
		"*:3306                                       -> outbound|80||b",
		"[15001] *:9080 http                          -> HTTP routes",
		"[15001] *:*                                  -> original destination (outbound|80||b)",
		"[15001] 10.0.0.1:15001                       -> closed",
		"Translation report (1 unsupported)",
		"unsupported  cluster transport_socket_matches (outbound|80||a): plaintext",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}
