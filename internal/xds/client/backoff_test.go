package client

import (
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.2}
	mid := func() float64 { return 0.5 } // no jitter
	for failures, want := range map[int]time.Duration{
		0:  100 * time.Millisecond, // treated as the first failure
		1:  100 * time.Millisecond,
		2:  200 * time.Millisecond,
		3:  400 * time.Millisecond,
		4:  800 * time.Millisecond,
		5:  time.Second, // capped
		50: time.Second,
	} {
		if got := b.delay(failures, mid); got != want {
			t.Errorf("delay(%d) = %v, want %v", failures, got, want)
		}
	}
	// Jitter spreads the delay over [1-j, 1+j] times the nominal value.
	if got, want := b.delay(2, func() float64 { return 0 }), 160*time.Millisecond; got != want {
		t.Errorf("lowest jitter: %v, want %v", got, want)
	}
	if got, want := b.delay(2, func() float64 { return 0.999999 }), 240*time.Millisecond; got < want-time.Millisecond || got > want {
		t.Errorf("highest jitter: %v, want just below %v", got, want)
	}
}

// The failure count restarts after a stream that got a response, so the first retry
// after a long-lived stream ends waits Backoff.Initial, not the last (long) delay.
func TestBackoffResetsAfterResponse(t *testing.T) {
	f := 0
	for range 5 {
		f = nextFailures(f, false)
	}
	if f != 5 {
		t.Fatalf("failures %d after 5 failed attempts", f)
	}
	if f = nextFailures(f, true); f != 1 {
		t.Errorf("failures %d after a stream with a response, want 1", f)
	}
}

func TestConfigDefaults(t *testing.T) {
	c, err := Config{Server: "127.0.0.1:15010", Node: nodeWithID("x")}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.Protocol != Delta || c.Backoff.Initial <= 0 || c.Backoff.Max < c.Backoff.Initial || c.ResourceTimeout <= 0 || c.Logger == nil {
		t.Errorf("defaults not applied: %+v", c)
	}
}

func nodeWithID(id string) *corev3.Node { return &corev3.Node{Id: id} }
