package translate

// The report: every piece keeps its own findings, and the complete sorted report is
// put together again only when one of them changed.

import (
	"slices"
	"sync"

	"github.com/amesh-dev/amesh/internal/parallel"
	"github.com/amesh-dev/amesh/internal/report"
)

// Most clusters of a mesh have the same findings but for the cluster's name (Istio's
// auto-mTLS entry is on every outbound cluster): tens of thousands of equal slices. A
// cluster whose every finding names it keeps a shared slice with the name left out
// (Resource ""), and fullReport puts the name back.

// maxSharedReports bounds the table of shared findings: they are few distinct ones,
// and beyond the bound a cluster simply keeps its own.
const maxSharedReports = 256

// reportSig tells shared findings apart cheaply: their number and first entry without
// its resource. Equal signatures are then compared in full.
type reportSig struct {
	n     int
	first report.Entry
}

// clusterFindings is a cluster's findings as clusterState keeps them.
type clusterFindings struct {
	es []report.Entry
	// shared: es is shared between clusters and its entries' Resource is "", for the
	// cluster's name.
	shared bool
}

// findings is the complete sorted report, rebuilt only when a part of it changed
// (dirty), and the findings clusters share.
type findings struct {
	sorted []report.Entry
	dirty  bool
	shared map[reportSig][]report.Entry
}

// share returns how cluster name keeps its findings es (its own slice, which it may
// modify).
func (f *findings) share(name string, es []report.Entry) clusterFindings {
	if len(es) == 0 {
		return clusterFindings{}
	}
	for i := range es {
		if es[i].Resource != name {
			return clusterFindings{es: es}
		}
	}
	sig := reportSig{n: len(es), first: es[0]}
	sig.first.Resource = ""
	if s, ok := f.shared[sig]; ok {
		if equalUnnamed(s, es) {
			return clusterFindings{es: s, shared: true}
		}
		return clusterFindings{es: es}
	}
	if len(f.shared) >= maxSharedReports {
		return clusterFindings{es: es}
	}
	for i := range es {
		es[i].Resource = ""
	}
	if f.shared == nil {
		f.shared = map[reportSig][]report.Entry{}
	}
	f.shared[sig] = es
	return clusterFindings{es: es, shared: true}
}

// equalUnnamed reports whether shared findings s equal es without their resources.
func equalUnnamed(s, es []report.Entry) bool {
	if len(s) != len(es) {
		return false
	}
	for i := range s {
		e := es[i]
		e.Resource = ""
		if s[i] != e {
			return false
		}
	}
	return true
}

func (r clusterFindings) equal(o clusterFindings) bool {
	return r.shared == o.shared && slices.Equal(r.es, o.es)
}

// appendTo appends the findings of cluster name to all.
func (r clusterFindings) appendTo(all []report.Entry, name string) []report.Entry {
	if !r.shared {
		return append(all, r.es...)
	}
	for _, e := range r.es {
		e.Resource = name
		all = append(all, e)
	}
	return all
}

// fullReport returns the complete sorted report, rebuilt only when a part changed.
func (t *Translator) fullReport() []report.Entry {
	if !t.findings.dirty && t.findings.sorted != nil {
		return t.findings.sorted
	}
	n := 0
	for _, cs := range t.clusters {
		n += len(cs.report.es) // most of the entries in Istio's output (auto-mTLS)
	}
	all := make([]report.Entry, 0, n+64)
	for _, ls := range t.listeners {
		all = append(all, ls.out.report...)
	}
	all = append(all, t.streamReport...)
	for _, st := range t.ctxs {
		all = append(all, st.report...)
		for _, vs := range st.vhosts {
			all = append(all, vs.report...)
		}
	}
	for name, cs := range t.clusters {
		all = cs.report.appendTo(all, name)
	}
	for _, r := range t.refs.splits {
		all = append(all, r.rep...)
	}
	all = append(all, t.pluginReport()...)
	all = append(all, t.identityFindings()...)
	sortReport(all, t.opts.ParallelMin)
	t.findings.sorted, t.findings.dirty = all, false
	return all
}

// sortReport sorts a report as report.Sort does; a long one (a first translation of
// Istio's output has a finding per cluster) as two halves on two goroutines, merged.
func sortReport(es []report.Entry, parallelMin int) {
	if parallel.Workers(len(es), 4*parallelMin) < 2 {
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
