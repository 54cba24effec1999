package translate

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// withParallelMin runs f with the given threshold for parallel upstream builds.
func withParallelMin(t *testing.T, n int, f func()) {
	t.Helper()
	old := parallelMin
	parallelMin = n
	defer func() { parallelMin = old }()
	f()
}

// The output, change sets and report do not depend on whether upstreams are built on
// one goroutine or several: a first translation, an endpoint change, a cluster
// change and a full resend, compared step by step (run with -race, this also checks
// that the builds only read shared state).
func TestParallelMatchesSerial(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: the parallel path is never taken")
	}
	steps := func(m *meshgen.Mesh) []*resource.Snapshot {
		return []*resource.Snapshot{m.Snapshot(), m.ChangeEndpoint(4), m.ChangeEndpoint(9), m.Resend()}
	}
	run := func(min int) (outs []string) {
		withParallelMin(t, min, func() {
			m := meshgen.Generate(meshgen.Options{Services: 40})
			tr := newTracked(Options{})
			for _, s := range steps(m) {
				r := tr.Translate(s)
				outs = append(outs, fmt.Sprintf("put %d %v delete %v report %v", len(r.Changes.Put), sortedKeys(r.Changes.Put), r.Changes.Delete, r.Report))
				outs = append(outs, fmt.Sprint(tr.Objects()))
			}
		})
		return outs
	}
	serial, parallel := run(1<<30), run(1)
	if len(serial) != len(parallel) {
		t.Fatalf("%d steps serial, %d parallel", len(serial), len(parallel))
	}
	for i := range serial {
		if serial[i] != parallel[i] {
			t.Errorf("step %d differs between serial and parallel upstream builds", i/2)
		}
	}
}

// A panic while building upstreams on a worker goroutine reaches Translate's caller,
// and the next translation recovers, as for a panic anywhere else.
func TestParallelUpstreamPanicReachesCaller(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: the parallel path is never taken")
	}
	withParallelMin(t, 1, func() {
		m := meshgen.Generate(meshgen.Options{Services: 20})
		tr := New(Options{})
		snap := m.Snapshot()
		// An upstream id that routes reference but the translator lost makes the
		// build panic on a worker.
		func() {
			testHookAfterRouteConfigs = func() {
				for id := range tr.ups {
					delete(tr.ups, id)
					break
				}
			}
			defer func() {
				testHookAfterRouteConfigs = nil
				if recover() == nil {
					t.Fatal("the panic on a worker did not reach the caller")
				}
			}()
			tr.Translate(snap)
		}()
		r := tr.Translate(m.Resend())
		if len(r.Changes.Delete) != 0 || !sameObjects(applyChanges(nil, r.Changes), fullFrom(t, m)) {
			t.Fatal("after a panic on a worker, the next change set is not the complete output")
		}
	})
}
