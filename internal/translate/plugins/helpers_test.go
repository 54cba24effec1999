package plugins

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/report"
)

// mustAny packs m into an Any.
func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// roundTrip encodes plugin configs to JSON and back, so that expectations can be
// written as plain JSON values (numbers become float64).
func roundTrip(t testing.TB, v any) any {
	t.Helper()
	if v == nil {
		return nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("plugins are not JSON-encodable: %v", err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// parseJSON decodes a JSON expectation.
func parseJSON(t testing.TB, s string) any {
	t.Helper()
	if s == "" {
		return nil
	}
	var out any
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatalf("bad expectation %s: %v", s, err)
	}
	return out
}

// checkSchemas validates every plugin config against APISIX's schema, plus the checks
// APISIX's Lua check_schema adds that the JSON schema cannot express.
func checkSchemas(t testing.TB, plugins map[string]any) {
	t.Helper()
	for name, conf := range plugins {
		b, err := json.Marshal(conf)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := schema.ValidatePlugin(name, b); err != nil {
			t.Errorf("schema: %v\n%s", err, b)
		}
		if name == pluginCORS {
			m := conf.(map[string]any)
			if m["allow_credential"] == true {
				for _, k := range []string{"allow_origins", "allow_methods", "allow_headers", "expose_headers"} {
					if m[k] == "*" {
						t.Errorf("cors: %s is \"*\" with allow_credential (APISIX's check_schema refuses it): %s", k, b)
					}
				}
			}
		}
	}
}

// severities summarises report entries as "field=severity" strings.
func severities(es []report.Entry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Field+"="+string(e.Severity))
	}
	return out
}

// hasEntry reports whether some entry's field has the given prefix and severity.
func hasEntry(es []report.Entry, fieldPrefix string, sev report.Severity) bool {
	for _, e := range es {
		if strings.HasPrefix(e.Field, fieldPrefix) && e.Severity == sev {
			return true
		}
	}
	return false
}

func diffJSON(t testing.TB, want string, got any) {
	t.Helper()
	if d := cmp.Diff(parseJSON(t, want), roundTrip(t, got)); d != "" {
		t.Errorf("plugins mismatch (-want +got):\n%s", d)
	}
}
