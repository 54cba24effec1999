package agent

import (
	"sort"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// batch is what has changed since the last successful Apply: for every key the
// translator reported changed, its newest value (or that it was deleted). At flush
// time each is compared with the digest of what was written, so a key changed and
// changed back within a batch (or a failed Apply and a later snapshot) costs nothing,
// and retries always write the newest state.
type batch struct {
	dirty map[string]pending
	// broken: the last translation panicked; write nothing until one succeeds (the
	// translator then reports the changes from its last returned output).
	broken bool
	// since is when the first snapshot of the batch arrived; seq the newest one's Seq.
	since time.Time
	seq   uint64
}

// pending is a key's newest value in a batch; deleted when the key is gone.
type pending struct {
	value   []byte
	deleted bool
}

// due reports whether the batch may have something to write.
func (b *batch) due() bool { return !b.broken && (len(b.dirty) > 0 || !b.since.IsZero()) }

func (b *batch) addDirty(cs apisix.ChangeSet) {
	if b.dirty == nil {
		b.dirty = make(map[string]pending, len(cs.Put)+len(cs.Delete))
	}
	for _, k := range cs.Delete {
		b.dirty[k] = pending{deleted: true}
	}
	for k, v := range cs.Put {
		b.dirty[k] = pending{value: v}
	}
}

// changes compares the dirty keys of b with the digests of what was written.
func (b *batch) changes(written map[string]uint64) apisix.ChangeSet {
	cs := apisix.ChangeSet{Put: map[string][]byte{}}
	for k, p := range b.dirty {
		h, inOld := written[k]
		switch {
		case !p.deleted && (!inOld || h != apisix.Hash(p.value)):
			cs.Put[k] = p.value
		case p.deleted && inOld:
			cs.Delete = append(cs.Delete, k)
		}
	}
	sort.Strings(cs.Delete)
	return cs
}
