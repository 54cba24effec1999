package client

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// The alternative forms of an entry are recognised, bounded by maxAlts (oldest
// evicted); an entry that is no longer the accepted one gains none.
func TestAltForms(t *testing.T) {
	ts := newTypeState(resource.ClusterType, true)
	e := newEntry(&resource.Cluster{Name: "x"}, 1, 10, nil)
	ts.put("x", e)
	for h := uint64(2); h <= maxAlts+2; h++ { // maxAlts+1 alternatives: the first is evicted
		ts.addForm("x", e, form{hash: h, size: 10})
	}
	if e.hasForm(2, 10) {
		t.Error("the oldest alternative form was not evicted")
	}
	for h := uint64(3); h <= maxAlts+2; h++ {
		if !e.hasForm(h, 10) {
			t.Errorf("form %d not recognised", h)
		}
	}
	if !e.hasForm(1, 10) || e.hasForm(3, 11) {
		t.Error("hasForm must match the primary form and check the size")
	}
	if len(e.more.alts) != maxAlts {
		t.Errorf("%d alternatives, want %d", len(e.more.alts), maxAlts)
	}

	// A replaced entry gains no forms; the accepted one does.
	n := newEntry(&resource.Cluster{Name: "x"}, 100, 5, nil)
	ts.put("x", n)
	ts.addForm("x", e, form{hash: 200, size: 1})
	if e.hasForm(200, 1) {
		t.Error("a replaced entry gained a form")
	}
	ts.addForm("x", n, form{hash: 101, size: 5})
	if !n.hasForm(101, 5) || n.hasForm(1, 10) {
		t.Error("the new entry must know its own forms only")
	}
}

// A cluster's dependency is derived from its message; other dependencies are kept.
func TestEntryDeps(t *testing.T) {
	eds := &resource.Cluster{Name: "outbound|80||a", EDS: "outbound|80||a"}
	for _, tc := range []struct {
		msg  any
		deps []string
		kept bool
	}{
		{eds, []string{"outbound|80||a"}, false},
		{&resource.Cluster{Name: "static"}, nil, false},
		{eds, []string{"other"}, true},
		{eds, nil, true},
		{&resource.Cluster{Name: "static"}, []string{"x"}, true},
		{&resource.RouteConfig{Name: "80"}, nil, false},
	} {
		e := newEntry(tc.msg, 1, 1, tc.deps)
		if (e.more != nil) != tc.kept {
			t.Errorf("%v %v: kept %v, want %v", tc.msg, tc.deps, e.more != nil, tc.kept)
		}
		if got := e.deps(); len(got) != len(tc.deps) || len(got) > 0 && got[0] != tc.deps[0] {
			t.Errorf("%v: deps %v, want %v", tc.msg, got, tc.deps)
		}
	}
}

// The entry stays within its size class: 20,000 of them at 10,000 services.
func TestEntrySize(t *testing.T) {
	if s := unsafe.Sizeof(entry{}); s > 64 {
		t.Errorf("entry is %d bytes, want at most 64", s)
	}
}

// Resources of a Delta response that came with equal versions share one stored
// version; others keep their own, and each comes back as sent (it goes back to the
// server in initial_resource_versions).
func TestDeltaVersionsShared(t *testing.T) {
	ts := newTypeState(resource.EndpointType, false)
	var raws []rawResource
	for i, v := range []string{"push-7", "push-7", "push-7", "f00d0123456789ab", "push-8"} {
		name := fmt.Sprintf("outbound|80||svc-%d", i)
		ts.subscribed[name] = struct{}{}
		// Separate strings, as unmarshalling a response gives.
		raws = append(raws, rawResource{name: name, version: string([]byte(v)), body: anyOf(t, xdstest.Endpoints(name, "10.0.0.1:80"))})
	}
	ups, err := (&Client{}).decode(ts, raws, "")
	if err != nil || len(ups) != len(raws) {
		t.Fatalf("%d upserts, err %v", len(ups), err)
	}
	data := func(i int) *byte { return unsafe.StringData(ups[i].version) }
	if data(0) != data(1) || data(1) != data(2) {
		t.Error("equal versions are stored separately")
	}
	if data(2) == data(3) || data(3) == data(4) {
		t.Error("distinct versions share storage")
	}
	for i, u := range ups {
		e := &entry{version: u.version}
		if got := e.versionString(); got != raws[i].version {
			t.Errorf("%s: version %q, want %q", raws[i].name, got, raws[i].version)
		}
	}
}
