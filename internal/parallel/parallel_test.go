package parallel

import (
	"fmt"
	"runtime"
	"sync"
	"testing"
)

// Every index is covered exactly once, whatever the split: equal shares or chunks,
// more workers than items, one worker.
func TestForCoversEveryIndexOnce(t *testing.T) {
	for _, tc := range []struct{ n, workers, chunk int }{
		{0, 4, 0}, {1, 4, 0}, {7, 4, 0}, {1000, 3, 0}, {1000, 3, 64}, {5, 8, 2}, {100, 1, 0}, {100, 1, 64},
	} {
		t.Run(fmt.Sprint(tc), func(t *testing.T) {
			seen := make([]int, tc.n)
			var mu sync.Mutex
			calls := 0
			For(tc.n, tc.workers, tc.chunk, func() func(lo, hi int) {
				mu.Lock()
				calls++
				mu.Unlock()
				return func(lo, hi int) {
					if lo >= hi {
						t.Errorf("empty range [%d, %d)", lo, hi)
					}
					for i := lo; i < hi; i++ {
						seen[i]++
					}
				}
			})
			for i, k := range seen {
				if k != 1 {
					t.Fatalf("index %d seen %d times", i, k)
				}
			}
			if calls > max(tc.workers, 1) {
				t.Errorf("work called %d times for %d workers", calls, tc.workers)
			}
		})
	}
}

// With chunk 0 each goroutine gets one contiguous share, and shares are equal but
// for the last.
func TestForEqualShares(t *testing.T) {
	var mu sync.Mutex
	var ranges [][2]int
	For(10, 3, 0, func() func(lo, hi int) {
		return func(lo, hi int) {
			mu.Lock()
			ranges = append(ranges, [2]int{lo, hi})
			mu.Unlock()
		}
	})
	want := map[[2]int]bool{{0, 4}: true, {4, 8}: true, {8, 10}: true}
	if len(ranges) != 3 {
		t.Fatalf("ranges %v, want %v", ranges, want)
	}
	for _, r := range ranges {
		if !want[r] {
			t.Errorf("range %v, want one of %v", r, want)
		}
	}
}

// A panic on a worker goroutine reaches the caller, after every worker returned.
func TestForPanicReachesCaller(t *testing.T) {
	var mu sync.Mutex
	done := 0
	defer func() {
		if r := recover(); r != "injected" {
			t.Fatalf("recovered %v, want the worker's panic", r)
		}
		if done != 4 {
			t.Errorf("%d of 4 workers returned before the panic reached the caller", done)
		}
	}()
	For(300, 4, 0, func() func(lo, hi int) {
		return func(lo, hi int) {
			defer func() { mu.Lock(); done++; mu.Unlock() }()
			if lo == 0 {
				panic("injected")
			}
		}
	})
}

func TestWorkers(t *testing.T) {
	p := runtime.GOMAXPROCS(0)
	for _, tc := range []struct{ n, least, want int }{
		{10, 100, 1}, {0, 0, 1}, {1, 0, 1}, {1000, 100, p}, {p, 0, p},
	} {
		if got := Workers(tc.n, tc.least); got != tc.want {
			t.Errorf("Workers(%d, %d) = %d, want %d", tc.n, tc.least, got, tc.want)
		}
	}
}
