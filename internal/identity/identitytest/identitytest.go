// Package identitytest issues workload certificates the way istiod's CA does (a
// self-signed mesh root, leaves with a SPIFFE URI SAN and an empty subject, valid for
// client and server authentication) and writes them as istio-agent writes OUTPUT_CERTS,
// for tests.
package identitytest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/amesh-dev/amesh/internal/identity"
)

// CA is a mesh root that signs workload certificates.
type CA struct {
	cert   *x509.Certificate
	key    crypto.Signer
	PEM    []byte // the root certificate, as root-cert.pem holds it
	serial atomic.Int64
}

// NewCA returns a self-signed root valid from an hour ago for a day.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{name}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{cert: cert, key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.serial.Store(1)
	return ca, nil
}

// Files are the contents of the three files of OUTPUT_CERTS.
type Files struct {
	Key, Chain, Root []byte
	Serial           string // of the leaf, hexadecimal
}

// Options shape an issued certificate.
type Options struct {
	// SPIFFE is the URI SAN; default spiffe://cluster.local/ns/default/sa/productpage.
	SPIFFE string
	// NotBefore and NotAfter default to an hour ago and a day from now.
	NotBefore, NotAfter time.Time
	// RSA makes an RSA 2048 key in PKCS#1 ("RSA PRIVATE KEY", istio-agent's default)
	// instead of an ECDSA P-256 key in SEC 1 ("EC PRIVATE KEY", its ECC mode).
	RSA bool
}

// Issue returns a new key and a leaf for it signed by the CA; the chain is the leaf
// followed by the root, as istiod's CA returns it.
func (ca *CA) Issue(o Options) (Files, error) {
	if o.SPIFFE == "" {
		o.SPIFFE = "spiffe://cluster.local/ns/default/sa/productpage"
	}
	now := time.Now()
	if o.NotBefore.IsZero() {
		o.NotBefore = now.Add(-time.Hour)
	}
	if o.NotAfter.IsZero() {
		o.NotAfter = now.Add(24 * time.Hour)
	}
	u, err := url.Parse(o.SPIFFE)
	if err != nil {
		return Files{}, err
	}
	var signer crypto.Signer
	var keyPEM []byte
	if o.RSA {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return Files{}, err
		}
		signer, keyPEM = k, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return Files{}, err
		}
		der, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return Files{}, err
		}
		signer, keyPEM = k, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
	}
	tmpl := &x509.Certificate{
		NotBefore: o.NotBefore, NotAfter: o.NotAfter, URIs: []*url.URL{u},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := ca.Sign(tmpl, signer.Public())
	if err != nil {
		return Files{}, err
	}
	chain := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.PEM...)
	return Files{Key: keyPEM, Chain: chain, Root: ca.PEM, Serial: fmt.Sprintf("%x", tmpl.SerialNumber)}, nil
}

// Root is the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.cert }

// Sign issues tmpl, with the CA's next serial number, for the public key pub, and
// returns the certificate's DER.
func (ca *CA) Sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	tmpl.SerialNumber = big.NewInt(ca.serial.Add(1))
	return x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
}

// IssueIdentity is Issue, and the identity the files parse into now.
func (ca *CA) IssueIdentity(o Options) (*identity.Identity, Files, error) {
	f, err := ca.Issue(o)
	if err != nil {
		return nil, Files{}, err
	}
	id, err := identity.Parse(f.Key, f.Chain, f.Root, time.Now())
	return id, f, err
}

// Write writes the files into dir in istio-agent's order, each replaced by a rename.
func (f Files) Write(dir string) error {
	for _, w := range []struct {
		name string
		data []byte
	}{{identity.KeyFile, f.Key}, {identity.ChainFile, f.Chain}, {identity.RootFile, f.Root}} {
		if err := WriteFile(filepath.Join(dir, w.name), w.data); err != nil {
			return err
		}
	}
	return nil
}

// WriteFile replaces path with data through a temporary file and a rename, as
// istio-agent's file.AtomicWrite does.
func WriteFile(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// KeyMaterial returns the strings whose presence in any output would leak the private
// key keyPEM: the PEM itself, each line of its base64 body (but a last line too short to
// be told from chance), and the DER in base64 and in hexadecimal (lower and upper case).
func KeyMaterial(keyPEM []byte) []string {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return []string{string(keyPEM)}
	}
	out := []string{string(keyPEM), base64.StdEncoding.EncodeToString(b.Bytes), fmt.Sprintf("%x", b.Bytes), fmt.Sprintf("%X", b.Bytes)}
	for _, line := range strings.Split(string(keyPEM), "\n") {
		if len(line) >= 16 && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}

// Leaks returns the first of KeyMaterial(keyPEM) found in out, or "".
func Leaks(out []byte, keyPEM []byte) string {
	for _, m := range KeyMaterial(keyPEM) {
		if strings.Contains(string(out), m) {
			return m
		}
	}
	return ""
}

// Log collects what a component logs, from any goroutine, for Leaks.
type Log struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything logged so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
