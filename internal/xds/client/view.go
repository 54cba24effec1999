package client

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Publishing is O(changed resources): copying the maps of a 10,000-cluster mesh for
// every endpoint change would dominate the change's latency (issue 7). So the client
// does not build immutable maps per snapshot. Publishing records, per type, which names
// changed and their new messages (delta); Next, in the consumer's goroutine, patches
// maps the consumer owns (views) with the deltas published since its last call.
//
// The consumer may still be reading the snapshot Next returned before (the agent
// translates one snapshot while its reader waits in Next for the following one; the
// overlay source returns its last snapshot again while Next is in flight), and tests
// compare a snapshot with the previous one. So Next rotates over numViews map sets: the
// maps of a returned snapshot are patched again only by the numViews-th following Next
// call. Every delta is applied once per view, which is still O(changed).
const numViews = 3

// overflowSlack is how many more names than the type holds a delta may collect before
// it is replaced by the whole state (only when the consumer stops calling Next while
// resources keep changing; it bounds the memory the deltas use).
const overflowSlack = 1024

// delta is what the published state changed, per type, since the consumer last called
// Next: name -> new message, or nil when the resource was removed. A replaced type
// (the first snapshot, or after an overflow) holds the whole state of the type as it
// was then (whole), with msgs the changes since. whole lists the entries rather than
// copying their messages into a map: an entry's message never changes, and the list
// costs a pointer per resource, where a map cost 1.3 MB at 10,000 services for as
// long as some view had not taken it. Guarded by Client.mu until Next takes it;
// immutable afterwards.
type delta struct {
	msgs     [numTypes]map[string]any
	whole    [numTypes][]*entry
	replaced [numTypes]bool
	// overflowed is set by record when some type was replaced because its delta grew
	// past the type's size; the publisher then marks the Changes Full.
	overflowed bool
}

// record adds the resources of type i named in changed (their current messages in t)
// to d. whole records the entire state of the type instead.
func (d *delta) record(i int, t *typeState, changed map[string]struct{}, whole bool) {
	if !whole && len(changed) == 0 {
		return
	}
	if !whole {
		m := d.msgs[i]
		if m == nil {
			m = make(map[string]any, len(changed))
			d.msgs[i] = m
		}
		for n := range changed {
			if e := t.res[n]; e != nil {
				m[n] = e.msg
			} else {
				m[n] = nil
			}
		}
		if len(m) <= len(t.res)+overflowSlack {
			return
		}
		d.overflowed = true
	}
	all := make([]*entry, 0, len(t.res))
	for _, e := range t.res {
		all = append(all, e)
	}
	d.whole[i], d.msgs[i], d.replaced[i] = all, nil, true
}

// view is one set of consumer-owned maps. Only Next touches it, in the consumer's
// goroutine, serialized by Client.consumer.
type view struct {
	listeners    map[string]*listenerv3.Listener
	routeConfigs map[string]*resource.RouteConfig
	clusters     map[string]*resource.Cluster
	endpoints    map[string]*resource.LoadAssignment
	// behind is the deltas taken since this view was last handed out, oldest first.
	behind []*delta
}

// views rotates over numViews views.
type views struct {
	ring [numViews]view
	next int
}

// take queues d for every view and returns the next view in turn, brought up to date.
func (vs *views) take(d *delta) *view {
	for i := range vs.ring {
		vs.ring[i].behind = append(vs.ring[i].behind, d)
	}
	v := &vs.ring[vs.next]
	vs.next = (vs.next + 1) % numViews
	for i, d := range v.behind {
		v.listeners = patch(v.listeners, d, ldsIdx)
		v.routeConfigs = patch(v.routeConfigs, d, rdsIdx)
		v.clusters = patch(v.clusters, d, cdsIdx)
		v.endpoints = patch(v.endpoints, d, edsIdx)
		v.behind[i] = nil // let the garbage collector have applied deltas
	}
	v.behind = v.behind[:0]
	return v
}

// fill sets the resource maps of s to v's.
func (v *view) fill(s *resource.Snapshot) {
	s.Listeners, s.RouteConfigs, s.Clusters, s.Endpoints = v.listeners, v.routeConfigs, v.clusters, v.endpoints
}

// patch applies the changes of type i in d to m in place. A replaced type starts from
// a new map, so that a rebuild never leaves stale names behind.
func patch[M any](m map[string]M, d *delta, i int) map[string]M {
	if d.replaced[i] || m == nil {
		m = make(map[string]M, len(d.whole[i])+len(d.msgs[i]))
	}
	for _, e := range d.whole[i] {
		m[msgName(e.msg)] = e.msg.(M)
	}
	for n, msg := range d.msgs[i] {
		if msg == nil {
			delete(m, n)
			continue
		}
		m[n] = msg.(M)
	}
	return m
}
