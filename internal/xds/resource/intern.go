package resource

// Interning of small leaf messages. After pruning, a mesh's resources are mostly
// small messages that repeat with the same few values: every endpoint's
// load_balancing_weight is UInt32Value{1}, every route's case_sensitive BoolValue{true},
// timeouts Duration{0} or {15s}. Each decoded copy is a separate 48-64 byte allocation
// (about a tenth of an endpoint's heap). Resources are immutable once decoded (see
// Update), so equal leaves can be one shared message.
//
// Interning is typed (pruning calls it for the fields where such leaves repeat in
// istiod's shapes): a generic reflective walk over every message doubled decode time.
// The table is bounded (internCap values per kind): values beyond it stay unshared, so
// a control plane that sends many distinct weights cannot grow it without limit.
//
// The table is a value, not a process-wide one: the xDS client owns one and starts a
// new one with every stream, so that what a previous server sent (a control plane
// that restarted with another mesh) neither fills the bounded table nor stays alive
// through it. Dropping a table changes no resource: what was decoded keeps the
// messages it points to, and later decodes share among themselves.

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Interner shares equal parts between the resources decoded with it (DecodeOptions):
// leaves by value, repeated sub-messages and whole cluster shapes by their
// deterministic wire form, so two messages of different content never share one
// object. A nil *Interner shares nothing. Safe for concurrent use.
type Interner struct {
	leafMu sync.Mutex
	leaves map[leafKey]proto.Message // guarded by leafMu
	counts [numLeafKinds]int         // guarded by leafMu: entries per leaf kind

	wholeMu sync.Mutex
	whole   map[string]any // guarded by wholeMu
}

// NewInterner returns an empty table.
func NewInterner() *Interner {
	return &Interner{leaves: map[leafKey]proto.Message{}, whole: map[string]any{}}
}

// internCap bounds the distinct values kept per leaf kind.
const internCap = 1024

// Leaf kinds.
const (
	leafU32 = iota
	leafBool
	leafDur
	numLeafKinds
)

type leafKey struct {
	kind  uint8
	v     int64
	nanos int32
}

// canonical returns the shared message equal to m when m is an internable leaf
// without unknown fields, and nil otherwise.
func (in *Interner) canonical(m proto.Message) proto.Message {
	var k leafKey
	switch x := m.(type) {
	case *wrapperspb.UInt32Value:
		k = leafKey{kind: leafU32, v: int64(x.GetValue())}
	case *wrapperspb.BoolValue:
		k = leafKey{kind: leafBool}
		if x.GetValue() {
			k.v = 1
		}
	case *durationpb.Duration:
		k = leafKey{kind: leafDur, v: x.GetSeconds(), nanos: x.GetNanos()}
	default:
		return nil
	}
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return nil
	}
	in.leafMu.Lock()
	defer in.leafMu.Unlock()
	if c, ok := in.leaves[k]; ok {
		return c
	}
	if in.counts[k.kind] >= internCap {
		return nil
	}
	in.counts[k.kind]++
	in.leaves[k] = m
	return m
}

// u32, boolean and dur replace *p by the shared leaf of equal value.
func (in *Interner) u32(p **wrapperspb.UInt32Value) {
	if in != nil && *p != nil {
		if c := in.canonical(*p); c != nil {
			*p = c.(*wrapperspb.UInt32Value)
		}
	}
}

func (in *Interner) boolean(p **wrapperspb.BoolValue) {
	if in != nil && *p != nil {
		if c := in.canonical(*p); c != nil {
			*p = c.(*wrapperspb.BoolValue)
		}
	}
}

func (in *Interner) dur(p **durationpb.Duration) {
	if in != nil && *p != nil {
		if c := in.canonical(*p); c != nil {
			*p = c.(*durationpb.Duration)
		}
	}
}

// Whole sub-messages that istiod repeats verbatim across resources (a route's retry
// policy, a cluster's circuit breakers, common LB config and, once pruned, transport
// socket matches) are shared the same way, keyed by their deterministic wire form.
// They are interned after their own pruning and leaf interning, so the key is the
// form that is kept. wholeCap bounds the table; beyond it messages stay unshared.
const wholeCap = 4096

var wholeDet = proto.MarshalOptions{Deterministic: true}

// internWhole replaces *p by the shared message with the same type and wire form.
func internWhole[M proto.Message](in *Interner, p *M) {
	m := *p
	if in == nil || !m.ProtoReflect().IsValid() {
		return // nil
	}
	if c, ok := in.sharedBy(string(m.ProtoReflect().Descriptor().FullName()), m, m); ok {
		*p = c.(M)
	}
}

// sharedBy returns the shared value for the wire form of key message m (prefixed
// with kind), registering v as that value when the form is new. ok is false when
// the table is full or m cannot be marshalled.
func (in *Interner) sharedBy(kind string, m proto.Message, v any) (any, bool) {
	k, ok := sharedKey(kind, m)
	if !ok {
		return nil, false
	}
	return in.share(k, v)
}

// sharedKey is the table key of m's wire form; ok is false when m cannot be marshalled.
func sharedKey(kind string, m proto.Message) (string, bool) {
	b, err := wholeDet.Marshal(m)
	if err != nil {
		return "", false
	}
	return kind + "\x00" + string(b), true
}

// lookup returns the shared value of key k, if there is one.
func (in *Interner) lookup(k string) (any, bool) {
	in.wholeMu.Lock()
	defer in.wholeMu.Unlock()
	c, ok := in.whole[k]
	return c, ok
}

// share returns the shared value of key k, registering v when there is none; ok is
// false when the table is full.
func (in *Interner) share(k string, v any) (any, bool) {
	in.wholeMu.Lock()
	defer in.wholeMu.Unlock()
	if c, ok := in.whole[k]; ok {
		return c, true
	}
	if len(in.whole) >= wholeCap {
		return nil, false
	}
	in.whole[k] = v
	return v, true
}
