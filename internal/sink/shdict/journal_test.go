package shdict

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func (f *fixture) entry(t *testing.T, v uint64) (string, bool) {
	t.Helper()
	e, ok := f.version.m[JournalPrefix+strconv.FormatUint(v, 10)]
	return e, ok
}

func TestJournalListsEachBatchsKeys(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "1", "/upstreams/a": "1"})); err != nil {
		t.Fatal(err)
	}
	v1 := f.versionValue(t)
	if e, _ := f.entry(t, v1); e != "*" {
		t.Errorf("first entry %q, want * (the dict was replaced)", e)
	}
	for _, k := range []string{"/routes", "/upstreams", "/services", "/stream_routes"} {
		if got := f.version.m[KindVersionPrefix+k]; got != strconv.FormatUint(v1, 10) {
			t.Errorf("kind version of %s = %q after the first batch, want %d", k, got, v1)
		}
	}
	if err := f.sink.Apply(ctx, changes(map[string]string{"/upstreams/b": "2"}, "/upstreams/a")); err != nil {
		t.Fatal(err)
	}
	if e, _ := f.entry(t, v1+1); e != "/upstreams/a\n/upstreams/b" {
		t.Errorf("entry %q, want the two upstream keys", e)
	}
	if got, want := f.version.m[KindVersionPrefix+"/routes"], strconv.FormatUint(v1, 10); got != want {
		t.Errorf("routes' kind version %s after an upstream-only batch, want %s (unchanged)", got, want)
	}
	if got, want := f.version.m[KindVersionPrefix+"/upstreams"], strconv.FormatUint(v1+1, 10); got != want {
		t.Errorf("upstreams' kind version %s, want %s", got, want)
	}
}

// Keys a failed attempt wrote are in the dict although no version showed them: the
// next entry lists them even when the successful batch does not contain them.
func TestJournalKeepsKeysOfFailedAttempts(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "1"})); err != nil {
		t.Fatal(err)
	}
	v1 := f.versionValue(t)
	f.config.cap = f.config.used() + 40
	err := f.sink.Apply(ctx, changes(map[string]string{"/upstreams/x": "1", "/routes/big": strings.Repeat("x", 100)}))
	if !ErrNoMemory(err) {
		t.Fatalf("Apply = %v, want no memory", err)
	}
	if _, ok := f.config.m["/upstreams/x"]; !ok {
		t.Fatal("the failed attempt wrote nothing before failing; the test needs a partial write")
	}
	f.config.cap = 1 << 20
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/c": "1"})); err != nil {
		t.Fatal(err)
	}
	if e, _ := f.entry(t, v1+1); e != "/routes/big\n/routes/c\n/upstreams/x" {
		t.Errorf("entry %q, want the failed attempt's keys too", e)
	}
}

func TestJournalLargeBatchByKind(t *testing.T) {
	f := newFixture()
	f.version.cap = 64 << 10
	f.sink = newSink(f.config, f.version, func() time.Time { return f.clock })
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(nil)); err != nil {
		t.Fatal(err)
	}
	v1 := f.versionValue(t)
	put := map[string]string{"/plugin_configs/p": "1"}
	for i := range 200 { // 200 keys of ~16 bytes: over a sixteenth of a 16 KiB budget
		put[fmt.Sprintf("/routes/r%04d", i)] = "1"
	}
	if err := f.sink.Apply(ctx, changes(put)); err != nil {
		t.Fatal(err)
	}
	if e, _ := f.entry(t, v1+1); e != "*/plugin_configs\n*/routes" {
		t.Errorf("entry %q, want the two kinds", e)
	}
}

func TestJournalTrimmedToBudgetAndCount(t *testing.T) {
	f := newFixture()
	f.version.cap = 16 << 10 // budget 4 KiB
	f.sink = newSink(f.config, f.version, func() time.Time { return f.clock })
	ctx := context.Background()
	for i := range 300 {
		if err := f.sink.Apply(ctx, changes(map[string]string{fmt.Sprintf("/upstreams/u%d", i%7): strconv.Itoa(i)})); err != nil {
			t.Fatal(err)
		}
	}
	cur := f.versionValue(t)
	used, n := 0, 0
	for k, v := range f.version.m {
		if strings.HasPrefix(k, JournalPrefix) {
			used += len(k) + len(v)
			n++
		}
	}
	if used > 4<<10 {
		t.Errorf("journal takes %d bytes, over its budget of 4096", used)
	}
	// The newest entries are kept, consecutive.
	for v := cur; v > cur-uint64(n); v-- {
		if _, ok := f.entry(t, v); !ok {
			t.Fatalf("entry %d missing; %d entries kept, the newest is %d", v, n, cur)
		}
	}
	if n < 50 {
		t.Errorf("only %d entries kept in a 4 KiB budget", n)
	}

	f2 := newFixture()
	for i := range maxJournalEntries + 10 {
		if err := f2.sink.Apply(ctx, changes(map[string]string{"/upstreams/u": strconv.Itoa(i)})); err != nil {
			t.Fatal(err)
		}
	}
	n = 0
	for k := range f2.version.m {
		if strings.HasPrefix(k, JournalPrefix) {
			n++
		}
	}
	if n != maxJournalEntries {
		t.Errorf("%d entries kept, want %d", n, maxJournalEntries)
	}
}

// A new Sink (library restarted) removes the journal of the previous one and starts
// with an entry for everything.
func TestJournalOfPreviousSinkRemoved(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	for i := range 5 {
		if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": strconv.Itoa(i)})); err != nil {
			t.Fatal(err)
		}
	}
	old := f.versionValue(t)
	s2 := newSink(f.config, f.version, func() time.Time { return f.clock })
	if err := s2.Apply(ctx, changes(map[string]string{"/routes/a": "x"})); err != nil {
		t.Fatal(err)
	}
	cur := f.versionValue(t)
	var entries []string
	for k := range f.version.m {
		if strings.HasPrefix(k, JournalPrefix) {
			entries = append(entries, k)
		}
	}
	if want := []string{JournalPrefix + strconv.FormatUint(cur, 10)}; !cmp.Equal(entries, want) || cur <= old {
		t.Errorf("entries %v after a new Sink's first batch (version %d, old %d), want only %v", entries, cur, old, want)
	}
	if e, _ := f.entry(t, cur); e != "*" {
		t.Errorf("the new Sink's first entry is %q, want *", e)
	}
}

// A version dict too small for the journal never fails a batch: the entry is left out
// (a reader falls back to the kind versions) or, when a kind version cannot be
// stored either, that is left out too (a reader re-reads the kind).
func TestJournalNeverFailsTheBatch(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "1"})); err != nil {
		t.Fatal(err)
	}
	v1 := f.versionValue(t)
	f.version.cap = f.version.used() + 10 // room for the versions to be rewritten, not for an entry
	if err := f.sink.Apply(ctx, changes(map[string]string{"/upstreams/with-a-long-name": "1"})); err != nil {
		t.Fatalf("Apply = %v with a full version dict", err)
	}
	if f.versionValue(t) != v1+1 {
		t.Fatalf("version %d, want %d", f.versionValue(t), v1+1)
	}
	if _, ok := f.entry(t, v1+1); ok {
		t.Error("an entry that does not fit is in the dict")
	}
	if got := f.version.m[KindVersionPrefix+"/upstreams"]; got == strconv.FormatUint(v1, 10) {
		t.Error("the upstreams' kind version still says the old version: a reader would skip the change")
	}
}

// model is a reader of the journal as amesh's Lua provider reads it: it knows the
// dict at its version and catches up from the entries, or by kind when it fell
// behind.
type model struct {
	version uint64
	view    map[string]string
}

func (m *model) catchUp(f *fixture) {
	cur, _ := strconv.ParseUint(f.version.m[VersionKey], 10, 64)
	if cur == m.version {
		return
	}
	kinds, all := map[string]bool{}, m.version == 0
	var keys []string
	for v := m.version + 1; !all && v <= cur; v++ {
		e, ok := f.version.m[JournalPrefix+strconv.FormatUint(v, 10)]
		if !ok {
			// Behind the journal: every kind whose version is newer (or unknown).
			keys = nil
			for _, k := range []string{"/routes", "/upstreams", "/services", "/plugin_configs", "/global_rules", "/stream_routes", "/ssls"} {
				kv, ok := f.version.m[KindVersionPrefix+k]
				n, _ := strconv.ParseUint(kv, 10, 64)
				if !ok || n > m.version {
					kinds[k] = true
				}
			}
			break
		}
		for _, line := range strings.Split(e, "\n") {
			switch {
			case line == "*":
				all = true
			case strings.HasPrefix(line, "*"):
				kinds[line[1:]] = true
			case line != "":
				keys = append(keys, line)
			}
		}
	}
	for k := range m.view {
		if all || kinds[kindPrefix(k)] {
			delete(m.view, k)
		}
	}
	for k, v := range f.config.m {
		if all || kinds[kindPrefix(k)] {
			m.view[k] = v
		}
	}
	for _, k := range keys {
		if v, ok := f.config.m[k]; ok {
			m.view[k] = v
		} else {
			delete(m.view, k)
		}
	}
	m.version = cur
}

// Readers that catch up after any number of batches (some failed, some large, a
// restart of the library, a small version dict) see exactly the dict.
func TestJournalRandomReadersSeeTheDict(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := range 20 {
		f := newFixture()
		f.version.cap = []int{1 << 20, 16 << 10, 2 << 10}[round%3]
		f.sink = newSink(f.config, f.version, func() time.Time { return f.clock })
		ctx := context.Background()
		readers := []*model{{view: map[string]string{}}, {view: map[string]string{}}, {view: map[string]string{}}}
		kinds := []string{"routes", "upstreams", "plugin_configs"}
		for step := range 400 {
			cs := changes(nil)
			for range 1 + rng.IntN(3) + rng.IntN(2)*rng.IntN(120) {
				k := fmt.Sprintf("/%s/k%d", kinds[rng.IntN(len(kinds))], rng.IntN(150))
				if rng.IntN(4) == 0 {
					cs.Delete = append(cs.Delete, k)
				} else {
					cs.Put[k] = []byte(strconv.Itoa(step))
				}
			}
			for _, k := range cs.Delete {
				delete(cs.Put, k)
			}
			if rng.IntN(15) == 0 {
				f.config.cap = f.config.used() + rng.IntN(40) // this batch may fail half-way
			}
			if rng.IntN(60) == 0 {
				f.clock = f.clock.Add(time.Millisecond)
				f.sink = newSink(f.config, f.version, func() time.Time { return f.clock })
			}
			err := f.sink.Apply(ctx, cs)
			f.config.cap = 1 << 30
			if err != nil && !ErrNoMemory(err) {
				t.Fatal(err)
			}
			if err != nil {
				continue // the dict holds keys no version shows yet
			}
			for i, r := range readers {
				if rng.IntN(1+i*8) == 0 { // reader 0 follows every batch, the others lag
					r.catchUp(f)
					if !maps.Equal(r.view, f.config.m) {
						t.Fatalf("round %d step %d: reader %d at %d sees %d keys, the dict holds %d: %v",
							round, step, i, r.version, len(r.view), len(f.config.m), diffKeySets(r.view, f.config.m))
					}
				}
			}
		}
	}
}

func diffKeySets(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k)
		}
	}
	slices.Sort(d)
	return d
}
