package client

import (
	"context"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// ConnState is the state of the connection to the server.
type ConnState string

const (
	Idle       ConnState = "idle"       // Run not running
	Connecting ConnState = "connecting" // stream opened, no response yet
	Connected  ConnState = "connected"  // the server has answered on this stream
	Waiting    ConnState = "waiting"    // backing off before the next attempt
)

// Status is a copy of the client's state for debug pages and metrics.
type Status struct {
	State      ConnState
	Protocol   Protocol
	Server     string
	LastError  string    // the error that ended the last stream
	Since      time.Time // when the current stream got its first response
	Reconnects uint64
	// Seq is the sequence number of the last published snapshot (0: none yet).
	Seq     uint64
	Ready   bool
	Types   map[string]TypeStatus // by type URL
	Missing []resource.MissingResource
	// Stored says in which form resources are kept and handed to consumers: pruned of
	// what amesh never reads (resource.StoredForm), so /debug/xds readers do not
	// mistake a missing field for one istiod did not send.
	Stored string
}

// TypeStatus is the state of one resource type.
type TypeStatus struct {
	Wildcard   bool
	Subscribed int // number of subscribed names (0 for wildcard types)
	Resources  int // number of accepted resources
	Version    string
	Nonce      string
	Responses  uint64
	ACKs       uint64
	NACKs      uint64
	Ignored    uint64 // resources for names not subscribed
	LastNACK   string
	// ResourceVersion maps each accepted resource's name to its version. Only Dump
	// fills it: it copies every name.
	ResourceVersion map[string]string `json:",omitempty"`
}

// board is what Status reports, kept up to date as the stream goes: the protocol
// state's owner posts its counts and counters after each step, and Status copies
// them without ever waiting for a response to be handled. Guarded by Client.statMu.
type board struct {
	state      ConnState
	lastErr    string
	reconnects uint64
	connected  time.Time
	seq        uint64
	missing    []resource.MissingResource // never modified once posted
	types      [numTypes]TypeStatus
}

// post copies what Status reports of the protocol state to the board. Only the
// protocol state's owner calls it.
func (c *Client) post() {
	c.statMu.Lock()
	defer c.statMu.Unlock()
	for i, t := range c.types {
		c.stat.types[i] = TypeStatus{
			Wildcard:   t.wildcard,
			Subscribed: len(t.subscribed),
			Resources:  len(t.res),
			Version:    t.version,
			Nonce:      t.nonce,
			Responses:  t.responses,
			ACKs:       t.acks,
			NACKs:      t.nacks,
			Ignored:    t.ignored,
			LastNACK:   t.lastNACK,
		}
	}
	c.stat.seq = c.published
	c.stat.missing = c.missing
}

func (c *Client) setState(s ConnState, err error) {
	c.statMu.Lock()
	defer c.statMu.Unlock()
	c.stat.state = s
	if err != nil {
		c.stat.lastErr = err.Error()
	}
	if s == Connected {
		c.stat.connected = time.Now()
	}
}

// Status returns a copy of the client's status: counts and counters, no resource
// names, so metrics can scrape it as often as they like.
func (c *Client) Status() Status {
	c.statMu.Lock()
	defer c.statMu.Unlock()
	b := &c.stat
	st := Status{
		State:      b.state,
		Protocol:   c.cfg.Protocol,
		Server:     c.cfg.Server,
		LastError:  b.lastErr,
		Since:      b.connected,
		Reconnects: b.reconnects,
		Seq:        b.seq,
		Ready:      b.seq > 0,
		Types:      make(map[string]TypeStatus, numTypes),
		Missing:    append([]resource.MissingResource(nil), b.missing...),
		Stored:     resource.StoredForm,
	}
	for i, ts := range b.types {
		st.Types[typeURLs[i]] = ts
	}
	return st
}

// Dump is Status with the version of every accepted resource
// (TypeStatus.ResourceVersion), for debug views. It reads the protocol state where it
// may (inspect), between two responses, so the versions and the counters agree; it
// returns ctx's error if ctx ends first.
func (c *Client) Dump(ctx context.Context) (Status, error) {
	var st Status
	err := c.inspect(ctx, func() {
		st = c.Status()
		for _, t := range c.types {
			ts := st.Types[t.url]
			ts.ResourceVersion = make(map[string]string, len(t.res))
			for n, e := range t.res {
				ts.ResourceVersion[n] = e.versionString()
			}
			st.Types[t.url] = ts
		}
	})
	return st, err
}
