package resource_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Helpers shared by the tests of the kept forms the client stores instead of decoded
// messages (resource.Cluster, resource.RouteConfig): K is the kept form, M its message.

// keptForm is what these tests need of a kept form.
type keptForm[M proto.Message, K any] interface {
	comparable
	Equal(K) bool
	Message() (M, error)
}

// checkKeptEqual checks Equal (and resource.Equal) of the kept forms that mk makes:
// msg received with the entries of its map field in another order is equal (then
// same, if set, checks more of the two), Equal handles nil, and each change of
// changes makes it unequal.
func checkKeptEqual[M proto.Message, K keptForm[M, K]](t *testing.T, msg M, mapField protoreflect.Name, mk func(M) K, same func(a, b K), changes map[string]func(M)) {
	t.Helper()
	a := mk(msg)
	other := withReversedMap(t, msg, mapField)
	if bytes.Equal(other, marshal(t, msg)) {
		t.Fatal("the reordered wire form is the deterministic one; the test would check nothing")
	}
	dec := msg.ProtoReflect().New().Interface().(M)
	if err := proto.Unmarshal(other, dec); err != nil {
		t.Fatal(err)
	}
	b := mk(dec)
	if !a.Equal(b) || !b.Equal(a) || !resource.Equal(a, b) {
		t.Error("same content in another map order: not equal")
	}
	if same != nil {
		same(a, b)
	}
	var none K
	if !a.Equal(a) || a.Equal(none) || none.Equal(a) || !none.Equal(none) {
		t.Error("Equal with itself or nil")
	}
	for what, change := range changes {
		m := proto.Clone(msg).(M)
		change(m)
		c := mk(m)
		if a.Equal(c) || c.Equal(a) || resource.Equal(a, c) {
			t.Errorf("%s changed: still equal", what)
		}
	}
	if resource.Equal(a, msg) {
		t.Errorf("a %T equals a decoded message", a)
	}
}

// checkDecodeBytes checks that DecodeBytes of msg as a resource of typeURL gives the
// kept form of the pruned message, named like it, equal to AsStored of msg. release,
// when set, is done and Message checked again.
func checkDecodeBytes[M proto.Message, K keptForm[M, K]](t *testing.T, typeURL string, msg M, name func(K) string) *resource.Decoded {
	t.Helper()
	d, err := resource.DecodeBytes(typeURL, marshal(t, msg), "", clientOpts)
	if err != nil {
		t.Fatal(err)
	}
	r, ok := d.Msg.(K)
	if !ok {
		t.Fatalf("Msg is a %T, want a %T", d.Msg, r)
	}
	want := proto.Clone(msg)
	resource.Prune(want)
	msgName := msg.ProtoReflect().Get(msg.ProtoReflect().Descriptor().Fields().ByName("name")).String()
	if d.Name != msgName || name(r) != msgName {
		t.Errorf("name %q / %q, want %q", d.Name, name(r), msgName)
	}
	m, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, want) {
		t.Errorf("Message differs from the pruned message")
	}
	if !r.Equal(resource.AsStored(msg).(K)) {
		t.Error("not equal to AsStored of the same message")
	}
	return d
}

// checkConcurrentMessage calls r.Message from 4 goroutines, 50 times each, and checks
// every result equals want; each(i, m) runs after the i-th call of each goroutine.
func checkConcurrentMessage[M proto.Message, K keptForm[M, K]](t *testing.T, r K, want M, each func(i int, m M)) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 4 {
		wg.Go(func() {
			for i := range 50 {
				m, err := r.Message()
				if err != nil {
					errs <- err
					return
				}
				if !proto.Equal(m, want) {
					errs <- fmt.Errorf("message %d differs", i)
					return
				}
				each(i, m)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
