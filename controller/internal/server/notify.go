package server

import "sync"

// Notifier wakes the streams of a namespace when something there may change a pod's
// config set (a config, or a pod's labels). It carries no payload: each stream
// recomputes its own set and sends it only if it differs. Scoping by namespace keeps a
// pod event from waking every sidecar of the cluster. Safe for concurrent use.
type Notifier struct {
	mu sync.Mutex
	ch map[string]chan struct{} // by namespace; closed by Notify, created lazily
}

// Changed returns a channel closed by the next Notify(namespace).
func (n *Notifier) Changed(namespace string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = map[string]chan struct{}{}
	}
	ch, ok := n.ch[namespace]
	if !ok {
		ch = make(chan struct{})
		n.ch[namespace] = ch
	}
	return ch
}

// Notify wakes everyone waiting on a channel from Changed(namespace).
func (n *Notifier) Notify(namespace string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if ch, ok := n.ch[namespace]; ok {
		close(ch)
		delete(n.ch, namespace) // nobody waits now; the next Changed makes a new one
	}
}
