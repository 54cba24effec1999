package resource

import (
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// LoadAssignment is the form in which amesh keeps a ClusterLoadAssignment: exactly what
// translation reads, in flat slices.
//
// Why not the Envoy message: endpoints are most of a mesh's xDS (several per cluster,
// often several clusters per service). As go-control-plane structs each endpoint is
// five nested messages, hundreds of bytes of heap even after pruning, and tens of
// allocations to decode. Here an endpoint is one small value in its locality's slice,
// and the addresses of all endpoints are one string per assignment (each locality
// holds its part). BENCHMARKS.md has the figures.
//
// A LoadAssignment is immutable once published, like every resource of an Update.
type LoadAssignment struct {
	ClusterName string
	Localities  []Locality
	// DropOverloads is the number of policy.drop_overloads entries (not supported by
	// translation, which reports them).
	DropOverloads int
	// socketMatches are the distinct transport socket match metadata of the
	// assignment's endpoints and localities, in canonical form (socketmatch.go):
	// index i >= 1 of a Locality's socketMatch and epMatch is socketMatches[i-1].
	socketMatches []string
}

var endpointsKind = &kindFuncs[*endpointv3.ClusterLoadAssignment, *LoadAssignment]{
	kindNoun: "cluster load assignment",
	decodeFn: decodeEndpoints,
	keepFn:   FromCLA,
	nameFn:   func(a *LoadAssignment) string { return a.ClusterName },
	equalFn:  (*LoadAssignment).Equal,
}

// decodeEndpoints decodes and validates a ClusterLoadAssignment into its compact
// form, straight from the wire where it can (eds_decode.go).
func decodeEndpoints(d *Decoded, b []byte, _ *LoadAssignment, _ DecodeOptions) (*LoadAssignment, error) {
	la, err := decodeLoadAssignment(b)
	if la != nil {
		d.Name = la.ClusterName // also for the error, when only validation failed
	}
	return la, err
}

// Locality is one LocalityLbEndpoints: a group of endpoints sharing a priority and
// a locality weight. The locality's name (region/zone/sub_zone) is not kept: nothing
// in amesh routes by it.
type Locality struct {
	// Priority is the Envoy priority (0 is tried first).
	Priority uint32
	// Weight is load_balancing_weight; 0 when unset.
	Weight uint32
	// LEDS is set when the locality's endpoints come from LEDS instead of being listed.
	LEDS bool
	// socketMatch indexes the locality's transport socket match metadata, epMatch0 that
	// of every endpoint when epMatch is nil, epMatch that of each endpoint (see
	// LoadAssignment.SocketMatch). Nearly every assignment has one form for all its
	// endpoints (Istio's {tlsMode: istio}, or none), so a byte per endpoint is kept
	// only where they differ.
	socketMatch, epMatch0 uint8
	epMatch               []uint8
	// Endpoints are the listed endpoints, in order; Address(i) is the address of
	// Endpoints[i].
	Endpoints []Endpoint
	// addrs is the endpoints' addresses one after the other (see Endpoint.end): part of
	// the assignment's one address string.
	addrs string
}

// SocketMatch returns the transport socket match metadata of endpoint i of locality
// l (one of a's) and of l itself, each as the index of its canonical form:
// SocketMatchNone for none, SocketMatchUnknown when it was not kept (see
// SocketMatchForm).
func (l *Locality) SocketMatch(i int) (endpoint, locality uint8) {
	if l.epMatch != nil {
		return l.epMatch[i], l.socketMatch
	}
	return l.epMatch0, l.socketMatch
}

// SocketMatchForm returns the canonical form (SocketMatchStruct decodes it) of a
// socket match index other than SocketMatchNone and SocketMatchUnknown.
func (a *LoadAssignment) SocketMatchForm(i uint8) string {
	if i == SocketMatchNone || i == SocketMatchUnknown || int(i) > len(a.socketMatches) {
		return ""
	}
	return a.socketMatches[i-1]
}

// setEndpointMatches records the socket match index of each endpoint of l.
func (l *Locality) setEndpointMatches(idx []uint8) {
	l.epMatch0, l.epMatch = 0, nil
	for i, m := range idx {
		if m != idx[0] {
			l.epMatch = idx
			return
		}
		if i == len(idx)-1 {
			l.epMatch0 = m
		}
	}
}

// Address is the socket address of Endpoints[i] (an IP, or a host name in DNS
// clusters); empty for OtherAddress and NamedEndpoint.
func (l *Locality) Address(i int) string {
	start := uint32(0)
	if i > 0 {
		start = l.Endpoints[i-1].end
	}
	return l.addrs[start:l.Endpoints[i].end]
}

// Endpoint is one LbEndpoint. Its address is kept by its Locality (Locality.Address).
//
// The fields are as narrow as what they hold, because endpoints are most of what amesh
// keeps: no string header per endpoint, and a health that fits a byte.
type Endpoint struct {
	// end is the end of the endpoint's address in its locality's addrs; the address
	// starts at the previous endpoint's end (0 for the first).
	end uint32
	// Weight is load_balancing_weight; 0 when unset.
	Weight uint32
	// Port is the port number; 0 for a named port, and for a port above 65535 (which
	// validation rejects, so only an unvalidated message has one; translation rejects
	// 0 the same way).
	Port   uint16
	Kind   EndpointKind
	health uint8 // see Health
}

// HealthOther is what Health returns for a health status outside 0..254, which the
// enum does not define (it has 0..5): the kept form has a byte for it. Translation
// treats every undefined status alike (not routable), so nothing it does depends on
// which undefined value was sent.
const HealthOther corev3.HealthStatus = 255

// Health is the endpoint's health_status (HealthOther for an undefined value above
// 254 or below 0).
func (e Endpoint) Health() corev3.HealthStatus { return corev3.HealthStatus(e.health) }

// keptHealth narrows a health status to its kept byte.
func keptHealth(h corev3.HealthStatus) uint8 {
	if h < 0 || h >= HealthOther {
		return uint8(HealthOther)
	}
	return uint8(h)
}

// keptPort narrows a port number to its kept form (see Endpoint.Port).
func keptPort(p uint32) uint16 {
	if p > 65535 {
		return 0
	}
	return uint16(p)
}

// EndpointKind says what an endpoint's address is. Translation uses only SocketTCP
// endpoints with a port number and reports the others by kind.
type EndpointKind uint8

const (
	// SocketTCP is a TCP socket address with a port number: the usable kind.
	SocketTCP EndpointKind = iota
	// SocketUDP is a socket address with protocol UDP.
	SocketUDP
	// NamedPort is a socket address whose port is a named port.
	NamedPort
	// OtherAddress is a pipe, an Envoy internal address or no address at all.
	OtherAddress
	// NamedEndpoint is an endpoint_name reference instead of an endpoint.
	NamedEndpoint
)

// FromCLA converts a decoded (and normally validated) ClusterLoadAssignment. The
// result shares nothing with the message: its addresses are copied into one string.
func FromCLA(cla *endpointv3.ClusterLoadAssignment) *LoadAssignment {
	la := &LoadAssignment{
		ClusterName:   cla.GetClusterName(),
		DropOverloads: len(cla.GetPolicy().GetDropOverloads()),
	}
	if n := len(cla.GetEndpoints()); n > 0 {
		la.Localities = make([]Locality, n)
	}
	total, size := 0, 0
	for _, g := range cla.GetEndpoints() {
		total += len(g.GetLbEndpoints())
		for _, e := range g.GetLbEndpoints() {
			_, addr := endpointOf(e)
			size += len(addr)
		}
	}
	// One backing array for all endpoints and one string for all addresses, as the
	// wire decoder lays them out.
	all := make([]Endpoint, total)
	var (
		sb      strings.Builder
		matches socketMatches
	)
	sb.Grow(size)
	for i, g := range cla.GetEndpoints() {
		l := &la.Localities[i]
		l.Priority = g.GetPriority()
		l.Weight = g.GetLoadBalancingWeight().GetValue()
		l.LEDS = g.GetLedsClusterLocalityConfig() != nil
		l.socketMatch = matches.index(socketMatchOf(g.GetMetadata()))
		n := len(g.GetLbEndpoints())
		l.Endpoints, all = all[:n:n], all[n:]
		idx := make([]uint8, n)
		start := sb.Len()
		for j, e := range g.GetLbEndpoints() {
			ep, addr := endpointOf(e)
			sb.WriteString(addr)
			ep.end = uint32(sb.Len() - start)
			l.Endpoints[j] = ep
			idx[j] = matches.index(socketMatchOf(e.GetMetadata()))
		}
		l.setEndpointMatches(idx)
	}
	matches.finish(la)
	addrs := sb.String()
	for i := range la.Localities {
		l := &la.Localities[i]
		if n := len(l.Endpoints); n > 0 {
			l.addrs, addrs = addrs[:l.Endpoints[n-1].end], addrs[l.Endpoints[n-1].end:]
		}
	}
	return la
}

// endpointOf returns e's kept form and address.
func endpointOf(e *endpointv3.LbEndpoint) (Endpoint, string) {
	out := Endpoint{
		Weight: e.GetLoadBalancingWeight().GetValue(),
		health: keptHealth(e.GetHealthStatus()),
	}
	ep := e.GetEndpoint()
	if ep == nil {
		out.Kind = NamedEndpoint
		return out, ""
	}
	sa := ep.GetAddress().GetSocketAddress()
	if sa == nil {
		out.Kind = OtherAddress
		return out, ""
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		out.Kind = SocketUDP
	} else if _, named := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); named {
		out.Kind = NamedPort
	}
	out.Port = keptPort(sa.GetPortValue())
	return out, sa.GetAddress()
}

// Equal reports whether a and b hold the same assignment.
func (a *LoadAssignment) Equal(b *LoadAssignment) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.ClusterName != b.ClusterName || a.DropOverloads != b.DropOverloads ||
		len(a.Localities) != len(b.Localities) || !slices.Equal(a.socketMatches, b.socketMatches) {
		return false
	}
	for i := range a.Localities {
		la, lb := &a.Localities[i], &b.Localities[i]
		// Equal ends and equal address strings: equal addresses.
		if la.Priority != lb.Priority || la.Weight != lb.Weight || la.LEDS != lb.LEDS ||
			la.addrs != lb.addrs || len(la.Endpoints) != len(lb.Endpoints) ||
			la.socketMatch != lb.socketMatch || la.epMatch0 != lb.epMatch0 || !slices.Equal(la.epMatch, lb.epMatch) {
			return false
		}
		for j := range la.Endpoints {
			if la.Endpoints[j] != lb.Endpoints[j] {
				return false
			}
		}
	}
	return true
}

// NumEndpoints is the number of endpoints across all localities (0 for nil).
func (a *LoadAssignment) NumEndpoints() int {
	if a == nil {
		return 0
	}
	n := 0
	for i := range a.Localities {
		n += len(a.Localities[i].Endpoints)
	}
	return n
}
