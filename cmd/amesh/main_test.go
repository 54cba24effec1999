package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amesh-dev/amesh/internal/version"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuffer is a bytes.Buffer that a command may write from other goroutines while
// the test waits for some text to appear.
type syncBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{changed: make(chan struct{}, 1)} }

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	select {
	case b.changed <- struct{}{}:
	default:
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor blocks until the buffer contains s, failing the test after timeout.
func (b *syncBuffer) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(b.String(), s) {
		select {
		case <-b.changed:
		case <-deadline:
			t.Fatalf("output lacks %q after %s:\n%s", s, timeout, b.String())
		}
	}
}

// withContext is the context long-running commands run under in a test, in place of
// Ctrl-C: cancel stops them; it is cancelled when the test ends.
func withContext(t *testing.T) (context.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, cancel
}

// runCmd runs the command in-process and returns its exit code and output.
func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// assertOneLineError checks the contract for bad input: exit code 1 and exactly one
// line on stderr that starts with the command and names the problem, no stack trace.
func assertOneLineError(t *testing.T, code int, stderr, prefix, mention string) {
	t.Helper()
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if strings.Count(stderr, "\n") != 1 || !strings.HasSuffix(stderr, "\n") {
		t.Errorf("stderr is not exactly one line:\n%s", stderr)
	}
	if !strings.HasPrefix(stderr, prefix) || !strings.Contains(stderr, mention) {
		t.Errorf("stderr = %q, want prefix %q mentioning %q", stderr, prefix, mention)
	}
	for _, bad := range []string{"goroutine ", "panic", ".go:"} {
		if strings.Contains(stderr, bad) {
			t.Errorf("stderr looks like a stack trace (%q): %s", bad, stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd("version")
	if code != 0 || !strings.HasPrefix(out, "amesh "+version.String()+" (go") {
		t.Errorf("amesh version = %d %q", code, out)
	}
	old := version.Version
	version.Version = "v1.2.3-test"
	defer func() { version.Version = old }()
	if code, out, _ := runCmd("version", "-short"); code != 0 || out != "v1.2.3-test\n" {
		t.Errorf("amesh version -short = %d %q, want the -ldflags version", code, out)
	}
}

func TestUsage(t *testing.T) {
	if code, _, stderr := runCmd(); code != 2 || !strings.Contains(stderr, "translate") {
		t.Errorf("amesh without a command = %d %q", code, stderr)
	}
	if code, _, stderr := runCmd("-h"); code != 0 || !strings.Contains(stderr, "demo") {
		t.Errorf("amesh -h = %d %q", code, stderr)
	}
	code, _, stderr := runCmd("frobnicate")
	if code != 2 || stderr != "amesh: unknown command \"frobnicate\" (try amesh -h)\n" {
		t.Errorf("unknown command = %d %q", code, stderr)
	}
	if code, _, _ := runCmd("translate", "-no-such-flag"); code != 2 {
		t.Errorf("unknown flag: exit %d, want 2", code)
	}
	if code, _, _ := runCmd("version", "extra"); code != 2 {
		t.Errorf("extra argument: exit %d, want 2", code)
	}
	if code, _, stderr := runCmd("agent", "-h"); code != 0 || !strings.Contains(stderr, "-xds-address") {
		t.Errorf("amesh agent -h = %d %q", code, stderr)
	}
}
