package resource

// Decoding of ClusterLoadAssignments straight from the protobuf wire format.
//
// Endpoints are most of a mesh's xDS, each endpoint carrying an Istio metadata Struct.
// The general path (proto.Unmarshal, ValidateAll, FromCLA) builds dozens of messages
// per endpoint only to copy four numbers and a string out of them, and most of the
// bytes it parses are metadata that amesh never reads. The wire decoder below reads the few fields a
// LoadAssignment keeps, skips the rest without allocating, and allocates a handful of
// objects per assignment (the assignment, its localities, one backing array for all
// endpoints, the cluster name, one string holding every address).
//
// Contract: the wire decoder either produces exactly what the general path would
// accept and produce, or gives up, and then decodeLoadAssignment runs the general path,
// so the result and the error (the NACK detail) are the general path's, byte for byte.
// It gives up on everything it does not handle with certainty (which includes every
// field that holds a Duration, checked by Validate on the general path): malformed wire data,
// invalid UTF-8, unknown fields, a known field with an unexpected wire type, a field
// with validation rules it does not implement (health_check_config,
// additional_addresses, load_balancer_endpoints, proximity, named_endpoints, a policy
// or LEDS config with content), a oneof message set twice (where proto merging rules
// would apply), and any validation failure. Validation failures are rare (a NACK), so
// decoding them twice costs nothing that matters.
//
// What is skipped without validation: the metadata of localities
// (LocalityLbEndpoints.metadata) and of endpoints (LbEndpoint.metadata), but for the
// one entry amesh keeps, filter_metadata["envoy.transport_socket_match"] (see
// socketmatch.go): the wire decoder reads the map entries of filter_metadata to find
// it, reads it exactly (giving up on what it does not re-encode with certainty) and
// skips the rest. The general path parses all of the metadata (wire structure, UTF-8
// of every key and string value) and validates filter_metadata / typed_filter_metadata
// keys as non-empty. So an assignment whose only defect is inside the metadata amesh
// does not keep is accepted here and NACKed by the general path. That is acceptable:
// metadata is the bulk of the bytes (skipping it is the point), amesh never reads it,
// and such a defect would be a control plane bug that leaves everything amesh uses
// well-formed and valid. The differential fuzz test states this exactly: where the
// two paths disagree, the general path accepts the input with the metadata amesh does
// not keep removed, with an equal result.

import (
	"strings"
	"sync"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// decodeLoadAssignment decodes and validates a serialized ClusterLoadAssignment into
// its compact form. On a validation error it returns the assignment's name with the
// error (for the NACK detail); on a decoding error, nil.
func decodeLoadAssignment(b []byte) (*LoadAssignment, error) {
	if la, ok := decodeLoadAssignmentWire(b); ok {
		return la, nil
	}
	return decodeLoadAssignmentProto(b)
}

// decodeLoadAssignmentProto is the general path: the protobuf runtime's decoder and
// the generated validation, then FromCLA.
func decodeLoadAssignmentProto(b []byte) (*LoadAssignment, error) {
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := proto.Unmarshal(b, cla); err != nil {
		return nil, err
	}
	if err := validate(cla); err != nil {
		return &LoadAssignment{ClusterName: cla.GetClusterName()}, err
	}
	return FromCLA(cla), nil
}

// decodeLoadAssignmentWire is the fast path. ok is false when it gave up (see the
// contract above); the result is then nil.
func decodeLoadAssignmentWire(b []byte) (la *LoadAssignment, ok bool) {
	d := wireDecoders.Get().(*wireDecoder)
	defer d.release()
	if !d.assignment(b) {
		return nil, false
	}
	return d.build(), true
}

// Field numbers, from envoy/config/endpoint/v3/endpoint.proto,
// endpoint_components.proto and envoy/config/core/v3/address.proto, base.proto.
const (
	// ClusterLoadAssignment
	claClusterName = 1 // string
	claEndpoints   = 2 // repeated LocalityLbEndpoints
	claPolicy      = 4 // Policy
	// LocalityLbEndpoints
	lleLocality    = 1 // core.v3.Locality
	lleLbEndpoints = 2 // repeated LbEndpoint
	lleWeight      = 3 // UInt32Value, >= 1
	llePriority    = 5 // uint32, <= 128
	lleLEDS        = 8 // LedsClusterLocalityConfig (oneof lb_config)
	lleMetadata    = 9 // core.v3.Metadata
	// core.v3.Locality: region, zone, sub_zone (strings, no rules)
	localitySubZone = 3
	// LbEndpoint
	lbeEndpoint     = 1 // Endpoint (oneof host_identifier)
	lbeHealthStatus = 2 // core.v3.HealthStatus, no rules
	lbeMetadata     = 3 // core.v3.Metadata
	lbeWeight       = 4 // UInt32Value, >= 1
	lbeEndpointName = 5 // string (oneof host_identifier)
	// Endpoint
	epAddress           = 1 // core.v3.Address
	epHostname          = 3 // string
	epObservabilityName = 5 // string
	// core.v3.Address: oneof address, required
	addrSocket   = 1 // SocketAddress
	addrPipe     = 2 // Pipe
	addrInternal = 3 // EnvoyInternalAddress
	// core.v3.SocketAddress
	saProtocol      = 1 // enum Protocol, defined only (TCP 0, UDP 1)
	saAddress       = 2 // string, min_len 1
	saPortValue     = 3 // uint32 <= 65535 (oneof port_specifier, required)
	saNamedPort     = 4 // string (oneof port_specifier)
	saResolverName  = 5 // string
	saIPv4Compat    = 6 // bool
	saNetnsFilepath = 7 // string
	// core.v3.Pipe
	pipePath = 1 // string, min_len 1
	pipeMode = 2 // uint32 <= 511
	// core.v3.EnvoyInternalAddress
	internalServerListenerName = 1 // string (oneof address_name_specifier, required)
	internalEndpointID         = 2 // string
	// google.protobuf.UInt32Value
	wrapperValue = 1
)

// wireDecoder holds one decode's intermediate state: localities and endpoints as read,
// with addresses still pointing into the input. build copies them into exactly sized
// allocations, so the scratch slices are reused across decodes (wireDecoders).
type wireDecoder struct {
	name  []byte
	locs  []wireLocality
	eps   []Endpoint // end is set by build
	addrs [][]byte   // address bytes of eps[i], in the input
	// epm is the socket match index of eps[i] (socketmatch.go), in matches.
	epm     []uint8
	matches socketMatches
	sm      socketMatchScratch
}

type wireLocality struct {
	priority, weight uint32
	leds             bool
	socketMatch      uint8
	n                int // endpoints, following the previous localities' in eps
}

var wireDecoders = sync.Pool{New: func() any { return new(wireDecoder) }}

// maxPooledEndpoints bounds the scratch a pooled decoder keeps, so that one huge
// assignment does not pin its scratch in the pool.
const maxPooledEndpoints = 1 << 14

func (d *wireDecoder) release() {
	if cap(d.eps) > maxPooledEndpoints {
		return
	}
	d.name = nil
	d.locs = d.locs[:0]
	clear(d.addrs) // do not keep the input alive
	d.addrs = d.addrs[:0]
	d.eps = d.eps[:0]
	d.epm = d.epm[:0]
	clear(d.matches.forms)
	d.matches.forms = d.matches.forms[:0]
	clear(d.sm.entries) // do not keep the input alive
	d.sm.entries = d.sm.entries[:0]
	wireDecoders.Put(d)
}

// build makes the LoadAssignment: one backing array for all endpoints and one string
// for all their addresses, as FromCLA lays them out.
func (d *wireDecoder) build() *LoadAssignment {
	var la *LoadAssignment
	switch len(d.locs) {
	case 0:
		la = &LoadAssignment{}
	case 1:
		// Most assignments have one locality and at most one socket match form: one
		// allocation for all three.
		one := &struct {
			la    LoadAssignment
			loc   [1]Locality
			forms [1]string
		}{}
		one.la.Localities = one.loc[:]
		one.la.socketMatches = one.forms[:0:1]
		la = &one.la
	default:
		la = &LoadAssignment{Localities: make([]Locality, len(d.locs))}
	}
	la.ClusterName = string(d.name)
	size := 0
	for _, a := range d.addrs {
		size += len(a)
	}
	var sb strings.Builder
	sb.Grow(size)
	for _, a := range d.addrs {
		sb.Write(a)
	}
	addrs := sb.String()
	all := make([]Endpoint, len(d.eps))
	copy(all, d.eps)
	lens := d.addrs
	epm := d.epm
	var epmAll []uint8 // one backing array for the localities whose endpoints differ
	for i, wl := range d.locs {
		l := &la.Localities[i]
		l.Priority, l.Weight, l.LEDS = wl.priority, wl.weight, wl.leds
		l.Endpoints, all = all[:wl.n:wl.n], all[wl.n:]
		end := 0
		for j := range l.Endpoints {
			end += len(lens[j])
			l.Endpoints[j].end = uint32(end)
		}
		lens = lens[wl.n:]
		l.addrs, addrs = addrs[:end], addrs[end:]
		l.socketMatch = wl.socketMatch
		l.setEndpointMatches(epm[:wl.n])
		if l.epMatch != nil {
			if epmAll == nil {
				epmAll = make([]uint8, 0, len(d.epm))
			}
			n := len(epmAll)
			epmAll = append(epmAll, l.epMatch...)
			l.epMatch = epmAll[n : n+wl.n : n+wl.n]
		}
		epm = epm[wl.n:]
	}
	forms := socketMatches{forms: append(la.socketMatches, d.matches.forms...)}
	forms.finish(la)
	return la
}

// field is one field read by next.
type field struct {
	num protowire.Number
	typ protowire.Type
	v   uint64 // VarintType
	s   []byte // BytesType
}

// next reads the field at the start of *b and advances *b past it. Only varint and
// length-delimited fields are read: no field the wire decoder knows has another wire
// type, so anything else (fixed32/64, groups) is an unknown field and gives up.
func next(b *[]byte, f *field) bool {
	// Fast path: a one-byte tag and a one-byte varint or length, which is nearly
	// every field of an assignment.
	if s := *b; len(s) >= 2 && s[0] < 0x80 && s[1] < 0x80 {
		f.num, f.typ = protowire.Number(s[0]>>3), protowire.Type(s[0]&7)
		switch n := int(s[1]); {
		case f.typ == protowire.VarintType && f.num != 0:
			f.v, *b = uint64(n), s[2:]
			return true
		case f.typ == protowire.BytesType && f.num != 0 && n <= len(s)-2:
			f.s, *b = s[2:2+n], s[2+n:]
			return true
		}
	}
	num, typ, n := protowire.ConsumeTag(*b)
	if n < 0 {
		return false
	}
	*b = (*b)[n:]
	f.num, f.typ = num, typ
	switch typ {
	case protowire.VarintType:
		f.v, n = protowire.ConsumeVarint(*b)
	case protowire.BytesType:
		f.s, n = protowire.ConsumeBytes(*b)
	default:
		return false
	}
	if n < 0 {
		return false
	}
	*b = (*b)[n:]
	return true
}

func (f *field) is(num protowire.Number, typ protowire.Type) bool {
	return f.num == num && f.typ == typ
}

// str reports whether f is the length-delimited field num holding valid UTF-8 (what
// the protobuf runtime requires of proto3 strings).
func (f *field) str(num protowire.Number) bool {
	return f.is(num, protowire.BytesType) && utf8.Valid(f.s)
}

// assignment reads a ClusterLoadAssignment.
func (d *wireDecoder) assignment(b []byte) bool {
	var f field
	for len(b) > 0 {
		if !next(&b, &f) {
			return false
		}
		switch {
		case f.str(claClusterName):
			d.name = f.s
		case f.is(claEndpoints, protowire.BytesType):
			if !d.locality(f.s) {
				return false
			}
		case f.is(claPolicy, protowire.BytesType):
			// An empty policy is a policy without drop_overloads. Anything in it has
			// rules (drop categories, percentages, overprovisioning factor) that
			// istiod's assignments do not exercise: the general path handles it.
			if len(f.s) != 0 {
				return false
			}
		default:
			return false
		}
	}
	return len(d.name) > 0 // cluster_name: min_len 1
}

// locality reads a LocalityLbEndpoints and appends it and its endpoints.
func (d *wireDecoder) locality(b []byte) bool {
	first := len(d.eps)
	var (
		l           wireLocality
		weightSet   bool
		metadataSet bool
		f           field
	)
	for len(b) > 0 {
		if !next(&b, &f) {
			return false
		}
		switch {
		case f.is(lleLbEndpoints, protowire.BytesType):
			if !d.lbEndpoint(f.s) {
				return false
			}
		case f.is(lleWeight, protowire.BytesType):
			weightSet = true
			if !uint32Value(f.s, &l.weight) {
				return false
			}
		case f.is(llePriority, protowire.VarintType):
			l.priority = uint32(f.v)
		case f.is(lleLocality, protowire.BytesType):
			if !localityName(f.s) {
				return false
			}
		case f.is(lleLEDS, protowire.BytesType):
			// Present means LEDS; its config source has rules the general path checks.
			if len(f.s) != 0 {
				return false
			}
			l.leds = true
		case f.is(lleMetadata, protowire.BytesType):
			if !d.metadata(f.s, &metadataSet, &l.socketMatch) {
				return false
			}
		default:
			return false
		}
	}
	// Repeated scalars and wrappers: the last value counts, as in the general path.
	if (weightSet && l.weight < 1) || l.priority > 128 {
		return false
	}
	l.n = len(d.eps) - first
	d.locs = append(d.locs, l)
	return true
}

// metadata reads a locality's or an endpoint's Metadata into *match, the index of its
// socket match form; *set says whether one was read already: a second would merge into
// the first, which is left to the runtime.
func (d *wireDecoder) metadata(b []byte, set *bool, match *uint8) bool {
	if *set {
		return false
	}
	*set = true
	form, ok := d.sm.metadataMatch(b)
	if !ok {
		return false
	}
	*match = d.matches.indexBytes(form)
	return true
}

// localityName checks a core.v3.Locality (three strings without rules).
func localityName(b []byte) bool {
	var f field
	for len(b) > 0 {
		if !next(&b, &f) || f.num < 1 || f.num > localitySubZone || !f.str(f.num) {
			return false
		}
	}
	return true
}

// uint32Value reads a google.protobuf.UInt32Value into *v. A wrapper that repeats
// merges into the previous one: *v keeps its value unless the field is set again.
func uint32Value(b []byte, v *uint32) bool {
	var f field
	for len(b) > 0 {
		if !next(&b, &f) || !f.is(wrapperValue, protowire.VarintType) {
			return false
		}
		*v = uint32(f.v)
	}
	return true
}

// lbEndpoint reads an LbEndpoint and appends it.
func (d *wireDecoder) lbEndpoint(b []byte) bool {
	// Without an endpoint, an LbEndpoint is NamedEndpoint (as FromCLA classifies it).
	e := Endpoint{Kind: NamedEndpoint}
	var (
		addr        []byte
		weightSet   bool
		hasEndpoint bool
		metadataSet bool
		match       uint8
		f           field
	)
	for len(b) > 0 {
		if !next(&b, &f) {
			return false
		}
		switch {
		case f.is(lbeEndpoint, protowire.BytesType):
			// A second endpoint would merge into the first: leave that to the runtime.
			if hasEndpoint {
				return false
			}
			hasEndpoint = true
			var ok bool
			if addr, ok = endpoint(f.s, &e); !ok {
				return false
			}
		case f.str(lbeEndpointName):
			// The other member of the oneof replaces the endpoint.
			e.Kind, e.Port, addr = NamedEndpoint, 0, nil
		case f.is(lbeHealthStatus, protowire.VarintType):
			// An open enum without rules: any value is kept, as the runtime does.
			e.health = keptHealth(corev3.HealthStatus(int32(f.v)))
		case f.is(lbeWeight, protowire.BytesType):
			weightSet = true
			if !uint32Value(f.s, &e.Weight) {
				return false
			}
		case f.is(lbeMetadata, protowire.BytesType):
			if !d.metadata(f.s, &metadataSet, &match) {
				return false
			}
		default:
			return false
		}
	}
	if weightSet && e.Weight < 1 {
		return false
	}
	d.eps = append(d.eps, e)
	d.addrs = append(d.addrs, addr)
	d.epm = append(d.epm, match)
	return true
}

// endpoint reads an Endpoint into e's kind and port and returns its address bytes.
func endpoint(b []byte, e *Endpoint) (addr []byte, ok bool) {
	e.Kind, e.Port = OtherAddress, 0 // no address at all is valid: OtherAddress
	hasAddress := false
	var f field
	for len(b) > 0 {
		if !next(&b, &f) {
			return nil, false
		}
		switch {
		case f.is(epAddress, protowire.BytesType):
			if hasAddress { // would merge
				return nil, false
			}
			hasAddress = true
			if addr, ok = address(f.s, e); !ok {
				return nil, false
			}
		case f.str(epHostname), f.str(epObservabilityName):
		default:
			// health_check_config and additional_addresses have rules of their
			// own; istiod does not send them.
			return nil, false
		}
	}
	return addr, true
}

// address reads a core.v3.Address: exactly one member of its oneof, each at most once.
func address(b []byte, e *Endpoint) (addr []byte, ok bool) {
	members := 0
	var f field
	for len(b) > 0 {
		if !next(&b, &f) || f.typ != protowire.BytesType {
			return nil, false
		}
		members++
		switch f.num {
		case addrSocket:
			addr, ok = socketAddress(f.s, e)
		case addrPipe:
			ok = pipe(f.s)
		case addrInternal:
			ok = internalAddress(f.s)
		default:
			return nil, false
		}
		if !ok {
			return nil, false
		}
	}
	if members != 1 { // none: "value is required"; more: the runtime's oneof rules
		return nil, false
	}
	if f.num != addrSocket {
		e.Kind, e.Port, addr = OtherAddress, 0, nil
	}
	return addr, true
}

// socketAddress reads a core.v3.SocketAddress into e's kind and port and returns its
// address bytes.
func socketAddress(b []byte, e *Endpoint) (addr []byte, ok bool) {
	const (
		noPort = iota
		portValue
		namedPort
	)
	var (
		protocol int32
		port     uint32
		portKind = noPort
		f        field
	)
	for len(b) > 0 {
		if !next(&b, &f) {
			return nil, false
		}
		switch {
		case f.str(saAddress):
			addr = f.s
		case f.is(saPortValue, protowire.VarintType):
			portKind, port = portValue, uint32(f.v)
		case f.is(saProtocol, protowire.VarintType):
			protocol = int32(f.v)
		case f.str(saNamedPort):
			portKind, port = namedPort, 0
		case f.str(saResolverName), f.is(saIPv4Compat, protowire.VarintType), f.str(saNetnsFilepath):
		default:
			return nil, false
		}
	}
	// Protocol is defined_only: TCP or UDP. (Were a protocol added to the enum, it
	// would fall back to the general path, which knows it.)
	if (protocol != int32(corev3.SocketAddress_TCP) && protocol != int32(corev3.SocketAddress_UDP)) ||
		len(addr) == 0 || portKind == noPort || port > 65535 {
		return nil, false
	}
	switch {
	case protocol != int32(corev3.SocketAddress_TCP):
		e.Kind = SocketUDP
	case portKind == namedPort:
		e.Kind = NamedPort
	default:
		e.Kind = SocketTCP
	}
	e.Port = uint16(port) // <= 65535, checked above
	return addr, true
}

// pipe checks a core.v3.Pipe (path min_len 1, mode <= 511).
func pipe(b []byte) bool {
	var (
		path bool
		mode uint32
		f    field
	)
	for len(b) > 0 {
		if !next(&b, &f) {
			return false
		}
		switch {
		case f.str(pipePath):
			path = len(f.s) > 0
		case f.is(pipeMode, protowire.VarintType):
			mode = uint32(f.v)
		default:
			return false
		}
	}
	return path && mode <= 511
}

// internalAddress checks a core.v3.EnvoyInternalAddress (server_listener_name
// required).
func internalAddress(b []byte) bool {
	listener := false
	var f field
	for len(b) > 0 {
		if !next(&b, &f) {
			return false
		}
		switch {
		case f.str(internalServerListenerName):
			listener = true
		case f.str(internalEndpointID):
		default:
			return false
		}
	}
	return listener
}
