package apisix

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

// safeIDSpec is SafeID's definition written plainly: the optimised SafeID must give
// the same ids, since ids already stored in APISIX must not change.
func safeIDSpec(name string) string {
	if name != "" && len(name) <= maxIDLen && validID(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:5])
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < maxIDLen-len(suffix); i++ {
		c := name[i]
		if !idChar(c) {
			c = '_'
		}
		b.WriteByte(c)
	}
	return b.String() + suffix
}

var idPattern = regexp.MustCompile(`^[a-zA-Z0-9-_.]+$`)

func TestSafeID(t *testing.T) {
	names := []string{"", "a", "outbound|9080||svc.ns.svc.cluster.local", "ok-name_1.2",
		strings.Repeat("x", 64), strings.Repeat("x", 65), strings.Repeat("é|", 200), strings.Repeat("y", 300) + "|"}
	for _, n := range names {
		got := SafeID(n)
		if want := safeIDSpec(n); got != want {
			t.Errorf("SafeID(%q) = %q, want %q", n, got, want)
		}
		if len(got) > maxIDLen || !idPattern.MatchString(got) {
			t.Errorf("SafeID(%q) = %q is not a valid APISIX id", n, got)
		}
	}
	if SafeID("a|b") == SafeID("a_b") {
		t.Error("names that differ only in replaced characters share an id")
	}
}

func FuzzSafeID(f *testing.F) {
	f.Add("outbound|9080|v1|reviews.default.svc.cluster.local")
	f.Fuzz(func(t *testing.T, name string) {
		if got, want := SafeID(name), safeIDSpec(name); got != want {
			t.Fatalf("SafeID(%q) = %q, want %q", name, got, want)
		}
	})
}

func BenchmarkSafeID(b *testing.B) {
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		SafeID("outbound|9080|v1|reviews.default.svc.cluster.local")
	}
}
