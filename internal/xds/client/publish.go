package client

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"sort"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// wildcardName stands for "the first response of a wildcard type" in missing-resource
// bookkeeping.
const wildcardName = "*"

type resKey struct {
	idx  int
	name string
}

// publish publishes a new snapshot if the state is consistent and differs from
// the last published one. Consistent means: listeners and clusters have been received,
// and every subscribed route configuration and endpoint set is present or has been
// absent for longer than ResourceTimeout (then it is listed in Snapshot.Missing). While
// something is still awaited, c.deadline is when to check again. The cost is in the
// number of absent and changed resources, not in the size of the mesh.
func (c *Client) publish(now time.Time) {
	absent := map[resKey]struct{}{}
	for i, t := range c.types {
		if t.wildcard {
			if !t.received {
				absent[resKey{i, wildcardName}] = struct{}{}
			}
			continue
		}
		for n := range t.absent {
			absent[resKey{i, n}] = struct{}{}
		}
	}
	hadPending := len(c.pendingSince) > 0
	for k := range c.pendingSince {
		if _, ok := absent[k]; !ok {
			delete(c.pendingSince, k)
		}
	}
	if hadPending && len(c.pendingSince) == 0 {
		// A Go map keeps its buckets when emptied: after an initial sync that waited
		// for every endpoint set, they held ~5 MiB at 10,000 services for good.
		c.pendingSince = map[resKey]time.Time{}
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
	if c.published > 0 && c.dirtyEmpty() && sameMissing(c.pubMissing, missing) {
		return
	}
	c.publishSnapshot(missing)
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

// publishSnapshot publishes the accepted state: it records what changed (c.out) for
// Next. The first publication records the whole state.
func (c *Client) publishSnapshot(missing []resource.MissingResource) {
	c.handOver(missing)
	c.decoded = map[string]*routev3.RouteConfiguration{}
	c.dirty = [numTypes]map[string]struct{}{}
}

// handOver records the changes in c.out under pubMu and wakes Next.
func (c *Client) handOver(missing []resource.MissingResource) {
	c.pubMu.Lock()
	defer c.pubMu.Unlock()
	first := c.published == 0
	c.published++
	c.pubMissing = missing
	c.pubRecv = c.recvAt
	for i, t := range c.types {
		c.out.record(i, t, c.dirty[i], first)
	}
	c.out.addDecoded(c.types[rdsIdx], c.decoded)
	// Status and Ready show the publication before Next can return it.
	c.post()
	c.readyOnce.Do(func() { close(c.ready) })
	close(c.notify)
	c.notify = make(chan struct{})
}
