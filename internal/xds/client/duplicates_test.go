package client

import "testing"

// Envoy's DeltaSubscriptionState rejects a name given twice among the resources, or
// both as a resource and a removal; the details are Envoy's.
func TestDuplicateDelta(t *testing.T) {
	raws := func(names ...string) []rawResource {
		var out []rawResource
		for _, n := range names {
			out = append(out, rawResource{name: n})
		}
		return out
	}
	for _, tc := range []struct {
		raws    []rawResource
		removed []string
		want    string
	}{
		{raws("a", "b"), []string{"c"}, ""},
		{raws("a", "b", "a"), nil, "duplicate name a found among added/updated resources"},
		{raws("a"), []string{"b", "a"}, "duplicate name a found in the union of added+removed resources"},
		{nil, []string{"x", "x"}, "duplicate name x found in the union of added+removed resources"},
		{raws("a"), nil, ""},
		{nil, []string{"x"}, ""},
	} {
		got := ""
		if err := duplicateDelta(tc.raws, tc.removed); err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%v %v: %q, want %q", tc.raws, tc.removed, got, tc.want)
		}
	}
}
