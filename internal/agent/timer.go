package agent

import "time"

// timerMargin is how long before a deadline preciseAfter stops relying on Go's timers.
// The runtime sleeps in the network poller (epoll_wait on Linux) in whole
// milliseconds, so a timer fires up to 1 ms late — how late depends on where in a
// millisecond the process fell asleep — and that lateness is added to every change's
// latency through the coalescing window (BENCHMARKS.md has the figures).
const timerMargin = time.Millisecond

// preciseAfter is time.After(d) without the runtime's millisecond rounding: a Go timer
// wakes it up to timerMargin early and it sleeps the rest in the kernel (sleepFor),
// which is precise to tens of microseconds. The final sleep blocks the timer's own
// goroutine (and its thread), never the caller. The channel is buffered, so nothing
// leaks when the caller stops waiting.
func preciseAfter(d time.Duration) <-chan time.Time {
	ch := make(chan time.Time, 1)
	deadline := time.Now().Add(d)
	time.AfterFunc(max(0, d-timerMargin), func() {
		for rest := time.Until(deadline); rest > 0; rest = time.Until(deadline) {
			sleepFor(rest) // may return early (a signal): sleep again
		}
		ch <- time.Now()
	})
	return ch
}
