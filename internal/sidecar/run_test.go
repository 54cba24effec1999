package sidecar

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/config"
)

// blockUntilDone is a task that runs until its context ends and records that it did.
func blockUntilDone(stopped chan<- string, name string) task {
	return task{name, func(ctx context.Context) error {
		<-ctx.Done()
		stopped <- name
		return ctx.Err()
	}}
}

func TestRunAll(t *testing.T) {
	quiet := slog.New(slog.DiscardHandler)
	for _, c := range []struct {
		name    string
		failing func(context.Context) error
		want    string // "" means nil
	}{
		{"panic", func(context.Context) error { panic("boom") }, "failing panicked: boom"},
		{"error", func(context.Context) error { return errors.New("broken") }, "failing: broken"},
		{"early nil", func(context.Context) error { return nil }, "failing stopped"},
	} {
		stopped := make(chan string, 1)
		err := runAll(context.Background(), quiet, []task{blockUntilDone(stopped, "other"), {"failing", c.failing}})
		if err == nil || err.Error() != c.want {
			t.Errorf("%s: runAll = %v, want %q", c.name, err, c.want)
		}
		// runAll returns only after the other task has stopped.
		select {
		case <-stopped:
		default:
			t.Errorf("%s: runAll returned before the other task stopped", c.name)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan string, 2)
	done := make(chan error)
	go func() {
		done <- runAll(ctx, quiet, []task{blockUntilDone(stopped, "a"), {"b", func(ctx context.Context) error {
			<-ctx.Done()
			stopped <- "b"
			return nil // like pluginsync: nil on cancellation
		}}})
	}()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("runAll after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runAll did not return after cancel")
	}
	if len(stopped) != 2 {
		t.Errorf("%d of 2 tasks stopped", len(stopped))
	}
}

func TestRunReportsStatusListenError(t *testing.T) {
	cfg := loadConfig(t, "AMESH_XDS_ADDRESS=127.0.0.1:1", "AMESH_STATUS_ADDR=256.0.0.1:1")
	s, err := New(cfg, nil, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "status server") {
		t.Errorf("Run = %v, want the status server's listen error", err)
	}
}

func TestControllerTLS(t *testing.T) {
	if _, err := controllerTLS(config.Controller{Address: "amesh-controller.amesh-system.svc:15090", TLS: true}); err != nil {
		t.Errorf("system roots: %v", err)
	}
	if _, err := controllerTLS(config.Controller{Address: "c:1", TLS: true, CAFile: "/nonexistent/ca.pem"}); err == nil {
		t.Error("a missing CA file was accepted")
	}
	if _, err := controllerTLS(config.Controller{Address: "no-port", TLS: true}); err == nil {
		t.Error("TLS without a server name to verify was accepted")
	}
	if _, err := controllerTLS(config.Controller{Address: "no-port", TLS: true, ServerName: "ctl"}); err != nil {
		t.Errorf("explicit server name: %v", err)
	}
}
