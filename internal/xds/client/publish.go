package client

import (
	"maps"
	"sort"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// wildcardName stands for "the first response of a wildcard type" in missing-resource
// bookkeeping.
const wildcardName = "*"

type resKey struct {
	idx  int
	name string
}

// publishLocked publishes a new snapshot if the state is consistent and differs from
// the last published one. Consistent means: listeners and clusters have been received,
// and every subscribed route configuration and endpoint set is present or has been
// absent for longer than ResourceTimeout (then it is listed in Snapshot.Missing). While
// something is still awaited, c.deadline is when to check again.
func (c *Client) publishLocked(now time.Time) {
	absent := map[resKey]struct{}{}
	for i, t := range c.types {
		if t.wildcard {
			if !t.received {
				absent[resKey{i, wildcardName}] = struct{}{}
			}
			continue
		}
		for n := range t.subscribed {
			if _, ok := t.res[n]; !ok {
				absent[resKey{i, n}] = struct{}{}
			}
		}
	}
	for k := range c.pendingSince {
		if _, ok := absent[k]; !ok {
			delete(c.pendingSince, k)
		}
	}
	c.deadline = time.Time{}
	waiting := false
	var missing []resource.MissingResource
	for k := range absent {
		since, ok := c.pendingSince[k]
		if !ok {
			since = now
			c.pendingSince[k] = now
		}
		dl := since.Add(c.cfg.ResourceTimeout)
		if now.Before(dl) {
			waiting = true
			if c.deadline.IsZero() || dl.Before(c.deadline) {
				c.deadline = dl
			}
			continue
		}
		missing = append(missing, resource.MissingResource{TypeURL: typeURLs[k.idx], Name: k.name})
	}
	sort.Slice(missing, func(i, j int) bool {
		if missing[i].TypeURL != missing[j].TypeURL {
			return missing[i].TypeURL < missing[j].TypeURL
		}
		return missing[i].Name < missing[j].Name
	})
	c.missing = missing
	if waiting || !c.types[ldsIdx].received || !c.types[cdsIdx].received {
		return
	}
	if c.latest != nil && c.dirtyEmpty() && sameMissing(c.latest.Missing, missing) {
		return
	}
	c.publishSnapshotLocked(missing)
}

func (c *Client) dirtyEmpty() bool {
	for _, d := range c.dirty {
		if len(d) > 0 {
			return false
		}
	}
	return true
}

func sameMissing(a, b []resource.MissingResource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// publishSnapshotLocked builds the snapshot from the accepted state. Maps of types
// that did not change are shared with the previous snapshot (both are immutable).
func (c *Client) publishSnapshotLocked(missing []resource.MissingResource) {
	prev := c.latest
	s := &resource.Snapshot{Missing: missing}
	if prev == nil {
		s.Seq = 1
		s.Changes.Full = true
	} else {
		s.Seq = prev.Seq + 1
		s.Changes.Since = prev.Seq
	}
	s.Changes.Listeners = c.dirty[ldsIdx]
	s.Changes.RouteConfigs = c.dirty[rdsIdx]
	s.Changes.Clusters = c.dirty[cdsIdx]
	s.Changes.Endpoints = c.dirty[edsIdx]

	var pl map[string]*listenerv3.Listener
	var pr map[string]*routev3.RouteConfiguration
	var pc map[string]*clusterv3.Cluster
	var pe map[string]*endpointv3.ClusterLoadAssignment
	if prev != nil {
		pl, pr, pc, pe = prev.Listeners, prev.RouteConfigs, prev.Clusters, prev.Endpoints
	}
	s.Listeners = nextMap(pl, c.types[ldsIdx], c.dirty[ldsIdx], prev == nil)
	s.RouteConfigs = nextMap(pr, c.types[rdsIdx], c.dirty[rdsIdx], prev == nil)
	s.Clusters = nextMap(pc, c.types[cdsIdx], c.dirty[cdsIdx], prev == nil)
	s.Endpoints = nextMap(pe, c.types[edsIdx], c.dirty[edsIdx], prev == nil)
	c.dirty = [numTypes]map[string]struct{}{}

	c.latest = s
	c.pending.Merge(s.Changes)
	close(c.notify)
	c.notify = make(chan struct{})
	c.readyOnce.Do(func() { close(c.ready) })
}

// nextMap returns the map of one type for the next snapshot: the previous map itself
// when nothing of the type changed (snapshots are immutable, so they can share it), a
// patched copy when few names changed (one endpoint update in a large mesh), and a
// fresh build otherwise.
func nextMap[M any](prev map[string]M, t *typeState, changed map[string]struct{}, first bool) map[string]M {
	switch {
	case !first && len(changed) == 0:
		return prev
	case !first && len(changed) <= len(prev)/8:
		m := maps.Clone(prev)
		if m == nil {
			m = map[string]M{}
		}
		for n := range changed {
			if e := t.res[n]; e != nil {
				m[n] = e.msg.(M)
			} else {
				delete(m, n)
			}
		}
		return m
	}
	m := make(map[string]M, len(t.res))
	for n, e := range t.res {
		m[n] = e.msg.(M)
	}
	return m
}
