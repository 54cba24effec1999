package client

import (
	"time"

	"github.com/amesh-dev/amesh/internal/backoff"
)

// delay returns the wait before the next attempt after failures consecutive failed
// attempts (failures >= 1). rnd returns a float in [0,1); it is a parameter so tests
// can pin the jitter.
func (b Backoff) delay(failures int, rnd func() float64) time.Duration {
	return backoff.Exponential{Initial: b.Initial, Max: b.Max, Multiplier: b.Multiplier, Jitter: b.Jitter}.Delay(failures, rnd())
}
