package file

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childEnv makes the test binary a writer that rewrites the file in this directory
// until it is killed (see TestWriterChild).
const childEnv = "AMESH_FILE_SINK_TEST_WRITER"

// TestWriterChild is the child process of TestStaleTempsAfterSIGKILL; it does nothing
// in a normal run.
func TestWriterChild(t *testing.T) {
	dir := os.Getenv(childEnv)
	if dir == "" {
		t.Skip("only runs as the child of TestStaleTempsAfterSIGKILL")
	}
	content := bytes.Repeat([]byte("routes: []\n"), 4<<20) // 44 MiB: each write takes a while
	for {
		if err := WriteAtomic(filepath.Join(dir, "apisix.yaml"), content); err != nil {
			t.Fatal(err)
		}
	}
}

// TestStaleTempsAfterSIGKILL kills a writer (a real child process) while it writes,
// which leaves its temporary file, as large as the configuration, behind; a new Sink
// for the same path removes it, and nothing else of the directory.
func TestStaleTempsAfterSIGKILL(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "apisix.yaml")
	var stale []string
	for attempt := 0; attempt < 20 && len(stale) == 0; attempt++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestWriterChild$")
		cmd.Env = append(os.Environ(), childEnv+"="+dir)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Kill it as soon as a temporary file exists (its write is under way).
		deadline := time.Now().Add(30 * time.Second)
		for len(temps(t, dir)) == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		stale = temps(t, dir) // the rename may have happened just before the kill
	}
	if len(stale) == 0 {
		t.Fatal("no temporary file was left behind by 20 killed writers")
	}
	t.Logf("left behind: %v", stale)

	// Files that are not ours: other names, another target's temporaries, a directory.
	others := []string{".apisix.yaml.tmp-", ".apisix.yaml.tmp-12x", ".apisix.json.tmp-123", "apisix.yaml.tmp-123", ".apisix.yaml.tmp-123.bak", "notes.txt"}
	for _, n := range others {
		if err := os.WriteFile(filepath.Join(dir, n), []byte("keep"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, ".apisix.yaml.tmp-456"), 0o755); err != nil {
		t.Fatal(err)
	}
	others = append(others, ".apisix.yaml.tmp-456")

	if _, err := New(Options{Path: path, Logger: quiet}); err != nil {
		t.Fatal(err)
	}
	if left := temps(t, dir); len(left) != 0 {
		t.Errorf("stale temporary files remain: %v", left)
	}
	for _, n := range others {
		if _, err := os.Lstat(filepath.Join(dir, n)); err != nil {
			t.Errorf("%s, not ours, was removed: %v", n, err)
		}
	}
}

// temps lists the temporary files WriteAtomic makes for apisix.yaml in dir.
func temps(t *testing.T, dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if rest, ok := strings.CutPrefix(e.Name(), ".apisix.yaml.tmp-"); ok && rest != "" && strings.Trim(rest, "0123456789") == "" && !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}
