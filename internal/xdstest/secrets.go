package xdstest

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// adsSource is the config source istiod gives the secrets of a credentialName.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3}
}

// CredentialCluster is EDSCluster with the TLS context istiod gives a DestinationRule
// MUTUAL with credentialName (testdata/istiod/mtls/cds/outbound_8443__credential...):
// the certificate cert and the validation context ca as SDS secrets over ADS, with the
// default validation context's SAN matchers sans. An empty cert or ca is left out.
func CredentialCluster(name, sni, cert, ca string, sans ...string) *clusterv3.Cluster {
	c := EDSCluster(name)
	common := &tlsv3.CommonTlsContext{}
	if cert != "" {
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: cert, SdsConfig: adsSource()}}
	}
	if ca != "" {
		def := &tlsv3.CertificateValidationContext{}
		for _, s := range sans {
			def.MatchTypedSubjectAltNames = append(def.MatchTypedSubjectAltNames, &tlsv3.SubjectAltNameMatcher{
				SanType: tlsv3.SubjectAltNameMatcher_DNS, Matcher: exact(s)})
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         def,
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: ca, SdsConfig: adsSource()},
			}}
	}
	tc, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})
	if err != nil {
		panic(err)
	}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}}
	return c
}

// CertSecret is a TLS certificate secret as istiod serves a credentialName's
// ("kubernetes://NAME"): chain and key inline.
func CertSecret(name, chain, key string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(chain)}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(key)}},
	}}}
}

// CASecret is a validation context secret as istiod serves a credentialName's ca.crt
// ("kubernetes://NAME-cacert").
func CASecret(name, pem string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte(pem)}},
	}}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}
