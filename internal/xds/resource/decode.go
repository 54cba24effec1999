package resource

import (
	"errors"
	"fmt"
	"hash/maphash"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Decoded is one validated resource together with what the client needs to know about
// it without decoding it again.
type Decoded struct {
	Name string
	// Msg is the resource in its kind's stored form: a *listenerv3.Listener,
	// *RouteConfig, *Cluster, *LoadAssignment or *Secret, matching the type URL it was decoded
	// as. The messages are pruned (see Prune): validated whole, then stored without
	// what amesh never reads; a RouteConfig is the wire form of the pruned message
	// (routeconfig.go), a Cluster its names and shared shape (cluster.go), a
	// LoadAssignment the compact form of a validated ClusterLoadAssignment.
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

// DecodeOptions are what decoding uses beyond a resource's bytes.
type DecodeOptions struct {
	// Intern shares equal parts between the resources decoded with it (intern.go);
	// nil shares nothing. The xDS client owns one per stream.
	Intern *Interner
	// ParallelRDSMin is the size in bytes from which a route configuration is decoded
	// on every core; zero takes a default. The result does not depend on it.
	ParallelRDSMin int
}

// Decode decodes and validates a resource of kind typeURL from an Any, sharing
// nothing with other resources. wantName, when not empty, is the name the server
// announced for it (Delta) and must match. Errors are *Error.
func Decode(typeURL string, a *anypb.Any, wantName string) (*Decoded, error) {
	return DecodeUpdate(typeURL, a, wantName, nil, DecodeOptions{})
}

// DecodeUpdate is Decode for a new version of prev (a Decoded.Msg, nil for none; it
// need not have the same name), with opts: the result is the same, made faster by
// reusing what prev has unchanged (the compressed virtual hosts of a route
// configuration).
func DecodeUpdate(typeURL string, a *anypb.Any, wantName string, prev any, opts DecodeOptions) (*Decoded, error) {
	if a == nil {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: errors.New("no resource body")}
	}
	if a.GetTypeUrl() != typeURL {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: fmt.Errorf("resource has type %s", a.GetTypeUrl())}
	}
	return decodeBytes(typeURL, a.GetValue(), wantName, prev, opts)
}

// DecodeBytes is Decode for the serialized message itself, with opts. The message is
// hashed and validated as received, then pruned (Prune).
func DecodeBytes(typeURL string, b []byte, wantName string, opts DecodeOptions) (*Decoded, error) {
	return decodeBytes(typeURL, b, wantName, nil, opts)
}

// decodeBytes is DecodeBytes reusing prev (see DecodeUpdate).
func decodeBytes(typeURL string, b []byte, wantName string, prev any, opts DecodeOptions) (*Decoded, error) {
	k := kinds[typeURL]
	if k == nil {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: errors.New("unsupported resource type")}
	}
	d := &Decoded{Hash: Hash(b)}
	if err := k.decode(d, b, prev, opts); err != nil {
		name := d.Name
		if name == "" {
			name = wantName
		}
		return nil, &Error{TypeURL: typeURL, Name: name, Err: err}
	}
	if d.Name == "" {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: errors.New("resource has no name")}
	}
	if wantName != "" && wantName != d.Name {
		return nil, &Error{TypeURL: typeURL, Name: wantName, Err: fmt.Errorf("announced as %q but named %q", wantName, d.Name)}
	}
	return d, nil
}

// unmarshalValid unmarshals b into m and validates it, setting d.Name as soon as it
// is known (the error then names the resource).
func unmarshalValid(d *Decoded, b []byte, m interface {
	proto.Message
	ValidateAll() error
	GetName() string
}) error {
	if err := proto.Unmarshal(b, m); err != nil {
		return err
	}
	d.Name = m.GetName()
	return validate(m)
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
