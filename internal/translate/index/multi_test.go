package index

import (
	"slices"
	"testing"
)

func TestMulti(t *testing.T) {
	var m multi[string]
	values := func(name string) []string { return slices.Sorted(m.all(name)) }
	m.add("c", "a")
	m.addOnce("c", "b")
	m.addOnce("c", "a") // present: no duplicate
	m.add("d", "x")
	m.addOnce("d", "x") // present as the only value: no duplicate
	if got := values("c"); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("c = %v", got)
	}
	m.add("c", "e")
	m.remove("c", "e")
	m.remove("c", "a")
	m.remove("c", "zz") // absent: no effect
	if got := values("c"); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after remove, c = %v", got)
	}
	m.remove("c", "zz") // absent from a name with one value: no effect
	m.add("c", "f")     // back to two values
	if got := values("c"); !slices.Equal(got, []string{"b", "f"}) {
		t.Fatalf("after adding again, c = %v", got)
	}
	m.remove("c", "b")
	m.remove("c", "f")
	if len(values("c")) != 0 || len(m.one)+len(m.more) != 1 {
		t.Fatalf("a name without values must be deleted: %v %v", m.one, m.more)
	}
	if got := values("d"); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("d = %v", got)
	}
}
