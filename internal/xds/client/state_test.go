package client

import (
	"crypto/sha256"
	"encoding/hex"
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

// Versions go back to the server (initial_resource_versions) exactly as received,
// whether packed or not.
func TestPackVersion(t *testing.T) {
	sum := sha256.Sum256([]byte("cluster"))
	for _, tc := range []struct {
		v      string
		packed bool
	}{
		{hex.EncodeToString(sum[:]), true},
		{"0123456789abcdef", true},
		{"", false},
		{"1", false},
		{"0123456789abcde", false},                   // odd length
		{"0123456789ABCDEF", false},                  // upper case would come back lower
		{"0123456789abcdeg", false},                  // not hex
		{"2024-05-01T10:00:00Z/17", false},           // istiod
		{"0123456789abcdef0123456789abcdef", true},   // any even length from 16 on
		{"00000000000000000000000000000000", true},   // leading zeros are kept
		{"ffffffffffffffffffffffffffffffff0", false}, // odd
	} {
		v := packVersion(tc.v)
		if v.packed != tc.packed {
			t.Errorf("%q: packed %v, want %v", tc.v, v.packed, tc.packed)
		}
		if v.packed && len(v.s) != len(tc.v)/2 {
			t.Errorf("%q: packed into %d bytes, want %d", tc.v, len(v.s), len(tc.v)/2)
		}
		e := &entry{}
		e.setVersion(v)
		if got := e.versionString(); got != tc.v {
			t.Errorf("%q came back as %q", tc.v, got)
		}
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
	if s := unsafe.Sizeof(entry{}); s > 48 {
		t.Errorf("entry is %d bytes, want at most 48", s)
	}
}

// Resources of a Delta response that came with equal versions share one stored
// version; others keep their own, and each comes back as sent.
func TestDeltaVersionsShared(t *testing.T) {
	ts := newTypeState(resource.EndpointType, false)
	var raws []rawResource
	for i, v := range []string{"push-7", "push-7", "push-7", "f00d0123456789ab", "push-8"} {
		name := fmt.Sprintf("outbound|80||svc-%d", i)
		ts.subscribed[name] = struct{}{}
		// Separate strings, as unmarshalling a response gives.
		raws = append(raws, rawResource{name: name, version: string([]byte(v)), body: anyOf(t, xdstest.Endpoints(name, "10.0.0.1:80"))})
	}
	ups, err := (&Client{}).decodeLocked(ts, raws, "")
	if err != nil || len(ups) != len(raws) {
		t.Fatalf("%d upserts, err %v", len(ups), err)
	}
	data := func(i int) *byte { return unsafe.StringData(ups[i].version.s) }
	if data(0) != data(1) || data(1) != data(2) {
		t.Error("equal versions are stored separately")
	}
	if data(2) == data(3) || data(3) == data(4) || !ups[3].version.packed {
		t.Error("distinct versions share storage, or the hex one is not packed")
	}
	for i, u := range ups {
		e := &entry{}
		e.setVersion(u.version)
		if got := e.versionString(); got != raws[i].version {
			t.Errorf("%s: version %q, want %q", raws[i].name, got, raws[i].version)
		}
	}
}
