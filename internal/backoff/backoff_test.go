package backoff

import (
	"testing"
	"time"
)

func TestExponential(t *testing.T) {
	e := Exponential{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}
	for n, want := range map[int]time.Duration{
		0:    100 * time.Millisecond, // counts as the first failure
		1:    100 * time.Millisecond,
		2:    200 * time.Millisecond,
		4:    800 * time.Millisecond,
		5:    time.Second, // capped
		2000: time.Second, // no overflow
	} {
		if got := e.Delay(n, 0.7); got != want {
			t.Errorf("Delay(%d) = %v, want %v (no jitter)", n, got, want)
		}
	}
	e.Jitter = 0.2
	if got, want := e.Delay(2, 0), 160*time.Millisecond; got != want {
		t.Errorf("lowest jitter: %v, want %v", got, want)
	}
	if got, want := e.Delay(2, 0.5), 200*time.Millisecond; got != want {
		t.Errorf("middle jitter: %v, want %v", got, want)
	}
	if got, want := e.Delay(2, 0.999999), 240*time.Millisecond; got < want-time.Millisecond || got > want {
		t.Errorf("highest jitter: %v, want just below %v", got, want)
	}
	if got := (Exponential{Initial: time.Minute, Max: time.Second, Multiplier: 2}).Delay(1, 0); got != time.Second {
		t.Errorf("Initial above Max: %v, want Max", got)
	}
}
