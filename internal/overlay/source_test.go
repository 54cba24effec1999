package overlay

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// chanSource returns the snapshots sent on its channel.
type chanSource chan *resource.Update

func (c chanSource) Next(ctx context.Context) (*resource.Update, error) {
	select {
	case s := <-c:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type nextResultT struct {
	snap *resource.Update
	err  error
}

func nextAsync(ctx context.Context, s *Source) <-chan nextResultT {
	ch := make(chan nextResultT, 1)
	go func() {
		snap, err := s.Next(ctx)
		ch <- nextResultT{snap, err}
	}()
	return ch
}

func wait(t *testing.T, ch <-chan nextResultT) nextResultT {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("Next did not return")
		return nextResultT{}
	}
}

func mustNotReturn(t *testing.T, ch <-chan nextResultT) {
	t.Helper()
	select {
	case r := <-ch:
		t.Fatalf("Next returned %+v, want it to block", r)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSourceWakesOnFeedChange(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	inner := make(chanSource)
	feed := &Latest{}
	s := NewSource(inner, feed)

	// Before the first snapshot a feed change has nothing to re-translate.
	first := nextAsync(ctx, s)
	feed.Publish(Set{Version: 1})
	mustNotReturn(t, first)
	snap1 := &resource.Update{Seq: 1, Clusters: resource.Kind[*resource.Cluster]{Replace: true}}
	inner <- snap1
	if r := wait(t, first); r.snap != snap1 || r.err != nil {
		t.Fatalf("got %+v, want snapshot 1", r)
	}

	// A feed change returns an update with the same Seq that changes nothing.
	ch := nextAsync(ctx, s)
	feed.Publish(Set{Version: 2})
	r := wait(t, ch)
	if r.err != nil || r.snap.Seq != 1 || !r.snap.Empty() {
		t.Fatalf("got %+v, want snapshot 1 again with empty changes since 1", r.snap)
	}
	if !snap1.Clusters.Replace {
		t.Fatal("the published snapshot was modified")
	}

	// The inner call interrupted by the feed change is still in flight and delivers.
	ch = nextAsync(ctx, s)
	mustNotReturn(t, ch)
	snap2 := &resource.Update{Seq: 2}
	inner <- snap2
	if r := wait(t, ch); r.snap != snap2 {
		t.Fatalf("got %+v, want snapshot 2", r.snap)
	}

	// Two feed changes before Next is called wake it once.
	feed.Publish(Set{Version: 3})
	feed.Publish(Set{Version: 4})
	if r := wait(t, nextAsync(ctx, s)); r.snap.Seq != 2 || !r.snap.Empty() {
		t.Fatalf("got %+v, want snapshot 2 again", r.snap)
	}
	mustNotReturn(t, nextAsync(ctx, s))
}

func TestSourceContextCancel(t *testing.T) {
	inner := make(chanSource)
	s := NewSource(inner, &Latest{})
	ctx1, cancel1 := context.WithCancel(context.Background())
	ch := nextAsync(ctx1, s)
	cancel1()
	if r := wait(t, ch); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("got %+v, want context.Canceled", r)
	}
	// A later call with a live context is not failed by the earlier call's context.
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	ch = nextAsync(ctx2, s)
	snap := &resource.Update{Seq: 7}
	inner <- snap
	if r := wait(t, ch); r.snap != snap || r.err != nil {
		t.Fatalf("got %+v, want snapshot 7", r)
	}
}

type panicSource struct{}

func (panicSource) Next(context.Context) (*resource.Update, error) { panic("boom") }

func TestSourcePanicBecomesError(t *testing.T) {
	s := NewSource(panicSource{}, &Latest{})
	_, err := s.Next(context.Background())
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("got %v, want an error carrying the panic", err)
	}
}
