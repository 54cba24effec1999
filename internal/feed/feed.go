// Package feed hands a value from the stage that owns it to the stages that read it:
// the owner publishes each new value whole, a reader takes the current one and a
// channel that tells it a newer one is there. The pipeline's inputs besides xDS (the
// controller's plugin configs, the workload identity) are fed this way.
package feed

import "sync"

// Feed publishes the current value of type T. The channel Current returns is closed
// once a newer value is available (and never when none ever will be).
type Feed[T any] interface {
	Current() (T, <-chan struct{})
}

// Latest is a Feed holding the most recently published value. The zero value (holding
// T's zero value) is ready to use and safe for concurrent use.
type Latest[T any] struct {
	mu      sync.Mutex
	v       T
	changed chan struct{} // closed and replaced by Publish; created lazily
}

// Current returns the latest value and a channel closed by the next Publish.
func (l *Latest[T]) Current() (T, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.v, l.changed
}

// Publish makes v the current value and wakes everyone waiting on Current's channel.
// The caller must not modify v (or what it refers to) afterwards.
func (l *Latest[T]) Publish(v T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.v = v
	if l.changed != nil {
		close(l.changed)
	}
	l.changed = make(chan struct{})
}
