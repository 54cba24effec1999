package translate

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/store"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// The two large parts of a first translation are pure per item: a virtual host in,
// its routes, the upstream variants they reference and its findings out; a cluster and
// its endpoints in, an upstream per referenced variant and the cluster's findings out.
// A first translation builds tens of thousands of each, so they are built on every
// core, while everything that touches the translator's state (the plan before,
// reference counts, indexes and digests after) stays on the calling goroutine, in the
// order a serial translation would use. The result does not depend on the number of
// workers (TestParallelMatchesSerial).

// parallelMin is the number of items from which the builds are spread over
// GOMAXPROCS goroutines; below it the goroutines would cost more than they save (an
// endpoint change builds one cluster). A variable so that tests can force either path.
var parallelMin = 256

// upJob is one cluster to build: its referenced upstream ids in, their JSON out.
type upJob struct {
	name    string
	cs      *clusterState
	rebuild bool     // the cluster or its endpoints changed: its report is redone too
	ids     []string // the upstream ids routes reference; none: only the report

	rep []report.Entry
	out []store.Object // per id
}

// buildUpstreams fills rep and out of every job. It only reads translator state
// (clusters, ups, objects), which nothing writes while it runs.
func (t *Translator) buildUpstreams(jobs []upJob) {
	t.parallel(len(jobs), func(sc *scratch, i int) { t.buildUpstream(&sc.enc, &jobs[i]) })
}

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
	workers := runtime.GOMAXPROCS(0)
	if n < parallelMin || workers < 2 {
		for i := 0; i < n; i++ {
			build(&t.sc, i)
		}
		return
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		panicked any
		next     atomic.Int64
	)
	// Workers take chunks in turn rather than fixed shares: items differ in cost, and
	// the garbage collector borrows a core now and then, so fixed halves left one core
	// idle at the end. A chunk is contiguous, so each worker writes its own part of the
	// jobs.
	const chunk = 64
	for range workers {
		wg.Go(func() {
			// A panic must reach Translate's caller (which recovers and rebuilds), not
			// kill the process from a goroutine nobody recovers.
			defer func() {
				if r := recover(); r != nil {
					mu.Lock()
					if panicked == nil {
						panicked = r
					}
					mu.Unlock()
				}
			}()
			var sc scratch
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= n {
					return
				}
				for i := lo; i < min(lo+chunk, n); i++ {
					build(&sc, i)
				}
			}
		})
	}
	wg.Wait()
	if panicked != nil {
		panic(fmt.Sprintf("translate: parallel build: %v", panicked))
	}
}

func (t *Translator) buildUpstream(enc *store.Encoder, j *upJob) {
	cs := j.cs
	if j.rebuild {
		j.ids = t.idsOf(j.name)
	}
	if len(j.ids) == 0 {
		j.rep = upstream.Report(j.name, cs.src.Shape(), cs.cla)
		return
	}
	base, rep := upstream.BuildUnnamed(j.name, cs.src.Shape(), cs.cla) // ApplyAs names each variant
	j.rep = rep
	j.out = make([]store.Object, len(j.ids))
	for k, id := range j.ids {
		r := t.refs.byID[id]
		u := r.v.ApplyAs(base, id) // routes name the variant they asked for
		j.out[k] = t.out.Encode(enc, r.key, u)
	}
}

// vhostJob is one virtual host to build: its route configuration's context, the
// virtual host and its wire form in; the built virtual host, the upstreams it
// references and its encoded routes out.
type vhostJob struct {
	st   *rcState
	vh   *routev3.VirtualHost
	wire []byte

	vs       *vhostState
	acquires []acquired
	routes   []store.Object
}

// buildVhosts builds the virtual hosts syncRC queued, then adopts them in queue
// order, as rebuildVhost would have one by one. Builds only read translator state
// (clusters, the output's digests), which nothing writes while they run.
func (t *Translator) buildVhosts() {
	jobs := t.call.vhostJobs
	t.call.vhostJobs = nil
	t.parallel(len(jobs), func(sc *scratch, i int) { t.buildVhost(sc, &jobs[i]) })
	for i := range jobs {
		t.adoptVhost(&jobs[i])
	}
}

// sortReport sorts a report as report.Sort does; a long one (a first translation of
// Istio's output has a finding per cluster) as two halves on two goroutines, merged.
func sortReport(es []report.Entry) {
	if len(es) < 4*parallelMin || runtime.GOMAXPROCS(0) < 2 {
		report.Sort(es)
		return
	}
	mid := len(es) / 2
	a, b := es[:mid], es[mid:]
	var wg sync.WaitGroup
	wg.Go(func() { report.Sort(a) })
	report.Sort(b)
	wg.Wait()
	merged := make([]report.Entry, 0, len(es))
	for len(a) > 0 && len(b) > 0 {
		if report.Compare(&b[0], &a[0]) < 0 {
			merged, b = append(merged, b[0]), b[1:]
		} else {
			merged, a = append(merged, a[0]), a[1:]
		}
	}
	merged = append(append(merged, a...), b...)
	copy(es, merged)
}
