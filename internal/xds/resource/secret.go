package resource

// SDS secrets served over ADS. istiod names the secrets of a DestinationRule's
// credentialName in a cluster's TLS context with `sds_config: {ads: {}}`
// ("kubernetes://NAME" for the certificate and key, "kubernetes://NAME-cacert" for
// the validation context), and Envoy asks for them on its ADS stream once a cluster
// names them, as it asks for a cluster's endpoints. A Secret is what the client keeps
// of one: a certificate chain with its key, or a validation context.
//
// A certificate's private key is held as an identity.Secret: printed, logged or
// encoded it reads "[redacted]" (Envoy's config_dump redacts secrets too), and only
// translation, which writes it into an APISIX ssl object, reveals it.

import (
	"fmt"
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/identity"
)

// SecretType is the type URL of SDS secrets.
const SecretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

var secretKind = &kindFuncs[*tlsv3.Secret, *Secret]{
	kindNoun: "secret",
	decodeFn: decodeSecret,
	keepFn:   NewSecret,
	nameFn:   func(s *Secret) string { return s.Name },
	equalFn:  (*Secret).Equal,
}

// decodeSecret decodes and validates a secret. Its errors never quote the secret's
// content: they become NACK details and log lines.
func decodeSecret(d *Decoded, b []byte, _ *Secret, _ DecodeOptions) (*Secret, error) {
	s := &tlsv3.Secret{}
	if err := unmarshalValid(d, b, s); err != nil {
		return nil, err
	}
	return NewSecret(s), nil
}

// Secret is an SDS secret as the client keeps it. Immutable; safe for concurrent use.
// It formats and encodes without its private key.
type Secret struct {
	Name string
	// CertChain (PEM) and Key are a TLS certificate secret's (tls_certificate), inline.
	CertChain string
	Key       identity.Secret
	// Validation is a validation context secret's (validation_context), nil for a
	// certificate. It holds only public material (trusted CAs, CRLs, matchers).
	Validation *tlsv3.CertificateValidationContext
	// Unsupported says why amesh cannot use the secret, "" when it can: another
	// type, material not inline, a private key provider.
	Unsupported string
}

// NewSecret keeps s (which it does not modify) as a Secret.
func NewSecret(s *tlsv3.Secret) *Secret {
	r := &Secret{Name: s.GetName()}
	switch t := s.GetType().(type) {
	case *tlsv3.Secret_TlsCertificate:
		c := t.TlsCertificate
		chain, okC := inline(c.GetCertificateChain())
		key, okK := inline(c.GetPrivateKey())
		switch {
		case c.GetPrivateKeyProvider() != nil:
			r.Unsupported = "a private key provider is not supported"
		case c.GetPkcs12() != nil || c.GetPassword() != nil:
			r.Unsupported = "PKCS#12 and password-protected keys are not supported"
		case !okC || !okK || chain == "" || key == "":
			r.Unsupported = "only a certificate chain and private key given inline are supported"
		default:
			r.CertChain, r.Key = chain, identity.NewSecret(key)
		}
	case *tlsv3.Secret_ValidationContext:
		r.Validation = proto.Clone(t.ValidationContext).(*tlsv3.CertificateValidationContext)
	default:
		r.Unsupported = "only TLS certificate and validation context secrets are supported"
	}
	return r
}

// inline returns the content of an inline data source; false for another kind.
func inline(ds *corev3.DataSource) (string, bool) {
	switch v := ds.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return string(v.InlineBytes), true
	case *corev3.DataSource_InlineString:
		return v.InlineString, true
	}
	return "", false
}

// InlinePEM returns the content of an inline data source (a validation context's
// trusted_ca as istiod sends it); false for another kind.
func InlinePEM(ds *corev3.DataSource) (string, bool) { return inline(ds) }

// IsCert reports whether s is a usable TLS certificate secret.
func (s *Secret) IsCert() bool { return s.Unsupported == "" && s.Validation == nil }

// Equal reports whether s and o have the same content.
func (s *Secret) Equal(o *Secret) bool {
	if s == o {
		return true
	}
	return s != nil && o != nil && s.Name == o.Name && s.CertChain == o.CertChain && s.Key.Equal(o.Key) &&
		s.Unsupported == o.Unsupported && proto.Equal(s.Validation, o.Validation)
}

// String describes s without its private key.
func (s *Secret) String() string {
	switch {
	case s == nil:
		return "<nil>"
	case s.Unsupported != "":
		return fmt.Sprintf("secret %q (unsupported: %s)", s.Name, s.Unsupported)
	case s.Validation != nil:
		return fmt.Sprintf("secret %q (validation context)", s.Name)
	}
	return fmt.Sprintf("secret %q (certificate, key %s)", s.Name, identity.Redacted)
}

// GoString is String: %#v must not print the key's address or the chain either.
func (s *Secret) GoString() string { return s.String() }

// Format prints String for every verb, so that no verb reaches the fields.
func (s *Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// MarshalJSON encodes the secret's name and kind only.
func (s *Secret) MarshalJSON() ([]byte, error) {
	kind := "certificate"
	switch {
	case s.Unsupported != "":
		kind = "unsupported"
	case s.Validation != nil:
		kind = "validation_context"
	}
	return fmt.Appendf(nil, `{"name":%q,"kind":%q}`, s.Name, kind), nil
}

// ClusterSecrets returns the names of the SDS secrets served over ADS
// (sds_config.ads) that the TLS contexts of c's transport sockets name, sorted and
// without duplicates: what the client subscribes to for c. c may be pruned (pruning
// keeps an ADS config source, see trimTransportSocket) or not.
func ClusterSecrets(c *clusterv3.Cluster) []string {
	var out []string
	add := func(ts *corev3.TransportSocket) {
		a := ts.GetTypedConfig()
		if a == nil || IsMarker(a) {
			return
		}
		t := &tlsv3.UpstreamTlsContext{}
		if !a.MessageIs(t) || a.UnmarshalTo(t) != nil {
			return
		}
		for _, s := range SDSConfigs(t.GetCommonTlsContext()) {
			if s.GetSdsConfig().GetAds() != nil && s.GetName() != "" {
				out = append(out, s.GetName())
			}
		}
	}
	for _, m := range c.GetTransportSocketMatches() {
		add(m.GetTransportSocket())
	}
	add(c.GetTransportSocket())
	return sortedUnique(out)
}

// SDSConfigs returns the SDS secret configs of a TLS context: its certificates', then
// its validation context's.
func SDSConfigs(common *tlsv3.CommonTlsContext) []*tlsv3.SdsSecretConfig {
	out := append([]*tlsv3.SdsSecretConfig(nil), common.GetTlsCertificateSdsSecretConfigs()...)
	if s := common.GetValidationContextSdsSecretConfig(); s != nil {
		out = append(out, s)
	}
	if s := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); s != nil {
		out = append(out, s)
	}
	return out
}

func sortedUnique(s []string) []string {
	if len(s) == 0 {
		return nil
	}
	slices.Sort(s)
	return slices.Compact(s)
}
