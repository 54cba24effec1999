package store

import (
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/apisix"
)

type obj struct {
	V string `json:"v"`
}

func digest(t *testing.T, v any) uint64 {
	t.Helper()
	b, err := apisix.Encode(v)
	if err != nil {
		t.Fatal(err)
	}
	return apisix.Hash(b)
}

// A first translation's change set is every object; later ones hold what differs
// from the output before them, with the digests the changed keys had, and nothing
// for a key changed and changed back, put again identically, or added and deleted.
func TestChanges(t *testing.T) {
	var e Encoder
	s := New()
	s.Begin(4)
	for _, k := range []string{"/routes/a", "/routes/b", "/routes/c", "/routes/gone"} {
		s.Set(&e, k, obj{k})
	}
	s.Delete("/routes/gone")
	cs, prior := s.Changes()
	if got := slices.Sorted(maps.Keys(cs.Put)); !cmp.Equal(got, []string{"/routes/a", "/routes/b", "/routes/c"}) || len(cs.Delete) != 0 || prior != nil {
		t.Fatalf("first: puts %v, deletes %v, prior %v", got, cs.Delete, prior)
	}

	s.Begin(0)
	s.Set(&e, "/routes/a", obj{"changed"})
	s.Set(&e, "/routes/b", obj{"changed"})
	s.Set(&e, "/routes/b", obj{"/routes/b"}) // and back
	s.Set(&e, "/routes/c", obj{"/routes/c"}) // identical
	s.Set(&e, "/routes/n", obj{"new"})
	s.Set(&e, "/routes/tmp", obj{"tmp"})
	s.Delete("/routes/tmp")
	s.Delete("/routes/c")
	s.Delete("/routes/never")
	cs, prior = s.Changes()
	if len(cs.Put) != 2 || cs.Put["/routes/a"] == nil || cs.Put["/routes/n"] == nil || !cmp.Equal(cs.Delete, []string{"/routes/c"}) {
		t.Fatalf("update: puts %d, deletes %v", len(cs.Put), cs.Delete)
	}
	want := map[string]uint64{"/routes/a": digest(t, obj{"/routes/a"}), "/routes/c": digest(t, obj{"/routes/c"})}
	if diff := cmp.Diff(want, prior); diff != "" {
		t.Fatalf("prior (-want +got):\n%s", diff)
	}
	if h, ok := s.Digest("/routes/a"); !ok || h != digest(t, obj{"changed"}) || s.Len() != 3 {
		t.Fatalf("digest of /routes/a %x (%v), %d objects", h, ok, s.Len())
	}
}

// Encode copies the JSON out only when the digest differs from the stored one.
func TestEncodeCopiesOnlyChanges(t *testing.T) {
	var e Encoder
	s := New()
	s.Begin(1)
	s.Set(&e, "/routes/a", obj{"1"})
	s.Changes()
	if o := s.Encode(&e, "/routes/a", obj{"1"}); o.JSON != nil || o.Hash != digest(t, obj{"1"}) {
		t.Fatalf("unchanged: %+v", o)
	}
	if o := s.Encode(&e, "/routes/a", obj{"2"}); string(o.JSON) != `{"v":"2"}` {
		t.Fatalf("changed: %+v", o)
	}
}
