package translate

import (
	"slices"
	"testing"
)

func TestMulti(t *testing.T) {
	m := multi[string]{}
	m.add("c", "a")
	m.addOnce("c", "b")
	m.addOnce("c", "a") // present: no duplicate
	m.add("d", "x")
	if got := slices.Sorted(slices.Values(m["c"])); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("c = %v", got)
	}
	m.remove("c", "a")
	m.remove("c", "zz") // absent: no effect
	if !slices.Equal(m["c"], []string{"b"}) {
		t.Fatalf("after remove, c = %v", m["c"])
	}
	m.remove("c", "b")
	if _, ok := m["c"]; ok {
		t.Fatal("a name without values must be deleted")
	}
	if !slices.Equal(m["d"], []string{"x"}) {
		t.Fatalf("d = %v", m["d"])
	}
}
