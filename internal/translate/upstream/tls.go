package upstream

// Upstream TLS. Envoy picks each endpoint's transport socket: the first of the
// cluster's transport_socket_matches whose criteria the endpoint's metadata under
// "envoy.transport_socket_match" holds (then its locality's), else the cluster's
// transport_socket (plaintext when unset). istiod's auto-mTLS clusters match
// {tlsMode: istio} (the endpoints of pods with a sidecar) to Istio mTLS and everything
// else to plaintext; its DestinationRules with a TLS mode set transport_socket.
//
// APISIX's upstreams speak TLS or not per upstream (scheme) and nginx has no
// per-upstream SNI apart from the Host header, ALPN, client certificate or subject alt
// name check. So a cluster's TLS context becomes the configuration of amesh's plugin
// amesh-upstream-tls (TLSConf; lua/apisix/plugins/amesh-upstream-tls.lua), on the
// routes to the cluster, which hands it to ngx_http_amesh_upstream_tls_module for the
// connections of each request (and on the stream routes to it, the stream plugin of
// that name for each connection, with ForTCP's configuration); and each node says
// whether Envoy would reach its endpoint with TLS: the upstream's scheme is that of most
// of its nodes, and the others carry node metadata {"amesh_tls": true|false}. The
// plugin then decides per node the balancer picked (retries included). An endpoint whose socket amesh cannot reproduce
// (another socket type, a TLS context it cannot translate, a second TLS context) is
// left out of the upstream and reported: it is never reached in plaintext, or with
// weaker TLS, where Envoy would use TLS.

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// TLSPlugin is amesh's APISIX plugin for upstream TLS.
const TLSPlugin = "amesh-upstream-tls"

// NodeTLSKey is the node metadata key that overrides the upstream's scheme for one
// node: true for TLS, false for plaintext. NodeSNIKey is the SNI of a node of a merged
// weighted split, whose clusters differ in it.
const (
	NodeTLSKey = "amesh_tls"
	NodeSNIKey = "amesh_sni"
)

// Identity says where the workload's own certificate and the mesh's roots come from:
// what Envoy gets from istio-agent over SDS as the secrets "default" and "ROOTCA".
type Identity struct {
	// CertID is the APISIX /ssls object (type "client") holding the workload
	// certificate chain and key.
	CertID string
	// RootFile is a PEM file with the mesh's roots (pilot-agent writes root-cert.pem to
	// OUTPUT_CERTS).
	RootFile string
}

// Options configure what upstream TLS can use.
type Options struct {
	Identity Identity
	// Secrets are the SDS secrets istiod serves over ADS (a DestinationRule's
	// credentialName) that the snapshot holds, by name: a TLS context naming one
	// that is absent is not served (its endpoints are left out, as Envoy's cluster
	// waits for it).
	Secrets map[string]*resource.Secret
	// NoTLS leaves out every node Envoy reaches with TLS (a mirror target, which is
	// requested without the plugin).
	NoTLS bool
}

// TLSConf is the plugin's configuration for one upstream (see
// internal/apisix/schema/schemas/plugins/amesh-upstream-tls.json).
type TLSConf struct {
	// SNI is sent as the server name; AutoSNI sends the request's Host instead
	// (upstream_http_protocol_options.auto_sni).
	SNI     string   `json:"sni,omitempty"`
	AutoSNI bool     `json:"auto_sni,omitempty"`
	ALPN    []string `json:"alpn,omitempty"`
	// Cert is the client certificate, nil for none.
	Cert *TLSCert `json:"cert,omitempty"`
	// CA are the roots the server's chain must lead to; nil: the chain is not verified
	// (Envoy without a trusted CA).
	CA *TLSCA `json:"ca,omitempty"`
	// SANs: one of them must match a subject alt name of the server's certificate.
	SANs []SANMatcher `json:"sans,omitempty"`
	// AutoSAN verifies the server's certificate against the SNI (a DNS name match).
	AutoSAN     bool     `json:"auto_san,omitempty"`
	CRLFile     string   `json:"crl_file,omitempty"`
	CRLLeafOnly bool     `json:"crl_leaf_only,omitempty"`
	MinVersion  string   `json:"min_version,omitempty"`
	MaxVersion  string   `json:"max_version,omitempty"`
	Ciphers     []string `json:"ciphers,omitempty"`
	Curves      []string `json:"curves,omitempty"`
	// NoALPNOverride: the cluster keeps its own ALPN where Istio's ALPN filter would
	// set another (istiod marks clusters whose TLS is not Istio's, see
	// resource.ALPNOverrideKey). Not sent to the plugin: the route applies it.
	NoALPNOverride bool `json:"-"`
	// ContextSNI is the TLS context's own SNI where AutoSNI takes its place (SNI is then
	// empty): what a connection without an HTTP request sends (ForTCP). Not sent to the
	// plugin.
	ContextSNI string `json:"-"`
}

// ForTCP returns the configuration of c for the connections of a TCP proxy (a stream
// route). auto_sni and auto_san_validation are upstream_http_protocol_options, which
// Envoy's HTTP router applies from the request's Host; tcp_proxy has no request, so its
// connections send the TLS context's own SNI (none when it has none) and check the
// server's certificate against the context's own matchers only. The ALPN stays the
// cluster's: Istio's ALPN override is an HTTP filter. c is not modified.
func (c *TLSConf) ForTCP() *TLSConf {
	if !c.AutoSNI && !c.AutoSAN {
		return c
	}
	t := *c
	if t.AutoSNI {
		t.SNI, t.AutoSNI = t.ContextSNI, false
	}
	t.AutoSAN = false
	return &t
}

// TLSCert is where a client certificate and its key come from: an APISIX /ssls object
// or files.
type TLSCert struct {
	SSLID    string `json:"ssl_id,omitempty"`
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
}

// TLSCA is where trusted roots come from: a file, the system's roots, or PEM
// certificates given inline (an SDS validation context's trusted_ca; CA certificates
// are public, so they may sit in the route's configuration).
type TLSCA struct {
	File   string `json:"file,omitempty"`
	System bool   `json:"system,omitempty"`
	PEM    string `json:"pem,omitempty"`
}

// SecretSSLID is the id of the APISIX /ssls object (type "client") holding the
// certificate and key of the SDS secret name: derived from the name alone, so that what
// refers to it keeps doing so when the secret's content changes. The ':' that is not
// in an APISIX id makes SafeID append a hash of the whole name: two secrets never
// share an id, and none is the workload identity's.
func SecretSSLID(name string) string { return apisix.SafeID("sds:" + name) }

// SSLFits reports whether the certificate and key of s fit APISIX's ssl schema
// (cert 128 to 65536 characters, key 64 to 65536): an ssl object is written for it,
// and what refers to it is served, only then.
func SSLFits(s *resource.Secret) bool {
	c, k := len(s.CertChain), len(s.Key.Reveal())
	return s.IsCert() && c >= 128 && c <= 65536 && k >= 64 && k <= 65536
}

// SANMatcher is Envoy's SAN matcher: Type "" matches DNS, URI, email and IP SANs
// (match_subject_alt_names), else that type (match_typed_subject_alt_names).
type SANMatcher struct {
	Type       string `json:"type,omitempty"`
	Match      string `json:"match"`
	Value      string `json:"value"`
	IgnoreCase bool   `json:"ignore_case,omitempty"`
}

// TLSPluginConf is the plugin's configuration on a route: the TLS of each upstream the
// route may use, by upstream id.
type TLSPluginConf struct {
	Upstreams map[string]*TLSConf `json:"upstreams"`
}

// sockKind is a transport socket as amesh serves it.
type sockKind uint8

const (
	sockPlain sockKind = iota
	sockTLS
	// sockOther: a socket amesh cannot reproduce (another type, a TLS context of a
	// cluster with two, or the match metadata was not kept).
	sockOther
)

// tlsPlan is how a cluster's endpoints get their transport sockets.
type tlsPlan struct {
	matches []tlsMatch
	def     sockKind
	// conf is the plugin configuration of the cluster's TLS context (without the
	// route's ALPN), nil when it has none or it cannot be served; why says then why,
	// field where.
	conf       *TLSConf
	why, field string
	// notes are the approximations of a served TLS context.
	notes []string
	// match is the match or field that holds the TLS context, for the report.
	match string
}

type tlsMatch struct {
	criteria *structpb.Struct
	kind     sockKind
}

// hasTLS reports whether any endpoint of the cluster may use TLS.
func (p *tlsPlan) hasTLS() bool {
	if p.def == sockTLS {
		return true
	}
	for _, m := range p.matches {
		if m.kind == sockTLS {
			return true
		}
	}
	return false
}

// planTLS reads the transport sockets of cluster name (c is its shape).
func planTLS(name string, c *clusterv3.Cluster, opts Options) *tlsPlan {
	p := &tlsPlan{}
	var ctx *tlsv3.UpstreamTlsContext
	kind := func(ts *corev3.TransportSocket, where string) sockKind {
		if !isTLS(ts) {
			return sockPlain
		}
		a := ts.GetTypedConfig()
		if a == nil || !a.MessageIs(&tlsv3.UpstreamTlsContext{}) || resource.IsMarker(a) {
			p.note(where, fmt.Sprintf("transport socket %q is not TLS (UpstreamTlsContext)", ts.GetName()))
			return sockOther
		}
		t := &tlsv3.UpstreamTlsContext{}
		if err := a.UnmarshalTo(t); err != nil {
			p.note(where, "cannot decode the TLS context: "+err.Error())
			return sockOther
		}
		if ctx != nil && !proto.Equal(ctx, t) {
			p.note(where, "a second TLS context in one cluster is not supported")
			return sockOther
		}
		if ctx == nil {
			ctx, p.match = t, where
		}
		return sockTLS
	}
	if c.GetTransportSocketMatcher() != nil {
		p.def, p.why, p.field = sockOther, "transport_socket_matcher is not supported", "transport_socket_matcher"
		return p
	}
	for _, m := range c.GetTransportSocketMatches() {
		p.matches = append(p.matches, tlsMatch{criteria: m.GetMatch(), kind: kind(m.GetTransportSocket(), "transport_socket_matches["+m.GetName()+"]")})
	}
	p.def = kind(c.GetTransportSocket(), "transport_socket")
	if ctx != nil {
		conf, notes, why := tlsConfOf(name, ctx, upstreamHTTPOptions(c), opts)
		if why != "" {
			p.note(p.match, why)
		} else {
			p.conf, p.notes = conf, notes
			p.conf.NoALPNOverride = c.GetMetadata().GetFilterMetadata()["istio"].GetFields()[resource.ALPNOverrideKey].GetStringValue() == "false"
		}
	}
	return p
}

// note records why a socket cannot be served (the first reason counts).
func (p *tlsPlan) note(field, why string) {
	if p.why == "" {
		p.why, p.field = why, field
	}
}

// kindOf returns the socket Envoy gives endpoint i of locality l of la.
func (p *tlsPlan) kindOf(la *resource.LoadAssignment, l *resource.Locality, i int, forms map[uint8]*structpb.Struct) sockKind {
	if len(p.matches) == 0 {
		return p.def
	}
	em, lm := l.SocketMatch(i)
	if em == resource.SocketMatchUnknown || lm == resource.SocketMatchUnknown {
		return sockOther
	}
	for _, md := range []uint8{em, lm} {
		st, ok := socketMatch(la, md, forms)
		if !ok {
			return sockOther
		}
		for _, m := range p.matches {
			if labelMatch(m.criteria, st) {
				return m.kind
			}
		}
	}
	return p.def
}

// socketMatch decodes (once per build) the metadata of index i.
func socketMatch(la *resource.LoadAssignment, i uint8, forms map[uint8]*structpb.Struct) (*structpb.Struct, bool) {
	if i == resource.SocketMatchNone {
		return nil, true
	}
	if st, ok := forms[i]; ok {
		return st, st != nil
	}
	st, err := resource.SocketMatchStruct(la.SocketMatchForm(i))
	if err != nil {
		st = nil
	}
	forms[i] = st
	return st, st != nil
}

// labelMatch is Envoy's Metadata::metadataLabelMatch: every field of criteria is in md
// with an equal value (empty criteria match anything, nothing else matches no
// metadata).
func labelMatch(criteria, md *structpb.Struct) bool {
	for k, v := range criteria.GetFields() {
		got, ok := md.GetFields()[k]
		if !ok || !proto.Equal(got, v) {
			return false
		}
	}
	return true
}

// upstreamHTTPOptions is the cluster's upstream_http_protocol_options (auto SNI).
func upstreamHTTPOptions(c *clusterv3.Cluster) *corev3.UpstreamHttpProtocolOptions {
	a, ok := c.GetTypedExtensionProtocolOptions()[httpOptionsKey]
	if !ok {
		return nil
	}
	o := &httpv3.HttpProtocolOptions{}
	if err := a.UnmarshalTo(o); err != nil {
		return nil
	}
	return o.GetUpstreamHttpProtocolOptions()
}

// SDS secrets istio-agent serves to Envoy (pkg/security): the workload's certificate,
// the mesh's roots, and files named by DestinationRules.
const (
	sdsWorkload   = "default"
	sdsRoots      = "ROOTCA"
	sdsFileCert   = "file-cert:"
	sdsFileRoot   = "file-root:"
	sdsSystemRoot = "file-root:system"
)

// tlsConfOf translates a TLS context of cluster name, or says why it cannot be
// (why): what it needs that nginx or the identity cannot give would be weaker than
// Envoy's TLS, so the endpoints that use it are left out.
func tlsConfOf(name string, t *tlsv3.UpstreamTlsContext, hopts *corev3.UpstreamHttpProtocolOptions, opts Options) (conf *TLSConf, notes []string, why string) {
	id := opts.Identity
	conf = &TLSConf{SNI: resource.TLSContextSNI(name, t.GetSni())}
	common := t.GetCommonTlsContext()
	switch {
	case t.GetAutoHostSni():
		return nil, nil, "auto_host_sni (the endpoint's host name as SNI) is not supported"
	case t.GetAutoSniSanValidation():
		return nil, nil, "auto_sni_san_validation is not supported"
	case hopts.GetOverrideAutoSniHeader() != "":
		return nil, nil, "override_auto_sni_header is not supported"
	//lint:ignore SA1019 deprecated fields are still valid xDS: a context that sets them is not served
	case common.GetTlsCertificateProviderInstance() != nil, common.GetTlsCertificateCertificateProvider() != nil,
		//lint:ignore SA1019 deprecated fields are still valid xDS: a context that sets them is not served
		common.GetTlsCertificateCertificateProviderInstance() != nil, common.GetCustomTlsCertificateSelector() != nil:
		return nil, nil, "certificate providers are not supported"
	case common.GetCustomHandshaker() != nil:
		return nil, nil, "custom handshakers are not supported"
	case len(common.GetTlsCertificates())+len(common.GetTlsCertificateSdsSecretConfigs()) > 1:
		return nil, nil, "more than one client certificate is not supported"
	}
	if hopts.GetAutoSni() {
		conf.ContextSNI, conf.SNI, conf.AutoSNI = conf.SNI, "", true
	}
	if hopts.GetAutoSanValidation() {
		conf.AutoSAN = true
	}
	conf.ALPN = common.GetAlpnProtocols()

	// The client certificate.
	for _, s := range common.GetTlsCertificateSdsSecretConfigs() {
		switch n := s.GetName(); {
		case n == sdsWorkload:
			if id.CertID == "" {
				return nil, nil, "the workload certificate (SDS secret \"default\") is not configured (no /ssls object for it)"
			}
			conf.Cert = &TLSCert{SSLID: id.CertID}
		case strings.HasPrefix(n, sdsFileCert):
			cert, key, ok := strings.Cut(strings.TrimPrefix(n, sdsFileCert), "~")
			if !ok || cert == "" || key == "" || strings.Contains(key, "~") {
				return nil, nil, fmt.Sprintf("SDS secret %q is not a certificate and key file", n)
			}
			conf.Cert = &TLSCert{CertFile: cert, KeyFile: key}
		case s.GetSdsConfig().GetAds() != nil:
			sec, why := adsSecret(n, opts)
			switch {
			case why != "":
				return nil, nil, why
			case sec.Validation != nil:
				return nil, nil, fmt.Sprintf("SDS secret %q is a validation context where a certificate belongs", n)
			case !SSLFits(sec):
				return nil, nil, fmt.Sprintf("SDS secret %q does not fit APISIX's ssl schema (a certificate of 128 to 65536 characters, a key of 64 to 65536)", n)
			}
			conf.Cert = &TLSCert{SSLID: SecretSSLID(n)}
		default:
			return nil, nil, fmt.Sprintf("SDS secret %q is not available to amesh: neither istio-agent's (workload certificate, roots, files) nor served over ADS", n)
		}
	}
	for _, c := range common.GetTlsCertificates() {
		cert, key := c.GetCertificateChain().GetFilename(), c.GetPrivateKey().GetFilename()
		if cert == "" || key == "" || c.GetPkcs12() != nil || c.GetPrivateKeyProvider() != nil || c.GetPassword() != nil {
			// Inline keys are not copied into APISIX's configuration, where every
			// debug view would show them.
			return nil, nil, "only client certificates and keys in files are supported"
		}
		conf.Cert = &TLSCert{CertFile: cert, KeyFile: key}
	}

	// Validation.
	var vc *tlsv3.CertificateValidationContext
	var rootSecret string
	var rootSDS *tlsv3.SdsSecretConfig
	switch v := common.GetValidationContextType().(type) {
	case nil:
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = v.ValidationContext
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		rootSDS = v.ValidationContextSdsSecretConfig
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
		rootSDS = v.CombinedValidationContext.GetValidationContextSdsSecretConfig()
	default:
		return nil, nil, fmt.Sprintf("validation context %T is not supported", v)
	}
	rootSecret = rootSDS.GetName()
	switch {
	case rootSecret == "":
	case rootSDS.GetSdsConfig().GetAds() != nil:
		sec, why := adsSecret(rootSecret, opts)
		if why != "" {
			return nil, nil, why
		}
		if sec.Validation == nil {
			return nil, nil, fmt.Sprintf("SDS secret %q is a certificate where a validation context belongs", rootSecret)
		}
		// Envoy's CombinedValidationContext: the default context, then the secret's
		// merged into it (protobuf MergeFrom: the secret's fields set win, its
		// repeated ones are appended).
		merged := proto.Clone(sec.Validation).(*tlsv3.CertificateValidationContext)
		if vc != nil {
			merged = proto.Clone(vc).(*tlsv3.CertificateValidationContext)
			proto.Merge(merged, sec.Validation)
		}
		vc = merged
	case rootSecret == sdsRoots:
		if id.RootFile == "" {
			return nil, nil, "the mesh's roots (SDS secret \"ROOTCA\") are not configured (no root certificate file)"
		}
		conf.CA = &TLSCA{File: id.RootFile}
	case rootSecret == sdsSystemRoot:
		conf.CA = &TLSCA{System: true}
	case strings.HasPrefix(rootSecret, sdsFileRoot) && !strings.Contains(rootSecret, "~"):
		conf.CA = &TLSCA{File: strings.TrimPrefix(rootSecret, sdsFileRoot)}
	default:
		return nil, nil, fmt.Sprintf("SDS secret %q is not available to amesh: neither istio-agent's (workload certificate, roots, files) nor served over ADS", rootSecret)
	}
	if why := validation(conf, vc); why != "" {
		return nil, nil, why
	}

	// Parameters.
	params := common.GetTlsParams()
	var ok bool
	if conf.MinVersion, ok = tlsVersion(params.GetTlsMinimumProtocolVersion(), "TLSv1_2"); !ok {
		return nil, nil, "TLS version " + params.GetTlsMinimumProtocolVersion().String() + " is not supported"
	}
	if conf.MaxVersion, ok = tlsVersion(params.GetTlsMaximumProtocolVersion(), "TLSv1_2"); !ok {
		return nil, nil, "TLS version " + params.GetTlsMaximumProtocolVersion().String() + " is not supported"
	}
	for _, cs := range params.GetCipherSuites() {
		// BoringSSL's equal-preference groups ("[A|B]") have no OpenSSL form: their
		// members keep their order.
		for _, s := range strings.Split(strings.Trim(cs, "[]"), "|") {
			if s != "" {
				conf.Ciphers = append(conf.Ciphers, s)
			}
		}
		if strings.HasPrefix(cs, "[") {
			notes = append(notes, "cipher suites of an equal-preference group are offered in their order")
		}
	}
	conf.Curves = params.GetEcdhCurves()
	if len(params.GetSignatureAlgorithms()) > 0 {
		notes = append(notes, "signature_algorithms are not applied (OpenSSL's defaults)")
	}
	if len(params.GetCompliancePolicies()) > 0 {
		return nil, nil, "TLS compliance policies are not supported"
	}
	if t.GetAllowRenegotiation() {
		notes = append(notes, "renegotiation is refused (nginx), where Envoy allows it")
	}
	//lint:ignore SA1019 deprecated fields are still valid xDS: the translation must keep their meaning
	if t.GetEnforceRsaKeyUsage().GetValue() {
		notes = append(notes, "enforce_rsa_key_usage is not applied")
	}
	return conf, slices.Compact(notes), ""
}

// tlsVersion is the version name the plugin takes; TLS_AUTO is Envoy's client default.
func tlsVersion(v tlsv3.TlsParameters_TlsProtocol, auto string) (string, bool) {
	switch v {
	case tlsv3.TlsParameters_TLS_AUTO:
		return auto, true
	case tlsv3.TlsParameters_TLSv1_0:
		return "TLSv1_0", true
	case tlsv3.TlsParameters_TLSv1_1:
		return "TLSv1_1", true
	case tlsv3.TlsParameters_TLSv1_2:
		return "TLSv1_2", true
	case tlsv3.TlsParameters_TLSv1_3:
		return "TLSv1_3", true
	}
	return "", false
}

// validation translates a CertificateValidationContext into conf.
func validation(conf *TLSConf, vc *tlsv3.CertificateValidationContext) string {
	if vc == nil {
		return ""
	}
	switch {
	case len(vc.GetVerifyCertificateSpki()) > 0, len(vc.GetVerifyCertificateHash()) > 0:
		return "certificate pinning (verify_certificate_spki, verify_certificate_hash) is not supported"
	case vc.GetCustomValidatorConfig() != nil:
		return "custom certificate validators (such as SPIFFE trust bundles) are not supported"
	case vc.GetAllowExpiredCertificate():
		return "allow_expired_certificate is not supported"
	case vc.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN:
		return "trust_chain_verification ACCEPT_UNTRUSTED is not supported"
	case vc.GetRequireSignedCertificateTimestamp().GetValue():
		return "require_signed_certificate_timestamp is not supported"
	case vc.GetCaCertificateProviderInstance() != nil, vc.GetWatchedDirectory() != nil:
		return "certificate providers and watched directories are not supported"
	case vc.GetMaxVerifyDepth() != nil:
		return "max_verify_depth is not supported"
	}
	if ca := vc.GetTrustedCa(); ca != nil {
		if conf.CA != nil {
			return "trusted_ca and an SDS validation context together are not supported"
		}
		switch pem, inline := resource.InlinePEM(ca); {
		case ca.GetFilename() != "":
			conf.CA = &TLSCA{File: ca.GetFilename()}
		case inline && pem != "":
			conf.CA = &TLSCA{PEM: pem}
		default:
			return "only trusted CAs in files or inline are supported"
		}
	}
	if vc.GetSystemRootCerts() != nil {
		if conf.CA != nil {
			return "system_root_certs with other trusted CAs is not supported"
		}
		conf.CA = &TLSCA{System: true}
	}
	if crl := vc.GetCrl(); crl != nil {
		if crl.GetFilename() == "" {
			return "only CRLs in files are supported"
		}
		if conf.CA == nil {
			return "a CRL without trusted CAs is not supported"
		}
		conf.CRLFile, conf.CRLLeafOnly = crl.GetFilename(), vc.GetOnlyVerifyLeafCertCrl()
	}
	//lint:ignore SA1019 deprecated, but istiod still sets it: the translation must keep its meaning
	for _, m := range vc.GetMatchSubjectAltNames() {
		s, why := SANMatcherOf("", m)
		if why != "" {
			return why
		}
		conf.SANs = append(conf.SANs, s)
	}
	for _, m := range vc.GetMatchTypedSubjectAltNames() {
		var typ string
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			typ = "dns"
		case tlsv3.SubjectAltNameMatcher_URI:
			typ = "uri"
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			typ = "email"
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			typ = "ip"
		default:
			return "subject alt name matchers of type " + m.GetSanType().String() + " are not supported"
		}
		s, why := SANMatcherOf(typ, m.GetMatcher())
		if why != "" {
			return why
		}
		conf.SANs = append(conf.SANs, s)
	}
	return ""
}

// SANMatcherOf returns m as a SANMatcher of type typ, or why it cannot be one.
func SANMatcherOf(typ string, m *matcherv3.StringMatcher) (SANMatcher, string) {
	s := SANMatcher{Type: typ, IgnoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		s.Match, s.Value = "exact", p.Exact
	case *matcherv3.StringMatcher_Prefix:
		s.Match, s.Value = "prefix", p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		s.Match, s.Value = "suffix", p.Suffix
	case *matcherv3.StringMatcher_Contains:
		s.Match, s.Value = "contains", p.Contains
	default:
		return s, fmt.Sprintf("subject alt name matcher %s is not supported", protojson.Format(m))
	}
	if len(s.Value) > 0xffff {
		return s, "a subject alt name matcher of more than 65535 bytes is not supported"
	}
	return s, ""
}

// ClusterTLS returns the plugin configuration of cluster name's TLS context (route-level
// ALPN not applied), with a digest that changes when it does; nil and 0 when no endpoint
// of the cluster can use TLS, or its TLS context cannot be served (its endpoints are
// then left out of its upstreams, see Build).
func ClusterTLS(name string, c *clusterv3.Cluster, opts Options) (*TLSConf, uint64) {
	p := planTLS(name, c, opts)
	if p.conf == nil || !p.hasTLS() {
		return nil, 0
	}
	b, err := json.Marshal(p.conf)
	if err != nil {
		panic("upstream: encode TLS of " + name + ": " + err.Error()) // only JSON values
	}
	h := fnv.New64a()
	h.Write(b)
	// And the fields the plugin is not sent, which routes apply.
	alpn := byte(0)
	if p.conf.NoALPNOverride {
		alpn = 1
	}
	h.Write([]byte{0, alpn})
	h.Write([]byte(p.conf.ContextSNI))
	return p.conf, h.Sum64() | 1
}

// markTLS sets the scheme of u and the metadata of the nodes whose kind differs from
// it: kinds[i] is that of u.Nodes[i] (sockPlain or sockTLS).
func markTLS(u *apisix.Upstream, kinds []sockKind) {
	tls := 0
	for _, k := range kinds {
		if k == sockTLS {
			tls++
		}
	}
	if tls == 0 {
		return
	}
	u.Scheme = "https"
	minority := sockPlain
	if tls*2 < len(kinds) {
		u.Scheme, minority = "", sockTLS
	}
	for i, k := range kinds {
		if k == minority {
			setNodeMeta(&u.Nodes[i], NodeTLSKey, k == sockTLS)
		}
	}
}

func setNodeMeta(n *apisix.Node, k string, v any) {
	m := make(map[string]any, len(n.Metadata)+1)
	for mk, mv := range n.Metadata {
		m[mk] = mv
	}
	m[k] = v
	n.Metadata = m
}

// reportTLS reports the endpoints left out for their transport socket (out) and, when
// some endpoint uses the cluster's TLS context, what amesh serves of it differently.
func (b *builder) reportTLS(out int, used bool) {
	p := b.tls
	if out > 0 {
		b.add("cluster", p.field, report.Unsupported, fmt.Sprintf(
			"%s; the %d endpoint(s) Envoy reaches with this transport socket are left out (fail closed)", p.why, out))
	}
	if used && len(p.notes) > 0 {
		b.add("cluster", p.match, report.Approximated, "TLS by "+TLSPlugin+": "+strings.Join(p.notes, "; "))
	}
}

// adsSecret returns the SDS secret name served over ADS, or why it cannot be used:
// it has not arrived (Envoy's cluster waits for it; amesh's endpoints stay out until
// then) or amesh cannot use its content.
func adsSecret(name string, opts Options) (*resource.Secret, string) {
	sec := opts.Secrets[name]
	switch {
	case sec == nil:
		return nil, fmt.Sprintf("SDS secret %q (from istiod over ADS, such as a credentialName's) has not been received", name)
	case sec.Unsupported != "":
		return nil, fmt.Sprintf("SDS secret %q: %s", name, sec.Unsupported)
	}
	return sec, ""
}
