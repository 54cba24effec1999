package server

import "sync"

// Notifier wakes every stream when something that may change a pod's config set
// happened (a config or a pod's labels changed). It carries no payload: each stream
// recomputes its own set and sends it only if it differs. Safe for concurrent use.
type Notifier struct {
	mu sync.Mutex
	ch chan struct{} // closed by Notify; created lazily
}

// Changed returns a channel closed by the next Notify.
func (n *Notifier) Changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// Notify wakes everyone waiting on a channel from Changed.
func (n *Notifier) Notify() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
}
