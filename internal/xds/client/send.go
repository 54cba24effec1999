package client

import (
	"context"
	"sync"
)

// requests carries a stream's requests from Run's goroutine, which builds them while
// it handles a response, to the stream's sender goroutine, which sends them in order.
// A send can wait on flow control for as long as the server does not read; Run's
// goroutine must not, or Status, Next and the missing-resource timer would wait with
// it. The queue is not bounded: each response adds at most two requests.
type requests[R any] struct {
	held []R // added since the last flush; Run's goroutine's own

	mu    sync.Mutex
	queue []R           // handed over, not yet sent
	wake  chan struct{} // holds a token while queue may be non-empty
}

func newRequests[R any]() requests[R] {
	return requests[R]{wake: make(chan struct{}, 1)}
}

// add queues r behind the requests added before it.
func (q *requests[R]) add(r R) { q.held = append(q.held, r) }

// flush hands the added requests to the sender.
func (q *requests[R]) flush() {
	if len(q.held) == 0 {
		return
	}
	q.mu.Lock()
	q.queue = append(q.queue, q.held...)
	q.mu.Unlock()
	clear(q.held)
	q.held = q.held[:0]
	select {
	case q.wake <- struct{}{}:
	default: // a token is already there
	}
}

// run sends the flushed requests in order until ctx is done or send fails.
func (q *requests[R]) run(ctx context.Context, send func(R) error) error {
	var batch []R
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-q.wake:
		}
		q.mu.Lock()
		batch, q.queue = q.queue, batch[:0]
		q.mu.Unlock()
		for i, r := range batch {
			if err := send(r); err != nil {
				return err
			}
			var zero R
			batch[i] = zero // sent: not kept alive by the queue
		}
	}
}
