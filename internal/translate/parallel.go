package translate

// The two large parts of a first translation are pure per item: a virtual host in,
// its routes, the upstream variants they reference and its findings out; a cluster and
// its endpoints in, an upstream per referenced variant and the cluster's findings out.
// A first translation builds tens of thousands of each, so they are built on every
// core, while everything that writes the translator's state (the plan before;
// reference counts, the index and the store after) stays on the calling goroutine, in
// the order a serial translation would use. The result does not depend on the number
// of workers (TestParallelMatchesSerial).

import (
	"fmt"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/parallel"
	"github.com/amesh-dev/amesh/internal/translate/store"
)

// parallelMin is the number of items from which the builds are spread over
// GOMAXPROCS goroutines; below it the goroutines would cost more than they save (an
// endpoint change builds one cluster). A variable so that tests can force either path.
var parallelMin = 256

// scratch is the reusable buffers of one goroutine of a translation.
type scratch struct {
	enc    store.Encoder
	refs   refLists
	routes []apisix.Route
}

// parallel calls build for 0..n-1, on GOMAXPROCS goroutines (each with its own
// scratch) when n is at least parallelMin, else on this one with t.sc. A panic in a
// build reaches the caller.
func (t *Translator) parallel(n int, build func(sc *scratch, i int)) {
	workers := parallel.Workers(n, parallelMin)
	if workers < 2 {
		for i := 0; i < n; i++ {
			build(&t.sc, i)
		}
		return
	}
	// A panic must reach Translate's caller (which drops the translator), not end the
	// process from a goroutine nobody recovers.
	defer func() {
		if r := recover(); r != nil {
			panic(fmt.Sprintf("translate: parallel build: %v", r))
		}
	}()
	// Workers take chunks in turn rather than fixed shares: items differ in cost, and
	// the garbage collector borrows a core now and then, so fixed halves would leave
	// one core idle at the end. A chunk is contiguous, so each worker writes its own
	// part of the jobs.
	const chunk = 64
	parallel.For(n, workers, chunk, func() func(lo, hi int) {
		var sc scratch
		return func(lo, hi int) {
			for i := lo; i < hi; i++ {
				build(&sc, i)
			}
		}
	})
}
