package translate

// Authorization of the connections a stream route takes, before they are sent on, by
// two stream plugins (lua/apisix/stream/plugins):
//
//   - amesh-mtls-peer, on the route that takes the plaintext of Istio mTLS the stream
//     server's TLS socket terminated (protoMTLS): the client certificate must have a URI
//     SAN that the filter chain's match_subject_alt_names accept (istiod: the prefix
//     spiffe://<trust domain>/), as the HTTP routes of TLS chains require with a route
//     var (inboundtls.go sanVars). The mesh's roots verified the certificate, but they
//     sign other trust domains too. Envoy accepts a certificate any of whose SANs (of
//     any type) meets a matcher; only URI SANs (SPIFFE identities) are looked at here,
//     which refuses more, never less. A connection that fails is closed (Envoy fails
//     its handshake).
//   - amesh-network-rbac: Envoy's network RBAC filters (envoy.filters.network.rbac,
//     Istio's AuthorizationPolicy on TCP ports) in front of tcp_proxy, with actions
//     ALLOW and DENY, in filter order, per connection (lua/amesh/rbac.lua,
//     decide_connection). The rules are compiled as the HTTP filter's (rbacrules.go)
//     for what a network filter sees: no request (no header is present, no path
//     matches, no dynamic metadata but what no filter wrote), the connection's peer
//     address for remote_ip, direct_remote_ip and source_ip, its original destination
//     for destination_ip and destination_port, the TLS peer for the authenticated
//     principal. A denied connection is closed, as Envoy closes it.

import (
	"encoding/json"
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
)

const (
	// streamPeerPlugin closes a connection whose terminated Istio mTLS peer has no URI
	// SAN that the chain accepts.
	streamPeerPlugin = "amesh-mtls-peer"
	// networkRBACPlugin enforces network RBAC rules per connection.
	networkRBACPlugin = "amesh-network-rbac"
	// ipDest is the rbacCIDR source of destination_ip: the connection's original
	// destination address.
	ipDest = "dest"
)

// streamPeerConf is amesh-mtls-peer's config: a PCRE that $amesh_peer_uri_sans of a
// verified peer must match.
type streamPeerConf struct {
	URISANs string `json:"uri_sans"`
}

// networkRBACConf is amesh-network-rbac's config: the filters in order, each the JSON
// of an rbacEnforced.
type networkRBACConf struct {
	Filters []json.RawMessage `json:"filters"`
}

// networkRBACApprox is what amesh-network-rbac decides otherwise than Envoy.
const networkRBACApprox = "Envoy decides when the client first sends, amesh before it connects upstream (a denied client of a server-first protocol gets nothing); a regex PCRE cannot run on the value is decided as what would deny"

// networkRBACVerdict is what a network RBAC filter in front of tcp_proxy decides when
// its rules depend on the connection: enforced per connection by amesh-network-rbac
// (ok false: its rules are not ALLOW or DENY rules amesh compiles).
func networkRBACVerdict(name string, c *rbacnetv3.RBAC, why string) (verdict, bool) {
	act := c.GetRules().GetAction()
	if c.GetMatcher() != nil || (act != rbacv3.RBAC_ALLOW && act != rbacv3.RBAC_DENY) {
		return verdict{}, false
	}
	f, gaps := compileRBAC(name, c.GetRules(), rbacEnv{network: true})
	b, err := json.Marshal(f)
	if err != nil {
		return verdict{}, false
	}
	v := verdict{rbac: string(b), reason: "network RBAC filter " + name + ": " + why + "; enforced per connection by " + networkRBACPlugin}
	if len(gaps) > 0 {
		v.gaps = true
		v.reason += "; decided as Envoy's worst case (what would deny), as amesh cannot evaluate them: " + strings.Join(gaps, ", ")
	}
	if c.GetShadowRules() != nil || c.GetShadowMatcher() != nil {
		v.reason += "; its shadow rules, which only log in Envoy, are not evaluated"
	}
	return v, true
}

// requirePeer makes the claim of cell (the protoMTLS place of a chain that terminates
// Istio mTLS in front of tcp_proxy) check the client certificate against the chain's
// subject alt name matchers.
func (b *listenerBuild) requirePeer(cell streamCell, sans []*matcherv3.StringMatcher) {
	if len(sans) == 0 {
		return
	}
	for i := len(b.out.streams) - 1; i >= 0; i-- {
		if c := &b.out.streams[i]; c.cell == cell {
			c.peerSANs = sanRegex(sans)
			return
		}
	}
}

// authzPlugins adds the claim's authorization plugins to its route r.
func (c *streamClaim) authzPlugins(r *apisix.StreamRoute) {
	if c.peerSANs == "" && len(c.rbac) == 0 {
		return
	}
	if r.Plugins == nil {
		r.Plugins = map[string]any{}
	}
	if c.peerSANs != "" {
		r.Plugins[streamPeerPlugin] = streamPeerConf{URISANs: c.peerSANs}
	}
	if len(c.rbac) > 0 {
		r.Plugins[networkRBACPlugin] = networkRBACConf{Filters: c.rbac}
	}
}
