package client

import "testing"

// The alternative forms of an entry are found by reuse, bounded by maxAlts (oldest
// evicted), and all leave the index when the entry is replaced or removed.
func TestAltForms(t *testing.T) {
	ts := newTypeState("t", true)
	e := &entry{name: "x", hash: 1, size: 10}
	ts.put(e)
	for h := uint64(2); h <= maxAlts+2; h++ { // maxAlts+1 alternatives: the first is evicted
		ts.addForm(e, form{hash: h, size: 10})
	}
	if got := ts.reuse(2, 10); got != nil {
		t.Error("the oldest alternative form was not evicted")
	}
	for h := uint64(3); h <= maxAlts+2; h++ {
		if ts.reuse(h, 10) != e {
			t.Errorf("form %d not reused", h)
		}
	}
	if ts.reuse(1, 10) != e || ts.reuse(3, 11) != nil {
		t.Error("reuse must match the primary form and check the size")
	}
	if len(e.alts) != maxAlts {
		t.Errorf("%d alternatives, want %d", len(e.alts), maxAlts)
	}

	// A replaced entry takes none of its forms along; a stale entry gains none.
	n := &entry{name: "x", hash: 100, size: 5}
	ts.put(n)
	ts.addForm(e, form{hash: 200, size: 1})
	if len(ts.byHash) != 1 || ts.reuse(100, 5) != n {
		t.Errorf("index after replace: %v", ts.byHash)
	}
	ts.addForm(n, form{hash: 101, size: 5})
	ts.remove("x")
	if len(ts.byHash) != 0 {
		t.Errorf("index after remove: %v", ts.byHash)
	}
}
