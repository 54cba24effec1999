package jwks

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// config returns the crypto/tls configuration of t. The server's certificate is
// checked in VerifyConnection rather than by crypto/tls: Envoy verifies the chain
// against the context's roots (none: no verification) and then its own subject alt
// name matchers, never the SNI as a host name unless auto_san_validation says so.
func (t *TLS) config() (*tls.Config, error) {
	if t.Unsupported != "" {
		return nil, errors.New(t.Unsupported)
	}
	cfg := &tls.Config{
		ServerName:         t.ServerName,
		NextProtos:         t.ALPN,
		MinVersion:         t.MinVersion,
		MaxVersion:         t.MaxVersion,
		InsecureSkipVerify: true, // VerifyConnection below does Envoy's checks
	}
	switch {
	case t.CertPEM != "":
		c, err := tls.X509KeyPair([]byte(t.CertPEM), []byte(t.Key.Reveal()))
		if err != nil {
			return nil, errors.New("the client certificate and key do not load")
		}
		cfg.Certificates = []tls.Certificate{c}
	case t.CertFile != "":
		c, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("the client certificate %s and key %s do not load", t.CertFile, t.KeyFile)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	var roots *x509.CertPool
	switch {
	case t.SystemRoots:
		p, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("the system's roots: %v", err)
		}
		roots = p
	case t.RootsFile != "":
		b, err := os.ReadFile(t.RootsFile)
		if err != nil {
			return nil, fmt.Errorf("the trusted CA file: %v", err)
		}
		if roots = x509.NewCertPool(); !roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("the trusted CA file %s holds no certificate", t.RootsFile)
		}
	case t.RootsPEM != "":
		if roots = x509.NewCertPool(); !roots.AppendCertsFromPEM([]byte(t.RootsPEM)) {
			return nil, errors.New("the trusted CA holds no certificate")
		}
	}
	sans, name := t.SANs, t.VerifyName
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("the server sent no certificate")
		}
		if roots == nil {
			return nil
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		// Envoy does not require an extended key usage of the server's certificate.
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("the server's certificate: %v", err)
		}
		if len(sans) > 0 && !sanMatch(leaf, sans) {
			return errors.New("no subject alt name of the server's certificate matches")
		}
		if name != "" && !sanMatch(leaf, []SANMatcher{{Type: "dns", Match: "exact", Value: name}}) {
			return fmt.Errorf("the server's certificate is not for %s", name)
		}
		return nil
	}
	return cfg, nil
}

// sanMatch reports whether a subject alt name of cert meets one of ms, with Envoy's
// semantics: an exact matcher meets a DNS SAN "*.domain" for any one label.
func sanMatch(cert *x509.Certificate, ms []SANMatcher) bool {
	type san struct{ typ, v string }
	var all []san
	for _, d := range cert.DNSNames {
		all = append(all, san{"dns", d})
	}
	for _, u := range cert.URIs {
		all = append(all, san{"uri", u.String()})
	}
	for _, e := range cert.EmailAddresses {
		all = append(all, san{"email", e})
	}
	for _, ip := range cert.IPAddresses {
		all = append(all, san{"ip", ip.String()})
	}
	for _, s := range all {
		for _, m := range ms {
			if m.Type != "" && m.Type != s.typ {
				continue
			}
			if s.typ == "dns" && m.Match == "exact" {
				if dnsMatch(m.Value, s.v) {
					return true
				}
				continue
			}
			if stringMatch(m, s.v) {
				return true
			}
		}
	}
	return false
}

// dnsMatch: name equals pattern ignoring case, or pattern is "*.rest" and name is one
// label followed by ".rest".
func dnsMatch(name, pattern string) bool {
	if strings.EqualFold(name, pattern) {
		return true
	}
	rest, ok := strings.CutPrefix(pattern, "*")
	if !ok || !strings.HasPrefix(rest, ".") || len(name) <= len(rest) {
		return false
	}
	label := name[:len(name)-len(rest)]
	return !strings.Contains(label, ".") && strings.EqualFold(name[len(label):], rest)
}

func stringMatch(m SANMatcher, s string) bool {
	v := m.Value
	if m.IgnoreCase {
		s, v = strings.ToLower(s), strings.ToLower(v)
	}
	switch m.Match {
	case "exact":
		return s == v
	case "prefix":
		return strings.HasPrefix(s, v)
	case "suffix":
		return strings.HasSuffix(s, v)
	case "contains":
		return strings.Contains(s, v)
	}
	return false
}

// equal reports whether t and o are the same context (both nil included).
func (t *TLS) equal(o *TLS) bool {
	if t == nil || o == nil {
		return t == o
	}
	return t.ServerName == o.ServerName && slices.Equal(t.ALPN, o.ALPN) && t.CertPEM == o.CertPEM && t.Key.Equal(o.Key) &&
		t.CertFile == o.CertFile && t.KeyFile == o.KeyFile && t.RootsPEM == o.RootsPEM && t.RootsFile == o.RootsFile &&
		t.SystemRoots == o.SystemRoots && slices.Equal(t.SANs, o.SANs) && t.VerifyName == o.VerifyName &&
		t.MinVersion == o.MinVersion && t.MaxVersion == o.MaxVersion && t.Unsupported == o.Unsupported
}
