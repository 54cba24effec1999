package agent

import (
	"sort"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// batch is what has changed since the last successful Apply: for every key the
// translator reported changed, its newest value (or that it was deleted), and what the
// sink held for it before the batch (the translator's Result.Prior when the key first
// changed). At flush time the two are compared, so a key changed and changed back
// within a batch (or a failed Apply and a later update) costs nothing, and retries
// always write the newest state. The pipeline keeps no digest of its own per object:
// the translator's Result.Prior says what the sink holds.
type batch struct {
	dirty map[string]pending
	// resync: the translator panicked and was replaced; write nothing until the new
	// one has translated an update, whose complete output replaces dirty.
	resync bool
	// since is when the first update of the batch arrived; seq the newest one's Seq.
	since time.Time
	seq   uint64
}

// pending is a key's newest value in a batch; deleted when the key is gone. held and
// prior say whether the sink holds the key and the digest (apisix.Hash) of its value
// there; unknown, that the sink holds it but its digest is not known (it is written
// again).
type pending struct {
	value   []byte
	deleted bool
	held    bool
	unknown bool
	prior   uint64
}

// due reports whether the batch may have something to write.
func (b *batch) due() bool { return !b.resync && (len(b.dirty) > 0 || !b.since.IsZero()) }

// replace makes the batch what turns the sink's state into out, a translator's
// complete output: held are the keys the sink holds with the digests of their values
// (known false: digests unknown).
func (b *batch) replace(out map[string][]byte, held map[string]uint64, known bool) {
	b.resync = false
	b.dirty = make(map[string]pending, len(out)+len(held))
	for k, v := range out {
		p := pending{value: v}
		p.prior, p.held = held[k]
		p.unknown = p.held && !known
		b.dirty[k] = p
	}
	for k, h := range held {
		if _, ok := out[k]; !ok {
			b.dirty[k] = pending{deleted: true, held: true, prior: h}
		}
	}
}

// addDirty adds the changes of one translation; prior is its Result.Prior. Every key
// whose value differs from the sink's is in the batch (the batch is emptied only when
// written), so for a key not yet in it the translator's previous value is the sink's.
func (b *batch) addDirty(cs apisix.ChangeSet, prior map[string]uint64) {
	if b.dirty == nil {
		b.dirty = make(map[string]pending, len(cs.Put)+len(cs.Delete))
	}
	add := func(k string, p pending) {
		if old, ok := b.dirty[k]; ok {
			p.held, p.prior, p.unknown = old.held, old.prior, old.unknown
		} else {
			p.prior, p.held = prior[k]
		}
		b.dirty[k] = p
	}
	for _, k := range cs.Delete {
		add(k, pending{deleted: true})
	}
	for k, v := range cs.Put {
		add(k, pending{value: v})
	}
}

// changes is what the batch changed relative to what the sink holds, and how the
// number of objects of each kind changes when it is written.
func (b *batch) changes() (apisix.ChangeSet, map[apisix.Kind]int) {
	cs := apisix.ChangeSet{Put: map[string][]byte{}}
	kinds := map[apisix.Kind]int{}
	for k, p := range b.dirty {
		switch {
		case !p.deleted && (!p.held || p.unknown || p.prior != apisix.Hash(p.value)):
			cs.Put[k] = p.value
			if !p.held {
				kinds[apisix.KindOf(k)]++
			}
		case p.deleted && p.held:
			cs.Delete = append(cs.Delete, k)
			kinds[apisix.KindOf(k)]--
		}
	}
	sort.Strings(cs.Delete)
	return cs, kinds
}
