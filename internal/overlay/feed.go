package overlay

import "sync"

// Latest is a Feed holding the most recently published Set. The zero value is ready
// to use and safe for concurrent use.
type Latest struct {
	mu      sync.Mutex
	set     Set
	changed chan struct{} // closed and replaced by Publish; created lazily
}

var _ Feed = (*Latest)(nil)

// Current returns the latest Set and a channel closed by the next Publish.
func (l *Latest) Current() (Set, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.set, l.changed
}

// Publish makes set the current Set and wakes everyone waiting on Current's channel.
// The caller must not modify set afterwards.
func (l *Latest) Publish(set Set) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.set = set
	if l.changed != nil {
		close(l.changed)
	}
	l.changed = make(chan struct{})
}
