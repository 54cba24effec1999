package apisix

import (
	"crypto/sha256"
	"encoding/hex"
)

// maxIDLen is APISIX's limit on object ids.
const maxIDLen = 64

// SafeID turns any name into a valid APISIX id (^[a-zA-Z0-9-_.]+$, at most 64 chars),
// deterministically. A name that is already valid is kept as it is. Otherwise invalid
// characters become '_' and, because that replacement could make two names equal, a
// hash of the original name is appended; long names are cut before the hash.
func SafeID(name string) string {
	if name != "" && len(name) <= maxIDLen && validID(name) {
		return name
	}
	// Built in stack buffers with one allocation (the result): a first translation
	// names tens of thousands of Istio clusters, all of which contain '|'.
	var in [256]byte
	sum := sha256.Sum256(append(in[:0], name...))
	var suffix [1 + 2*idHashBytes]byte
	suffix[0] = '-'
	hex.Encode(suffix[1:], sum[:idHashBytes])
	var out [maxIDLen]byte
	b := out[:0]
	for i := 0; i < len(name) && len(b) < maxIDLen-len(suffix); i++ {
		c := name[i]
		if !idChar(c) {
			c = '_'
		}
		b = append(b, c)
	}
	return string(append(b, suffix[:]...))
}

// idHashBytes is how much of the name's SHA-256 SafeID appends (as hex).
const idHashBytes = 5

func validID(s string) bool {
	for i := 0; i < len(s); i++ {
		if !idChar(s[i]) {
			return false
		}
	}
	return true
}

func idChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.'
}
