package translate

import (
	"os"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
)

// validateAll checks every object against APISIX's schema.
func validateAll(t *testing.T, objs map[string][]byte) {
	t.Helper()
	for k, v := range objs {
		if err := validate(k, v); err != nil {
			t.Errorf("%s does not validate: %v\n%s", k, err, v)
		}
	}
}

// compareGolden compares got with the golden file, line by line, or rewrites it with -update.
func compareGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(dirOf(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(want) == string(got) {
		return
	}
	t.Errorf("%s differs (run with -update to accept):\n%s", path, lineDiff(string(want), string(got)))
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return "."
}

// lineDiff shows the first differing lines with context.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	from := max(0, i-3)
	for k := from; k < i; k++ {
		b.WriteString("  " + w[k] + "\n")
	}
	for k := i; k < min(len(w), i+10); k++ {
		b.WriteString("- " + w[k] + "\n")
	}
	for k := i; k < min(len(g), i+10); k++ {
		b.WriteString("+ " + g[k] + "\n")
	}
	return b.String()
}

func validate(key string, obj []byte) error { return schema.Validate(key, obj) }
