package translate

// Istio mTLS that APISIX terminates. The filter chains of virtualInbound that take Istio
// mTLS terminate it with a DownstreamTlsContext: the workload certificate (SDS secret
// "default"), client certificates required and verified against the mesh's roots (SDS
// "ROOTCA"), their SPIFFE identity within the trust domain (subject alt name matchers).
// APISIX's HTTP server terminates such a connection on its TLS socket with the /ssls
// object istio-mtls-server (update_identity.go), which holds exactly those: the workload
// certificate and key, the roots as client.ca. A context that asks for anything else
// (another certificate, other roots, no client certificate, pinning) is not that
// object's: its connections are closed.
//
// The TLS socket cannot know a connection's filter chain in its handshake (the chain is
// chosen by the original destination before the connection reaches it, and every chain
// has the same ssl object), so the client certificate check is split. The handshake
// checks what all chains have in common: the mesh's roots, and the union of the chains'
// subject alt name matchers (a certificate that meets none of them meets no chain's),
// which the translation writes as the plugin metadata of amesh-mtls-peer
// (syncPeerHandshake; lua/amesh/peer_handshake.lua applies it). Each chain's own
// matchers are checked after the handshake, by its routes (sanVars) or stream plugin
// (amesh-mtls-peer). istiod gives every chain the trust domain's prefix, so the handshake
// refuses what Envoy's does.

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// SDS secrets istio-agent serves Envoy: the workload certificate and the mesh's roots.
const (
	sdsWorkloadCert = "default"
	sdsMeshRoots    = "ROOTCA"
)

// istioServerTLS reads a filter chain's transport socket: the subject alt name matchers
// a client certificate must meet, or why istio-mtls-server is not what it asks for.
func istioServerTLS(ts *corev3.TransportSocket) (sans []*matcherv3.StringMatcher, why string) {
	t := &tlsv3.DownstreamTlsContext{}
	if err := resource.UnpackFilterConfig(ts.GetTypedConfig(), t); err != nil {
		return nil, "transport socket " + ts.GetName() + " is not a TLS context amesh decodes: " + err.Error()
	}
	c := t.GetCommonTlsContext()
	switch {
	case !t.GetRequireClientCertificate().GetValue():
		return nil, "TLS without a required client certificate (not Istio mTLS) is not terminated"
	case len(c.GetTlsCertificates()) > 0 || len(c.GetTlsCertificateSdsSecretConfigs()) != 1 ||
		c.GetTlsCertificateSdsSecretConfigs()[0].GetName() != sdsWorkloadCert:
		return nil, "TLS with a certificate other than the workload's (SDS secret \"default\") is not terminated"
	//lint:ignore SA1019 deprecated fields are still valid xDS: a context that sets them is not served
	case c.GetTlsCertificateProviderInstance() != nil, c.GetTlsCertificateCertificateProvider() != nil,
		//lint:ignore SA1019 deprecated fields are still valid xDS: a context that sets them is not served
		c.GetTlsCertificateCertificateProviderInstance() != nil, c.GetCustomTlsCertificateSelector() != nil,
		c.GetCustomHandshaker() != nil:
		return nil, "TLS with certificate providers or a custom handshaker is not terminated"
	case t.GetRequireSni().GetValue():
		return nil, "TLS that requires SNI is not terminated"
	}
	var vc *tlsv3.CertificateValidationContext
	switch v := c.GetValidationContextType().(type) {
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		if v.ValidationContextSdsSecretConfig.GetName() != sdsMeshRoots {
			return nil, "client certificates verified against roots other than the mesh's (SDS secret \"ROOTCA\") are not terminated"
		}
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		if v.CombinedValidationContext.GetValidationContextSdsSecretConfig().GetName() != sdsMeshRoots {
			return nil, "client certificates verified against roots other than the mesh's (SDS secret \"ROOTCA\") are not terminated"
		}
		vc = v.CombinedValidationContext.GetDefaultValidationContext()
	default:
		return nil, fmt.Sprintf("client certificate validation %T is not the mesh's roots", v)
	}
	// Everything in the validation context but subject alt name matchers would make
	// Envoy accept fewer (or more) certificates than the mesh's roots do.
	if vc != nil {
		//lint:ignore SA1019 deprecated, but istiod sets it: the translation must keep its meaning
		sans = vc.GetMatchSubjectAltNames()
		vc = proto.Clone(vc).(*tlsv3.CertificateValidationContext)
		//lint:ignore SA1019 deprecated, but istiod sets it: the translation must keep its meaning
		vc.MatchSubjectAltNames = nil
	}
	if len(vc.GetMatchTypedSubjectAltNames()) > 0 {
		return nil, "typed subject alt name matchers on client certificates are not terminated"
	}
	if proto.Size(vc) > 0 {
		return nil, "client certificate validation beyond the mesh's roots and subject alt names is not terminated"
	}
	for _, m := range sans {
		switch m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact, *matcherv3.StringMatcher_Prefix, *matcherv3.StringMatcher_Suffix, *matcherv3.StringMatcher_Contains:
		default:
			return nil, "client certificate subject alt name matcher " + m.String() + " is not terminated"
		}
	}
	return sans, ""
}

// peerURISANsVar is the nginx variable with the verified peer certificate's URI SANs,
// comma-joined, each with "%", "," and bytes outside "!".."~" percent-encoded
// (nginx/original_dst's TLS peer).
const peerURISANsVar = "amesh_peer_uri_sans"

// sanVars returns the route conditions that a client certificate's URI SANs meet the
// subject alt name matchers of its chain's validation context (none: no condition).
// Envoy accepts a certificate when any of its SANs, of any type, meets any matcher;
// only URI SANs are looked at here (Istio's SPIFFE identities), so a certificate that
// meets a matcher with another type of SAN only is refused: stricter, never weaker.
// A request that fails it matches no route of the chain (404).
func sanVars(sans []*matcherv3.StringMatcher) []apisix.Expr {
	if len(sans) == 0 {
		return nil
	}
	return []apisix.Expr{{peerURISANsVar, "~~", sanRegex(sans)}}
}

// sanRegex is the PCRE that $amesh_peer_uri_sans matches when one of the certificate's
// URI SANs meets one of the matchers (at least one).
func sanRegex(sans []*matcherv3.StringMatcher) string {
	alts := make([]string, 0, len(sans))
	for _, m := range sans {
		// What comes before and after the value within the comma-joined list.
		var v, before, after string
		switch p := m.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			v, before, after = p.Exact, "(?:^|,)", "(?:,|$)"
		case *matcherv3.StringMatcher_Prefix:
			v, before = p.Prefix, "(?:^|,)"
		case *matcherv3.StringMatcher_Suffix:
			v, after = p.Suffix, "(?:,|$)"
		case *matcherv3.StringMatcher_Contains:
			v, before = p.Contains, "(?:^|,)[^,]*"
		}
		re := before + regexp.QuoteMeta(sanEncode(v)) + after
		if m.GetIgnoreCase() {
			re = "(?i:" + re + ")"
		}
		alts = append(alts, re)
	}
	return strings.Join(alts, "|")
}

// sanEncode encodes a SAN as the TLS peer's variables do.
func sanEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c > 0x20 && c < 0x7f && c != '%' && c != ',' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// peerMatchers are the client certificate matchers of a listener's chains that APISIX
// terminates with istio-mtls-server.
type peerMatchers struct {
	// any: a chain accepts any SAN (no matchers), or has a matcher the handshake cannot
	// apply, which its own check after the handshake does.
	any  bool
	sans []upstream.SANMatcher // URI SAN matchers (Type "")
}

// add records the matchers of one more chain APISIX terminates (or of one more of its
// places).
func (p *peerMatchers) add(sans []*matcherv3.StringMatcher) {
	if len(sans) == 0 {
		p.any = true
		return
	}
	for _, m := range sans {
		s, why := upstream.SANMatcherOf("", m)
		if why != "" {
			p.any = true
			return
		}
		p.sans = append(p.sans, s)
	}
}

// peerHandshakeMeta is the plugin metadata of amesh-mtls-peer: the URI SAN matchers a
// client certificate must meet one of in the handshake of APISIX's TLS sockets.
type peerHandshakeMeta struct {
	ID               string                `json:"id"`
	HandshakeURISANs []upstream.SANMatcher `json:"handshake_uri_sans"`
}

// peerHandshakeKey is where the handshake's matchers are: APISIX's own place for a
// plugin's settings that are not per route, which its config provider serves to the http
// and the stream subsystem alike (the ssl object's schema takes no more fields).
var peerHandshakeKey = apisix.Key(apisix.KindPluginMetadata, streamPeerPlugin)

// syncPeerHandshake writes the union of the matchers of the chains that APISIX
// terminates with istio-mtls-server, over all listeners, or deletes it when the
// handshake checks no SANs: no such chain, or one that accepts any SAN (the union of
// "any" and anything is any).
func (t *Translator) syncPeerHandshake() {
	var union []upstream.SANMatcher
	seen := map[upstream.SANMatcher]bool{}
	for _, name := range slices.Sorted(maps.Keys(t.listeners)) {
		m := t.listeners[name].out.mtls
		if m.any {
			t.out.Delete(peerHandshakeKey)
			return
		}
		for _, s := range m.sans {
			if !seen[s] {
				seen[s] = true
				union = append(union, s)
			}
		}
	}
	if len(union) == 0 {
		t.out.Delete(peerHandshakeKey)
		return
	}
	t.out.Set(&t.sc.enc, peerHandshakeKey, peerHandshakeMeta{ID: streamPeerPlugin, HandshakeURISANs: union})
}
