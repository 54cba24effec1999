// Package meshpeer is test infrastructure for outbound Istio mTLS: a certificate
// authority shaped as istiod's (a self-signed root for the trust domain; workload
// certificates whose only identity is a SPIFFE URI SAN) and a server that answers a
// connection as an Istio sidecar's inbound listener does (Peer).
package meshpeer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net/url"
	"time"

	"github.com/amesh-dev/amesh/internal/identity/identitytest"
)

// CA is a root certificate authority (identitytest's root, with the trust domain as
// its Organization, as istiod's own CA has).
type CA struct {
	TrustDomain string
	Cert        *x509.Certificate
	// PEM is the root certificate, as pilot-agent writes root-cert.pem.
	PEM  []byte
	root *identitytest.CA
}

// NewCA makes a self-signed root for trustDomain.
func NewCA(trustDomain string) (*CA, error) {
	root, err := identitytest.NewCA(trustDomain)
	if err != nil {
		return nil, err
	}
	return &CA{TrustDomain: trustDomain, Cert: root.Root(), PEM: root.PEM, root: root}, nil
}

// SPIFFE is the identity istiod gives service account sa in namespace ns.
func (ca *CA) SPIFFE(ns, sa string) string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", ca.TrustDomain, ns, sa)
}

// Leaf is an issued certificate with its key.
type Leaf struct {
	CertPEM, KeyPEM []byte
	TLS             tls.Certificate
}

// Workload issues a workload certificate for the identity spiffeID (istiod's: no
// subject, the SPIFFE ID as the one URI SAN, usable by client and server alike).
func (ca *CA) Workload(spiffeID string) (*Leaf, error) {
	u, err := url.Parse(spiffeID)
	if err != nil {
		return nil, err
	}
	return ca.Issue(&x509.Certificate{URIs: []*url.URL{u}})
}

// Server issues a certificate for DNS names (a server outside the mesh).
func (ca *CA) Server(dnsNames ...string) (*Leaf, error) {
	return ca.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames})
}

// Issue issues a certificate with tmpl's names (subject, SANs); validity, key usages
// and the key are the CA's.
func (ca *CA) Issue(tmpl *x509.Certificate) (*Leaf, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl.NotBefore, tmpl.NotAfter = now.Add(-time.Hour), now.Add(12*time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	der, err := ca.root.Sign(tmpl, &key.PublicKey)
	if err != nil {
		return nil, err
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}),
		TLS:     tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}, nil
}

// Pool is a cert pool holding the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
