package translate

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

func TestInternVariant(t *testing.T) {
	tr := New(Options{})
	two, alsoTwo, three := 2, 2, 3
	rt, rd := 15.0, 15.0
	a := tr.refs.intern(upstream.Variant{Retries: &two, RetryTimeout: &rt})
	b := tr.refs.intern(upstream.Variant{Retries: &alsoTwo, RetryTimeout: &rt})
	if a != b || *a.Retries != 2 || *a.RetryTimeout != 15 {
		t.Fatalf("equal variants are not shared: %p %p", a, b)
	}
	// Variants that differ in any setting, or only in which setting holds a value,
	// are distinct.
	for _, v := range []upstream.Variant{
		{Retries: &three, RetryTimeout: &rt},
		{Retries: &two},
		{Retries: &two, ReadTimeout: &rd},
		{Retries: &two, RetryTimeout: &rt, HashOn: "header", HashKey: "x"},
		{},
	} {
		if p := tr.refs.intern(v); p == a || p.Key() != v.Key() {
			t.Errorf("variant %q: got %q", v.Key(), p.Key())
		}
	}
	for i := range maxVariants {
		n := 100 + i
		tr.refs.intern(upstream.Variant{Retries: &n})
	}
	n := -1
	p, q := tr.refs.intern(upstream.Variant{Retries: &n}), tr.refs.intern(upstream.Variant{Retries: &n})
	if p == q || *p.Retries != -1 || len(tr.refs.variants) != maxVariants {
		t.Fatalf("beyond the table's bound: shared %v, %d variants", p == q, len(tr.refs.variants))
	}
}
