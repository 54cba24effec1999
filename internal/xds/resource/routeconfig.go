package resource

// Route configurations are kept in wire form. A decoded RouteConfiguration costs over a
// kilobyte per route in Go structs, several times its pruned wire form (which the
// virtual hosts' compression halves again, see vhkept.go). The decoded message is needed
// once, when the configuration changes; afterwards the translator only compares
// virtual hosts (byte comparison of their wire forms) and, rarely, re-translates one
// (decoding just that virtual host). So the client keeps the wire form and hands the
// decoded message over once, in the Update that brings it (Update.Decoded).

import (
	"bytes"
	"errors"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// virtualHostsField is RouteConfiguration.virtual_hosts.
const virtualHostsField = 2

var deterministic = proto.MarshalOptions{Deterministic: true}

var routeConfigKind = &kindFuncs[*routev3.RouteConfiguration, *RouteConfig]{
	kindNoun: "route configuration",
	decodeFn: decodeRouteConfig,
	pruneFn:  pruneRouteConfig,
	keepFn:   MustRouteConfig,
	nameFn:   func(r *RouteConfig) string { return r.Name },
	equalFn:  (*RouteConfig).Equal,
}

// decodeRouteConfig decodes and validates a route configuration and returns its wire
// form, reusing prev's (nil: none) compressed virtual hosts where unchanged; d.Route
// is the decoded, pruned message. A large one is decoded on every core (rds_decode.go).
func decodeRouteConfig(d *Decoded, b []byte, prev *RouteConfig, opts DecodeOptions) (*RouteConfig, error) {
	min := opts.ParallelRDSMin
	if min <= 0 {
		min = defaultParallelRDSMin
	}
	if len(b) >= min {
		if r, m, err := decodeRouteConfigParallel(b, prev, opts.Intern); err == nil {
			d.Name, d.Route = r.Name, m
			return r, nil
		}
	}
	rc := &routev3.RouteConfiguration{}
	if err := unmarshalValid(d, b, rc); err != nil {
		return nil, err
	}
	pruneRouteConfig(rc, opts.Intern)
	r, err := newRouteConfig(rc, prev)
	if err != nil {
		return nil, err
	}
	d.Route = rc
	return r, nil
}

// RouteConfig is a route configuration in deterministic wire form, split into its
// virtual hosts. Immutable.
type RouteConfig struct {
	Name string
	// Header is the wire form of every field but the virtual hosts.
	Header []byte
	// VirtualHosts is the kept form of each virtual host, in order: its deterministic
	// wire form, compressed when that is shorter (vhkept.go). Equal bytes mean equal
	// content (map entries are sorted, and the kept form is a function of the wire
	// form); DecodeVirtualHost decodes one, VirtualHostWire gives its wire form. The
	// slices share one array, so keeping any of them keeps the whole configuration's.
	VirtualHosts [][]byte
	// Routes is the number of routes in all virtual hosts (for sizing).
	Routes int

	// sums are the Hash of each virtual host's wire form: the next version of the
	// configuration reuses the kept forms of the virtual hosts it has unchanged.
	sums []uint64
}

// NewRouteConfig encodes rc. It fails only for messages that cannot be encoded
// (strings that are not UTF-8, which a decoded message never has).
func NewRouteConfig(rc *routev3.RouteConfiguration) (*RouteConfig, error) {
	return newRouteConfig(rc, nil)
}

// newRouteConfig is NewRouteConfig reusing the kept forms of prev (nil: none), the
// previous version of the configuration.
func newRouteConfig(rc *routev3.RouteConfiguration, prev *RouteConfig) (*RouteConfig, error) {
	b, err := deterministic.Marshal(rc)
	if err != nil {
		return nil, err
	}
	nvh := len(rc.GetVirtualHosts())
	r := &RouteConfig{Name: rc.GetName(), VirtualHosts: make([][]byte, 0, nvh), sums: make([]uint64, 0, nvh)}
	for _, vh := range rc.GetVirtualHosts() {
		r.Routes += len(vh.GetRoutes())
	}
	c := compressors.Get().(*vhCompressor)
	defer compressors.Put(c)
	x := newReuse(prev)
	var kept []byte
	ends := make([]int, 0, nvh)
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, protowire.ParseError(m)
		}
		if num == virtualHostsField && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(rest[n:])
			var sum uint64
			kept, sum = c.appendVH(kept, v, len(ends), x)
			ends = append(ends, len(kept))
			r.sums = append(r.sums, sum)
		} else {
			r.Header = append(r.Header, rest[:n+m]...)
		}
		rest = rest[n+m:]
	}
	if len(ends) != nvh {
		return nil, errors.New("route configuration: virtual hosts do not re-encode one to one")
	}
	// One array, sized exactly (kept grew by doubling).
	all := make([]byte, len(kept))
	copy(all, kept)
	start := 0
	for _, end := range ends {
		r.VirtualHosts = append(r.VirtualHosts, all[start:end:end])
		start = end
	}
	return r, nil
}

// MustRouteConfig is NewRouteConfig for messages built in code (tests, generated
// meshes), which always encode; it panics otherwise.
func MustRouteConfig(rc *routev3.RouteConfiguration) *RouteConfig {
	r, err := NewRouteConfig(rc)
	if err != nil {
		panic(err)
	}
	return r
}

// Message decodes the route configuration.
func (r *RouteConfig) Message() (*routev3.RouteConfiguration, error) {
	m := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(r.Header, m); err != nil {
		return nil, err
	}
	for _, v := range r.VirtualHosts {
		vh := &routev3.VirtualHost{}
		if err := decodeKept(v, vh); err != nil {
			return nil, err
		}
		m.VirtualHosts = append(m.VirtualHosts, vh)
	}
	return m, nil
}

// HeaderMessage decodes the route configuration without its virtual hosts.
func (r *RouteConfig) HeaderMessage() (*routev3.RouteConfiguration, error) {
	m := &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(r.Header, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Equal reports whether r and o have the same content.
func (r *RouteConfig) Equal(o *RouteConfig) bool {
	if r == o {
		return true
	}
	if r == nil || o == nil || r.Name != o.Name || !bytes.Equal(r.Header, o.Header) || len(r.VirtualHosts) != len(o.VirtualHosts) {
		return false
	}
	for i := range r.VirtualHosts {
		if !bytes.Equal(r.VirtualHosts[i], o.VirtualHosts[i]) {
			return false
		}
	}
	return true
}

// DecodeVirtualHost decodes one virtual host's kept form (an element of VirtualHosts).
func DecodeVirtualHost(b []byte) (*routev3.VirtualHost, error) {
	vh := &routev3.VirtualHost{}
	if err := decodeKept(b, vh); err != nil {
		return nil, err
	}
	return vh, nil
}
