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
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:5])
	b := make([]byte, 0, maxIDLen)
	for i := 0; i < len(name) && len(b) < maxIDLen-len(suffix); i++ {
		c := name[i]
		if !idChar(c) {
			c = '_'
		}
		b = append(b, c)
	}
	return string(b) + suffix
}

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
