package agent

import (
	"maps"
	"time"

	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/report"
)

// Stats is a point-in-time copy of the pipeline's counters.
type Stats struct {
	// Batches counts successful Apply calls; KeysPut and KeysDeleted the keys in them.
	Batches, KeysPut, KeysDeleted uint64
	// Unchanged counts batches that changed nothing APISIX can see and so were not
	// applied (istiod resends identical resources often).
	Unchanged uint64
	// WriteErrors counts failed Apply calls (each is retried).
	WriteErrors uint64
	// Panics counts panics recovered in the source, translator or sink.
	Panics uint64
	// LastError is the most recent error (write, source or recovered panic) and when
	// it happened; it is not cleared by later successes.
	LastError     string
	LastErrorTime time.Time
	// Seq is the Seq of the newest update applied.
	Seq uint64
	// Version is the sink's version of the applied state, when the sink implements
	// Versioned (the shared-dict "version"); otherwise 0.
	Version uint64
	// ObjectsByKind counts the applied objects per APISIX kind ("routes", ...).
	ObjectsByKind map[string]int
	// PushToWrite is the time from the Source handing over the first update of a
	// batch to the batch being applied, in seconds, over fixed buckets.
	PushToWrite metrics.HistogramData
	// Ready is true once the first batch has been applied.
	Ready bool
}

// latencyBounds are the fixed PushToWrite buckets in seconds: the coalescing window
// (tens of ms) puts most batches in the 25-100ms buckets; large meshes and retries
// land above.
var latencyBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

func newLatency() metrics.HistogramData {
	return metrics.HistogramData{Bounds: latencyBounds, Counts: make([]uint64, len(latencyBounds))}
}

// observe adds d to h.
func observe(l *metrics.HistogramData, d time.Duration) {
	s := d.Seconds()
	l.Count++
	l.Sum += s
	for i, b := range l.Bounds {
		if s <= b {
			l.Counts[i]++
			return
		}
	}
}

// Stats returns a copy of the counters.
func (a *Agent) Stats() Stats {
	a.mu.Lock()
	s := a.stats
	s.ObjectsByKind = maps.Clone(a.stats.ObjectsByKind)
	s.PushToWrite.Counts = append([]uint64(nil), a.stats.PushToWrite.Counts...)
	a.mu.Unlock()
	if v, ok := a.sink.(Versioned); ok {
		s.Version = v.Version()
	}
	s.Ready = a.Ready()
	return s
}

// Objects returns the applied objects, keyed "/<kind>/<id>", as the sink reads them
// back (Reader). A sink that cannot read back yields the applied keys with nil values.
// The values must not be modified.
func (a *Agent) Objects() map[string][]byte {
	if r, ok := a.sink.(Reader); ok {
		return r.Objects()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string][]byte, len(a.keys))
	for k := range a.keys {
		out[k] = nil
	}
	return out
}

// Report returns the translation report of the newest update translated.
func (a *Agent) Report() []report.Entry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]report.Entry(nil), a.report...)
}

// Ready reports whether the first batch has been applied.
func (a *Agent) Ready() bool {
	select {
	case <-a.ready:
		return true
	default:
		return false
	}
}

// ReadyC is closed when the first batch has been applied.
func (a *Agent) ReadyC() <-chan struct{} { return a.ready }
