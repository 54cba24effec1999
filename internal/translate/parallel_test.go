package translate

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The output, change sets and report do not depend on whether upstreams are built on
// one goroutine or several: a first translation, an endpoint change, a cluster
// change and a full resend, compared step by step (run with -race, this also checks
// that the builds only read shared state).
func TestParallelMatchesSerial(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: the parallel path is never taken")
	}
	steps := func(m *meshgen.Mesh) []*resource.State {
		return []*resource.State{m.Snapshot(), m.ChangeEndpoint(4), m.ChangeEndpoint(9), m.Resend()}
	}
	run := func(min int) (outs []string) {
		m := meshgen.Generate(meshgen.Options{Services: 40})
		tr := newTracked(Options{ParallelMin: min})
		for _, s := range steps(m) {
			r := tr.Translate(s)
			outs = append(outs, fmt.Sprintf("put %d %v delete %v report %v", len(r.Changes.Put), slices.Sorted(maps.Keys(r.Changes.Put)), r.Changes.Delete, r.Report))
			outs = append(outs, fmt.Sprint(tr.Objects()))
		}
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

// A panic in a build on a worker goroutine reaches the caller of parallel (the caller
// of Translate, which drops the translator) rather than ending the process.
func TestParallelBuildPanicReachesCaller(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: the parallel path is never taken")
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "injected") {
			t.Fatalf("recovered %v, want the panic of the build", r)
		}
	}()
	New(Options{ParallelMin: 1}).parallel(64, func(_ *scratch, i int) {
		if i == 63 {
			panic("injected")
		}
	})
}
