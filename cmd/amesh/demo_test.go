package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `amesh demo` headless: it must write the file, show the live change and
// end cleanly when its context ends (what Ctrl-C does).
func TestDemo(t *testing.T) {
	ctx, cancel := withContext(t)
	dir := filepath.Join(t.TempDir(), "out") // created by the demo
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"demo", "-dir", dir, "-change-after", "0", "-duration", "2m"}, stdout, stderr)
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

// The demo prints the command that connects an agent of one's own to its control
// plane; run as printed (in another terminal), that agent makes its output directory
// and writes the same configuration as the demo's agent.
func TestDemoPrintsAgentCommand(t *testing.T) {
	ctx, cancel := withContext(t)
	t.Setenv("TMPDIR", t.TempDir()) // where the printed command writes
	t.Setenv("AMESH_CONFIG_FILE", "")
	t.Setenv("AMESH_LABELS_FILE", filepath.Join(t.TempDir(), "no-labels"))
	dir := t.TempDir()
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	demoDone := make(chan int, 1)
	go func() {
		demoDone <- run(ctx, []string{"demo", "-dir", dir, "-change-after", "0", "-xds-protocol", "sotw"}, stdout, stderr)
	}()
	stdout.waitFor(t, "in another terminal:\n", 60*time.Second)
	_, line, _ := strings.Cut(stdout.String(), "in another terminal:\n")
	line, _, _ = strings.Cut(strings.TrimSpace(line), "\n")
	fields := strings.Fields(line)
	var args []string
	for i, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok && args == nil && !strings.HasPrefix(f, "-") {
			t.Setenv(k, v)
			continue
		}
		if f == "agent" {
			args = fields[i:]
			break
		}
	}
	if args == nil || !strings.Contains(line, "-xds-protocol sotw") {
		t.Fatalf("no agent command in %q", line)
	}
	t.Logf("running %q", line)
	agentOut, agentErr := newSyncBuffer(), newSyncBuffer()
	agentDone := make(chan int, 1)
	go func() { agentDone <- run(ctx, args, agentOut, agentErr) }()
	agentOut.waitFor(t, "keeping it in sync", 30*time.Second)
	cancel()
	for _, done := range []chan int{demoDone, agentDone} {
		if code := <-done; code != 0 {
			t.Errorf("exit code %d; demo stderr %s; agent stderr %s", code, stderr, agentErr)
		}
	}
	output := args[slices.Index(args, "-output")+1]
	if !strings.HasPrefix(output, os.TempDir()) {
		t.Errorf("the command writes %s, outside the temporary directory %s", output, os.TempDir())
	}
	got, err := os.ReadFile(output)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(dir, "apisix.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the agent's file differs from the demo's:\n--- agent\n%s\n--- demo\n%s", got, want)
	}
}

func TestDemoBadFlags(t *testing.T) {
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
