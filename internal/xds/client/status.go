package client

import (
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
	Wildcard        bool
	Subscribed      int // number of subscribed names (0 for wildcard types)
	Version         string
	Nonce           string
	Responses       uint64
	ACKs            uint64
	NACKs           uint64
	Ignored         uint64 // resources for names not subscribed
	LastNACK        string
	ResourceVersion map[string]string // accepted resource name -> version
}

// Status returns a snapshot of the client's state. It copies every resource name, so
// it is meant for debug pages and metrics scrapes, not hot paths.
func (c *Client) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := Status{
		State:      c.state,
		Protocol:   c.cfg.Protocol,
		Server:     c.cfg.Server,
		LastError:  c.lastErr,
		Since:      c.connected,
		Reconnects: c.reconnects,
		Types:      make(map[string]TypeStatus, numTypes),
		Missing:    append([]resource.MissingResource(nil), c.missing...),
		Stored:     resource.StoredForm,
	}
	st.Seq = c.published
	st.Ready = c.published > 0
	for _, t := range c.types {
		ts := TypeStatus{
			Wildcard:        t.wildcard,
			Subscribed:      len(t.subscribed),
			Version:         t.version,
			Nonce:           t.nonce,
			Responses:       t.responses,
			ACKs:            t.acks,
			NACKs:           t.nacks,
			Ignored:         t.ignored,
			LastNACK:        t.lastNACK,
			ResourceVersion: make(map[string]string, len(t.res)),
		}
		for n, e := range t.res {
			ts.ResourceVersion[n] = e.versionString()
		}
		st.Types[t.url] = ts
	}
	return st
}
