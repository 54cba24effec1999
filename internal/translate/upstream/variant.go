package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// Variant holds the route-level settings that APISIX keeps on the upstream. A route
// whose settings differ from its cluster's base upstream points at a variant of it;
// routes with equal settings share one variant (DESIGN.md, semantics 6).
type Variant struct {
	// Retries is the route's retry_policy.num_retries; nil keeps the base (no retries).
	Retries *int
	// RetryTimeout bounds the time spent retrying, in seconds (nginx
	// proxy_next_upstream_timeout); nil keeps the base (no bound).
	RetryTimeout *float64
	// ReadTimeout sets the upstream send and read timeouts in seconds, e.g. from
	// retry_policy.per_try_timeout; connect stays the cluster's connect_timeout.
	ReadTimeout *float64
	// HashOn and HashKey select consistent hashing (APISIX hash_on "header", "cookie"
	// or "vars", and key); see HashFromPolicy. They apply only to hashing clusters (see
	// Effective). (The brief's field name Key collides with the method Key.)
	HashOn, HashKey string
}

// Key identifies the variant: "" for the base upstream, equal for equal variants.
func (v Variant) Key() string { return string(v.appendKey(nil)) }

// AppendKey appends Key's text to b.
func (v Variant) AppendKey(b []byte) []byte { return v.appendKey(b) }

// appendKey appends Key's text: the set settings as "name=value", joined by ",".
func (v Variant) appendKey(b []byte) []byte {
	start := len(b)
	sep := func(b []byte) []byte {
		if len(b) > start {
			b = append(b, ',')
		}
		return b
	}
	if v.Retries != nil {
		b = strconv.AppendInt(append(sep(b), "retries="...), int64(*v.Retries), 10)
	}
	if v.RetryTimeout != nil {
		b = strconv.AppendFloat(append(sep(b), "retry_timeout="...), *v.RetryTimeout, 'g', -1, 64)
	}
	if v.ReadTimeout != nil {
		b = strconv.AppendFloat(append(sep(b), "read_timeout="...), *v.ReadTimeout, 'g', -1, 64)
	}
	if v.HashOn != "" {
		b = append(append(append(append(sep(b), "hash="...), v.HashOn...), ':'), v.HashKey...)
	}
	return b
}

// Effective drops the settings that have no effect on base, so that routes which
// behave the same share an upstream: Envoy ignores a hash policy unless the cluster
// hashes (RING_HASH, MAGLEV), and a setting equal to the base's changes nothing.
func (v Variant) Effective(base *apisix.Upstream) Variant {
	if !Hashing(base) {
		v.HashOn, v.HashKey = "", ""
	}
	if v.Retries != nil && base.Retries != nil && *v.Retries == *base.Retries {
		v.Retries = nil
	}
	if v.RetryTimeout != nil && base.RetryTimeout != nil && *v.RetryTimeout == *base.RetryTimeout {
		v.RetryTimeout = nil
	}
	if v.ReadTimeout != nil && base.Timeout != nil && base.Timeout.Read == *v.ReadTimeout && base.Timeout.Send == *v.ReadTimeout {
		v.ReadTimeout = nil
	}
	return v
}

// variantHashLen is the number of hex digits of the hash that tells variants apart.
const variantHashLen = 12

// VariantID returns the id of a cluster's variant: ID(cluster) for the base (empty
// key); otherwise the base id, cut to fit, plus "-v" and a hash of the base id and the
// key. Deterministic, at most 64 characters, valid as an APISIX id.
//
// It runs for every route's reference to an upstream, so the key and the hash input
// are built in stack buffers: one allocation, the id.
func VariantID(cluster string, v Variant) string {
	var kb [128]byte
	return variantID(ID(cluster), v.appendKey(kb[:0]))
}

func variantID(baseID string, key []byte) string {
	if len(key) == 0 {
		return baseID
	}
	var in [256]byte
	sum := sha256.Sum256(append(append(append(in[:0], baseID...), 0), key...))
	var suffix [2 + variantHashLen]byte
	suffix[0], suffix[1] = '-', 'v'
	hex.Encode(suffix[2:], sum[:variantHashLen/2])
	if len(baseID) > 64-len(suffix) {
		baseID = baseID[:64-len(suffix)]
	}
	return baseID + string(suffix[:])
}

// Apply returns a copy of base (built by Build) with the variant's settings and the id
// VariantID gives; base is not modified. Settings without effect on base
// (see Effective) are not applied.
func (v Variant) Apply(base *apisix.Upstream) *apisix.Upstream {
	v = v.Effective(base)
	var kb [128]byte
	return v.apply(base, variantID(base.ID, v.appendKey(kb[:0])))
}

// ApplyAs is Apply with the id given instead of computed: a route names the variant it
// asked for (VariantID), which Apply may narrow to a shared effective one; the caller
// that already holds the requested id saves hashing a second one.
func (v Variant) ApplyAs(base *apisix.Upstream, id string) *apisix.Upstream {
	return v.Effective(base).apply(base, id)
}

// apply applies an effective variant.
func (v Variant) apply(base *apisix.Upstream, id string) *apisix.Upstream {
	u := *base
	u.ID = id
	if v.Retries != nil {
		u.Retries = intPtr(*v.Retries)
	}
	if v.RetryTimeout != nil {
		rt := *v.RetryTimeout
		u.RetryTimeout = &rt
	}
	if v.ReadTimeout != nil {
		t := apisix.Timeout{Connect: NoTimeout, Send: *v.ReadTimeout, Read: *v.ReadTimeout}
		if base.Timeout != nil {
			t.Connect = base.Timeout.Connect
		}
		u.Timeout = &t
	}
	if v.HashOn != "" {
		u.Type = "chash"
		u.HashOn, u.Key = v.HashOn, v.HashKey
	}
	// Nodes, labels and checks are shared with base: both are immutable once built.
	return &u
}
