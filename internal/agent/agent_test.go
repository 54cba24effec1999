package agent

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/amesh-dev/amesh/internal/apisix"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestFirstBatchAppliedEvenIfEmpty(t *testing.T) {
	h := start(t)
	if h.agent.Ready() {
		t.Fatal("ready before any batch")
	}
	h.batch(t, map[string]string{})
	a := h.sink.next(t)
	if len(a.puts) != 0 || len(a.deletes) != 0 {
		t.Errorf("first batch = %+v, want empty", a)
	}
	select {
	case <-h.agent.ReadyC():
	case <-time.After(long):
		t.Fatal("not ready after the first batch")
	}
	if s := h.agent.Stats(); s.Batches != 1 || !s.Ready || s.Seq != 1 {
		t.Errorf("stats = %+v", s)
	}
}

// The window counts from the arrival of the batch's first snapshot: the time spent
// translating it is not added to the update's latency.
func TestWindowCountsFromArrival(t *testing.T) {
	h := start(t)
	h.tr.mu.Lock()
	h.tr.delay = 30 * time.Millisecond // of the harness's 50ms window
	h.tr.mu.Unlock()
	h.tr.set(h.src.seq+1, map[string]string{"/routes/a": "1"})
	h.src.push(t)
	tm := h.clock.timer(t)
	if tm.d > 20*time.Millisecond {
		t.Errorf("window timer %v after a 30ms translation, want at most the 20ms left of the 50ms window", tm.d)
	}
	tm.fire()
	h.sink.next(t)
}

func TestCoalescesSnapshotsOfAWindow(t *testing.T) {
	h := start(t)
	h.batch(t,
		map[string]string{"/routes/a": "1"},
		map[string]string{"/routes/a": "2", "/upstreams/b": "1"},
		map[string]string{"/routes/a": "2", "/upstreams/b": "1", "/routes/c": "1"},
	)
	got := h.sink.next(t)
	want := map[string]string{"/routes/a": "2", "/upstreams/b": "1", "/routes/c": "1"}
	if diff := cmp.Diff(want, got.puts); diff != "" {
		t.Errorf("one Apply for the window (-want +got):\n%s", diff)
	}
	s := h.agent.Stats()
	if s.Batches != 1 || s.KeysPut != 3 || s.Seq != 3 {
		t.Errorf("stats = %+v, want 1 batch of 3 keys up to seq 3", s)
	}
	if s.ObjectsByKind["routes"] != 2 || s.ObjectsByKind["upstreams"] != 1 {
		t.Errorf("objects by kind = %v", s.ObjectsByKind)
	}
	if s.PushToWrite.Count != 1 {
		t.Errorf("latency observations = %d, want 1", s.PushToWrite.Count)
	}
	if r := h.agent.Report(); len(r) != 1 || r[0].Resource != "3" {
		t.Errorf("report = %+v, want the newest snapshot's", r)
	}
}

func TestNoApplyWhenNothingVisibleChanged(t *testing.T) {
	h := start(t)
	st := map[string]string{"/routes/a": "1", "/upstreams/u": "1"}
	h.batch(t, st)
	h.sink.next(t)

	// An identical resend: the translator even claims /routes/a changed.
	h.tr.touch[h.src.seq+1] = []string{"/routes/a"}
	h.batch(t, st)
	// A change that goes away again within one window.
	h.batch(t, map[string]string{"/routes/a": "2", "/upstreams/u": "1"}, st)
	// A key deleted and put back, and a new key put and deleted again, within one
	// window.
	h.batch(t, map[string]string{"/upstreams/u": "1"}, map[string]string{"/upstreams/u": "1", "/routes/n": "1"}, st)
	// A real change: the next Apply must be this one.
	h.batch(t, map[string]string{"/routes/a": "1", "/upstreams/u": "2"})
	got := h.sink.next(t)
	if diff := cmp.Diff(map[string]string{"/upstreams/u": "2"}, got.puts); diff != "" || len(got.deletes) != 0 {
		t.Errorf("Apply after no-op batches: deletes %q, puts (-want +got):\n%s", got.deletes, diff)
	}
	if s := h.agent.Stats(); s.Batches != 2 {
		t.Errorf("batches = %d, want 2 (no-op batches are not applied)", s.Batches)
	}
	// A delete is written and counted; the object count follows.
	h.batch(t, map[string]string{"/upstreams/u": "2"})
	if got := h.sink.next(t); len(got.puts) != 0 || !cmp.Equal(got.deletes, []string{"/routes/a"}) {
		t.Errorf("Apply of a delete = %+v, want /routes/a deleted only", got)
	}
	if s := h.agent.Stats(); s.ObjectsByKind["routes"] != 0 || s.ObjectsByKind["upstreams"] != 1 {
		t.Errorf("objects by kind after the delete = %v, want 0 routes, 1 upstream", s.ObjectsByKind)
	}
}

func TestRetryKeepsBatchAndMergesLaterChanges(t *testing.T) {
	h := start(t)
	h.sink.failNext("err", "panic")
	h.batch(t, map[string]string{"/routes/a": "1"})
	if a := h.sink.next(t); a.err == nil || a.puts["/routes/a"] != "1" {
		t.Fatalf("first attempt = %+v, want a failed write of /routes/a", a)
	}
	retry := h.clock.timer(t)
	if retry.d != 100*time.Millisecond {
		t.Errorf("first retry after %v, want the initial backoff 100ms", retry.d)
	}
	if got := h.agent.Objects(); len(got) != 0 {
		t.Errorf("objects after a failed write = %v, want none marked written", got)
	}
	s := h.agent.Stats()
	if s.WriteErrors != 1 || s.LastError == "" || s.Ready {
		t.Errorf("stats after failure = %+v", s)
	}

	// A snapshot arriving during the backoff joins the batch.
	h.tr.set(h.src.seq+1, map[string]string{"/routes/a": "1", "/upstreams/b": "1"})
	h.src.push(t)
	h.src.settle(t)
	retry.fire()
	if a := h.sink.next(t); a.err == nil {
		t.Fatalf("second attempt should have panicked: %+v", a)
	}
	retry = h.clock.timer(t)
	if retry.d != 200*time.Millisecond {
		t.Errorf("second retry after %v, want 200ms", retry.d)
	}
	retry.fire()
	got := h.sink.next(t)
	want := map[string]string{"/routes/a": "1", "/upstreams/b": "1"}
	if got.err != nil || !cmp.Equal(want, got.puts) {
		t.Errorf("third attempt = %+v, want success with %v", got, want)
	}
	waitFor(t, "the batch to be committed", func() bool { return h.agent.Ready() })
	s = h.agent.Stats()
	if s.WriteErrors != 2 || s.Panics != 1 || s.Batches != 1 || !s.Ready {
		t.Errorf("stats = %+v, want 2 write errors (1 panic), 1 batch", s)
	}
	if diff := cmp.Diff(want, stringMap(h.agent.Objects())); diff != "" {
		t.Errorf("objects (-want +got):\n%s", diff)
	}
}

func TestTranslatorPanicKeepsLastGoodState(t *testing.T) {
	h := start(t)
	h.batch(t, map[string]string{"/routes/a": "1", "/routes/b": "1"})
	h.sink.next(t)

	h.tr.panics[h.src.seq+1] = true
	h.tr.set(h.src.seq+1, map[string]string{})
	h.src.push(t) // panics: no window timer is started, nothing is written
	waitFor(t, "the panic to be recorded", func() bool { return h.agent.Stats().Panics == 1 })
	if s := h.agent.Stats(); s.LastError == "" || s.Batches != 1 {
		t.Fatalf("stats after translator panic = %+v", s)
	}

	// The translator is replaced: the next good snapshot's batch is what turns the
	// sink's state into the new translator's output, without what the panic left
	// half-updated.
	h.batch(t, map[string]string{"/routes/a": "1", "/routes/c": "1"})
	got := h.sink.next(t)
	if diff := cmp.Diff(map[string]string{"/routes/c": "1"}, got.puts); diff != "" {
		t.Errorf("puts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/routes/b"}, got.deletes); diff != "" {
		t.Errorf("deletes (-want +got):\n%s", diff)
	}
	if h.tr.built != 2 {
		t.Errorf("%d translators built, want 2 (one replaced after the panic)", h.tr.built)
	}
}

// Against a sink that cannot read its values back, the batch after a replaced
// translator writes every key of the new output again and deletes what the sink
// holds beyond it; with the values' digests, it writes only what differs.
func TestBatchReplace(t *testing.T) {
	out := map[string][]byte{"/routes/a": []byte("1"), "/routes/c": []byte("1")}
	held := map[string]uint64{"/routes/a": apisix.Hash([]byte("1")), "/routes/b": apisix.Hash([]byte("1"))}
	for _, c := range []struct {
		known bool
		puts  []string
	}{{true, []string{"/routes/c"}}, {false, []string{"/routes/a", "/routes/c"}}} {
		b := batch{resync: true}
		b.replace(out, held, c.known)
		cs, kinds := b.changes()
		if b.resync || !cmp.Equal(slices.Sorted(maps.Keys(cs.Put)), c.puts) || !cmp.Equal(cs.Delete, []string{"/routes/b"}) {
			t.Errorf("known %v: puts %v, deletes %v; want puts %v, deletes [/routes/b]", c.known, slices.Sorted(maps.Keys(cs.Put)), cs.Delete, c.puts)
		}
		if kinds[apisix.KindRoutes] != 0 {
			t.Errorf("known %v: routes count changes by %d, want 0 (one added, one deleted)", c.known, kinds[apisix.KindRoutes])
		}
	}
}

func TestBatchesApplyInOrder(t *testing.T) {
	h := start(t)
	h.batch(t, map[string]string{"/routes/x": "1", "/upstreams/u": "1"})
	h.sink.next(t)
	h.batch(t, map[string]string{"/routes/x": "2", "/upstreams/u": "1"})
	if a := h.sink.next(t); a.puts["/routes/x"] != "2" {
		t.Errorf("second batch = %+v", a)
	}
	h.batch(t, map[string]string{"/routes/y": "1", "/upstreams/v": "1"})
	a := h.sink.next(t)
	if diff := cmp.Diff(map[string]string{"/routes/y": "1", "/upstreams/v": "1"}, a.puts); diff != "" {
		t.Errorf("puts (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/routes/x", "/upstreams/u"}, a.deletes); diff != "" {
		t.Errorf("deletes (-want +got):\n%s", diff)
	}
	s := h.agent.Stats()
	if s.Batches != 3 || s.KeysDeleted != 2 || s.ObjectsByKind["routes"] != 1 || s.ObjectsByKind["upstreams"] != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestSourceErrorIsRetried(t *testing.T) {
	h := start(t)
	h.src.settle(t)
	h.src.held = false
	h.src.err <- errBoom
	tm := h.clock.timer(t)
	if tm.d != 100*time.Millisecond {
		t.Errorf("source retry after %v", tm.d)
	}
	tm.fire()
	h.batch(t, map[string]string{"/routes/a": "1"})
	if a := h.sink.next(t); a.puts["/routes/a"] != "1" {
		t.Errorf("after source error: %+v", a)
	}
	if s := h.agent.Stats(); s.LastError != "source: boom" {
		t.Errorf("last error = %q, want the source error", s.LastError)
	}
}

func TestBackoff(t *testing.T) {
	for _, c := range []struct {
		attempt int
		want    time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {10, time.Second}, {100, time.Second}} {
		if got := retryWait(100*time.Millisecond, time.Second, c.attempt); got != c.want {
			t.Errorf("retryWait(%d) = %v, want %v", c.attempt, got, c.want)
		}
	}
}

func TestLatencyBuckets(t *testing.T) {
	h := newLatency()
	for _, d := range []time.Duration{time.Millisecond, 30 * time.Millisecond, 50 * time.Millisecond, time.Minute} {
		observe(&h, d)
	}
	want := make([]uint64, len(latencyBounds))
	want[0], want[3] = 1, 2 // 1ms <= 5ms; 30ms and 50ms <= 50ms; 1m only in Count
	if diff := cmp.Diff(want, h.Counts); diff != "" || h.Count != 4 {
		t.Errorf("counts (-want +got):\n%s count=%d", diff, h.Count)
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(long)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

var errBoom = errorString("boom")

type errorString string

func (e errorString) Error() string { return string(e) }

func stringMap(m map[string][]byte) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

// A sink that cannot read back its objects still lets Objects list the applied keys.
func TestObjectsWithoutReaderListsKeys(t *testing.T) {
	a := New(newFakeSource(), newFakeScript().newTranslator, plainSink{}, Options{})
	a.commit(apisix.ChangeSet{Put: map[string][]byte{"/routes/a": []byte("1")}}, map[apisix.Kind]int{apisix.KindRoutes: 1}, 1, 0)
	got := a.Objects()
	if v, ok := got["/routes/a"]; len(got) != 1 || !ok || v != nil {
		t.Errorf("Objects = %q, want /routes/a with no value", got)
	}
}

type plainSink struct{}

func (plainSink) Apply(context.Context, apisix.ChangeSet) error { return nil }
