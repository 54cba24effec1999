package agent

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// panicking is a real translator that panics, on the snapshots in at (or on the next
// translation when next is set), after it has taken the snapshot in: its state has
// moved on, and the changes are lost. Every translation is announced on translated
// (meshgen's snapshots share the mesh's maps, so the test changes the mesh only once
// the agent is done with a snapshot).
type panicking struct {
	tr         *translate.Translator
	at         map[uint64]bool
	next       *atomic.Bool
	translated chan<- uint64
}

func (p *panicking) SetPlugins(set overlay.Set) { p.tr.SetPlugins(set) }

func (p *panicking) SetIdentity(st identity.State) { p.tr.SetIdentity(st) }
func (p *panicking) SetJWKS(set jwks.Set)          { p.tr.SetJWKS(set) }

func (p *panicking) Translate(s *resource.State) translate.Result {
	defer func() { p.translated <- s.Seq }()
	r := p.tr.Translate(s)
	if p.at[s.Seq] || p.next.CompareAndSwap(true, false) {
		panic(fmt.Sprintf("injected at %d", s.Seq))
	}
	return r
}

// realHarness runs the agent with real translators, which panic on the snapshots
// in at.
type realHarness struct {
	*harness
	at         map[uint64]bool
	panicNext  atomic.Bool
	translated chan uint64
	built      atomic.Int32
}

// startReal starts the agent with real translators and the plugin input plugins
// (none: no plugin input).
func startReal(t *testing.T, plugins ...Plugins) *realHarness {
	t.Helper()
	var inputs []func(*Options)
	for _, p := range plugins {
		inputs = append(inputs, func(o *Options) { o.Plugins = p })
	}
	return startRealWith(t, inputs...)
}

// startRealWith starts the agent with real translators and the given inputs.
func startRealWith(t *testing.T, inputs ...func(*Options)) *realHarness {
	t.Helper()
	r := &realHarness{at: map[uint64]bool{}, translated: make(chan uint64, 16)}
	r.harness = startWith(t, func() Translator {
		r.built.Add(1)
		return &panicking{tr: translate.New(translate.Options{}), at: r.at, next: &r.panicNext, translated: r.translated}
	}, inputs...)
	return r
}

// push hands snap to the agent and waits until it is translated.
func (r *realHarness) push(t *testing.T, snap *resource.State) {
	t.Helper()
	r.src.pushSnap(t, snap)
	r.waitTranslated(t, snap)
}

// waitTranslated waits until the agent has translated snap.
func (r *realHarness) waitTranslated(t *testing.T, snap *resource.State) {
	t.Helper()
	select {
	case seq := <-r.translated:
		if seq != snap.Seq {
			t.Fatalf("translated %d, want %d", seq, snap.Seq)
		}
	case <-time.After(long):
		t.Fatal("snapshot not translated")
	}
}

// flush fires the window timer the first pushed snapshot of a batch started and
// returns the Apply call.
func (r *realHarness) flush(t *testing.T, tm fakeTimer) applied {
	t.Helper()
	tm.fire()
	return r.sink.next(t)
}

// flushNothing fires the window timer of a batch that changes nothing APISIX sees,
// waits until it is flushed and checks that nothing was written; unchanged is
// Stats().Unchanged before the batch.
func (r *realHarness) flushNothing(t *testing.T, what string, unchanged uint64) {
	t.Helper()
	tm := r.clock.timer(t)
	tm.fire()
	waitFor(t, what+": the batch to be flushed", func() bool { return r.agent.Stats().Unchanged > unchanged })
	select {
	case a := <-r.sink.calls:
		t.Fatalf("%s wrote %d puts, %d deletes", what, len(a.puts), len(a.deletes))
	default:
	}
}

// full is a from-scratch translation of the mesh's current state.
func full(m *meshgen.Mesh) map[string]string {
	return stringMap(translate.New(translate.Options{}).Translate(m.Snapshot()).Changes.Put)
}

// referenced returns the index (for ChangeEndpoint) of an EDS cluster that routes
// use: its endpoints are in the output.
func referenced(t *testing.T, m *meshgen.Mesh, out map[string]string) int {
	t.Helper()
	for i, name := range m.EDSClusters() {
		for k, v := range out {
			if strings.HasPrefix(k, "/upstreams/") && strings.Contains(v, `"name":"`+name+`"`) {
				return i
			}
		}
	}
	t.Fatal("no route uses an EDS cluster")
	return 0
}

// After a translation that panicked half-way (its translator's state moved on, its
// changes lost), the agent replaces the translator: the next batch brings the sink to
// the output of a from-scratch translation, the lost change included, writing only
// what differs from what the sink holds; an unchanged resend then writes nothing.
func TestTranslatorPanicMidTranslationResyncs(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	r := startReal(t)
	r.push(t, m.Snapshot())
	r.flush(t, r.clock.timer(t))
	before := full(m)

	lost := m.ChangeEndpoint(referenced(t, m, before))
	r.at[lost.Seq] = true
	r.push(t, lost) // panics: no window timer is started, nothing is written
	waitFor(t, "the panic to be recorded", func() bool { return r.agent.Stats().Panics == 1 })
	lostKeys := map[string]bool{}
	for k, v := range full(m) {
		if before[k] != v {
			lostKeys[k] = true
		}
	}
	if len(lostKeys) == 0 {
		t.Fatal("the endpoint change changes no object; the test checks nothing")
	}

	r.push(t, m.ChangeEndpoint(9))
	got := r.flush(t, r.clock.timer(t))
	for k := range lostKeys {
		if _, ok := got.puts[k]; !ok {
			t.Errorf("the change of %s lost in the panic is not written", k)
		}
	}
	for k, v := range got.puts {
		if before[k] == v {
			t.Errorf("%s is written again with the value the sink holds", k)
		}
	}
	for _, k := range got.deletes {
		if _, ok := before[k]; !ok {
			t.Errorf("%s is deleted but the sink does not hold it", k)
		}
	}
	want := full(m)
	if diff := cmp.Diff(want, stringMap(r.sink.Objects())); diff != "" {
		t.Fatalf("after a panic, the sink differs from a full translation (-want +got):\n%s", diff)
	}
	if n := r.built.Load(); n != 2 {
		t.Errorf("%d translators built, want 2 (one replaced after the panic)", n)
	}

	unchanged := r.agent.Stats().Unchanged
	r.push(t, m.Resend())
	r.flushNothing(t, "unchanged resend after recovery", unchanged)
}

// A first translation that panics has written nothing: the next batch writes the
// complete output of a from-scratch translation.
func TestTranslatorPanicInFirstTranslation(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 5})
	r := startReal(t)
	first := m.Snapshot()
	r.at[first.Seq] = true
	r.push(t, first)
	waitFor(t, "the panic to be recorded", func() bool { return r.agent.Stats().Panics == 1 })
	r.push(t, m.Resend())
	got := r.flush(t, r.clock.timer(t))
	if len(got.deletes) != 0 {
		t.Errorf("deletes %q after a panicked first translation", got.deletes)
	}
	if diff := cmp.Diff(full(m), got.puts); diff != "" {
		t.Fatalf("after a panicked first translation, the first write is not the complete output (-want +got):\n%s", diff)
	}
}
