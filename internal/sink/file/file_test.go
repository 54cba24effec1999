package file

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
)

var quiet = slog.New(slog.DiscardHandler)

func routeObjects(t *testing.T, n int, tag string) map[string][]byte {
	t.Helper()
	objs := map[string][]byte{}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("r%04d", i)
		b, err := apisix.Encode(apisix.Route{ID: id, URI: "/" + tag, Hosts: []string{tag + ".svc"}, UpstreamID: "u"})
		if err != nil {
			t.Fatal(err)
		}
		objs[apisix.Key(apisix.KindRoutes, id)] = b
	}
	return objs
}

func apply(t *testing.T, s *Sink, objs map[string][]byte) {
	t.Helper()
	if err := s.Apply(context.Background(), apisix.Diff(s.Objects(), objs)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := s.Objects(); !maps.EqualFunc(got, objs, bytes.Equal) {
		t.Fatalf("Objects after Apply holds %d objects, want the %d applied", len(got), len(objs))
	}
}

func TestApplyWritesOnlyOnChange(t *testing.T) {
	for _, f := range []Format{YAML, JSON} {
		t.Run(string(f), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "apisix."+string(f))
			s, err := New(Options{Path: path, Format: f, Logger: quiet})
			if err != nil {
				t.Fatal(err)
			}
			a := routeObjects(t, 3, "a")
			apply(t, s, a)
			want, _ := Render(a, f)
			got, err := os.ReadFile(path)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("file = %q, %v; want %q", got, err, want)
			}
			if st := s.Stats(); st.Version != 1 || st.Writes != 1 {
				t.Fatalf("stats after first write = %+v", st)
			}
			info1, _ := os.Stat(path)

			apply(t, s, routeObjects(t, 3, "a")) // same content, new maps
			info2, _ := os.Stat(path)
			if !os.SameFile(info1, info2) || s.Stats().Version != 1 {
				t.Errorf("identical content was rewritten (version %d)", s.Stats().Version)
			}

			apply(t, s, routeObjects(t, 2, "b"))
			if st := s.Stats(); st.Version != 2 || s.Version() != 2 {
				t.Errorf("version after change = %d, want 2", st.Version)
			}
			got, _ = os.ReadFile(path)
			if want, _ := Render(routeObjects(t, 2, "b"), f); !bytes.Equal(got, want) {
				t.Errorf("file after change = %q", got)
			}
			if info, _ := os.Stat(path); info.Mode().Perm() != 0o644 {
				t.Errorf("file mode %v, want 0644 (APISIX may run as another user)", info.Mode().Perm())
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			if len(entries) != 1 {
				t.Errorf("directory holds %d entries, want only the file (temp files left behind?)", len(entries))
			}
		})
	}
}

func TestNewKeepsIdenticalExistingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apisix.yaml")
	objs := routeObjects(t, 2, "a")
	content, _ := Render(objs, YAML)
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	s, err := New(Options{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	apply(t, s, objs)
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || s.Stats().Version != 0 {
		t.Error("a restart with the same configuration rewrote the file")
	}
}

func TestErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(Options{Path: filepath.Join(dir, "missing", "apisix.yaml")}); err == nil {
		t.Error("New accepted a path in a missing directory")
	}
	if _, err := New(Options{Path: filepath.Join(dir, "apisix.yaml"), Format: "xml"}); err == nil {
		t.Error("New accepted format xml")
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New accepted an empty path")
	}

	sub := filepath.Join(dir, "gone")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := New(Options{Path: filepath.Join(sub, "apisix.yaml"), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(sub)
	err = s.Apply(context.Background(), apisix.Diff(nil, routeObjects(t, 1, "a")))
	if err == nil {
		t.Fatal("Apply into a removed directory succeeded")
	}
	if st := s.Stats(); st.Errors != 1 || st.Version != 0 || !strings.Contains(st.LastError, "apisix.yaml") {
		t.Errorf("stats after failed write = %+v", st)
	}
	if len(s.Objects()) != 0 {
		t.Error("a failed Apply changed the sink's objects")
	}
	// The batch is retried by the pipeline; once the directory is back it succeeds.
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	apply(t, s, routeObjects(t, 1, "a"))
	if st := s.Stats(); st.Version != 1 || st.LastError != "" {
		t.Errorf("stats after recovery = %+v", st)
	}
	if err := s.Apply(context.Background(), apisix.ChangeSet{Put: map[string][]byte{"bad": nil}}); err == nil {
		t.Error("Apply accepted a malformed key")
	}
}

// TestAtomicWrite has a reader loop over the file while the sink rewrites it with
// contents of very different sizes: every read must be exactly one of the complete
// versions (APISIX reading the file at the wrong moment must never see a partial one).
func TestAtomicWrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apisix.yaml")
	s, err := New(Options{Path: path, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	versions := []map[string][]byte{routeObjects(t, 1, "small"), routeObjects(t, 2000, "large"), routeObjects(t, 300, "medium")}
	complete := map[string]bool{}
	for _, v := range versions {
		b, _ := Render(v, YAML)
		complete[string(b)] = true
	}
	apply(t, s, versions[0])

	const writes = 30
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reads, bad int
	var badSample string
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			default:
			}
			b, err := os.ReadFile(path)
			if err != nil {
				bad++
				badSample = err.Error()
				continue
			}
			reads++
			if !complete[string(b)] {
				bad++
				badSample = fmt.Sprintf("%d bytes ending %q", len(b), b[max(0, len(b)-40):])
			}
		}
	}()
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < writes && time.Now().Before(deadline); i++ {
		apply(t, s, versions[(i+1)%len(versions)])
	}
	close(done)
	wg.Wait()
	if bad > 0 {
		t.Fatalf("%d of %d reads saw an incomplete file, e.g. %s", bad, reads, badSample)
	}
	if reads == 0 {
		t.Fatal("the reader never read the file")
	}
	t.Logf("%d reads during %d writes, all complete", reads, s.Stats().Writes)
}

// A file its operator narrowed (it holds the workload's private key) keeps its mode
// when rewritten.
func TestWriteAtomicKeepsTheMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), "apisix.yaml")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil { // whatever the umask
		t.Fatal(err)
	}
	if err := WriteAtomic(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode after a rewrite %v, want 0600", info.Mode().Perm())
	}
}
