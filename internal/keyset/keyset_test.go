package keyset

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// A Set follows a map through random batches of puts and deletes (including keys put
// and deleted in one batch, deletes of absent keys and overwrites).
func TestSetFollowsMap(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var s Set[int]
	want := map[string]int{}
	for step := range 2000 {
		put := map[string]int{}
		var del []string
		for range rng.IntN(8) {
			put[fmt.Sprintf("/routes/%03d", rng.IntN(300))] = step
		}
		for range rng.IntN(8) {
			del = append(del, fmt.Sprintf("/routes/%03d", rng.IntN(300)))
		}
		s.Apply(maps.All(put), del)
		for _, k := range del {
			delete(want, k)
		}
		maps.Copy(want, put)

		if s.Len() != len(want) {
			t.Fatalf("step %d: %d keys, want %d", step, s.Len(), len(want))
		}
		var got []string
		for k, v := range s.All() {
			if want[k] != v {
				t.Fatalf("step %d: %s = %d, want %d", step, k, v, want[k])
			}
			got = append(got, k)
		}
		if !slices.Equal(got, slices.Sorted(maps.Keys(want))) {
			t.Fatalf("step %d: keys %v, want %v", step, got, slices.Sorted(maps.Keys(want)))
		}
		k := fmt.Sprintf("/routes/%03d", rng.IntN(300))
		v, ok := s.Get(k)
		if wv, wok := want[k]; ok != wok || v != wv {
			t.Fatalf("step %d: Get(%s) = %d, %v; want %d, %v", step, k, v, ok, wv, wok)
		}
	}
}

// meshKeys is a set of a 10,000-service mesh's size: 40,000 keys made with format.
func meshKeys(format string) *Set[struct{}] {
	var s Set[struct{}]
	all := map[string]struct{}{}
	for i := range 40000 {
		all[fmt.Sprintf(format, i)] = struct{}{}
	}
	s.Apply(maps.All(all), nil)
	return &s
}

// BenchmarkApplyOverwrite is the common batch: one existing key changed.
func BenchmarkApplyOverwrite(b *testing.B) {
	s := meshKeys("/upstreams/outbound_9080__svc-%05d.ns.svc.cluster.local")
	put := map[string]struct{}{"/upstreams/outbound_9080__svc-01234.ns.svc.cluster.local": {}}
	for b.Loop() {
		s.Apply(maps.All(put), nil)
	}
}

// BenchmarkApplyAddRemove adds and removes a key (one pass over the set each).
func BenchmarkApplyAddRemove(b *testing.B) {
	s := meshKeys("/routes/out-9080.svc-%05d.ns.svc.cluster.local_9080.0")
	k := "/routes/out-9080.svc-01234x.ns.svc.cluster.local_9080.0"
	put := map[string]struct{}{k: {}}
	for b.Loop() {
		s.Apply(maps.All(put), nil)
		s.Apply(nil, []string{k})
	}
}
