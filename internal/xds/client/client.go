// Package client is amesh's ADS client: it talks to istiod like an Envoy sidecar
// (Delta or SotW over one gRPC stream), follows wildcard listeners and clusters and the
// route configurations, endpoints and ADS-served SDS secrets (a credentialName's) they
// name, ACKs or NACKs every response, and
// publishes consistent snapshots (resource.State) to the rest of amesh.
//
// Concurrency: the goroutine running Run owns the protocol state (resources,
// versions, nonces, subscriptions) and reads and writes it without a lock: it decodes
// and applies each response, then hands the requests that answer it to the stream's
// sender goroutine (send.go). What other goroutines see goes through small hand-offs
// of their own: the publication to Next (pubMu), the status (statMu, status.go), and
// inspect for a look at the protocol state itself. None of them waits for a response
// to be decoded.
package client

import (
	"context"
	"errors"
	"fmt"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"io"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Client is an ADS client. Create it with New and start it with Run.
type Client struct {
	cfg   Config        // read-only after New
	log   *slog.Logger  // read-only after New
	ready chan struct{} // closed at the first published snapshot

	readyOnce sync.Once
	running   sync.Mutex // held by Run: one Run at a time

	// Protocol state, owned by the goroutine running Run: no lock, as nothing else
	// touches it (other goroutines ask that goroutine, see inspect).
	types [numTypes]*typeState
	// dirty holds, per type, the names changed since the last published snapshot.
	dirty [numTypes]map[string]struct{}
	// pendingSince is when each awaited resource was first found absent.
	pendingSince map[resKey]time.Time
	deadline     time.Time // next missing-resource check; zero when nothing is awaited
	missing      []resource.MissingResource
	recvAt       time.Time // when the response being handled (or the last one) arrived
	// intern is the interning table of the resources decoded on the current stream
	// (resource.Interner); each stream starts a new one.
	intern *resource.Interner

	// decoded are the decoded route configurations accepted since the last
	// publication, handed to the consumer once (resource.Update.Decoded).
	decoded map[string]*routev3.RouteConfiguration
	alarm   *time.Timer // fires at deadline; created by Run

	// Inspection of the protocol state from other goroutines (inspect).
	insp        sync.Mutex
	runDone     chan struct{} // guarded by insp: closed when Run ends; nil while none runs
	inspections chan func()   // served by Run between two events

	// Publication, guarded by pubMu. Run's goroutine publishes; it alone writes
	// published and pubMissing, so it reads them without the lock. Next takes out and
	// sets returned. statMu may be taken while pubMu is held, not the other way.
	pubMu      sync.Mutex
	published  uint64                     // Seq of the last published update (0: none yet)
	pubMissing []resource.MissingResource // its Missing
	pubRecv    time.Time                  // its Received
	out        delta                      // what was published since Next last took it
	returned   uint64                     // Seq of the update Next returned last
	notify     chan struct{}              // closed and replaced at every publication

	// Status, guarded by statMu: copied from the protocol state as it changes (post).
	statMu sync.Mutex
	stat   board
}

// New validates cfg and returns a Client that is not yet connected.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if cfg.TLS != nil {
		// Fail early on a broken CA file rather than on every reconnect.
		if _, err := tlsConfig(cfg.Server, cfg.TLS); err != nil {
			return nil, err
		}
	}
	c := &Client{
		cfg:          cfg,
		log:          cfg.Logger.With("xds_server", cfg.Server, "xds_protocol", string(cfg.Protocol)),
		ready:        make(chan struct{}),
		pendingSince: map[resKey]time.Time{},
		notify:       make(chan struct{}),
		decoded:      map[string]*routev3.RouteConfiguration{},
		intern:       resource.NewInterner(),
		inspections:  make(chan func()),
		stat:         board{state: Idle},
	}
	for i, u := range typeURLs {
		c.types[i] = newTypeState(u, i == ldsIdx || i == cdsIdx)
	}
	c.post()
	return c, nil
}

// Ready is closed when the first consistent snapshot has been published.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Next blocks until the client has published since Next last returned, and returns
// one Update covering everything published since then: the first one replaces every
// kind. It has a single consumer; the Update is the consumer's own.
func (c *Client) Next(ctx context.Context) (*resource.Update, error) {
	for {
		c.pubMu.Lock()
		if c.published > c.returned {
			u := &resource.Update{Seq: c.published, Missing: slices.Clone(c.pubMissing), Received: c.pubRecv}
			c.returned = u.Seq
			d := c.out
			c.out = delta{}
			c.pubMu.Unlock()
			d.fill(u) // outside pubMu: d is no longer the client's
			return u, nil
		}
		ch := c.notify
		c.pubMu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

// Run connects to the server and keeps the subscriptions alive, reconnecting with
// backoff, until ctx is done; it then returns ctx.Err(). The last accepted state stays
// published while disconnected.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.TryLock() {
		return fmt.Errorf("xds client: Run is already running")
	}
	defer c.running.Unlock()
	c.own()
	defer c.disown()
	c.alarm = time.NewTimer(time.Hour)
	defer c.alarm.Stop()

	c.publish(time.Now()) // start the clock for the first responses
	c.post()

	failures := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.statMu.Lock()
			c.stat.reconnects++
			c.statMu.Unlock()
		}
		gotResponse, err := c.runStream(ctx)
		if ctx.Err() != nil {
			c.setState(Idle, nil)
			return ctx.Err()
		}
		failures = nextFailures(failures, gotResponse)
		wait := c.cfg.Backoff.delay(failures, rand.Float64)
		c.setState(Waiting, err)
		c.log.Warn("xds stream ended, reconnecting", "err", err, "in", wait)
		if err := c.sleep(ctx, wait); err != nil {
			c.setState(Idle, nil)
			return err
		}
	}
}

// nextFailures counts failed attempts in a row; a stream that received a response
// resets the count (the next wait is Backoff.Initial).
func nextFailures(failures int, gotResponse bool) int {
	if gotResponse {
		return 1
	}
	return failures + 1
}

// sleep waits d while still running the missing-resource timer, so that a resource
// that never arrives is reported even while the server is unreachable.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	wake := time.NewTimer(d)
	defer wake.Stop()
	if _, ok := await(c, ctx, wake.C); !ok {
		return ctx.Err()
	}
	return nil
}

// await returns the next value of ch, doing meanwhile what Run's goroutine owes the
// others: the missing-resource check and inspections. ok is false when ctx ended
// first.
func await[T any](c *Client, ctx context.Context, ch <-chan T) (v T, ok bool) {
	for {
		c.armDeadline()
		select {
		case <-ctx.Done():
			return v, false
		case v := <-ch:
			return v, true
		case <-c.alarm.C:
			c.onDeadline()
		case f := <-c.inspections:
			f()
		}
	}
}

// armDeadline points the alarm at the next missing-resource check (or far away).
func (c *Client) armDeadline() {
	if c.deadline.IsZero() {
		c.alarm.Reset(time.Hour)
		return
	}
	c.alarm.Reset(max(time.Until(c.deadline), 0))
}

func (c *Client) onDeadline() {
	defer func() {
		if r := recover(); r != nil { // never let a bug take the host process down
			c.log.Error("xds client panic in missing-resource check", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	c.publish(time.Now())
	c.post()
}

// own makes Run's goroutine the owner of the protocol state, which inspect then asks.
func (c *Client) own() {
	c.insp.Lock()
	defer c.insp.Unlock()
	c.runDone = make(chan struct{})
}

// disown gives the protocol state back to inspect's callers.
func (c *Client) disown() {
	c.insp.Lock()
	defer c.insp.Unlock()
	close(c.runDone)
	c.runDone = nil
}

// inspect runs f where it may read the protocol state: on Run's goroutine between
// two events while Run runs, else here, holding insp so that no Run starts meanwhile.
// It returns ctx's error if ctx ends before f could run.
func (c *Client) inspect(ctx context.Context, f func()) error {
	for {
		c.insp.Lock()
		done := c.runDone
		if done == nil {
			f()
			c.insp.Unlock()
			return nil
		}
		c.insp.Unlock()
		ran := make(chan struct{})
		var panicked any
		run := func() {
			defer close(ran)
			// A bug in f is the caller's, not a reason to end the stream.
			defer func() { panicked = recover() }()
			f()
		}
		select {
		case c.inspections <- run:
			<-ran
			if panicked != nil {
				panic(panicked)
			}
			return nil
		case <-done: // Run ended: try again
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runStream runs one ADS stream until it fails or ctx is done. gotResponse reports
// whether the server answered at least once (which resets the backoff). A panic in the
// protocol code ends the stream with an error instead of the process.
func (c *Client) runStream(ctx context.Context) (gotResponse bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("xds client: internal error: %v\n%s", r, debug.Stack())
			c.log.Error("xds client panic", "panic", r)
		}
	}()
	c.setState(Connecting, nil)
	conn, err := c.dial()
	if err != nil {
		return false, err
	}
	defer conn.Close()
	// The stream ends with ctx but does not carry its deadline: gRPC would send it to
	// the server (grpc-timeout), which then cancels the stream at the same instant,
	// and its cancel could arrive before ctx is done here, looking like a lost stream.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer context.AfterFunc(ctx, cancel)()
	defer cancel()

	// Opening waits for the connection; this goroutine keeps its duties meanwhile.
	type opened struct {
		s   stream
		err error
	}
	opening := make(chan opened, 1)
	wg.Go(func() {
		defer func() {
			if r := recover(); r != nil {
				opening <- opened{err: fmt.Errorf("xds client: internal error in open: %v", r)}
			}
		}()
		var o opened
		if c.cfg.Protocol == SotW {
			o.s, o.err = c.openSotw(sctx, conn)
		} else {
			o.s, o.err = c.openDelta(sctx, conn)
		}
		opening <- o
	})
	o, ok := await(c, ctx, opening)
	if !ok {
		return false, ctx.Err()
	}
	if o.err != nil {
		return false, describe(c.cfg.Server, o.err)
	}
	s := o.s
	for _, t := range c.types {
		t.nonce = ""
	}
	c.intern = resource.NewInterner()
	s.start()
	c.post()
	s.flush()

	// One goroutine receives, one sends (gRPC allows one of each per stream), and this
	// one handles what arrives. Either ends the stream with an error.
	type event struct {
		m   any
		at  time.Time // when recv returned it
		err error
	}
	events := make(chan event)
	report := func(err error) {
		select {
		case events <- event{err: err}:
		case <-sctx.Done():
		}
	}
	wg.Go(func() {
		defer func() {
			if r := recover(); r != nil {
				report(fmt.Errorf("xds client: internal error in receive: %v", r))
			}
		}()
		for {
			m, err := s.recv()
			if err != nil {
				report(err)
				return
			}
			select {
			case events <- event{m: m, at: time.Now()}:
			case <-sctx.Done():
				return
			}
		}
	})
	wg.Go(func() {
		defer func() {
			if r := recover(); r != nil {
				report(fmt.Errorf("xds client: internal error in send: %v", r))
			}
		}()
		err := s.sendLoop(sctx)
		if sctx.Err() != nil {
			return
		}
		if errors.Is(err, io.EOF) {
			// The server ended the stream under our send; the receiver gets its status.
			t := time.NewTimer(time.Second)
			defer t.Stop()
			select {
			case <-t.C:
			case <-sctx.Done():
				return
			}
		}
		report(err)
	})

	for {
		ev, ok := await(c, ctx, events)
		if !ok {
			return gotResponse, ctx.Err()
		}
		if ev.err != nil {
			return gotResponse, describe(c.cfg.Server, ev.err)
		}
		if !gotResponse {
			gotResponse = true
			c.setState(Connected, nil)
			c.log.Info("xds stream established")
		}
		c.recvAt = ev.at
		s.handle(ev.m)
		// The status shows the response handled before the server can see the answer.
		c.post()
		s.flush()
	}
}

// stream is one protocol's side of an ADS stream. All but sendLoop run on Run's
// goroutine.
type stream interface {
	// start queues the initial subscriptions (all of them, with the versions held).
	start()
	recv() (any, error)
	// handle processes one response: decode, apply or reject, queue the dependent
	// subscription changes and the ACK or NACK, publish.
	handle(any)
	// flush hands the requests queued since the last flush to the sender.
	flush()
	// sendLoop sends what flush hands over, in order, until ctx is done or a send
	// fails. It runs on the stream's sender goroutine.
	sendLoop(ctx context.Context) error
}
