package resource

import (
	"fmt"
	"reflect"

	"google.golang.org/protobuf/proto"
)

// Type URLs of the resources amesh subscribes to over ADS.
const (
	ListenerType    = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteConfigType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType     = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType    = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// kind is everything this package does per resource kind. Each kind implements it in
// its own file, next to its stored type (listener.go, routeconfig.go, cluster.go,
// endpoints.go); the functions that serve every kind (DecodeBytes, Equal, Prune,
// AsStored, NameOf, KindOf) reach it through kinds, by type URL, or kindOfValue, by
// the Go type of a message or a stored resource, and decide nothing per kind.
type kind interface {
	// noun is the kind's short human name, for messages.
	noun() string
	// decode decodes and validates one serialized resource of the kind and keeps it:
	// d.Msg in the kind's stored form (pruned, its parts shared through
	// opts.Intern), d.Deps and d.Route. It sets d.Name whenever the name could be
	// read, also when it fails, so that the error names the resource. prev is the
	// accepted resource of that name (nil for none), whose unchanged parts decoding
	// may reuse.
	decode(d *Decoded, b []byte, prev any, opts DecodeOptions) error
	// prune prunes a decoded message of the kind in place (see prune.go).
	prune(m proto.Message, in *Interner)
	// stored is a message of the kind in its stored form, sharing nothing with it.
	stored(m proto.Message) any
	// name is the name of a stored resource of the kind.
	name(v any) string
	// equal reports whether two stored resources have the same content; false when
	// either is not of the kind.
	equal(a, b any) bool
	// goTypes are the Go types of the kind's message and of its stored form.
	goTypes() []reflect.Type
}

// kindFuncs implements kind for messages of type M stored as T, from the kind's own
// functions.
type kindFuncs[M proto.Message, T any] struct {
	kindNoun string
	// decodeFn is kind.decode; prev is the zero T when there is none.
	decodeFn func(d *Decoded, b []byte, prev T, opts DecodeOptions) (T, error)
	// pruneFn prunes a decoded message in place; nil when the kind's stored form is
	// made from the message without pruning.
	pruneFn func(M, *Interner)
	// keepFn makes the stored form of a pruned message it may take.
	keepFn func(M) T
	nameFn func(T) string
	// equalFn compares two stored resources of the kind.
	equalFn func(a, b T) bool
}

func (k *kindFuncs[M, T]) noun() string { return k.kindNoun }

func (k *kindFuncs[M, T]) decode(d *Decoded, b []byte, prev any, opts DecodeOptions) error {
	p, _ := prev.(T)
	v, err := k.decodeFn(d, b, p, opts)
	if err != nil {
		return err
	}
	d.Msg = v
	return nil
}

func (k *kindFuncs[M, T]) prune(m proto.Message, in *Interner) {
	if k.pruneFn != nil {
		k.pruneFn(m.(M), in)
	}
}

func (k *kindFuncs[M, T]) stored(m proto.Message) any {
	c := proto.Clone(m).(M)
	k.prune(c, nil)
	return k.keepFn(c)
}

func (k *kindFuncs[M, T]) name(v any) string { return k.nameFn(v.(T)) }

func (k *kindFuncs[M, T]) equal(a, b any) bool {
	x, okA := a.(T)
	y, okB := b.(T)
	return okA && okB && k.equalFn(x, y)
}

func (k *kindFuncs[M, T]) goTypes() []reflect.Type {
	return []reflect.Type{reflect.TypeFor[M](), reflect.TypeFor[T]()}
}

// kinds are the kinds amesh subscribes to, by type URL.
var kinds = map[string]kind{
	ListenerType:    listenerKind,
	RouteConfigType: routeConfigKind,
	ClusterType:     clusterKind,
	EndpointType:    endpointsKind,
	SecretType:      secretKind,
}

// byGoType finds the kind of a message or stored resource (a listener's are one type).
var byGoType = func() map[reflect.Type]kind {
	m := map[reflect.Type]kind{}
	for _, k := range kinds {
		for _, t := range k.goTypes() {
			m[t] = k
		}
	}
	return m
}()

// kindOfValue is the kind of v, a message of a kind or a stored resource; nil for
// anything else.
func kindOfValue(v any) kind { return byGoType[reflect.TypeOf(v)] }

// KindOf returns a short human name for a type URL ("listener", "cluster", ...).
func KindOf(typeURL string) string {
	if k := kinds[typeURL]; k != nil {
		return k.noun()
	}
	return typeURL
}

// Equal reports whether two stored resources (Decoded.Msg values) have the same content.
func Equal(a, b any) bool {
	k := kindOfValue(a)
	return k != nil && k.equal(a, b)
}

// NameOf returns the name of a stored resource (a Decoded.Msg value): the one it was
// decoded under. It panics for any other value, which only a bug passes.
func NameOf(v any) string {
	k := kindOfValue(v)
	if k == nil {
		panic(fmt.Sprintf("resource: %T is not a stored resource", v))
	}
	return k.name(v)
}

// AsStored returns m, a Listener, RouteConfiguration, Cluster or
// ClusterLoadAssignment, in the form the xDS client stores and publishes it
// (Decoded.Msg), pruned and sharing nothing with m or with other resources. For
// states built outside the client (tests, generated meshes, dumps). Other messages
// are returned as copies.
func AsStored(m proto.Message) any {
	if k := kindOfValue(m); k != nil {
		return k.stored(m)
	}
	return proto.Clone(m)
}
