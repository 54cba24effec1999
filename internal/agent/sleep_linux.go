package agent

import (
	"syscall"
	"time"
)

// sleepFor sleeps in nanosleep(2), which the kernel times with high-resolution timers.
func sleepFor(d time.Duration) {
	ts := syscall.NsecToTimespec(int64(d))
	_ = syscall.Nanosleep(&ts, nil) // EINTR: the caller checks the time and sleeps again
}
