package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/keyset"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The child process is the measured data plane side: an xDS client and either amesh's
// pipeline (translate + agent, writing into a counting sink) or the floor (decode + encode
// only). It runs in its own process so that its heap and RSS are its own; the parent (control
// plane and meshgen) talks to it over stdin/stdout with JSON lines.

// event is one line the child prints.
type event struct {
	Ev string `json:"ev"` // "first", "apply", "stats", "error"
	// first: milliseconds from the start of the client to the first complete config written.
	FirstMS float64 `json:"first_ms,omitempty"`
	// apply: wall-clock time (UnixNano) the batch was written, and what it wrote.
	At int64 `json:"at,omitempty"`
	// RecvAt is when the xDS client received the newest response of the snapshots
	// behind this batch (UnixNano, resource.State.Received): At - RecvAt is the
	// data plane's own share, xDS response → version bump (decode, window, translate,
	// write).
	RecvAt int64 `json:"recv_at,omitempty"`
	Puts   int   `json:"puts,omitempty"`
	Dels   int   `json:"dels,omitempty"`
	Bytes  int64 `json:"bytes,omitempty"`
	// stats
	HeapBytes   uint64 `json:"heap_bytes,omitempty"`
	RSSBytes    uint64 `json:"rss_bytes,omitempty"`
	PeakRSS     uint64 `json:"peak_rss_bytes,omitempty"`
	Applies     int    `json:"applies,omitempty"`
	Keys        int    `json:"keys,omitempty"`
	DictBytes   int64  `json:"dict_bytes,omitempty"`
	DictSlab    int64  `json:"dict_slab_bytes,omitempty"`
	TotalBytes  int64  `json:"total_bytes,omitempty"`
	Responses   uint64 `json:"responses,omitempty"`
	Unchanged   uint64 `json:"unchanged,omitempty"`
	Panics      uint64 `json:"panics,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	Error       string `json:"error,omitempty"`
	ReportCount int    `json:"report_count,omitempty"`
	// timers: how late each of a series of bare window timers fired, in nanoseconds
	// (what the machine's timer and scheduler add to any coalescing window).
	Late []int64 `json:"late,omitempty"`
}

type emitter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (e *emitter) emit(ev event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.enc.Encode(ev)
}

// counter is what both modes write into: it counts what would be written into the dict and
// reports every batch. It keeps no copy of the data, so the child's heap is the pipeline's.
type counter struct {
	em    *emitter
	start time.Time

	mu      sync.Mutex
	recvAt  int64 // see event.RecvAt
	bytes   int64 // keys + values written, all batches
	applies int
	version uint64
	// firstDict is the dict content after the first batch (floor mode, which keeps none).
	firstKeys        int
	firstDict, first int64
	// sizes is len(key)+len(value) of every key in the dict (amesh mode, track set):
	// the pipeline keeps no copy of what it wrote, so the dict's size is counted here.
	// It stands for the key set the shared-dict sink keeps (agent.Reader), in the same
	// form.
	track bool
	sizes keyset.Set[int32]
}

func (c *counter) write(puts map[string][]byte, dels []string) {
	c.mu.Lock()
	var b, slab int64
	for k, v := range puts {
		b += int64(len(k) + len(v))
		slab += slabSize(len(k) + len(v))
	}
	if c.applies == 0 {
		c.firstKeys, c.firstDict, c.first = len(puts), b, slab
	}
	if c.track {
		c.sizes.Apply(func(yield func(string, int32) bool) {
			for k, v := range puts {
				if !yield(k, int32(len(k)+len(v))) {
					return
				}
			}
		}, dels)
	}
	c.bytes += b
	c.applies++
	c.version++
	first := c.applies == 1
	recvAt := c.recvAt
	c.mu.Unlock()
	now := time.Now()
	if first {
		c.em.emit(event{Ev: "first", FirstMS: float64(now.Sub(c.start).Microseconds()) / 1000})
	}
	c.em.emit(event{Ev: "apply", At: now.UnixNano(), RecvAt: recvAt, Puts: len(puts), Dels: len(dels), Bytes: b})
}

// timedSource records when each snapshot leaves the xDS client.
type timedSource struct {
	src agent.Source
	cnt *counter
}

func (s timedSource) Next(ctx context.Context) (*resource.Update, error) {
	snap, err := s.src.Next(ctx)
	if err == nil {
		s.cnt.mu.Lock()
		s.cnt.recvAt = snap.Received.UnixNano()
		s.cnt.mu.Unlock()
	}
	return snap, err
}

// Apply implements agent.Sink.
func (c *counter) Apply(_ context.Context, cs apisix.ChangeSet) error {
	_, dels := cs.Ordered()
	c.write(cs.Put, dels)
	return nil
}

// Version implements agent.Versioned.
func (c *counter) Version() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.version
}

// Objects lists the keys written, without values (agent.Reader): like the shared-dict
// sink, the counter is what knows the keys, so the agent keeps no set of its own.
func (c *counter) Objects() map[string][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string][]byte, c.sizes.Len())
	for k := range c.sizes.All() {
		out[k] = nil
	}
	return out
}

// stats returns the counters and the dict's content: the current one when it is
// tracked (amesh mode), else what the first batch wrote.
func (c *counter) stats() (applies, keys int, dictBytes, slab, total int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.track {
		return c.applies, c.firstKeys, c.firstDict, c.first, c.bytes
	}
	for _, n := range c.sizes.All() {
		dictBytes += int64(n)
		slab += slabSize(int(n))
	}
	return c.applies, c.sizes.Len(), dictBytes, slab, c.bytes
}

// shdictNodeOverhead approximates the bytes lua-nginx-module's shared dict spends per entry
// before the key and value: the red-black tree node plus ngx_http_lua_shdict_node_t (LRU
// queue, expiry, lengths, type, flags) on x86-64.
const shdictNodeOverhead = 80

// slabSize estimates what nginx's slab allocator takes for an entry of n key+value bytes:
// sizes up to half a page round up to a power of two, larger ones to whole 4 KiB pages.
func slabSize(n int) int64 {
	sz := int64(n + shdictNodeOverhead)
	if sz > 2048 {
		return (sz + 4095) / 4096 * 4096
	}
	p := int64(8)
	for p < sz {
		p <<= 1
	}
	return p
}

// runChild runs the data plane; with controller (mode amesh) the agent has
// amesh-controller's plugin input, holding the set the parent sends as the first stdin
// line (read before the clock of the first config starts).
func runChild(mode, addr, proto string, window time.Duration, controller bool) error {
	if os.Getenv("AMESH_BENCH_HEAPPROFILE") != "" {
		// Sample every 4 KiB instead of 512 KiB: profiles precise enough to account
		// for each MiB (slower; only when profiles are asked for).
		runtime.MemProfileRate = 4096
	}
	stdin := bufio.NewReader(os.Stdin)
	var feed overlay.Feed
	profileName := mode
	if controller {
		profileName = ctlMode
		if mode != "amesh" {
			return fmt.Errorf("-controller needs mode amesh, not %q", mode)
		}
		line, err := stdin.ReadBytes('\n')
		if err != nil {
			return fmt.Errorf("controller set: %w", err)
		}
		if feed, err = staticFeed(line); err != nil {
			return err
		}
	}
	em := &emitter{enc: json.NewEncoder(os.Stdout)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cnt := &counter{em: em, start: time.Now()}
	c, err := client.New(client.Config{
		Server: addr, Protocol: client.Protocol(proto),
		Node: &corev3.Node{Id: "sidecar~10.255.0.1~bench-0.default~default.svc.cluster.local"},
		// A 10,000-service mesh takes a while to send on a busy machine.
		ResourceTimeout: 2 * time.Minute,
		Logger:          slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		return err
	}
	go func() { _ = c.Run(ctx) }()

	var ag *agent.Agent
	floorSettled := make(chan struct{}) // closed once the floor has dropped its first output
	switch mode {
	case "amesh":
		cnt.track = true
		newTr := func() agent.Translator { return translate.New(translate.Options{}) }
		opts := agent.Options{Window: window,
			Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
		if feed != nil {
			opts.Plugins = feed // as internal/sidecar wires a configured controller
		}
		ag = agent.New(timedSource{c, cnt}, newTr, cnt, opts)
		go func() {
			if err := ag.Run(ctx); err != nil && ctx.Err() == nil {
				em.emit(event{Ev: "error", Error: err.Error()})
			}
		}()
	case "floor":
		go func() {
			// floor returns only when ctx ends or encoding fails.
			if err := floor(ctx, timedSource{c, cnt}, cnt, floorSettled); ctx.Err() == nil {
				em.emit(event{Ev: "error", Error: err.Error()})
			}
		}()
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}

	// Commands from the parent, one per line.
	in := bufio.NewScanner(stdin)
	for in.Scan() {
		switch strings.TrimSpace(in.Text()) {
		case "stats":
			// The first config is reported from inside Apply (write); the agent
			// drops the batch (the whole first output) just before it turns ready,
			// the floor after write returns: wait for that, so that the heap figure
			// is the pipeline's steady state, not the batch in flight.
			if ag != nil {
				<-ag.ReadyC()
			} else {
				<-floorSettled
			}
			runtime.GC()
			if err := writeHeapProfile(profileName); err != nil {
				return err
			}
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			rss, peak := procRSS()
			applies, keys, dict, slab, total := cnt.stats()
			ev := event{Ev: "stats", HeapBytes: ms.HeapAlloc, RSSBytes: rss, PeakRSS: peak,
				Applies: applies, Keys: keys, DictBytes: dict, DictSlab: slab, TotalBytes: total}
			for _, ts := range c.Status().Types {
				ev.Responses += ts.Responses
			}
			if ag != nil {
				st := ag.Stats()
				ev.Unchanged, ev.Panics, ev.LastError = st.Unchanged, st.Panics, st.LastError
				ev.ReportCount = len(ag.Report())
			}
			em.emit(ev)
		case "quit":
			return nil
		default:
			// "timers N": N bare waits of the coalescing window, one after another.
			if f := strings.Fields(in.Text()); len(f) == 2 && f[0] == "timers" {
				n, err := strconv.Atoi(f[1])
				if err != nil {
					return err
				}
				ev := event{Ev: "timers"}
				for range n {
					t0 := time.Now()
					<-time.After(window)
					ev.Late = append(ev.Late, int64(time.Since(t0)-window))
				}
				em.emit(ev)
			}
		}
	}
	return in.Err()
}

// floor is the least any data plane must do: take each snapshot the client decoded and
// encode APISIX JSON for what changed, with a naive one-to-one mapping (floor.go) and no
// coalescing, ordering, diffing or reporting.
// settled is closed once the first output has been written and dropped.
func floor(ctx context.Context, src agent.Source, cnt *counter, settled chan<- struct{}) error {
	var st resource.State
	for first := true; ; first = false {
		u, err := src.Next(ctx)
		if err != nil {
			return err
		}
		st.Apply(u)
		puts, err := naive(&st)
		st.Done()
		if err != nil {
			return err
		}
		cnt.write(puts, nil)
		if first {
			close(settled) // puts is not used again: the collector may take it
		}
	}
}

// procRSS reads VmRSS and VmHWM (peak) from /proc/self/status.
func procRSS() (rss, peak uint64) {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	b, _ := io.ReadAll(f)
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n << 10
		case "VmHWM":
			peak = n << 10
		}
	}
	return rss, peak
}

var _ agent.Sink = (*counter)(nil)
var _ agent.Versioned = (*counter)(nil)

// writeHeapProfile writes the live heap to $AMESH_BENCH_HEAPPROFILE/<pipeline>-<pid>-<k>.pprof
// for the k-th stats request of this child, when that variable names a directory:
// where the heap figures come from (go tool pprof -sample_index=inuse_space).
func writeHeapProfile(pipeline string) error {
	dir := os.Getenv("AMESH_BENCH_HEAPPROFILE")
	if dir == "" {
		return nil
	}
	heapProfiles++
	f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s-%d-%d.pprof", pipeline, os.Getpid(), heapProfiles)))
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

var heapProfiles int
