package client

import (
	"math"
	"math/rand/v2"
	"time"
)

// delay returns the wait before the next attempt after failures consecutive failed
// attempts (failures >= 1). rnd returns a float in [0,1); it is a parameter so tests
// can pin the jitter.
func (b Backoff) delay(failures int, rnd func() float64) time.Duration {
	if failures < 1 {
		failures = 1
	}
	d := float64(b.Initial) * math.Pow(b.Multiplier, float64(failures-1))
	if d > float64(b.Max) {
		d = float64(b.Max)
	}
	d *= 1 - b.Jitter + 2*b.Jitter*rnd()
	return time.Duration(d)
}

func defaultRand() float64 { return rand.Float64() }
