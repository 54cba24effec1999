// Package backoff computes the waits between attempts of something that keeps failing.
package backoff

import (
	"math"
	"time"
)

// Exponential is exponential backoff: the wait after n failed attempts in a row is
// Initial·Multiplier^(n-1), at most Max, scaled by a factor drawn from
// [1-Jitter, 1+Jitter] so that clients that failed together do not retry together.
type Exponential struct {
	Initial, Max time.Duration
	Multiplier   float64
	Jitter       float64 // 0: no jitter
}

// Delay is the wait after n failed attempts in a row (n < 1 counts as 1); r, in
// [0, 1), draws the jitter (a parameter so that tests can pin it).
func (e Exponential) Delay(n int, r float64) time.Duration {
	n = max(n, 1)
	d := float64(e.Initial) * math.Pow(e.Multiplier, float64(n-1))
	if d > float64(e.Max) {
		d = float64(e.Max)
	}
	d *= 1 - e.Jitter + 2*e.Jitter*r
	return time.Duration(d)
}
