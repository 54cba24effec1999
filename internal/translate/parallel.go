package translate

import (
	"bytes"
	"fmt"
	"runtime"
	"sync"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// Building upstreams is the one large part of a translation that is pure per
// cluster: a cluster and its endpoints in, an upstream per referenced variant and the
// cluster's findings out. A first translation builds tens of thousands of them, so
// they are built on every core, while everything that touches the translator's state
// (the plan before, storing digests after) stays on the calling goroutine. The result
// does not depend on the number of workers (TestParallelUpstreamsMatchSerial).

// parallelMin is the number of clusters from which the builds are spread over
// GOMAXPROCS goroutines; below it the goroutines would cost more than they save (an
// endpoint change builds one cluster). A variable so that tests can force either path.
var parallelMin = 256

// upJob is one cluster to build: its referenced upstream ids in, their JSON out.
type upJob struct {
	cs      *clusterState
	rebuild bool     // the cluster or its endpoints changed: its report is redone too
	ids     []string // the upstream ids routes reference; none: only the report

	rep []report.Entry
	out []upOut // per id
}

type upOut struct {
	hash uint64
	json []byte // an owned copy; nil when the digest is unchanged
}

// buildUpstreams fills rep and out of every job. It only reads translator state
// (clusters, ups, objects), which nothing writes while it runs.
func (t *Translator) buildUpstreams(jobs []upJob) {
	workers := runtime.GOMAXPROCS(0)
	if len(jobs) < parallelMin || workers < 2 {
		for i := range jobs {
			t.buildUpstream(&t.enc, &jobs[i])
		}
		return
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		panicked any
	)
	// Contiguous shares keep each worker's writes in its own part of jobs.
	share := (len(jobs) + workers - 1) / workers
	for lo := 0; lo < len(jobs); lo += share {
		part := jobs[lo:min(lo+share, len(jobs))]
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
			var enc encoder
			for i := range part {
				t.buildUpstream(&enc, &part[i])
			}
		})
	}
	wg.Wait()
	if panicked != nil {
		panic(fmt.Sprintf("translate: building upstreams: %v", panicked))
	}
}

func (t *Translator) buildUpstream(enc *encoder, j *upJob) {
	cs := j.cs
	if len(j.ids) == 0 {
		j.rep = clusterReport(cs.c, cs.cla)
		return
	}
	base, rep := buildUnnamed(cs.c, cs.cla) // ApplyAs names each variant
	j.rep = rep
	j.out = make([]upOut, len(j.ids))
	for k, id := range j.ids {
		u := t.ups[id].v.ApplyAs(base, id) // routes name the variant they asked for
		key := apisix.Key(apisix.KindUpstreams, id)
		b := enc.mustEncode(key, u)
		h := apisix.Hash(b)
		if old, ok := t.objects[key]; !ok || old != h {
			j.out[k].json = bytes.Clone(b)
		}
		j.out[k].hash = h
	}
}

// mustEncode encodes an object of the model, which only holds JSON-encodable values.
func (e *encoder) mustEncode(key string, obj any) []byte {
	b, err := e.encode(obj)
	if err != nil {
		panic("translate: encode " + key + ": " + err.Error())
	}
	return b
}
