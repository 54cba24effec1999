package agent

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/translate"
)

// fullWith is a from-scratch translation of the mesh's current state with set.
func fullWith(m *meshgen.Mesh, set overlay.Set) map[string]string {
	tr := translate.New(translate.Options{})
	tr.SetPlugins(set)
	return stringMap(tr.Translate(m.Snapshot()).Changes.Put)
}

// hostSet is a set with one config that puts plugin on the routes of host.
func hostSet(version uint64, host, plugin string) overlay.Set {
	return overlay.Set{Version: version, Configs: []overlay.Config{{Namespace: "ns", Name: "c", Generation: int64(version),
		Scope:   overlay.Scope{Hosts: []string{host}},
		Plugins: []overlay.Plugin{{Name: plugin, Config: json.RawMessage(`{}`)}}}}}
}

const (
	host0 = "svc-00000.default.svc.cluster.local"
	host1 = "svc-00001.ns-1.svc.cluster.local"
)

// withPlugin returns the keys of the routes that carry plugin.
func withPlugin(objs map[string]string, plugin string) map[string]bool {
	out := map[string]bool{}
	for k, v := range objs {
		if strings.HasPrefix(k, "/routes/") && strings.Contains(v, `"`+plugin+`":`) {
			out[k] = true
		}
	}
	return out
}

// The plugin input is a second input: a set published before the first update is in
// the first write; a new set is translated and written without any xDS change, and
// the write holds only the routes whose plugins changed; an unchanged set writes
// nothing.
func TestPluginSetIsTranslatedAndWritten(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 4})
	feed := &overlay.Latest{}
	feed.Publish(hostSet(1, host0, "cors"))
	r := startReal(t, feed)

	// Nothing is translated before the first update, whatever the set does.
	feed.Publish(hostSet(2, host0, "gzip"))
	select {
	case seq := <-r.translated:
		t.Fatalf("translated %d before any update", seq)
	case <-time.After(50 * time.Millisecond):
	}
	r.push(t, m.Snapshot())
	first := r.flush(t, r.clock.timer(t))
	if diff := cmp.Diff(fullWith(m, hostSet(2, host0, "gzip")), first.puts); diff != "" {
		t.Fatalf("first write (-want +got):\n%s", diff)
	}
	if len(withPlugin(first.puts, "gzip")) == 0 {
		t.Fatal("no route of the set's host; the test checks nothing")
	}

	before := stringMap(r.sink.Objects())
	set := hostSet(3, host1, "gzip")
	feed.Publish(set)
	r.waitTranslated(t, m.Snapshot())
	got := r.flush(t, r.clock.timer(t))
	want := fullWith(m, set)
	if diff := cmp.Diff(want, stringMap(r.sink.Objects())); diff != "" {
		t.Fatalf("after a new set (-want +got):\n%s", diff)
	}
	changed := withPlugin(before, "gzip")
	for k := range withPlugin(want, "gzip") {
		changed[k] = true
	}
	if len(got.puts) != len(changed) || len(got.deletes) != 0 {
		t.Errorf("the new set wrote %d keys and deleted %v, want the %d routes of the two hosts", len(got.puts), got.deletes, len(changed))
	}
	for k := range got.puts {
		if !changed[k] {
			t.Errorf("%s written, but its plugins did not change", k)
		}
	}

	// The same configs in a newer set: translated, nothing written.
	unchanged := r.agent.Stats().Unchanged
	same := set
	same.Version = 4
	feed.Publish(same)
	r.waitTranslated(t, m.Snapshot())
	r.flushNothing(t, "an unchanged set", unchanged)
}

// A translation that panics, whether a new set or an update triggered it, is
// recovered like any other: the new translator gets the current set, and the next
// write brings the sink to a from-scratch translation with it.
func TestPluginSetSurvivesTranslatorPanic(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 4})
	feed := &overlay.Latest{}
	feed.Publish(hostSet(1, host0, "cors"))
	r := startReal(t, feed)
	r.push(t, m.Snapshot())
	r.flush(t, r.clock.timer(t))

	// A new set whose translation panics: nothing is written until the next input.
	set := hostSet(2, host1, "gzip")
	r.panicNext.Store(true)
	feed.Publish(set)
	r.waitTranslated(t, m.Snapshot())
	waitFor(t, "the panic to be recorded", func() bool { return r.agent.Stats().Panics == 1 })

	// An update: the new translator translates it with the current set.
	r.push(t, m.ChangeEndpoint(3))
	r.flush(t, r.clock.timer(t))
	if diff := cmp.Diff(fullWith(m, set), stringMap(r.sink.Objects())); diff != "" {
		t.Fatalf("after a panic on a new set (-want +got):\n%s", diff)
	}

	// An update whose translation panics: the next write still has the set's plugins.
	lost := m.ChangeEndpoint(5)
	r.panicNext.Store(true)
	r.push(t, lost)
	waitFor(t, "the panic to be recorded", func() bool { return r.agent.Stats().Panics == 2 })
	set = hostSet(3, host0, "gzip")
	feed.Publish(set)
	r.waitTranslated(t, lost)
	r.flush(t, r.clock.timer(t))
	if diff := cmp.Diff(fullWith(m, set), stringMap(r.sink.Objects())); diff != "" {
		t.Fatalf("after a panic on an update (-want +got):\n%s", diff)
	}
	if len(withPlugin(stringMap(r.sink.Objects()), "gzip")) == 0 {
		t.Fatal("no route carries the set's plugin; the test checks nothing")
	}
	if n := r.built.Load(); n != 3 {
		t.Errorf("%d translators built, want 3 (one replaced after each panic)", n)
	}
}
