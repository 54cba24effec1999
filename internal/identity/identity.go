// Package identity is the pod's workload identity as amesh hands it through the
// pipeline: the certificate chain, private key and mesh roots that istio-agent writes
// (OUTPUT_CERTS), checked to be one consistent set (Parse), and the State the watcher
// (package certwatch) publishes to the agent. It does no I/O.
//
// The private key is a Secret: printed, logged or encoded to JSON it reads
// "[redacted]", and only Reveal, which translation calls to build APISIX's ssl
// objects, gives it out.
package identity

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/amesh-dev/amesh/internal/feed"
)

// The files istio-agent writes into OUTPUT_CERTS, in the order it writes them (each
// replaced by a rename, one after the other).
const (
	KeyFile   = "key.pem"
	ChainFile = "cert-chain.pem"
	RootFile  = "root-cert.pem"
)

// Identity is one consistent set of the three files: the key belongs to the chain's
// leaf, and the chain verified against the roots when it was parsed. It is immutable;
// the pipeline shares it by pointer.
type Identity struct {
	// CertChain is cert-chain.pem as written: the leaf first, then the CAs above it.
	CertChain string
	// Key is key.pem, the leaf's private key.
	Key Secret
	// Roots is root-cert.pem: the mesh's trust anchors, which peers' chains must end at.
	Roots string

	// Of the leaf, for logs and views.
	URI                 string // the SPIFFE ID ("" when the leaf has no URI SAN)
	Serial              string // hexadecimal
	NotBefore, NotAfter time.Time
}

// State is what the pipeline knows of the workload identity.
type State struct {
	// Identity is the identity in force; nil when there is none.
	Identity *Identity
	// Dir is the directory the files are read from.
	Dir string
	// Problem, when not empty, says why what the files hold now is not in force:
	// Identity, if any, is the last consistent set. It never holds key material.
	Problem string
}

// Feed publishes the current State (certwatch.Watcher is one).
type Feed = feed.Feed[State]

// Parse checks that key, chain and roots, the contents of KeyFile, ChainFile and
// RootFile, are one identity at now: the chain's first certificate is the leaf, key is
// its private key, and the leaf verifies against roots (the chain's other
// certificates as intermediates) at now. Errors name the files and never hold key
// material.
func Parse(key, chain, roots []byte, now time.Time) (*Identity, error) {
	certs, err := certificates(ChainFile, chain)
	if err != nil {
		return nil, err
	}
	anchors, err := certificates(RootFile, roots)
	if err != nil {
		return nil, err
	}
	// X509KeyPair checks that the key matches the leaf's public key; its errors
	// describe the PEM blocks, not their content.
	if _, err := tls.X509KeyPair(chain, key); err != nil {
		return nil, fmt.Errorf("%s does not hold the private key of the certificate in %s: %w", KeyFile, ChainFile, err)
	}
	leaf := certs[0]
	// The validity periods are checked first, with messages that do not name the
	// current time: a watcher recognises a problem that persists by its message.
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("the certificate in %s is valid from %s to %s, not now", ChainFile, stamp(leaf.NotBefore), stamp(leaf.NotAfter))
	}
	opts := x509.VerifyOptions{
		Roots: x509.NewCertPool(), Intermediates: x509.NewCertPool(), CurrentTime: now,
		// Istio's workload certificates serve both directions.
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}
	for _, c := range anchors {
		opts.Roots.AddCert(c)
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		var invalid x509.CertificateInvalidError
		if errors.As(err, &invalid) && invalid.Reason == x509.Expired {
			return nil, fmt.Errorf("the certificate in %s does not verify against %s: a CA certificate on the way (%s) is valid from %s to %s, not now",
				ChainFile, RootFile, invalid.Cert.Subject, stamp(invalid.Cert.NotBefore), stamp(invalid.Cert.NotAfter))
		}
		return nil, fmt.Errorf("the certificate in %s does not verify against %s: %w", ChainFile, RootFile, err)
	}
	id := &Identity{
		CertChain: string(chain), Key: NewSecret(string(key)), Roots: string(roots),
		Serial: fmt.Sprintf("%x", leaf.SerialNumber), NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
	}
	if len(leaf.URIs) > 0 {
		id.URI = leaf.URIs[0].String()
	}
	return id, nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// certificates parses every CERTIFICATE block of data, the content of file.
func certificates(file string, data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for rest := data; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			// Named by type only: a misplaced private key must not reach an error.
			return nil, fmt.Errorf("%s holds a %q PEM block where certificates belong", file, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New(file + " holds no PEM certificate")
	}
	return out, nil
}

// Same reports whether a and b hold the same files' contents (both nil: true).
func (a *Identity) Same(b *Identity) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.CertChain == b.CertChain && a.Roots == b.Roots && a.Key.Equal(b.Key)
}

// Redacted is what a Secret shows instead of itself.
const Redacted = "[redacted]"

// Secret holds a private key. It formats, logs and encodes as Redacted; Reveal gives
// it out. The value sits behind a pointer so that fmt, which prints the fields of
// nested structs through reflection without calling their methods, shows an address
// rather than the key wherever a Secret is embedded. The zero Secret is empty.
type Secret struct{ p *string }

// NewSecret returns a Secret holding s.
func NewSecret(s string) Secret { return Secret{&s} }

// Reveal returns the secret.
func (s Secret) Reveal() string {
	if s.p == nil {
		return ""
	}
	return *s.p
}

// Equal reports whether s and o hold the same secret.
func (s Secret) Equal(o Secret) bool { return s.Reveal() == o.Reveal() }

// String returns Redacted.
func (Secret) String() string { return Redacted }

// GoString returns Redacted, for %#v.
func (Secret) GoString() string { return Redacted }

// Format writes Redacted whatever the verb.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(Redacted)) }

// MarshalText returns Redacted (encoding/json, YAML and slog's handlers use it).
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }
