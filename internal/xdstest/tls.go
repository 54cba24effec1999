package xdstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// serverCert is a throwaway CA and a server certificate it signed.
type serverCert struct {
	dir    string
	caFile string
	cert   tls.Certificate
}

func newServerCert() (*serverCert, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{Organization: []string{"xdstest"}, CommonName: "xdstest root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "istiod.istio-system.svc"},
		DNSNames:     []string{"localhost", "istiod.istio-system.svc"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "xdstest-tls-")
	if err != nil {
		return nil, err
	}
	sc := &serverCert{dir: dir, caFile: filepath.Join(dir, "root-cert.pem")}
	if err := os.WriteFile(sc.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		sc.cleanup()
		return nil, fmt.Errorf("xdstest: write CA: %w", err)
	}
	sc.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return sc, nil
}

func (sc *serverCert) tlsConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{sc.cert}, MinVersion: tls.VersionTLS12}
}

func (sc *serverCert) cleanup() {
	if sc != nil {
		os.RemoveAll(sc.dir)
	}
}
