package apisix

import (
	"bytes"
	"encoding/json"
)

// SSL is an APISIX certificate (schema_def.ssl): of Type "server", what APISIX
// presents to clients whose SNI matches SNI (and, with Client, the CAs their
// certificates must chain to); of Type "client", what it presents to an upstream
// whose tls.client_cert_id names it.
type SSL struct {
	ID   string `json:"id"`
	Type string `json:"type"`
	SNI  string `json:"sni,omitempty"`
	// Cert is the certificate chain (PEM, leaf first); Key its private key (PEM).
	Cert   string     `json:"cert"`
	Key    string     `json:"key"`
	Client *SSLClient `json:"client,omitempty"`
}

// SSLClient makes a server SSL require client certificates.
type SSLClient struct {
	// CA holds the PEM certificates a client's chain must end at.
	CA string `json:"ca"`
	// Depth is the most CA certificates a client's chain may have above its leaf.
	Depth int `json:"depth"`
}

// RedactedKey replaces private keys in what Redact returns.
const RedactedKey = "[redacted]"

// Redact returns the value of key as it may be shown (a debug view): for an SSL, the
// private keys (key, keys) replaced by RedactedKey, or only RedactedKey when the value
// cannot be decoded (no field of it can be told safe); any other object as it is.
func Redact(key string, value []byte) []byte {
	if KindOf(key) != KindSSLs || value == nil {
		return value
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(value, &obj); err != nil {
		return []byte(`"` + RedactedKey + `"`)
	}
	red, _ := json.Marshal(RedactedKey)
	if _, ok := obj["key"]; ok {
		obj["key"] = red
	}
	if ks, ok := obj["keys"]; ok {
		var n []json.RawMessage
		if json.Unmarshal(ks, &n) != nil {
			obj["keys"] = red
		} else {
			for i := range n {
				n[i] = red
			}
			obj["keys"], _ = json.Marshal(n)
		}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if enc.Encode(obj) != nil {
		return []byte(`"` + RedactedKey + `"`)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
