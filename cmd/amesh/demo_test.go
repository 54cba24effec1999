package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `amesh demo` headless: it must write the file, show the live change and
// end cleanly when its context ends (what Ctrl-C does).
func TestDemo(t *testing.T) {
	cancel := withContext(t)
	dir := filepath.Join(t.TempDir(), "out") // created by the demo
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run([]string{"demo", "-dir", dir, "-change-after", "0", "-duration", "2m"}, stdout, stderr)
	}()
	stdout.waitFor(t, "stays in sync", 60*time.Second)
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("demo exited %d: %s", code, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop")
	}
	out := stdout.String()
	for _, want := range []string{"Control plane: serving the sample mesh", "== APISIX configuration, version 1", "== Live change", "APISIX configuration version 1 -> ", "Demo finished."} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "apisix.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := parseConfig(t, b, "yaml"); len(cfg["routes"]) == 0 || strings.Contains(string(b), `"127.0.0.23"`) {
		t.Errorf("file after the demo has no routes or still the removed endpoint:\n%s", b)
	}
	if s := stderr.String(); s != "" {
		t.Errorf("demo wrote to stderr at the default log level:\n%s", s)
	}
}

func TestDemoBadFlags(t *testing.T) {
	withContext(t)
	for _, c := range []struct {
		args    []string
		mention string
	}{
		{[]string{"-format", "xml"}, "xml"},
		{[]string{"-xds-protocol", "rest"}, "rest"},
		{[]string{"-log-level", "chatty"}, "chatty"},
		{[]string{"-dir", "/dev/null/x"}, "/dev/null/x"},
	} {
		code, _, stderr := runCmd(append([]string{"demo"}, c.args...)...)
		assertOneLineError(t, code, stderr, "amesh demo: ", c.mention)
	}
}
