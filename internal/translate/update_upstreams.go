package translate

// Upstreams. Routes and stream routes reference upstreams (a cluster's, with the
// route-level settings of a variant, or a merged weighted split's); an upstream exists
// while something references it, and is rebuilt when it is new or its cluster
// changed. Each cluster lists the ids of its upstreams, so that a change to it
// rebuilds exactly those.

import (
	"maps"
	"slices"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/store"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// upRefs are the upstreams that routes and stream routes reference, counted.
type upRefs struct {
	byID   map[string]*upRef
	splits map[string]*upRef // those of merged weighted splits
	// variants are the variants upRefs share, by Variant.Key (see intern).
	variants map[string]*upstream.Variant
}

// upRef is a referenced upstream. Its id is the end of its object key, and the key
// of the upRef in upRefs.byID: one string for both.
type upRef struct {
	key     string // apisix.Key(apisix.KindUpstreams, id)
	cluster string
	v       *upstream.Variant // shared (see intern): not to be modified
	n       int
	// split, for the upstream of clusters merged by a weighted split (cluster is
	// then ""), lists them; its id is in each of their clusterState.ups, so that a
	// change to any of them rebuilds it. rep are its findings.
	split *upstream.Split
	rep   []report.Entry
}

// upKeyPrefix is what apisix.Key puts before an upstream's id.
var upKeyPrefix = apisix.Key(apisix.KindUpstreams, "")

// id returns the upstream's id: the end of its key, not a copy.
func (r *upRef) id() string { return r.key[len(upKeyPrefix):] }

// maxVariants bounds the intern table; beyond it a reference keeps its own copy.
const maxVariants = 1024

// intern returns a shared copy of v, which nothing may modify. Variants are few and
// shared by many upstreams (Istio gives every route the same retry policy), while a
// variant held by value would be most of an upRef. Variants are told apart by their
// Key, which also names their upstream (VariantID): a variant with the same key would
// build the same upstream.
func (r *upRefs) intern(v upstream.Variant) *upstream.Variant {
	var kb [128]byte
	k := v.AppendKey(kb[:0])
	if p := r.variants[string(k)]; p != nil {
		return p
	}
	p := &v
	if len(r.variants) < maxVariants {
		if r.variants == nil {
			r.variants = map[string]*upstream.Variant{}
		}
		r.variants[string(k)] = p
	}
	return p
}

// acquire references the upstream (cluster, v) and returns its id.
func (t *Translator) acquire(cluster string, v upstream.Variant) string {
	return t.acquireRef(acquired{cluster: cluster, v: v, id: upstream.VariantID(cluster, v)})
}

// acquireRef references the upstream of a cluster or of a merged weighted split
// (see upstream.Split), which each of its clusters lists. It returns the id string
// the translator holds for that upstream, for the caller to keep instead of its own
// copy: every route of a service references the same upstream and computed its id
// anew. That string is the end of the upstream's object key, so the key (which the
// output needs anyway) and the id cost one allocation.
func (t *Translator) acquireRef(a acquired) string {
	id := a.id
	r := t.refs.byID[id]
	if r == nil {
		r = &upRef{key: apisix.Key(apisix.KindUpstreams, id), cluster: a.cluster, split: a.split, v: t.refs.intern(a.v)}
		id = r.id()
		t.refs.byID[id] = r
	}
	r.n++
	if r.n == 1 {
		t.call.dirtyUp[id] = true
		if r.split == nil {
			if cs := t.clusters[r.cluster]; cs != nil { // always: only existing clusters are acquired
				cs.ups = append(cs.ups, id)
			}
		} else {
			t.refs.splits[id] = r
			for _, c := range r.split.Clusters {
				if cs := t.clusters[c]; cs != nil && !slices.Contains(cs.ups, id) {
					cs.ups = append(cs.ups, id)
				}
			}
		}
	}
	return r.id()
}

// release drops a reference to the upstream id; the upstream goes with the last one.
func (t *Translator) release(id string) {
	r := t.refs.byID[id]
	if r == nil {
		return
	}
	r.n--
	if r.n <= 0 {
		delete(t.refs.byID, id)
		t.call.dirtyUp[id] = true
		if r.split != nil {
			delete(t.refs.splits, id)
			if len(r.rep) > 0 {
				t.findings.dirty = true
			}
			for _, c := range r.split.Clusters {
				if cs := t.clusters[c]; cs != nil {
					cs.unlist(id)
				}
			}
			return
		}
		if cs := t.clusters[r.cluster]; cs != nil {
			if !cs.unlist(id) {
				panic("translate: upstream " + id + " is not listed by its cluster")
			}
		}
	}
}

// unlist removes id from the cluster's upstreams, reporting whether it was there.
func (cs *clusterState) unlist(id string) bool {
	i := slices.Index(cs.ups, id)
	if i < 0 {
		return false
	}
	last := len(cs.ups) - 1
	cs.ups[i], cs.ups[last] = cs.ups[last], ""
	cs.ups = cs.ups[:last]
	return true
}

// syncUpstreams writes the upstream objects that changed: a plan of the clusters to
// build (serial), the builds (pure, see buildUpstreams), then their results stored
// (serial).
func (t *Translator) syncUpstreams() {
	// Group dirty ids and rebuilt clusters by cluster so each base is built once.
	// Merged splits are built apart, once each, when dirty or one of their clusters
	// is rebuilt.
	byCluster := map[string][]string{}
	splits := map[string]bool{}
	for id := range t.call.dirtyUp {
		if t.call.allClustersNew {
			// Every cluster is rebuilt (below) with all its ids, and no id existed
			// before: nothing to group or delete.
			break
		}
		if r := t.refs.byID[id]; r != nil && r.split != nil {
			splits[id] = true
		} else if r != nil {
			if !t.call.rebuilds[r.cluster] { // a rebuilt cluster builds all its ids anyway
				byCluster[r.cluster] = append(byCluster[r.cluster], id)
			}
		} else {
			t.out.Delete(apisix.Key(apisix.KindUpstreams, id))
		}
	}
	for name := range t.call.rebuilds {
		if _, ok := byCluster[name]; !ok {
			byCluster[name] = nil
		}
		if len(t.refs.splits) > 0 {
			if cs := t.clusters[name]; cs != nil {
				for _, id := range cs.ups {
					if t.refs.splits[id] != nil {
						splits[id] = true
					}
				}
			}
		}
	}
	t.buildSplits(splits)
	jobs := make([]upJob, 0, len(byCluster))
	for name, ids := range byCluster {
		cs := t.clusters[name]
		if cs == nil {
			for _, id := range ids {
				t.out.Delete(apisix.Key(apisix.KindUpstreams, id))
			}
			continue
		}
		// A rebuilt cluster's ids are listed by the build (idsOf, off this goroutine).
		jobs = append(jobs, upJob{name: name, cs: cs, rebuild: t.call.rebuilds[name], ids: ids})
	}
	t.buildUpstreams(jobs)
	for i := range jobs {
		j := &jobs[i]
		// Clusters no route uses (many of Istio's) only have findings; their nodes are
		// built when a route acquires one.
		if len(j.ids) == 0 || j.rebuild {
			if rep := t.findings.share(j.name, j.rep); !rep.equal(j.cs.report) {
				j.cs.report = rep
				t.findings.dirty = true
			}
		}
		for _, o := range j.out {
			t.out.Put(o)
		}
	}
}

// idsOf returns the referenced upstream ids of a cluster, sorted, but for those of
// merged splits (see buildSplits).
func (t *Translator) idsOf(cluster string) []string {
	cs := t.clusters[cluster]
	if cs == nil {
		return nil
	}
	ids := slices.Sorted(slices.Values(cs.ups))
	if len(t.refs.splits) > 0 {
		ids = slices.DeleteFunc(ids, func(id string) bool { return t.refs.splits[id] != nil })
	}
	return ids
}

// buildSplits builds the upstreams of merged weighted splits (few: serially).
func (t *Translator) buildSplits(ids map[string]bool) {
	for _, id := range slices.Sorted(maps.Keys(ids)) {
		r := t.refs.splits[id]
		if r == nil {
			continue
		}
		members := make([]upstream.Member, 0, len(r.split.Clusters))
		for i, c := range r.split.Clusters {
			cs := t.clusters[c]
			if cs == nil {
				// Removed: the routes that use the split are rebuilt in this call and
				// release it (they depend on every cluster of it).
				continue
			}
			members = append(members, upstream.Member{Name: c, Shape: cs.src.Shape(), CLA: cs.cla, Weight: r.split.Weights[i]})
		}
		if len(members) == 0 {
			continue
		}
		u, rep := upstream.BuildSplit(t.up, id, members, *r.v)
		if !slices.Equal(rep, r.rep) {
			r.rep = rep
			t.findings.dirty = true
		}
		t.out.Set(&t.sc.enc, r.key, u)
	}
}

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
// (clusters, upstream references, the output's digests), which nothing writes while
// it runs.
func (t *Translator) buildUpstreams(jobs []upJob) {
	t.parallel(len(jobs), func(sc *scratch, i int) { t.buildUpstream(&sc.enc, &jobs[i]) })
}

// buildUpstream builds a job's cluster (package upstream) once, names a copy for each
// referenced variant, and encodes them.
func (t *Translator) buildUpstream(enc *store.Encoder, j *upJob) {
	cs := j.cs
	if j.rebuild {
		j.ids = t.idsOf(j.name)
	}
	if len(j.ids) == 0 {
		j.rep = upstream.Report(t.up, j.name, cs.src.Shape(), cs.cla)
		return
	}
	base, rep := upstream.BuildUnnamed(t.up, j.name, cs.src.Shape(), cs.cla) // ApplyAs names each variant
	j.rep = rep
	j.out = make([]store.Object, len(j.ids))
	for k, id := range j.ids {
		r := t.refs.byID[id]
		u := r.v.ApplyAs(base, id) // routes name the variant they asked for
		j.out[k] = t.out.Encode(enc, r.key, u)
	}
}
