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
	if !vs.hasFP {
		vs.fp, vs.hasFP = fingerprintOf(vs.vh, &t.fpBuf), true
	}
	fp := fingerprintOf(vh, &t.fpBuf)
	if fp != vs.fp {
		// vh is about to be rebuilt; its state takes the digest (see rebuildVhost).
		t.fpOf, t.fpNext = vh, fp
		return false
	}
	vs.vh = vh
	return true
}
