package agent

import (
	"slices"
	"testing"
	"time"
)

// The window is a lower bound: preciseAfter never fires before its duration, whether
// the duration is under, at or over the margin it sleeps in the kernel.
func TestPreciseAfterNeverEarly(t *testing.T) {
	for _, d := range []time.Duration{0, 300 * time.Microsecond, timerMargin, 3*timerMargin + 123*time.Microsecond} {
		for range 5 {
			t0 := time.Now()
			fired := <-preciseAfter(d)
			if got := fired.Sub(t0); got < d {
				t.Errorf("preciseAfter(%v) fired after %v", d, got)
			}
		}
	}
}

// BenchmarkTimerLateness reports how late a 5 ms wait ends with preciseAfter and with
// time.After (p50 and p99 of the lateness, µs).
func BenchmarkTimerLateness(b *testing.B) {
	const d = 5 * time.Millisecond
	for _, c := range []struct {
		name  string
		after func(time.Duration) <-chan time.Time
	}{{"precise", preciseAfter}, {"time.After", time.After}} {
		b.Run(c.name, func(b *testing.B) {
			var late []time.Duration
			for b.Loop() {
				t0 := time.Now()
				<-c.after(d)
				late = append(late, time.Since(t0)-d)
			}
			slices.Sort(late)
			b.ReportMetric(float64(late[len(late)/2].Microseconds()), "p50-late-µs")
			b.ReportMetric(float64(late[len(late)*99/100].Microseconds()), "p99-late-µs")
		})
	}
}
