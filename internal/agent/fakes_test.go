package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

const long = 10 * time.Second // deadline for things that must happen

// fakeSource hands out the snapshots the test pushes. Next announces on waiting that
// it is about to block, so that the test knows every earlier snapshot was taken.
type fakeSource struct {
	ch      chan *resource.Update
	waiting chan struct{}
	held    bool // the test holds a waiting token it has not used yet
	seq     uint64
	err     chan error
}

func newFakeSource() *fakeSource {
	return &fakeSource{ch: make(chan *resource.Update), waiting: make(chan struct{}), err: make(chan error, 1)}
}

func (s *fakeSource) Next(ctx context.Context) (*resource.Update, error) {
	select {
	case s.waiting <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case snap := <-s.ch:
		return snap, nil
	case err := <-s.err:
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// settle waits until the pipeline has taken every pushed snapshot off the source.
func (s *fakeSource) settle(t *testing.T) {
	t.Helper()
	if s.held {
		return
	}
	select {
	case <-s.waiting:
		s.held = true
	case <-time.After(long):
		t.Fatal("source: Next was not called again")
	}
}

// push hands the next snapshot (numbered in order) to the pipeline.
func (s *fakeSource) push(t *testing.T) uint64 {
	t.Helper()
	s.seq++
	s.pushSnap(t, &resource.State{Seq: s.seq})
	return s.seq
}

// pushSnap hands the pipeline the update that brings it to snap.
func (s *fakeSource) pushSnap(t *testing.T, snap *resource.State) {
	t.Helper()
	s.settle(t)
	s.held = false
	select {
	case s.ch <- meshgen.UpdateOf(snap):
	case <-time.After(long):
		t.Fatal("source: snapshot not taken")
	}
}

// fakeTranslator returns, for snapshot n, the objects the test set for n, as a diff
// against its previous output. A fakeScript, shared by every fakeTranslator of a
// test (the agent builds a new one after a panic), says what each snapshot gives.
type fakeTranslator struct {
	s       *fakeScript
	objects map[string][]byte
}

// fakeScript: touch lists keys reported as changed although their value is the same
// (istiod resends identical resources); panics, the snapshots whose translation
// panics.
type fakeScript struct {
	mu     sync.Mutex
	states map[uint64]map[string][]byte
	touch  map[uint64][]string
	panics map[uint64]bool
	delay  time.Duration // how long each translation takes
	built  int           // translators made
}

func newFakeScript() *fakeScript {
	return &fakeScript{states: map[uint64]map[string][]byte{}, touch: map[uint64][]string{}, panics: map[uint64]bool{}}
}

// newTranslator is the agent's factory of translators.
func (s *fakeScript) newTranslator() Translator {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.built++
	return &fakeTranslator{s: s, objects: map[string][]byte{}}
}

func (s *fakeScript) set(seq uint64, objs map[string]string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := map[string][]byte{}
	for k, v := range objs {
		m[k] = []byte(v)
	}
	s.states[seq] = m
}

// SetPlugins ignores the set: what a script's snapshots give is set by the test.
func (f *fakeTranslator) SetPlugins(overlay.Set) {}

// SetIdentity ignores the identity, for the same reason.
func (f *fakeTranslator) SetIdentity(identity.State) {}

// SetJWKS ignores the fetched keys, for the same reason.
func (f *fakeTranslator) SetJWKS(jwks.Set) {}

func (f *fakeTranslator) Translate(snap *resource.State) translate.Result {
	s := f.s
	s.mu.Lock()
	defer s.mu.Unlock()
	time.Sleep(s.delay) // a translation that takes time (zero: none)
	if s.panics[snap.Seq] {
		// Leave the output half-updated, as a real panic might.
		f.objects["/routes/garbage"] = []byte(`{"half":true}`)
		panic(fmt.Sprintf("translator bug at %d", snap.Seq))
	}
	next, ok := s.states[snap.Seq]
	if !ok {
		next = f.objects // unchanged
	}
	cs := apisix.Diff(f.objects, next)
	for _, k := range s.touch[snap.Seq] {
		cs.Put[k] = next[k]
	}
	prior := translate.PriorOf(f.objects, cs)
	f.objects = maps.Clone(next)
	return translate.Result{Changes: cs, Prior: prior, Report: []report.Entry{{Kind: "listener", Resource: fmt.Sprint(snap.Seq)}}}
}

// applied is one Apply call as the fake sink saw it.
type applied struct {
	puts    map[string]string
	deletes []string
	err     error
}

// fakeSink records Apply calls; fail makes the next calls fail (or panic). It holds
// the objects of its successful Applies (Reader).
type fakeSink struct {
	calls   chan applied
	mu      sync.Mutex
	fail    []string // per upcoming call: "" ok, "err", "panic"
	objects map[string][]byte
}

func newFakeSink() *fakeSink {
	return &fakeSink{calls: make(chan applied, 100), objects: map[string][]byte{}}
}

func (s *fakeSink) Objects() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.objects)
}

func (s *fakeSink) failNext(modes ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = append(s.fail, modes...)
}

func (s *fakeSink) Apply(_ context.Context, cs apisix.ChangeSet) error {
	s.mu.Lock()
	mode := ""
	if len(s.fail) > 0 {
		mode, s.fail = s.fail[0], s.fail[1:]
	}
	s.mu.Unlock()
	a := applied{puts: map[string]string{}, deletes: append([]string(nil), cs.Delete...)}
	for k, v := range cs.Put {
		a.puts[k] = string(v)
	}
	switch mode {
	case "err":
		a.err = errors.New("no memory")
	case "panic":
		s.calls <- applied{puts: a.puts, deletes: a.deletes, err: errors.New("panic")}
		panic("sink bug")
	}
	if a.err == nil {
		s.mu.Lock()
		cs.ApplyTo(s.objects)
		s.mu.Unlock()
	}
	s.calls <- a
	return a.err
}

// next returns the next Apply call.
func (s *fakeSink) next(t *testing.T) applied {
	t.Helper()
	select {
	case a := <-s.calls:
		return a
	case <-time.After(long):
		t.Fatal("no Apply call")
	}
	return applied{}
}

// fakeClock replaces time.After: every timer the agent starts is sent to the test,
// which fires it when it wants.
type fakeClock struct{ timers chan fakeTimer }

type fakeTimer struct {
	d  time.Duration
	ch chan time.Time
}

func (f *fakeTimer) fire() { f.ch <- time.Time{} }

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	t := fakeTimer{d: d, ch: make(chan time.Time, 1)}
	c.timers <- t
	return t.ch
}

// timer returns the next timer the agent starts.
func (c *fakeClock) timer(t *testing.T) fakeTimer {
	t.Helper()
	select {
	case tm := <-c.timers:
		return tm
	case <-time.After(long):
		t.Fatal("no timer started")
	}
	return fakeTimer{}
}

// harness runs an Agent with fakes.
type harness struct {
	src   *fakeSource
	tr    *fakeScript
	sink  *fakeSink
	clock *fakeClock
	agent *Agent
	done  chan error
	stop  context.CancelFunc
}

func start(t *testing.T) *harness {
	t.Helper()
	tr := newFakeScript()
	h := startWith(t, tr.newTranslator)
	h.tr = tr
	return h
}

// startWith runs an Agent with the fakes but for its translators, which newTr makes,
// and the inputs, which set further Options (Plugins, Identity).
func startWith(t *testing.T, newTr func() Translator, inputs ...func(*Options)) *harness {
	t.Helper()
	h := &harness{src: newFakeSource(), sink: newFakeSink(),
		clock: &fakeClock{timers: make(chan fakeTimer)}, done: make(chan error, 1)}
	opts := Options{Window: 50 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), After: h.clock.after}
	for _, in := range inputs {
		in(&opts)
	}
	h.agent = New(h.src, newTr, h.sink, opts)
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { h.done <- h.agent.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		// Let a timer the agent may be starting go through.
		for {
			select {
			case <-h.clock.timers:
				continue
			case err := <-h.done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v, want context.Canceled", err)
				}
				return
			case <-time.After(long):
				t.Error("Run did not return after cancel")
				return
			}
		}
	})
	return h
}

// batch pushes snapshots with the given states, fires the window timer and waits
// until the agent has flushed (applied, skipped or failed) the batch, so that the
// next snapshot starts a new window.
func (h *harness) batch(t *testing.T, states ...map[string]string) {
	t.Helper()
	var tm fakeTimer
	for i, st := range states {
		h.tr.set(h.src.seq+1, st)
		h.src.push(t)
		if i == 0 {
			tm = h.clock.timer(t)
		}
	}
	h.src.settle(t)
	flushes := func() uint64 { s := h.agent.Stats(); return s.Batches + s.Unchanged + s.WriteErrors }
	before := flushes()
	tm.fire()
	waitFor(t, "the batch to be flushed", func() bool { return flushes() > before })
}
