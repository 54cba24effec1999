//go:build !linux

package agent

import "time"

// sleepFor is time.Sleep where no precise kernel sleep is wired up.
func sleepFor(d time.Duration) { time.Sleep(d) }
