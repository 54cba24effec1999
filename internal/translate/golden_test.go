package translate

import (
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// goldenDoc is the readable form of one translation: objects decoded from their JSON
// (so YAML shows them as structures) and the report.
type goldenDoc struct {
	Objects map[string]any `json:"objects"`
	Report  any            `json:"report"`
}

func istiodDir(t testing.TB, mode string) string {
	t.Helper()
	dir := filepath.Join("..", "..", "testdata", "istiod", mode)
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("istiod testdata %s not present: %v", mode, err)
	}
	return dir
}

// istiodSnapshot returns the state of istiod's testdata for mode ("sotw", ...).
func istiodSnapshot(t testing.TB, mode string) *resource.State {
	t.Helper()
	res, err := dump.LoadDir(istiodDir(t, mode))
	if err != nil {
		t.Fatal(err)
	}
	return res.Snapshot()
}

func TestGoldenIstiod(t *testing.T) {
	for _, tc := range []struct {
		mode string
		opts Options
	}{
		{"sotw", Options{}},
		{"delta", Options{}},
		{"sotw-interception-none", Options{OriginalDstVar: "server_port"}},
		// Outbound TLS with the workload identity (testdata/istiod/mtls/README.md).
		{"mtls", Options{WorkloadCertID: "amesh-workload", MeshRootFile: "/var/lib/istio/data/root-cert.pem"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			res, err := dump.LoadDir(istiodDir(t, tc.mode))
			if err != nil {
				t.Fatal(err)
			}
			tr := newTracked(tc.opts)
			r := tr.Translate(res.Snapshot())
			if len(r.Changes.Delete) != 0 || len(r.Changes.Put) != len(tr.Objects()) {
				t.Fatalf("first translation: %d puts, %d deletes, %d objects", len(r.Changes.Put), len(r.Changes.Delete), len(tr.Objects()))
			}
			validateAll(t, tr.Objects())
			doc := goldenDoc{Objects: map[string]any{}, Report: r.Report}
			for k, v := range tr.Objects() {
				var x any
				if err := json.Unmarshal(v, &x); err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				doc.Objects[k] = x
			}
			got, err := yaml.Marshal(doc)
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, filepath.Join("testdata", "golden", tc.mode+".yaml"), got)

			// Same input again from scratch: byte-identical output.
			tr2 := newTracked(tc.opts)
			tr2.Translate(res.Snapshot())
			if !sameObjects(tr.Objects(), tr2.Objects()) {
				t.Fatal("a second translator produced different output for the same input")
			}
		})
	}
}

func sameObjects(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if string(b[k]) != string(v) {
			return false
		}
	}
	return true
}
