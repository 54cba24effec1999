package client

import (
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Publishing is O(changed resources): copying the maps of a large mesh for every
// endpoint change would dominate the change's latency. So the client publishes what
// changed (a delta, recorded per type under Client.pubMu), and Next turns the deltas
// published since it last returned into one resource.Update that the consumer owns.

// overflowSlack is how many more names than the type holds a delta may collect before
// it is replaced by the whole state (only when the consumer stops calling Next while
// resources keep changing; it bounds the memory the deltas use).
const overflowSlack = 1024

// delta is what the published state changed, per type, since Next last took it:
// name -> new message, or nil when the resource was removed. A replaced type (the
// first publication, or after an overflow) holds the whole state of the type as it
// was then (whole), with msgs the changes since. whole lists the entries rather than
// copying their messages into a map: an entry's message never changes. Guarded by
// Client.pubMu until Next takes it; Next's own afterwards.
type delta struct {
	msgs     [numTypes]map[string]any
	whole    [numTypes][]*entry
	replaced [numTypes]bool
	// decoded are the decoded route configurations of the changed RDS resources.
	decoded map[string]*routev3.RouteConfiguration
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
	}
	all := make([]*entry, 0, len(t.res))
	for _, e := range t.res {
		all = append(all, e)
	}
	d.whole[i], d.msgs[i], d.replaced[i] = all, nil, true
}

// addDecoded moves the decoded route configurations of accepted resources that are
// still current (in t) into d.
func (d *delta) addDecoded(t *typeState, decoded map[string]*routev3.RouteConfiguration) {
	for n, m := range decoded {
		if t.res[n] == nil {
			continue
		}
		if d.decoded == nil {
			d.decoded = make(map[string]*routev3.RouteConfiguration, len(decoded))
		}
		d.decoded[n] = m
	}
}

// fill sets the resources of u to what d changed.
func (d *delta) fill(u *resource.Update) {
	u.Listeners = kindOf[*listenerv3.Listener](d, ldsIdx)
	u.RouteConfigs = kindOf[*resource.RouteConfig](d, rdsIdx)
	u.Clusters = kindOf[*resource.Cluster](d, cdsIdx)
	u.Endpoints = kindOf[*resource.LoadAssignment](d, edsIdx)
	u.Secrets = kindOf[*resource.Secret](d, sdsIdx)
	u.Decoded = d.decoded
}

// kindOf is the part of d of type i.
func kindOf[M any](d *delta, i int) resource.Kind[M] {
	k := resource.Kind[M]{Replace: d.replaced[i]}
	if n := len(d.whole[i]) + len(d.msgs[i]); n > 0 {
		k.Upsert = make(map[string]M, n)
	}
	for _, e := range d.whole[i] {
		k.Upsert[msgName(e.msg)] = e.msg.(M)
	}
	for n, msg := range d.msgs[i] {
		switch {
		case msg != nil:
			k.Upsert[n] = msg.(M)
		case k.Replace:
			delete(k.Upsert, n)
		default:
			k.Remove = append(k.Remove, n)
		}
	}
	slices.Sort(k.Remove)
	return k
}
