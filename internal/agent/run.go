package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/backoff"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options configure an Agent. Zero values take the defaults.
type Options struct {
	// Window is how long the agent keeps collecting updates after the first one of a
	// batch arrived before it writes; every update in the window ends up in one Apply
	// (one APISIX version bump). It is counted from the arrival, so translating the
	// first update takes place within it rather than after it. Default 20ms: istiod
	// pushes a change as a burst of responses (CDS, EDS, LDS, RDS) within a few
	// milliseconds.
	Window time.Duration
	// RetryInitial and RetryMax bound the exponential backoff between failed Apply
	// calls. Defaults 100ms and 10s.
	RetryInitial, RetryMax time.Duration
	// Logger receives batch and error events; nil means slog.Default().
	Logger *slog.Logger
	// After is the agent's clock: it returns a channel that receives once d has
	// passed, for the coalescing window and the waits between retries. Default: a
	// timer without the runtime's millisecond rounding (preciseAfter). A caller that
	// drives time itself (a simulation) sets it.
	After func(d time.Duration) <-chan time.Time
	// Plugins, when set, is the second input: every Translator gets its current set
	// (Translator.SetPlugins), and a new set is translated and written like an
	// update, once the first update has arrived.
	Plugins Plugins
	// Identity, when set, is the third input, handled like Plugins
	// (Translator.SetIdentity).
	Identity Identity
	// JWKS, when set, is handed what each translation asks to fetch, and its results
	// are the fourth input, handled like Plugins (Translator.SetJWKS). Without it,
	// remote JWKS are never fetched: their providers' tokens fail.
	JWKS JWKS
}

// DefaultWindow is the default coalescing window.
const DefaultWindow = 20 * time.Millisecond

func (o Options) withDefaults() Options {
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = 100 * time.Millisecond
	}
	if o.RetryMax < o.RetryInitial {
		o.RetryMax = max(10*time.Second, o.RetryInitial)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.After == nil {
		o.After = preciseAfter
	}
	return o
}

// Versioned is implemented by sinks that number the states they make visible (the
// shared-dict sink's "version" key); Stats reports it.
type Versioned interface {
	Version() uint64
}

// Agent runs the pipeline Source (and Options.Plugins, Options.Identity) → Translator
// → Sink. Create it
// with New, start it with Run; Stats, Objects, Report and Ready may be called from any
// goroutine at any time (they are what the status server reads).
type Agent struct {
	// Read-only after New.
	src   Source
	newTr func() Translator
	sink  Sink
	opts  Options
	log   *slog.Logger

	// Used only by Run's goroutine. state is the resources the updates brought
	// (received: at least one did); tr translates it and is replaced after a panic.
	// set is opts.Plugins' current set, changed closed when it has a newer one (nil:
	// no plugin input); setPending: tr has not been given set yet. ident, identChanged
	// and identPending are the same for opts.Identity.
	state        resource.State
	received     bool
	tr           Translator
	set          overlay.Set
	changed      <-chan struct{}
	setPending   bool
	ident        identity.State
	identChanged <-chan struct{}
	identPending bool
	fetched      jwks.Set
	jwksChanged  <-chan struct{}
	jwksPending  bool

	readyOnce sync.Once
	ready     chan struct{} // closed after the first successful Apply

	mu    sync.Mutex // guards the fields below
	stats Stats
	// keys are the keys the sink holds, kept only for a sink that cannot list them
	// itself (not a Reader), for Objects; nil otherwise.
	keys   map[string]struct{}
	report []report.Entry
}

// New returns an Agent that reads src, translates with a Translator from newTr and
// writes to sink. newTr is called once here and again after each translation that
// panicked, only by Run's goroutine.
func New(src Source, newTr func() Translator, sink Sink, opts Options) *Agent {
	opts = opts.withDefaults()
	a := &Agent{
		src: src, newTr: newTr, tr: newTr(), sink: sink, opts: opts, log: opts.Logger,
		ready: make(chan struct{}),
		stats: Stats{ObjectsByKind: map[string]int{}, PushToWrite: newLatency()},
	}
	if _, ok := sink.(Reader); !ok {
		a.keys = map[string]struct{}{}
	}
	return a
}

// Run is New(src, newTr, sink, opts).Run(ctx), for callers that need no observability.
func Run(ctx context.Context, src Source, newTr func() Translator, sink Sink, opts Options) error {
	return New(src, newTr, sink, opts).Run(ctx)
}

// received is an update and the time the Source handed it over (the start of its
// push-to-write latency).
type received struct {
	u  *resource.Update
	at time.Time
}

// Run processes updates (and plugin sets) until ctx is done, then returns ctx's
// error. It must be called once. The first batch is always applied, even if it is
// empty, so that APISIX (whose workers wait for a version to exist) can start with an
// empty mesh; later batches are applied only when some key changed.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	if a.opts.Plugins != nil {
		a.set, a.changed = a.opts.Plugins.Current()
		a.setPending = true
	}
	if a.opts.Identity != nil {
		a.ident, a.identChanged = a.opts.Identity.Current()
		a.identPending = true
	}
	if a.opts.JWKS != nil {
		a.fetched, a.jwksChanged = a.opts.JWKS.Current()
		a.jwksPending = true
	}
	snaps := make(chan received)
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.read(ctx, snaps)
	}()

	var b batch
	for {
		// Wait for the first update of a batch.
		if !b.due() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case r := <-snaps:
				a.absorb(&b, r)
			case <-a.changed:
				a.absorbPlugins(&b)
			case <-a.identChanged:
				a.absorbIdentity(&b)
			case <-a.jwksChanged:
				a.absorbJWKS(&b)
			}
			if !b.due() {
				continue
			}
		}
		// Collect the rest of the window, which began when the batch's first update
		// arrived.
		if err := a.collect(ctx, snaps, &b, max(0, a.opts.Window-time.Since(b.since))); err != nil {
			return err
		}
		// Write, retrying with backoff; updates arriving meanwhile join the batch.
		for attempt := 1; ; attempt++ {
			err := a.flush(ctx, &b)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			wait := retryWait(a.opts.RetryInitial, a.opts.RetryMax, attempt)
			a.log.Warn("apply failed, will retry", "err", err, "attempt", attempt, "retry_in", wait)
			if err := a.collect(ctx, snaps, &b, wait); err != nil {
				return err
			}
		}
	}
}

// collect absorbs updates into b for d.
func (a *Agent) collect(ctx context.Context, snaps <-chan received, b *batch, d time.Duration) error {
	timer := a.opts.After(d)
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case r := <-snaps:
			a.absorb(b, r)
		case <-a.changed:
			a.absorbPlugins(b)
		case <-a.identChanged:
			a.absorbIdentity(b)
		case <-a.jwksChanged:
			a.absorbJWKS(b)
		case <-timer:
			return nil
		}
	}
}

// read forwards updates from the Source until ctx is done. Errors other than ctx's
// are reported and retried with backoff, so a misbehaving Source cannot end the
// pipeline inside nginx.
func (a *Agent) read(ctx context.Context, out chan<- received) {
	for attempt := 0; ctx.Err() == nil; {
		u, err := a.next(ctx)
		if err == nil && u == nil {
			err = errors.New("source returned a nil update")
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			attempt++
			a.recordError(fmt.Errorf("source: %w", err))
			select {
			case <-ctx.Done():
				return
			case <-a.opts.After(retryWait(a.opts.RetryInitial, a.opts.RetryMax, attempt)):
			}
			continue
		}
		attempt = 0
		select {
		case out <- received{u: u, at: time.Now()}:
		case <-ctx.Done():
			return
		}
	}
}

// next calls Source.Next, turning a panic into an error.
func (a *Agent) next(ctx context.Context) (u *resource.Update, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError("Source.Next", p)
		}
	}()
	return a.src.Next(ctx)
}

// absorb applies one update to the state, translates the state and adds the
// translation's changes to b.
func (a *Agent) absorb(b *batch, r received) {
	a.state.Apply(r.u)
	a.received = true
	a.translateInto(b, r.at)
}

// absorbPlugins takes the plugin input's newer set and, once there is a state to
// translate, translates it with the set and adds the changes to b.
func (a *Agent) absorbPlugins(b *batch) {
	a.set, a.changed = a.opts.Plugins.Current()
	a.setPending = true
	if a.received {
		a.translateInto(b, time.Now())
	}
}

// absorbIdentity takes the identity input's newer state and, once there is a state to
// translate, translates it with the identity and adds the changes to b.
func (a *Agent) absorbIdentity(b *batch) {
	a.ident, a.identChanged = a.opts.Identity.Current()
	a.identPending = true
	if a.received {
		a.translateInto(b, time.Now())
	}
}

// absorbJWKS takes the newer fetched JWKS and, once there is a state to translate,
// translates it with them and adds the changes to b.
func (a *Agent) absorbJWKS(b *batch) {
	a.fetched, a.jwksChanged = a.opts.JWKS.Current()
	a.jwksPending = true
	if a.received {
		a.translateInto(b, time.Now())
	}
}

// translateInto translates the state and adds the changes to b; at is when what
// triggered the translation arrived.
func (a *Agent) translateInto(b *batch, at time.Time) {
	res, err := a.translate(&a.state)
	a.state.Done()
	if err != nil {
		// A translation that panicked may have stopped half-way: the translator's
		// state no longer matches the changes it handed out. It is replaced; until the
		// new one has translated an update nothing is written and APISIX keeps the
		// last good state. The new one gets the current plugin set and identity first.
		a.recordError(err)
		a.tr = a.newTr()
		a.setPending = a.opts.Plugins != nil
		a.identPending = a.opts.Identity != nil
		a.jwksPending = a.opts.JWKS != nil
		b.resync = true
		return
	}
	if a.opts.JWKS != nil {
		a.opts.JWKS.Want(res.JWKS)
	}
	if b.since.IsZero() {
		b.since = at
	}
	b.seq = a.state.Seq
	if b.resync {
		// The new translator's first output is complete: compare it with what the
		// sink holds instead of with a previous output.
		held, known := a.held()
		b.replace(res.Changes.Put, held, known)
	} else {
		b.addDirty(res.Changes, res.Prior)
	}
	a.mu.Lock()
	a.report = res.Report
	a.mu.Unlock()
}

// held returns the keys the sink holds with the digest (apisix.Hash) of each value;
// known is false when the sink cannot read its values back (the digests are then 0).
func (a *Agent) held() (digests map[string]uint64, known bool) {
	if r, ok := a.sink.(Reader); ok {
		objs := r.Objects()
		digests = make(map[string]uint64, len(objs))
		for k, v := range objs {
			digests[k] = apisix.Hash(v)
		}
		return digests, true
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	digests = make(map[string]uint64, len(a.keys))
	for k := range a.keys {
		digests[k] = 0
	}
	return digests, false
}

// translate hands the translator the plugin set, identity and fetched JWKS if it has
// not had them, and translates snap, turning a panic into an error.
func (a *Agent) translate(snap *resource.State) (res translateResult, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(fmt.Sprintf("translating update %d", snap.Seq), p)
		}
	}()
	if a.setPending {
		a.tr.SetPlugins(a.set)
		a.setPending = false
	}
	if a.identPending {
		a.tr.SetIdentity(a.ident)
		a.identPending = false
	}
	if a.jwksPending {
		a.tr.SetJWKS(a.fetched)
		a.jwksPending = false
	}
	r := a.tr.Translate(snap)
	return translateResult{Changes: r.Changes, Prior: r.Prior, Report: r.Report, JWKS: r.JWKS}, nil
}

type translateResult struct {
	Changes apisix.ChangeSet
	Prior   map[string]uint64
	Report  []report.Entry
	JWKS    []jwks.Plan
}

// flush writes what b changed relative to what the sink holds. It returns nil when
// there is nothing to write or the write succeeded (b is then reset), and the
// Apply error otherwise (b is kept for the retry).
func (a *Agent) flush(ctx context.Context, b *batch) error {
	if b.resync {
		return nil // nothing trustworthy to write; wait for the next snapshot
	}
	first := !a.Ready()
	cs, kinds := b.changes()
	if cs.Empty() && !first {
		a.log.Debug("batch changed nothing APISIX can see", "seq", b.seq)
		a.mu.Lock()
		a.stats.Unchanged++
		a.mu.Unlock()
		*b = batch{}
		return nil
	}
	t0 := time.Now()
	if err := a.apply(ctx, cs); err != nil {
		a.recordError(err)
		a.mu.Lock()
		a.stats.WriteErrors++
		a.mu.Unlock()
		return err
	}
	lat, write := time.Since(b.since), time.Since(t0)
	a.commit(cs, kinds, b.seq, lat)
	a.log.Info("applied batch", "seq", b.seq, "put", len(cs.Put), "deleted", len(cs.Delete), "latency", lat, "write", write)
	*b = batch{}
	a.readyOnce.Do(func() { close(a.ready) })
	return nil
}

func (a *Agent) apply(ctx context.Context, cs apisix.ChangeSet) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError("Sink.Apply", p)
		}
	}()
	return a.sink.Apply(ctx, cs)
}

// commit records a successful Apply of cs; kinds is how it changed the number of
// objects of each kind.
func (a *Agent) commit(cs apisix.ChangeSet, kinds map[apisix.Kind]int, seq uint64, lat time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for k, n := range kinds {
		if n != 0 {
			a.stats.ObjectsByKind[string(k)] += n
		}
	}
	if a.keys != nil {
		for k := range cs.Put {
			a.keys[k] = struct{}{}
		}
		for _, k := range cs.Delete {
			delete(a.keys, k)
		}
	}
	a.stats.Batches++
	a.stats.KeysPut += uint64(len(cs.Put))
	a.stats.KeysDeleted += uint64(len(cs.Delete))
	a.stats.Seq = seq
	observe(&a.stats.PushToWrite, lat)
}

func (a *Agent) recordError(err error) {
	var pe *PanicError
	isPanic := errors.As(err, &pe)
	if isPanic {
		a.log.Error("recovered panic; keeping the last good state", "err", err, "stack", string(pe.Stack))
	} else {
		a.log.Error("agent", "err", err)
	}
	a.mu.Lock()
	if isPanic {
		a.stats.Panics++
	}
	a.stats.LastError = err.Error()
	a.stats.LastErrorTime = time.Now()
	a.mu.Unlock()
}

// PanicError is a panic recovered in the Source, Translator or Sink.
type PanicError struct {
	Where string
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic in %s: %v", e.Where, e.Value) }

func panicError(where string, p any) error {
	return &PanicError{Where: where, Value: p, Stack: debug.Stack()}
}

// retryWait returns min(initial*2^(attempt-1), max).
func retryWait(initial, maxWait time.Duration, attempt int) time.Duration {
	return backoff.Exponential{Initial: initial, Max: maxWait, Multiplier: 2}.Delay(attempt, 0)
}
