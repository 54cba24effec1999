package resource

import (
	"errors"
	"fmt"
	"hash/maphash"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Decoded is one validated resource together with what the client needs to know about
// it without decoding it again.
type Decoded struct {
	Name string
	// Msg is a *listenerv3.Listener, *RouteConfig, *Cluster or *LoadAssignment,
	// matching the type URL it was decoded as. The messages are pruned (see Prune):
	// validated whole, then stored without what amesh never reads; a RouteConfig is
	// the wire form of the pruned message (routeconfig.go), a Cluster its names and
	// shared shape (cluster.go), a LoadAssignment the compact form of a validated
	// ClusterLoadAssignment.
	Msg any
	// Deps are the names of the dependent resources Msg needs: RDS names of a listener,
	// the EDS name of an EDS cluster. Nil for route configs and endpoints.
	Deps []string
	// Hash is Hash of the serialized bytes the resource was decoded from (before pruning).
	Hash uint64
	// Route is the decoded (pruned) message of a route configuration, which the
	// client hands to its consumer once (Update.Decoded) and does not keep.
	Route *routev3.RouteConfiguration
}

// Error is a resource that could not be decoded or failed validation. Its text names the
// kind, the resource and the problem, so it can be used as a NACK's error_detail as is.
type Error struct {
	TypeURL string
	Name    string // empty when the name could not be determined
	Err     error
}

func (e *Error) Error() string {
	name := e.Name
	if name == "" {
		name = "<unnamed>"
	}
	return fmt.Sprintf("%s %q: %v", KindOf(e.TypeURL), name, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns a short human name for a type URL ("listener", "cluster", ...).
func KindOf(typeURL string) string {
	switch typeURL {
	case ListenerType:
		return "listener"
	case RouteConfigType:
		return "route configuration"
	case ClusterType:
		return "cluster"
	case EndpointType:
		return "cluster load assignment"
	}
	return typeURL
}

// hashSeed is per process: hashes are only compared with hashes from the same process.
var hashSeed = maphash.MakeSeed()

// Hash returns a 64-bit content hash of serialized resource bytes. The client compares
// it with the hash of the previously accepted version of the same name to skip decoding
// (and keep the old pointer) when istiod resends an identical resource, which it does on
// every SotW push and every reconnect.
func Hash(b []byte) uint64 { return maphash.Bytes(hashSeed, b) }

// resourceWrapperType is the type URL of discovery.v3.Resource, which a server may use
// to wrap a resource in a SotW response (to attach a TTL).
const resourceWrapperType = "type.googleapis.com/envoy.service.discovery.v3.Resource"

// Unwrap returns the Any holding the resource itself: a Resource wrapper is unwrapped,
// anything else is returned as is.
func Unwrap(a *anypb.Any) (*anypb.Any, error) {
	if a.GetTypeUrl() != resourceWrapperType {
		return a, nil
	}
	var r discoveryv3.Resource
	if err := proto.Unmarshal(a.GetValue(), &r); err != nil {
		return nil, fmt.Errorf("cannot decode Resource wrapper: %w", err)
	}
	if r.GetResource() == nil {
		return nil, errors.New("discovery.v3.Resource wrapper without a resource")
	}
	return r.GetResource(), nil
}

// Decode decodes and validates a resource of kind typeURL from an Any. wantName, when
// not empty, is the name the server announced for it (Delta) and must match. Errors are
// *Error.
func Decode(typeURL string, a *anypb.Any, wantName string) (*Decoded, error) {
	return DecodeUpdate(typeURL, a, wantName, nil)
}

// DecodeUpdate is Decode for a new version of prev (a Decoded.Msg, nil for none; it
// need not have the same name): the result is the same, made faster by reusing what
// prev has unchanged (the compressed virtual hosts of a route configuration).
func DecodeUpdate(typeURL string, a *anypb.Any, wantName string, prev any) (*Decoded, error) {
	if a == nil {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: errors.New("no resource body")}
	}
	if a.GetTypeUrl() != typeURL {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: fmt.Errorf("resource has type %s", a.GetTypeUrl())}
	}
	return decodeBytes(typeURL, a.GetValue(), wantName, prev)
}

// DecodeBytes is Decode for the serialized message itself. The message is hashed and
// validated as received, then pruned (Prune).
func DecodeBytes(typeURL string, b []byte, wantName string) (*Decoded, error) {
	return decodeBytes(typeURL, b, wantName, nil)
}

// decodeBytes is DecodeBytes reusing prev (see DecodeUpdate).
func decodeBytes(typeURL string, b []byte, wantName string, prev any) (*Decoded, error) {
	prevRC, _ := prev.(*RouteConfig)
	d := &Decoded{Hash: Hash(b)}
	var err error
	switch typeURL {
	case ListenerType:
		l := &listenerv3.Listener{}
		if err = proto.Unmarshal(b, l); err == nil {
			d.Name = l.GetName()
			if err = validate(l); err == nil {
				if err = ValidateListenerFilters(l); err == nil {
					d.Deps, err = ListenerRouteNames(l)
				}
			}
		}
		d.Msg = l
	case RouteConfigType:
		if len(b) >= parallelRDSMin {
			if r, m, perr := decodeRouteConfigParallel(b, prevRC); perr == nil {
				d.Name, d.Msg, d.Route = r.Name, r, m // validated, pruned and encoded (rds_decode.go)
				break
			}
		}
		rc := &routev3.RouteConfiguration{}
		if err = proto.Unmarshal(b, rc); err == nil {
			d.Name = rc.GetName()
			err = validate(rc)
		}
		d.Msg = rc
	case ClusterType:
		c := &clusterv3.Cluster{}
		if err = proto.Unmarshal(b, c); err == nil {
			d.Name = c.GetName()
			if err = validate(c); err == nil {
				d.Deps = clusterDeps(c)
			}
		}
		d.Msg = c
	case EndpointType:
		var la *LoadAssignment
		la, err = decodeLoadAssignment(b)
		if la != nil {
			d.Name = la.ClusterName // also for the error, when only validation failed
		}
		d.Msg = la
	default:
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: errors.New("unsupported resource type")}
	}
	name := d.Name
	if name == "" {
		name = wantName
	}
	if err != nil {
		return nil, &Error{TypeURL: typeURL, Name: name, Err: err}
	}
	if d.Name == "" {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: errors.New("resource has no name")}
	}
	if wantName != "" && wantName != d.Name {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: fmt.Errorf("announced as %q but named %q", wantName, d.Name)}
	}
	switch m := d.Msg.(type) {
	case *routev3.RouteConfiguration:
		Prune(m)
		d.Msg, err = newRouteConfig(m, prevRC)
		d.Route = m
	case *clusterv3.Cluster:
		// Pruned in two steps: its parts are interned only if its whole shape is not
		// shared (newCluster). m is this decode's own: it becomes the shape.
		clearCluster(m)
		d.Msg = newCluster(m)
	case proto.Message:
		Prune(m)
	}
	if err != nil {
		return nil, &Error{TypeURL: typeURL, Name: name, Err: err}
	}
	return d, nil
}

// validate checks m as Envoy does when it accepts it: the protos' rules, then what
// Validate adds.
func validate(m interface {
	proto.Message
	ValidateAll() error
}) error {
	if err := m.ValidateAll(); err != nil {
		return err
	}
	return Validate(m)
}

// clusterDeps is the EDS name an EDS cluster needs, nil for other discovery types.
func clusterDeps(c *clusterv3.Cluster) []string {
	if c.GetType() != clusterv3.Cluster_EDS || c.GetClusterType() != nil {
		return nil
	}
	return []string{EDSName(c)}
}

// IsEDS reports whether the endpoints of c come from EDS.
func IsEDS(c *clusterv3.Cluster) bool { return clusterDeps(c) != nil }
