package jwks

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/amesh-dev/amesh/internal/backoff"
	"github.com/amesh-dev/amesh/internal/feed"
)

// MaxBody bounds a JWKS: a larger response is a failed fetch.
const MaxBody = 1 << 20

// Retry is the wait after a failed fetch before the next one, growing while they keep
// failing: Envoy fetches again for the next request that needs the keys, so a fetch
// that failed is retried soon, not after cache_duration.
var Retry = backoff.Exponential{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2}

// Options configure a Fetcher.
type Options struct {
	// Logger receives one line per fetch that failed or brought other keys; nil means
	// slog.Default().
	Logger *slog.Logger
}

// Fetcher keeps the Sources it is asked for (Want) fetched: a new Source at once, a
// fetched one again after its cache duration, a failed one again after Retry. Its
// Set is a feed.Feed: Current returns the results and a channel closed once one of
// them changes. The zero value is not usable; create it with New and start Run.
type Fetcher struct {
	log  *slog.Logger
	wake chan struct{}
	out  feed.Latest[Set]

	mu      sync.Mutex
	plans   map[Source]Plan
	entries map[Source]*entry
}

// entry is the fetch state of one Source, owned by Run's goroutine except for the
// fields mu guards.
type entry struct {
	res      Result
	have     bool      // res holds a completed fetch
	next     time.Time // when to fetch again
	failures int       // consecutive failed fetches
	rr       int       // the node the next fetch starts at
	busy     bool      // a fetch is under way
}

// New returns a Fetcher with nothing to fetch.
func New(opts Options) *Fetcher {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	f := &Fetcher{log: opts.Logger, wake: make(chan struct{}, 1), plans: map[Source]Plan{}, entries: map[Source]*entry{}}
	f.out.Publish(Set{})
	return f
}

// Current returns the results in force and a channel closed once they change.
func (f *Fetcher) Current() (Set, <-chan struct{}) { return f.out.Current() }

// Want makes plans the Sources to keep fetched, replacing the previous ones: a Source
// no longer wanted is forgotten, with its result. A changed plan of a Source whose
// last fetch failed is tried at once; one whose keys are held keeps them for the new
// plan's cache duration. plans must not be modified afterwards.
func (f *Fetcher) Want(plans []Plan) {
	f.mu.Lock()
	changed := false
	next := make(map[Source]Plan, len(plans))
	for _, p := range plans {
		next[p.Source] = p
		if old, ok := f.plans[p.Source]; !ok || !samePlan(old, p) {
			changed = true
			if e := f.entries[p.Source]; e != nil && e.have && !e.busy {
				if e.res.Err != "" {
					e.next = time.Time{}
				} else {
					e.next = e.res.Fetched.Add(p.CacheDuration)
				}
			}
		}
	}
	for s := range f.plans {
		if _, ok := next[s]; !ok {
			changed = true
			delete(f.entries, s)
		}
	}
	f.plans = next
	f.mu.Unlock()
	if changed {
		f.poke()
		f.publish()
	}
}

func (f *Fetcher) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Run fetches until ctx is done, then returns nil.
func (f *Fetcher) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		due, wait := f.due(now)
		for _, p := range due {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.finish(p, safeFetch(ctx, p, f.startNode(p.Source)))
			}()
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return nil
		case <-f.wake:
		case <-timer.C:
		}
	}
}

// due returns the plans to fetch now, marking them busy, and how long until the next
// one is due.
func (f *Fetcher) due(now time.Time) ([]Plan, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	wait := time.Hour
	var out []Plan
	for s, p := range f.plans {
		e := f.entries[s]
		if e == nil {
			e = &entry{}
			f.entries[s] = e
		}
		if e.busy {
			continue
		}
		if d := e.next.Sub(now); d > 0 {
			wait = min(wait, d)
			continue
		}
		e.busy = true
		out = append(out, p)
	}
	return out, wait
}

// startNode returns the node index a fetch of s starts at: each fetch takes the next
// node, so a failed endpoint is not tried again and again.
func (f *Fetcher) startNode(s Source) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	e := f.entries[s]
	if e == nil {
		return 0
	}
	e.rr++
	return e.rr - 1
}

// finish records the result of a fetch of p and publishes the results when they
// changed.
func (f *Fetcher) finish(p Plan, r Result) {
	r.Fetched = time.Now()
	f.mu.Lock()
	e := f.entries[p.Source]
	if e == nil { // no longer wanted
		f.mu.Unlock()
		return
	}
	e.busy = false
	changed := !e.have || !e.res.Same(r)
	e.res, e.have = r, true
	switch {
	case r.Err != "" && !samePlan(f.plans[p.Source], p):
		// The plan changed during the fetch: the next one follows it at once.
		e.next = time.Time{}
	case r.Err != "":
		e.failures++
		e.next = r.Fetched.Add(Retry.Delay(e.failures, 0))
	default:
		e.failures = 0
		e.next = r.Fetched.Add(p.CacheDuration)
	}
	failures := e.failures
	f.mu.Unlock()
	switch {
	case r.Err != "":
		f.log.Warn("JWKS fetch failed", "source", p.Source.String(), "err", r.Err, "failures", failures)
	case changed:
		f.log.Info("JWKS fetched", "source", p.Source.String(), "bytes", len(r.JWKS))
	}
	if changed {
		f.publish()
	}
	f.poke()
}

// publish hands on the results of the wanted Sources.
func (f *Fetcher) publish() {
	f.mu.Lock()
	set := make(Set, len(f.entries))
	for s, e := range f.entries {
		if _, ok := f.plans[s]; ok && e.have {
			set[s] = e.res
		}
	}
	f.mu.Unlock()
	old, _ := f.out.Current()
	if maps.EqualFunc(old, set, Result.Same) {
		return
	}
	f.out.Publish(set)
}

func samePlan(a, b Plan) bool {
	return a.Source == b.Source && a.Timeout == b.Timeout && a.CacheDuration == b.CacheDuration && a.Why == b.Why &&
		slices.EqualFunc(a.Nodes, b.Nodes, func(x, y Node) bool {
			return x.Addr == y.Addr && x.Priority == y.Priority && x.TLS.equal(y.TLS)
		})
}

// safeFetch is fetch with a panic turned into a failed fetch: the fetcher may run
// inside nginx, where a panic on this goroutine would end the process.
func safeFetch(ctx context.Context, p Plan, start int) (r Result) {
	defer func() {
		if v := recover(); v != nil {
			r = errorf("fetch panicked: %v", v)
		}
	}()
	return fetch(ctx, p, start)
}

// fetch fetches p once from one of its nodes of the highest priority, the start-th
// (round robin).
func fetch(ctx context.Context, p Plan, start int) Result {
	if p.Why != "" {
		return Result{Err: p.Why}
	}
	nodes := topPriority(p.Nodes)
	if len(nodes) == 0 {
		return errorf("cluster %s has no endpoint", p.Cluster)
	}
	n := nodes[start%len(nodes)]
	u, err := url.Parse(p.URI)
	if err != nil || u.Host == "" {
		return errorf("the JWKS URI %q is not a URL", p.URI)
	}
	var tcfg *tls.Config
	if n.TLS != nil {
		if tcfg, err = n.TLS.config(); err != nil {
			return errorf("TLS to %s: %v", n.Addr, err)
		}
	}
	timeout := p.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// The cluster decides the transport, not the URI's scheme: every request goes to
	// the node's address, over the node's socket, as HTTP/1.1.
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", n.Addr)
			if err != nil || tcfg == nil {
				return c, err
			}
			tc := tls.Client(c, tcfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, fmt.Errorf("TLS handshake: %w", err)
			}
			return tc, nil
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	target := *u
	target.Scheme = "http"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target.String(), nil)
	if err != nil {
		return errorf("the JWKS URI %q: %v", p.URI, err)
	}
	req.Host = u.Host
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return errorf("%s from %s: %v", p.URI, n.Addr, unwrapURL(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errorf("%s from %s: status %d", p.URI, n.Addr, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	switch {
	case err != nil:
		return errorf("%s from %s: %v", p.URI, n.Addr, err)
	case len(body) > MaxBody:
		return errorf("%s from %s: the JWKS is larger than %d bytes", p.URI, n.Addr, MaxBody)
	}
	return Result{JWKS: string(body)}
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// topPriority returns the nodes of the highest priority.
func topPriority(nodes []Node) []Node {
	if len(nodes) == 0 {
		return nil
	}
	top := nodes[0].Priority
	for _, n := range nodes {
		top = max(top, n.Priority)
	}
	var out []Node
	for _, n := range nodes {
		if n.Priority == top {
			out = append(out, n)
		}
	}
	return out
}
