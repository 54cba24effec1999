package translate

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/xds/resource"
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

// tracked is a Translator whose change sets are applied to objs, so that tests can see
// the complete output (the Translator itself keeps only digests).
type tracked struct {
	*Translator
	objs map[string][]byte
}

func newTracked(opts Options) *tracked {
	return &tracked{Translator: New(opts), objs: map[string][]byte{}}
}

func (tt *tracked) Translate(snap *resource.State) Result {
	r := tt.Translator.Translate(snap)
	if err := r.CheckPrior(tt.objs); err != nil {
		panic(err)
	}
	r.Changes.ApplyTo(tt.objs)
	return r
}

// Objects returns the output the change sets add up to, after checking that the
// translator's digests describe exactly that output.
func (tt *tracked) Objects() map[string][]byte {
	if len(tt.objs) != tt.Translator.Len() {
		panic(fmt.Sprintf("change sets hold %d objects, the translator %d", len(tt.objs), tt.Translator.Len()))
	}
	for k, v := range tt.objs {
		if h, ok := tt.out.Digest(k); !ok || h != apisix.Hash(v) {
			panic("the translator's digest of " + k + " does not match its change sets")
		}
	}
	return tt.objs
}
