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
