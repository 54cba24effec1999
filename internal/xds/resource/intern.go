package resource

// Interning of small leaf messages. After pruning, a mesh's resources are mostly
// small messages that repeat with the same few values: every endpoint's
// load_balancing_weight is UInt32Value{1}, every route's case_sensitive BoolValue{true},
// timeouts Duration{0} or {15s}. Each decoded copy is a separate 48-64 byte allocation
// (about a tenth of an endpoint's heap). Resources are immutable once decoded (see
// Snapshot), so equal leaves can be one shared message.
//
// Interning is typed (Prune calls it for the fields where such leaves repeat in
// istiod's shapes): a generic reflective walk over every message doubled decode time.
// The table is bounded (internCap values per kind): values beyond it stay unshared, so
// a control plane that sends many distinct weights cannot grow it without limit.

import (
	"sync"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// internCap bounds the distinct values kept per leaf kind.
const internCap = 1024

type leafKey struct {
	kind  byte // 'u' UInt32Value, 'b' BoolValue, 'd' Duration
	v     int64
	nanos int32
}

var (
	internMu    sync.Mutex
	internTable = map[leafKey]proto.Message{}
	internCount = map[byte]int{}
)

// canonical returns the shared message equal to m when m is an internable leaf
// without unknown fields, and nil otherwise.
func canonical(m proto.Message) proto.Message {
	var k leafKey
	switch x := m.(type) {
	case *wrapperspb.UInt32Value:
		k = leafKey{kind: 'u', v: int64(x.GetValue())}
	case *wrapperspb.BoolValue:
		k = leafKey{kind: 'b'}
		if x.GetValue() {
			k.v = 1
		}
	case *durationpb.Duration:
		k = leafKey{kind: 'd', v: x.GetSeconds(), nanos: x.GetNanos()}
	default:
		return nil
	}
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return nil
	}
	internMu.Lock()
	defer internMu.Unlock()
	if c, ok := internTable[k]; ok {
		return c
	}
	if internCount[k.kind] >= internCap {
		return nil
	}
	internCount[k.kind]++
	internTable[k] = m
	return m
}

// internU32, internBool and internDur replace *p by the shared leaf of equal value.
func internU32(p **wrapperspb.UInt32Value) {
	if *p != nil {
		if c := canonical(*p); c != nil {
			*p = c.(*wrapperspb.UInt32Value)
		}
	}
}

func internBool(p **wrapperspb.BoolValue) {
	if *p != nil {
		if c := canonical(*p); c != nil {
			*p = c.(*wrapperspb.BoolValue)
		}
	}
}

func internDur(p **durationpb.Duration) {
	if *p != nil {
		if c := canonical(*p); c != nil {
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

var (
	wholeMu    sync.Mutex
	wholeTable = map[string]any{}
	wholeDet   = proto.MarshalOptions{Deterministic: true}
)

// internWhole replaces *p by the shared message with the same type and wire form.
func internWhole[M proto.Message](p *M) {
	m := *p
	if !m.ProtoReflect().IsValid() {
		return // nil
	}
	if c, ok := sharedBy(string(m.ProtoReflect().Descriptor().FullName()), m, m); ok {
		*p = c.(M)
	}
}

// sharedBy returns the shared value for the wire form of key message m (prefixed
// with kind), registering v as that value when the form is new. ok is false when
// the table is full or m cannot be marshalled.
func sharedBy(kind string, m proto.Message, v any) (any, bool) {
	k, ok := sharedKey(kind, m)
	if !ok {
		return nil, false
	}
	return share(k, v)
}

// sharedKey is the table key of m's wire form; ok is false when m cannot be marshalled.
func sharedKey(kind string, m proto.Message) (string, bool) {
	b, err := wholeDet.Marshal(m)
	if err != nil {
		return "", false
	}
	return kind + "\x00" + string(b), true
}

// lookupShared returns the shared value of key k, if there is one.
func lookupShared(k string) (any, bool) {
	wholeMu.Lock()
	defer wholeMu.Unlock()
	c, ok := wholeTable[k]
	return c, ok
}

// share returns the shared value of key k, registering v when there is none; ok is
// false when the table is full.
func share(k string, v any) (any, bool) {
	wholeMu.Lock()
	defer wholeMu.Unlock()
	if c, ok := wholeTable[k]; ok {
		return c, true
	}
	if len(wholeTable) >= wholeCap {
		return nil, false
	}
	wholeTable[k] = v
	return v, true
}
