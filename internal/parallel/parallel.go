// Package parallel spreads a loop over independent items across the processors.
package parallel

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Workers is how many goroutines to spread n items over: GOMAXPROCS, at most n, and 1
// when n is below least (below some count, starting goroutines costs more than it
// saves).
func Workers(n, least int) int {
	if n < least {
		return 1
	}
	return max(1, min(runtime.GOMAXPROCS(0), n))
}

// For covers [0, n) with consecutive ranges and runs them on workers goroutines. Each
// goroutine calls work once, for a function of its own (which may keep buffers of
// that goroutine), and calls that function with each range it takes. With chunk 0,
// each goroutine takes one range, an equal share; otherwise ranges of chunk items go
// to whichever goroutine is free, which keeps every goroutine busy to the end when
// items differ in cost. With one worker, everything runs on the calling goroutine.
//
// A panic in a worker is raised again on the calling goroutine once every worker has
// returned, so that it reaches the caller's recover rather than ending the process.
func For(n, workers, chunk int, work func() func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if workers < 2 {
		work()(0, n)
		return
	}
	var (
		wg       sync.WaitGroup
		once     sync.Once
		panicked any
		next     atomic.Int64
	)
	size := chunk
	if size <= 0 {
		size = (n + workers - 1) / workers
	}
	for w := range workers {
		if chunk <= 0 && w*size >= n {
			break
		}
		wg.Go(func() {
			defer func() {
				if r := recover(); r != nil {
					once.Do(func() { panicked = r })
				}
			}()
			f := work()
			if chunk <= 0 {
				f(w*size, min((w+1)*size, n))
				return
			}
			for {
				lo := int(next.Add(int64(size))) - size
				if lo >= n {
					return
				}
				f(lo, min(lo+size, n))
			}
		})
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
}
