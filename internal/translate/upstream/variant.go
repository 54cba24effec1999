package upstream

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

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
func (v Variant) Key() string {
	var parts []string
	if v.Retries != nil {
		parts = append(parts, "retries="+strconv.Itoa(*v.Retries))
	}
	if v.RetryTimeout != nil {
		parts = append(parts, "retry_timeout="+strconv.FormatFloat(*v.RetryTimeout, 'g', -1, 64))
	}
	if v.ReadTimeout != nil {
		parts = append(parts, "read_timeout="+strconv.FormatFloat(*v.ReadTimeout, 'g', -1, 64))
	}
	if v.HashOn != "" {
		parts = append(parts, "hash="+v.HashOn+":"+v.HashKey)
	}
	return strings.Join(parts, ",")
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
func VariantID(cluster string, v Variant) string { return variantID(ID(cluster), v.Key()) }

func variantID(baseID, key string) string {
	if key == "" {
		return baseID
	}
	sum := sha256.Sum256([]byte(baseID + "\x00" + key))
	suffix := "-v" + hex.EncodeToString(sum[:])[:variantHashLen]
	if len(baseID) > 64-len(suffix) {
		baseID = baseID[:64-len(suffix)]
	}
	return baseID + suffix
}

// Apply returns a copy of base (built by Build) with the variant's settings and the id
// VariantID gives; base is not modified. Settings without effect on base
// (see Effective) are not applied.
func (v Variant) Apply(base *apisix.Upstream) *apisix.Upstream {
	v = v.Effective(base)
	u := *base
	u.ID = variantID(base.ID, v.Key())
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
