package translate

// An upstream reference keeps the variant it was asked for, to build the upstream.
// Variants are few and shared by many upstreams (Istio gives every route the same
// retry policy), while a variant held by value is most of an upRef: references keep a
// pointer to one interned copy per distinct variant instead (~0.5 MiB at 10,000
// services).

// maxVariants bounds the intern table; beyond it a reference keeps its own copy.
const maxVariants = 1024

// variantKey is a variant by value (Variant holds pointers, which compare by address).
type variantKey struct {
	set             uint8 // bits: retries, retry timeout, read timeout
	retries         int
	retryTimeout    float64
	readTimeout     float64
	hashOn, hashKey string
}

func keyOf(v variant) variantKey {
	k := variantKey{hashOn: v.HashOn, hashKey: v.HashKey}
	if v.Retries != nil {
		k.set |= 1
		k.retries = *v.Retries
	}
	if v.RetryTimeout != nil {
		k.set |= 2
		k.retryTimeout = *v.RetryTimeout
	}
	if v.ReadTimeout != nil {
		k.set |= 4
		k.readTimeout = *v.ReadTimeout
	}
	return k
}

// internVariant returns a shared copy of v, which nothing may modify.
func (t *Translator) internVariant(v variant) *variant {
	k := keyOf(v)
	if p := t.variants[k]; p != nil {
		return p
	}
	p := &v
	if len(t.variants) < maxVariants {
		if t.variants == nil {
			t.variants = map[variantKey]*variant{}
		}
		t.variants[k] = p
	}
	return p
}
