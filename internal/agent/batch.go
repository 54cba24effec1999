package agent

import (
	"bytes"
	"sort"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// batch is what has changed since the last successful Apply: the keys the translator
// said it touched. The values are not kept: at flush time each dirty key is compared
// with what was written, so a key changed and changed back within a batch (or a
// failed Apply and a later snapshot) costs nothing, and retries always write the
// newest state.
type batch struct {
	dirty map[string]struct{}
	// full: compare all objects with what was written (after a translator panic).
	full bool
	// broken: the last translation panicked; write nothing until one succeeds.
	broken bool
	// since is when the first snapshot of the batch arrived; seq the newest one's Seq.
	since time.Time
	seq   uint64
}

// due reports whether the batch may have something to write.
func (b *batch) due() bool { return !b.broken && (len(b.dirty) > 0 || b.full || !b.since.IsZero()) }

func (b *batch) addDirty(cs apisix.ChangeSet) {
	if b.dirty == nil {
		b.dirty = make(map[string]struct{}, len(cs.Put)+len(cs.Delete))
	}
	for k := range cs.Put {
		b.dirty[k] = struct{}{}
	}
	for _, k := range cs.Delete {
		b.dirty[k] = struct{}{}
	}
}

// changes compares the dirty keys of b between written and objects.
func (b *batch) changes(written, objects map[string][]byte) apisix.ChangeSet {
	cs := apisix.ChangeSet{Put: map[string][]byte{}}
	for k := range b.dirty {
		nv, inNew := objects[k]
		ov, inOld := written[k]
		switch {
		case inNew && (!inOld || !bytes.Equal(ov, nv)):
			cs.Put[k] = nv
		case !inNew && inOld:
			cs.Delete = append(cs.Delete, k)
		}
	}
	sort.Strings(cs.Delete)
	return cs
}
