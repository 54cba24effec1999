package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/translate"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// notifyBuffer lets the test wait for the demo's story to reach a point.
type notifyBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func (b *notifyBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *notifyBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// expectedFile is the standalone file for a mesh translated from scratch.
func expectedFile(t *testing.T, f file.Format, changed bool) []byte {
	t.Helper()
	m, err := sampleMesh()
	if err != nil {
		t.Fatal(err)
	}
	if changed {
		if m, err = liveChange(m); err != nil {
			t.Fatal(err)
		}
	}
	r := translate.New(translate.Options{}).Translate(m.Snapshot())
	b, err := file.Render(r.Changes.Put, f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// showsRemoval reports whether a "nodes: before -> after" line of the story has the
// removed endpoint before the arrow and not after it.
func showsRemoval(story string) bool {
	for _, line := range strings.Split(story, "\n") {
		before, after, ok := strings.Cut(strings.TrimSpace(line), " -> ")
		if ok && strings.HasPrefix(before, "nodes: ") && strings.Contains(before, removedEndpoint+":") && !strings.Contains(after, removedEndpoint+":") {
			return true
		}
	}
	return false
}

// waitLiveChange waits until the demo writing to out (and ending on done) has told
// the whole story up to the live change.
func waitLiveChange(t *testing.T, out *notifyBuffer, done <-chan error, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(out.String(), "stays in sync") {
		select {
		case err := <-done:
			t.Fatalf("demo ended early: %v\n%s", err, out.String())
		case <-out.changed:
		case <-deadline:
			t.Fatalf("demo did not get through the live change:\n%s", out.String())
		}
	}
}

var versionBump = regexp.MustCompile(`APISIX configuration version (\d+) -> (\d+)`)

// TestRunHeadless runs the whole demo (control plane, gRPC on loopback, client, agent,
// file sink) and checks the file after the live change is exactly the translation of
// the changed mesh, and that the story shows the change and a version bump.
func TestRunHeadless(t *testing.T) {
	for _, c := range []struct {
		protocol string
		format   file.Format
	}{{"delta", file.YAML}, {"sotw", file.JSON}} {
		t.Run(c.protocol+"-"+string(c.format), func(t *testing.T) {
			dir := t.TempDir()
			out := &notifyBuffer{changed: make(chan struct{}, 1)}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() {
				done <- Run(ctx, Options{Dir: dir, Format: c.format, Protocol: c.protocol, Out: out, Timeout: 20 * time.Second})
			}()
			waitLiveChange(t, out, done, 30*time.Second)
			got, err := os.ReadFile(filepath.Join(dir, "apisix."+string(c.format)))
			if err != nil {
				t.Fatal(err)
			}
			if want := expectedFile(t, c.format, true); !bytes.Equal(got, want) {
				t.Errorf("file after the live change differs from the changed mesh's translation:\n--- got\n%s\n--- want\n%s", got, want)
			}
			if bytes.Equal(got, expectedFile(t, c.format, false)) {
				t.Error("the live change did not change the file")
			}
			story := out.String()
			m := versionBump.FindStringSubmatch(story)
			if m == nil {
				t.Fatalf("no version bump in the output:\n%s", story)
			}
			if from, _ := strconv.Atoi(m[1]); from != 1 {
				t.Errorf("first configuration has version %s, want 1", m[1])
			}
			if from, _ := strconv.Atoi(m[1]); func() int { n, _ := strconv.Atoi(m[2]); return n }() <= from {
				t.Errorf("version did not increase: %s", m[0])
			}
			for _, want := range []string{"Routes (", "Upstreams (", "Translation report (", "Live change", "  ~ /routes/", "  ~ /upstreams/"} {
				if !strings.Contains(story, want) {
					t.Errorf("output lacks %q:\n%s", want, story)
				}
			}
			// The incremental update shows the removed pod leaving an upstream's nodes.
			if !showsRemoval(story) {
				t.Errorf("output does not show %s leaving an upstream:\n%s", removedEndpoint, story)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run after cancel: %v", err)
			}
			if c.format == file.YAML && !strings.HasSuffix(string(got), "#END\n") {
				t.Error("YAML file lacks #END")
			}
		})
	}
}

func TestRunDuration(t *testing.T) {
	// A duration shorter than the pause before the change ends the demo cleanly
	// after the first configuration.
	out := &notifyBuffer{changed: make(chan struct{}, 1)}
	dir := t.TempDir()
	err := Run(context.Background(), Options{Dir: dir, Out: out, Duration: 3 * time.Second, ChangeAfter: time.Hour})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !strings.Contains(out.String(), "APISIX configuration, version 1") {
		t.Errorf("no first configuration in:\n%s", out.String())
	}
	got, _ := os.ReadFile(filepath.Join(dir, "apisix.yaml"))
	if want := expectedFile(t, file.YAML, false); !bytes.Equal(got, want) {
		t.Errorf("file differs from the sample mesh's translation")
	}
}

func TestLiveChangeDoesNotModifyMesh(t *testing.T) {
	m, err := sampleMesh()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Listeners) != 4 || len(m.RouteConfigs) != 1 || len(m.Clusters) != 13 || len(m.Endpoints) != 9 {
		t.Fatalf("embedded mesh: %d listeners, %d route configs, %d clusters, %d endpoints; want 4, 1, 13, 9",
			len(m.Listeners), len(m.RouteConfigs), len(m.Clusters), len(m.Endpoints))
	}
	before := expectedFile(t, file.YAML, false)
	if _, err := liveChange(m); err != nil {
		t.Fatal(err)
	}
	r := translate.New(translate.Options{}).Translate(m.Snapshot())
	after, _ := file.Render(r.Changes.Put, file.YAML)
	if !bytes.Equal(before, after) {
		t.Error("liveChange modified its input")
	}
}
