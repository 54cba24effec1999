package resource

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// LoadAssignment is the form in which amesh keeps a ClusterLoadAssignment: exactly what
// translation reads, in flat slices.
//
// Why not the Envoy message: endpoints are most of a mesh's xDS (10 per cluster, three
// clusters per service). As go-control-plane structs each endpoint is five nested
// messages and ~460 bytes of heap even after pruning, about 135 MiB at 10,000 services,
// and decoding them allocated ~25 objects per endpoint (issues 6 and 7). Here an
// endpoint is one 32-byte value in its locality's slice, with its address in a string
// shared by the whole assignment when it was decoded from the wire (see
// decodeLoadAssignment).
//
// A LoadAssignment is immutable once published, like the messages of a Snapshot.
type LoadAssignment struct {
	ClusterName string
	Localities  []Locality
	// DropOverloads is the number of policy.drop_overloads entries (not supported by
	// translation, which reports them).
	DropOverloads int
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
	LEDS      bool
	Endpoints []Endpoint
}

// Endpoint is one LbEndpoint.
type Endpoint struct {
	// Address is the socket address (an IP, or a host name in DNS clusters); empty
	// for OtherAddress and NamedEndpoint.
	Address string
	// Port is the port number; 0 for a named port.
	Port uint32
	// Weight is load_balancing_weight; 0 when unset.
	Weight uint32
	Health corev3.HealthStatus
	Kind   EndpointKind
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

// FromCLA converts a decoded (and validated) ClusterLoadAssignment. The result shares
// the message's strings, not its structure.
func FromCLA(cla *endpointv3.ClusterLoadAssignment) *LoadAssignment {
	la := &LoadAssignment{
		ClusterName:   cla.GetClusterName(),
		DropOverloads: len(cla.GetPolicy().GetDropOverloads()),
	}
	if n := len(cla.GetEndpoints()); n > 0 {
		la.Localities = make([]Locality, n)
	}
	total := 0
	for _, g := range cla.GetEndpoints() {
		total += len(g.GetLbEndpoints())
	}
	// One backing array for all endpoints: one allocation per assignment.
	all := make([]Endpoint, total)
	for i, g := range cla.GetEndpoints() {
		l := &la.Localities[i]
		l.Priority = g.GetPriority()
		l.Weight = g.GetLoadBalancingWeight().GetValue()
		l.LEDS = g.GetLedsClusterLocalityConfig() != nil
		n := len(g.GetLbEndpoints())
		l.Endpoints, all = all[:n:n], all[n:]
		for j, e := range g.GetLbEndpoints() {
			l.Endpoints[j] = endpointOf(e)
		}
	}
	return la
}

func endpointOf(e *endpointv3.LbEndpoint) Endpoint {
	out := Endpoint{
		Weight: e.GetLoadBalancingWeight().GetValue(),
		Health: e.GetHealthStatus(),
	}
	ep := e.GetEndpoint()
	if ep == nil {
		out.Kind = NamedEndpoint
		return out
	}
	sa := ep.GetAddress().GetSocketAddress()
	if sa == nil {
		out.Kind = OtherAddress
		return out
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		out.Kind = SocketUDP
	} else if _, named := sa.GetPortSpecifier().(*corev3.SocketAddress_NamedPort); named {
		out.Kind = NamedPort
	}
	out.Address = sa.GetAddress()
	out.Port = sa.GetPortValue()
	return out
}

// Equal reports whether a and b hold the same assignment.
func (a *LoadAssignment) Equal(b *LoadAssignment) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil || a.ClusterName != b.ClusterName || a.DropOverloads != b.DropOverloads ||
		len(a.Localities) != len(b.Localities) {
		return false
	}
	for i := range a.Localities {
		la, lb := &a.Localities[i], &b.Localities[i]
		if la.Priority != lb.Priority || la.Weight != lb.Weight || la.LEDS != lb.LEDS ||
			len(la.Endpoints) != len(lb.Endpoints) {
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
