package translate

import "github.com/amesh-dev/amesh/internal/translate/upstream"

// An upstream reference keeps the variant it was asked for, to build the upstream.
// Variants are few and shared by many upstreams (Istio gives every route the same
// retry policy), while a variant held by value is most of an upRef: references keep a
// pointer to one interned copy per distinct variant instead (~0.5 MiB at 10,000
// services).

// upRefs are the upstreams that routes and stream routes reference, counted.
type upRefs struct {
	byID   map[string]*upRef
	splits map[string]*upRef // those of merged weighted splits
	// variants are the variants upRefs share, by Variant.Key (see intern).
	variants map[string]*upstream.Variant
}

// maxVariants bounds the intern table; beyond it a reference keeps its own copy.
const maxVariants = 1024

// intern returns a shared copy of v, which nothing may modify. Variants are told
// apart by their Key, which also names their upstream (VariantID): a variant with the
// same key would build the same upstream.
func (r *upRefs) intern(v upstream.Variant) *upstream.Variant {
	var kb [128]byte
	k := v.AppendKey(kb[:0])
	if p := r.variants[string(k)]; p != nil {
		return p
	}
	p := &v
	if len(r.variants) < maxVariants {
		if r.variants == nil {
			r.variants = map[string]*upstream.Variant{}
		}
		r.variants[string(k)] = p
	}
	return p
}
