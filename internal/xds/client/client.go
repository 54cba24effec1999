// Package client is amesh's ADS client: it talks to istiod like an Envoy sidecar
// (Delta or SotW over one gRPC stream), follows wildcard listeners and clusters and the
// route configurations and endpoints they name, ACKs or NACKs every response, and
// publishes consistent snapshots (resource.State) to the rest of amesh.
//
// Concurrency: Run owns the protocol state and is the only writer; Next, Ready and
// Status may be called from any goroutine. All mutable fields are guarded by mu,
// except the consumer's maps, which only Next touches (see view.go).
package client

import (
	"context"
	"errors"
	"fmt"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"io"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Client is an ADS client. Create it with New and start it with Run.
type Client struct {
	cfg   Config         // read-only after New
	log   *slog.Logger   // read-only after New
	ready chan struct{}  // closed at the first published snapshot
	rnd   func() float64 // jitter source, read-only after New

	readyOnce sync.Once
	running   sync.Mutex // held by Run: one Run at a time

	mu sync.Mutex
	// Protocol state, written by Run.
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

	// Publication.
	published  uint64                     // Seq of the last published update (0: none yet)
	pubMissing []resource.MissingResource // its Missing
	pubRecv    time.Time                  // its Received
	out        delta                      // what was published since Next last took it
	returned   uint64                     // Seq of the update Next returned last
	notify     chan struct{}              // closed and replaced at every publication

	// Connection status.
	state      ConnState
	lastErr    string
	reconnects uint64
	connected  time.Time
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
		rnd:          defaultRand,
		pendingSince: map[resKey]time.Time{},
		notify:       make(chan struct{}),
		decoded:      map[string]*routev3.RouteConfiguration{},
		intern:       resource.NewInterner(),
		state:        Idle,
	}
	for i, u := range typeURLs {
		c.types[i] = newTypeState(u, i == ldsIdx || i == cdsIdx)
	}
	return c, nil
}

// Ready is closed when the first consistent snapshot has been published.
func (c *Client) Ready() <-chan struct{} { return c.ready }

// Next blocks until the client has published since Next last returned, and returns
// one Update covering everything published since then: the first one replaces every
// kind. It has a single consumer; the Update is the consumer's own.
func (c *Client) Next(ctx context.Context) (*resource.Update, error) {
	for {
		c.mu.Lock()
		if c.published > c.returned {
			u := &resource.Update{Seq: c.published, Missing: slices.Clone(c.pubMissing), Received: c.pubRecv}
			c.returned = u.Seq
			d := c.out
			c.out = delta{}
			c.mu.Unlock()
			d.fill(u) // outside mu: d is no longer the client's
			return u, nil
		}
		ch := c.notify
		c.mu.Unlock()
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

	c.mu.Lock()
	c.publishLocked(time.Now()) // start the clock for the first responses
	c.mu.Unlock()

	failures := 0
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			c.mu.Lock()
			c.reconnects++
			c.mu.Unlock()
		}
		gotResponse, err := c.runStream(ctx)
		if ctx.Err() != nil {
			c.setState(Idle, nil)
			return ctx.Err()
		}
		failures = nextFailures(failures, gotResponse)
		wait := c.cfg.Backoff.delay(failures, c.rnd)
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
	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()
	for {
		c.armDeadline(deadline)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake.C:
			return nil
		case <-deadline.C:
			c.onDeadline()
		}
	}
}

// armDeadline points t at the next missing-resource check (or far away).
func (c *Client) armDeadline(t *time.Timer) {
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	if dl.IsZero() {
		t.Reset(time.Hour)
		return
	}
	t.Reset(max(time.Until(dl), 0))
}

func (c *Client) onDeadline() {
	defer func() {
		if r := recover(); r != nil { // never let a bug take the host process down
			c.log.Error("xds client panic in missing-resource check", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.publishLocked(time.Now())
}

func (c *Client) setState(s ConnState, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.state = s
	if err != nil {
		c.lastErr = err.Error()
	}
	if s == Connected {
		c.connected = time.Now()
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
	defer context.AfterFunc(ctx, cancel)()
	defer cancel()
	var s stream
	if c.cfg.Protocol == SotW {
		s, err = c.openSotw(sctx, conn)
	} else {
		s, err = c.openDelta(sctx, conn)
	}
	if err != nil {
		return false, describe(c.cfg.Server, err)
	}
	c.mu.Lock()
	for _, t := range c.types {
		t.nonce = ""
	}
	c.intern = resource.NewInterner()
	c.mu.Unlock()
	if err := s.start(); err != nil {
		// io.EOF from a send means the server already ended the stream (e.g. it
		// rejected our token); its status comes with the next receive.
		if errors.Is(err, io.EOF) {
			if _, rerr := s.recv(); rerr != nil {
				err = rerr
			}
		}
		return false, describe(c.cfg.Server, err)
	}

	// One goroutine receives, this one handles and sends: gRPC allows one concurrent
	// sender and one receiver per stream.
	type inbound struct {
		m  any
		at time.Time // when recv returned it
	}
	msgs := make(chan inbound)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			if r := recover(); r != nil {
				errc <- fmt.Errorf("xds client: internal error in receive: %v", r)
			}
		}()
		for {
			m, err := s.recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case msgs <- inbound{m, time.Now()}:
			case <-sctx.Done():
				errc <- sctx.Err()
				return
			}
		}
	}()
	defer wg.Wait()
	defer cancel()

	deadline := time.NewTimer(time.Hour)
	defer deadline.Stop()
	for {
		c.armDeadline(deadline)
		select {
		case <-ctx.Done():
			return gotResponse, ctx.Err()
		case err := <-errc:
			return gotResponse, describe(c.cfg.Server, err)
		case in := <-msgs:
			if !gotResponse {
				gotResponse = true
				c.setState(Connected, nil)
				c.log.Info("xds stream established")
			}
			c.mu.Lock()
			c.recvAt = in.at
			c.mu.Unlock()
			if err := s.handle(in.m); err != nil {
				if errors.Is(err, io.EOF) {
					// The stream ended under our send; the receiver gets its status.
					select {
					case rerr := <-errc:
						err = rerr
					case <-time.After(time.Second):
					}
				}
				return gotResponse, describe(c.cfg.Server, err)
			}
		case <-deadline.C:
			c.onDeadline()
		}
	}
}

// stream is one protocol's side of an ADS stream.
type stream interface {
	// start sends the initial subscriptions (all of them, with the versions held).
	start() error
	recv() (any, error)
	// handle processes one response: decode, apply or reject, send the dependent
	// subscription changes and the ACK or NACK, publish.
	handle(any) error
}
