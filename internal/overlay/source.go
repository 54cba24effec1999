package overlay

import (
	"context"
	"errors"
	"fmt"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// SnapshotSource is the source the overlay wraps (agent.Source; declared here so that
// this package does not depend on the pipeline).
type SnapshotSource interface {
	Next(ctx context.Context) (*resource.Update, error)
}

// Source wraps the xDS source: Next also returns when the feed has a newer config
// set, with an update that changes no resource, so that the pipeline runs the
// Translator (which reads the feed) without any xDS change. Not safe for concurrent use,
// like the sources it wraps.
type Source struct {
	inner SnapshotSource
	feed  Feed

	last    *resource.Update // the last update inner returned
	changed <-chan struct{}  // closed when the feed moves past what last was returned with
	pending chan nextResult  // the in-flight inner.Next, nil if none
}

type nextResult struct {
	snap *resource.Update
	err  error
	ctx  context.Context // the context inner.Next ran with
}

// NewSource returns a Source that wakes up on xDS snapshots and on feed changes.
func NewSource(inner SnapshotSource, feed Feed) *Source {
	return &Source{inner: inner, feed: feed}
}

// Next returns the next update from the wrapped source, or, once one has been
// returned, an update with the same Seq that changes no resource when the feed
// changed. An inner call interrupted by a feed change stays in flight for the next call.
func (s *Source) Next(ctx context.Context) (*resource.Update, error) {
	for {
		if s.pending == nil {
			ch := make(chan nextResult, 1)
			go func(ctx context.Context) {
				r := nextResult{ctx: ctx}
				// This goroutine is ours, so a panic in the inner source must not escape
				// it (the library runs inside nginx); it reaches the caller as an error.
				defer func() {
					if p := recover(); p != nil {
						r.snap, r.err = nil, fmt.Errorf("overlay: panic in source: %v", p)
					}
					ch <- r
				}()
				r.snap, r.err = s.inner.Next(ctx)
			}(ctx)
			s.pending = ch
		}
		var changed <-chan struct{}
		if s.last != nil {
			changed = s.changed // before the first snapshot there is nothing to re-translate
		}
		select {
		case r := <-s.pending:
			s.pending = nil
			if r.err != nil {
				if r.ctx != ctx && r.ctx.Err() != nil && ctx.Err() == nil && isContextErr(r.err) {
					continue // started by an earlier, since cancelled call: retry with ours
				}
				return nil, r.err
			}
			// Read the feed after the snapshot so a change from now on wakes us again.
			_, s.changed = s.feed.Current()
			s.last = r.snap
			return r.snap, nil
		case <-changed:
			_, s.changed = s.feed.Current()
			return &resource.Update{Seq: s.last.Seq, Missing: s.last.Missing, Received: s.last.Received}, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
