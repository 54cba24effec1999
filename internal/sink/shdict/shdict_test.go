package shdict

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// mapDict is a shared dict in a map, with a capacity in bytes (keys+values) past
// which set fails like SAFE_STORE does. ops logs every call.
type mapDict struct {
	name    string
	m       map[string]string
	cap     int
	ops     *[]string
	exiting bool
	expired map[string]string // flushed but not yet evicted
	lru     []string          // oldest first, live and expired
}

func newMapDict(name string, ops *[]string) *mapDict {
	return &mapDict{name: name, m: map[string]string{}, expired: map[string]string{}, cap: 1 << 30, ops: ops}
}

func (d *mapDict) used() int {
	n := 0
	for k, v := range d.m {
		n += len(k) + len(v)
	}
	for k, v := range d.expired {
		n += len(k) + len(v)
	}
	return n
}

// set stores like lua-nginx-module: entries marked expired by flushAll still take
// room until evicted; with evict, the least recently written entries (expired or
// not) are evicted until the value fits.
func (d *mapDict) set(key string, value []byte, evict bool) (bool, error) {
	op := " set "
	if evict {
		op = " set(evict) "
	}
	*d.ops = append(*d.ops, d.name+op+key)
	d.remove(key)
	evicted := false
	for d.used()+len(key)+len(value) > d.cap {
		if !evict || len(d.lru) == 0 {
			return evicted, &StoreError{Op: "set", Key: key, Msg: "no memory"}
		}
		d.remove(d.lru[0])
		evicted = true
	}
	d.m[key] = string(value)
	d.lru = append(d.lru, key)
	return evicted, nil
}

func (d *mapDict) remove(key string) {
	delete(d.m, key)
	delete(d.expired, key)
	for i, k := range d.lru {
		if k == key {
			d.lru = append(d.lru[:i], d.lru[i+1:]...)
			break
		}
	}
}

func (d *mapDict) delete(key string) error {
	*d.ops = append(*d.ops, d.name+" delete "+key)
	d.remove(key)
	return nil
}

func (d *mapDict) getString(key string) (string, bool, error) {
	v, ok := d.m[key]
	return v, ok, nil
}

func (d *mapDict) shuttingDown() bool { return d.exiting }

func (d *mapDict) capacity() int { return d.cap }

func (d *mapDict) flushAll() {
	*d.ops = append(*d.ops, d.name+" flush_all")
	for k, v := range d.m {
		d.expired[k] = v
	}
	clear(d.m)
}

type fixture struct {
	ops             []string
	config, version *mapDict
	sink            *Sink
	clock           time.Time
}

func newFixture() *fixture {
	f := &fixture{clock: time.Unix(1700000000, 0)}
	f.config = newMapDict("config", &f.ops)
	f.version = newMapDict("version", &f.ops)
	f.sink = newSink(f.config, f.version, func() time.Time { return f.clock })
	return f
}

func changes(put map[string]string, del ...string) apisix.ChangeSet {
	cs := apisix.ChangeSet{Put: map[string][]byte{}, Delete: del}
	for k, v := range put {
		cs.Put[k] = []byte(v)
	}
	return cs
}

func (f *fixture) versionValue(t *testing.T) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(f.version.m[VersionKey], 10, 64)
	if err != nil {
		t.Fatalf("version %q: %v", f.version.m[VersionKey], err)
	}
	return v
}

func TestFirstApplyReplacesStaleKeysAndSetsVersion(t *testing.T) {
	f := newFixture()
	f.config.m["/routes/stale"] = `{"id":"stale"}` // left by a previous instance
	f.config.lru = []string{"/routes/stale"}
	err := f.sink.Apply(context.Background(), changes(map[string]string{
		"/routes/r": `{"id":"r"}`, "/upstreams/u": `{"id":"u"}`,
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"/routes/r": `{"id":"r"}`, "/upstreams/u": `{"id":"u"}`}
	if diff := cmp.Diff(want, f.config.m); diff != "" {
		t.Errorf("config dict (-want +got):\n%s", diff)
	}
	wantOps := []string{"config flush_all", "config set /upstreams/u", "config set /routes/r",
		// The journal: every kind changed (the dict was replaced), then the entry.
		"version set version:/global_rules", "version set version:/plugin_configs", "version set version:/plugin_metadata", "version set version:/routes",
		"version set version:/services", "version set version:/ssls", "version set version:/stream_routes", "version set version:/upstreams",
		"version set journal:1700000000000000000",
		"version set version"}
	if diff := cmp.Diff(wantOps, f.ops); diff != "" {
		t.Errorf("ops (-want +got):\n%s", diff)
	}
	if v := f.versionValue(t); v != uint64(f.clock.UnixNano()) || f.sink.Version() != v {
		t.Errorf("version = %d (sink says %d), want the clock in ns %d", v, f.sink.Version(), f.clock.UnixNano())
	}
}

func TestOrderAndOneBumpPerBatch(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "1", "/upstreams/a": "1"})); err != nil {
		t.Fatal(err)
	}
	v1 := f.versionValue(t)
	f.ops = nil
	err := f.sink.Apply(ctx, changes(map[string]string{"/routes/b": "1", "/upstreams/b": "1", "/plugin_configs/p": "1"},
		"/upstreams/a", "/routes/a"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"config delete /routes/a", "config delete /upstreams/a", // routes go before the upstreams they name
		"config set /upstreams/b", "config set /plugin_configs/p", "config set /routes/b",
		"version set version:/plugin_configs", "version set version:/routes", "version set version:/upstreams",
		fmt.Sprintf("version set journal:%d", v1+1),
		"version set version",
	}
	if diff := cmp.Diff(want, f.ops); diff != "" {
		t.Errorf("ops (-want +got):\n%s", diff)
	}
	if v := f.versionValue(t); v != v1+1 {
		t.Errorf("version = %d, want %d", v, v1+1)
	}
}

// Objects reads the applied objects back from the dict: the keys of the last
// successful Apply, with the values the dict holds.
func TestObjectsReadsBackFromTheDict(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	f.config.m["/routes/stale"] = `{"id":"stale"}` // flushed by the first Apply
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "1", "/upstreams/a": "2"})); err != nil {
		t.Fatal(err)
	}
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/b": "3"}, "/routes/a")); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for k, v := range f.sink.Objects() {
		got[k] = string(v)
	}
	if diff := cmp.Diff(map[string]string{"/upstreams/a": "2", "/routes/b": "3"}, got); diff != "" {
		t.Errorf("Objects (-want +got):\n%s", diff)
	}
}

func TestVersionIncreasesAcrossRestarts(t *testing.T) {
	f := newFixture()
	// A previous instance wrote a version ahead of this clock (clock stepped back).
	ahead := uint64(f.clock.UnixNano()) + 5000
	f.version.m[VersionKey] = strconv.FormatUint(ahead, 10)
	if err := f.sink.Apply(context.Background(), changes(nil)); err != nil {
		t.Fatal(err)
	}
	if v := f.versionValue(t); v != ahead+1 {
		t.Errorf("version = %d, want %d", v, ahead+1)
	}
	// A new Sink (second initial()) later in time starts above the old one.
	f.clock = f.clock.Add(time.Second)
	s2 := newSink(f.config, f.version, func() time.Time { return f.clock })
	if err := s2.Apply(context.Background(), changes(nil)); err != nil {
		t.Fatal(err)
	}
	if v := f.versionValue(t); v <= ahead+1 {
		t.Errorf("version after restart = %d, want > %d", v, ahead+1)
	}
}

func TestFullDictIsAnErrorAndVersionUnchanged(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "1"})); err != nil {
		t.Fatal(err)
	}
	v1 := f.versionValue(t)
	f.config.cap = f.config.used() + 20
	big := changes(map[string]string{"/routes/b": "0123456789012345678901234567890123456789"})
	err := f.sink.Apply(ctx, big)
	if !ErrNoMemory(err) {
		t.Fatalf("Apply into a full dict = %v, want a no-memory error", err)
	}
	if v := f.versionValue(t); v != v1 || f.sink.Version() != v1 {
		t.Errorf("version bumped to %d after a failed batch, want %d", v, v1)
	}
	// Retried after the dict is enlarged (or freed by deletes in the same batch).
	f.config.cap = 1 << 20
	if err := f.sink.Apply(ctx, big); err != nil {
		t.Fatal(err)
	}
	if v := f.versionValue(t); v != v1+1 {
		t.Errorf("version = %d, want %d", v, v1+1)
	}
}

func TestDeletesFreeRoomBeforePuts(t *testing.T) {
	f := newFixture()
	ctx := context.Background()
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/a": "0123456789"})); err != nil {
		t.Fatal(err)
	}
	f.config.cap = f.config.used()
	// Replacing a by b of the same size fits only if a is deleted first.
	if err := f.sink.Apply(ctx, changes(map[string]string{"/routes/b": "0123456789"}, "/routes/a")); err != nil {
		t.Fatalf("Apply = %v, want the delete to make room", err)
	}
}

func TestNoWritesWhileNginxExits(t *testing.T) {
	f := newFixture()
	f.config.exiting = true
	if err := f.sink.Apply(context.Background(), changes(map[string]string{"/routes/a": "1"})); err != ErrExiting {
		t.Fatalf("Apply = %v, want ErrExiting", err)
	}
	if len(f.ops) != 0 {
		t.Errorf("ops = %v, want none", f.ops)
	}
}

// After a restart the dict is full of the previous instance's entries: the first
// batch evicts them (they are expired after flush_all) rather than failing.
func TestFirstApplyEvictsExpiredEntries(t *testing.T) {
	f := newFixture()
	for i := range 10 {
		k := fmt.Sprintf("/routes/old%d", i)
		f.config.m[k] = "0123456789"
		f.config.lru = append(f.config.lru, k)
	}
	f.config.cap = f.config.used()
	err := f.sink.Apply(context.Background(), changes(map[string]string{"/routes/a": "0123456789", "/routes/b": "0123456789"}))
	if err != nil {
		t.Fatalf("Apply = %v, want the expired entries evicted", err)
	}
	if diff := cmp.Diff(map[string]string{"/routes/a": "0123456789", "/routes/b": "0123456789"}, f.config.m); diff != "" {
		t.Errorf("dict (-want +got):\n%s", diff)
	}
}

// If eviction had to take entries of the batch itself, the batch does not fit.
func TestFirstApplyTooLargeEvenAfterEviction(t *testing.T) {
	f := newFixture()
	f.config.cap = 60
	err := f.sink.Apply(context.Background(), changes(map[string]string{
		"/routes/a": "0123456789012345", "/routes/b": "0123456789012345", "/routes/c": "0123456789012345",
	}))
	if !ErrNoMemory(err) {
		t.Fatalf("Apply = %v, want no memory", err)
	}
	if _, ok := f.version.m[VersionKey]; ok {
		t.Error("version set for a batch that did not fit")
	}
}
