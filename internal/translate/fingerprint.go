package translate

// Fingerprints of virtual hosts. istiod resends whole route configurations, often
// unchanged; each resend decodes into new messages, so pointer identity says nothing
// and every virtual host must be compared by content. proto.Equal walks messages by
// reflection and costs more than decoding them; a deterministic marshal (generated
// fast path) hashed with SHA-256 costs a fraction of it, and only the digest is kept.
// A virtual host's fingerprint is computed lazily, the first time a resend has to be
// compared with it, so a first translation pays nothing for it.

import (
	"crypto/sha256"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// fingerprint is the digest of a virtual host's deterministic wire form. Two messages
// with equal fingerprints are equal in everything proto.Equal compares (fields, map
// entries, unknown fields), barring a SHA-256 collision.
type fingerprint [sha256.Size]byte

var deterministic = proto.MarshalOptions{Deterministic: true}

// fingerprintOf hashes vh, reusing *buf for the encoding.
func fingerprintOf(vh *routev3.VirtualHost, buf *[]byte) fingerprint {
	b, err := deterministic.MarshalAppend((*buf)[:0], vh)
	if err != nil {
		// Only invalid UTF-8 in a string fails; such a message never decodes, but keep
		// the comparison sound: a digest of nothing plus the error never repeats a
		// valid message's digest.
		b = append((*buf)[:0], err.Error()...)
	}
	*buf = b
	return sha256.Sum256(b)
}

// sameVhost reports whether the virtual host of vs has the same content as vh,
// remembering vh's fingerprint in vs when it does.
func (t *Translator) sameVhost(vs *vhostState, vh *routev3.VirtualHost) bool {
	if vs.vh == vh {
		return true
	}
	return t.sameFingerprint(vs, vh, fingerprintOf(vh, &t.sc.fpBuf))
}

// fingerprints computes, on every core, the fingerprints a resend of a large route
// configuration needs: fps[i] of the i-th virtual host of rc when an earlier one of
// that name exists with another message, and the earlier one's own when it has none
// yet (the first resend needs both). Comparing a resent 10,000-service route
// configuration is ~10,000 deterministic marshals, about as much as decoding it. nil
// when there are too few to be worth it; sameVhost then fingerprints one by one.
func (t *Translator) fingerprints(st *rcState, rc *routev3.RouteConfiguration) []fingerprint {
	vhs := rc.GetVirtualHosts()
	if len(vhs) < parallelMin {
		return nil
	}
	type cand struct {
		i   int
		old *vhostState
	}
	var cands []cand
	seen := make(map[string]bool, len(vhs))
	for i, vh := range vhs {
		name := vh.GetName()
		if seen[name] {
			continue // as syncRC: only the first of a name counts
		}
		seen[name] = true
		if old := st.vhosts[name]; old != nil && old.vh != vh {
			cands = append(cands, cand{i, old})
		}
	}
	if len(cands) < parallelMin {
		return nil
	}
	fps := make([]fingerprint, len(vhs))
	// Each candidate's old state is its own (names are distinct): no shared writes.
	t.parallel(len(cands), func(sc *scratch, k int) {
		c := cands[k]
		if !c.old.hasFP {
			c.old.fp, c.old.hasFP = fingerprintOf(c.old.vh, &sc.fpBuf), true
		}
		fps[c.i] = fingerprintOf(vhs[c.i], &sc.fpBuf)
	})
	return fps
}

// sameFingerprint is sameVhost with vh's fingerprint fp already computed (unused when
// vs holds vh itself).
func (t *Translator) sameFingerprint(vs *vhostState, vh *routev3.VirtualHost, fp fingerprint) bool {
	if vs.vh == vh {
		return true
	}
	if !vs.hasFP {
		vs.fp, vs.hasFP = fingerprintOf(vs.vh, &t.sc.fpBuf), true
	}
	if fp != vs.fp {
		// vh is about to be rebuilt; its state takes the digest (see rebuildVhost).
		t.fpOf, t.fpNext = vh, fp
		return false
	}
	vs.vh = vh
	return true
}
