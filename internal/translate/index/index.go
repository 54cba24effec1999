// Package index records what each translated piece was built from and decides, from
// that, what an update makes stale. The builders declare what a piece read (a virtual
// host: the clusters its routes send to and those whose shape and endpoints it reads;
// a listener: the clusters of its stream routes; a route-configuration context: its
// RDS name); the index keeps the reverse edges, apart from the builders, and never
// looks inside a piece. V identifies a translated virtual host.
package index

import (
	"iter"
	"maps"
)

// Index is the reverse edges, kept from one update to the next, and the pieces an
// update in progress (Begin to End) made stale. It is not safe for concurrent use.
type Index[V comparable] struct {
	contexts map[string]map[string]bool // RDS name -> keys of the contexts serving it
	eds      multi[string]              // EDS name -> clusters reading it (see MoveEDS)
	routes   multi[V]                   // cluster -> virtual hosts routing to it
	mirrors  multi[V]                   // cluster -> virtual hosts reading its shape and endpoints
	streams  map[string]map[string]bool // cluster -> listeners with a stream route to it
	// shapes: cluster -> listeners whose stream routes read its shape too
	shapes map[string]map[string]bool

	staleVH        map[V]bool
	staleListeners map[string]bool
}

// New returns an empty Index.
func New[V comparable]() *Index[V] {
	return &Index[V]{contexts: map[string]map[string]bool{}, streams: map[string]map[string]bool{}, shapes: map[string]map[string]bool{}}
}

// Begin starts an update.
func (x *Index[V]) Begin() {
	x.staleVH, x.staleListeners = map[V]bool{}, map[string]bool{}
}

// End ends the update; what is still marked stale is forgotten.
func (x *Index[V]) End() { x.staleVH, x.staleListeners = nil, nil }

// AddContext records that the context key serves the route configuration rds.
func (x *Index[V]) AddContext(rds, key string) { add(x.contexts, rds, key) }

// RemoveContext undoes AddContext.
func (x *Index[V]) RemoveContext(rds, key string) { remove(x.contexts, rds, key) }

// CollectContexts adds to keys the keys of the contexts serving the route
// configuration rds.
func (x *Index[V]) CollectContexts(rds string, keys map[string]bool) {
	for k := range x.contexts[rds] {
		keys[k] = true
	}
}

// RouteConfigs yields the names of the route configurations some context serves.
func (x *Index[V]) RouteConfigs() iter.Seq[string] { return maps.Keys(x.contexts) }

// MoveEDS records that cluster reads its endpoints from the EDS resource to instead
// of from ("": none). Istio's EDS clusters read the resource of their own name, which
// the caller finds without the index: only the others are kept (tens of thousands of
// entries otherwise).
func (x *Index[V]) MoveEDS(cluster, from, to string) {
	if from == to {
		return
	}
	x.eds.remove(from, cluster)
	if to != "" && to != cluster {
		x.eds.addOnce(to, cluster)
	}
}

// ClustersOfEDS yields the clusters reading the EDS resource eds, but the one named
// eds.
func (x *Index[V]) ClustersOfEDS(eds string) iter.Seq[string] { return x.eds.all(eds) }

// AddVirtualHost records what the virtual host v read: routes, the clusters its
// routes send to (their existence and kind); mirrors, the clusters whose shape and
// endpoints it read. Each list holds a cluster once.
func (x *Index[V]) AddVirtualHost(v V, routes, mirrors []string) {
	for _, c := range routes {
		x.routes.add(c, v)
	}
	for _, c := range mirrors {
		x.mirrors.add(c, v)
	}
}

// RemoveVirtualHost undoes AddVirtualHost, with the same lists; v is no longer stale.
func (x *Index[V]) RemoveVirtualHost(v V, routes, mirrors []string) {
	for _, c := range routes {
		x.routes.remove(c, v)
	}
	for _, c := range mirrors {
		x.mirrors.remove(c, v)
	}
	delete(x.staleVH, v)
}

// AddStream records that listener has a stream route to cluster; shape: the route
// reads the cluster's shape too (an original-destination cluster's source addresses).
func (x *Index[V]) AddStream(cluster, listener string, shape bool) {
	add(x.streams, cluster, listener)
	if shape {
		add(x.shapes, cluster, listener)
	}
}

// RemoveStream undoes AddStream.
func (x *Index[V]) RemoveStream(cluster, listener string) {
	remove(x.streams, cluster, listener)
	remove(x.shapes, cluster, listener)
}

// ClusterChanged marks stale what read cluster. kind: what routes see of it changed
// (its existence, kind or load balancing), which makes stale the virtual hosts that
// read it and the listeners with stream routes to it. content: its shape or
// endpoints changed, which makes stale the virtual hosts and listeners that read those.
func (x *Index[V]) ClusterChanged(cluster string, kind, content bool) {
	if kind {
		for v := range x.routes.all(cluster) {
			x.staleVH[v] = true
		}
		for l := range x.streams[cluster] {
			x.staleListeners[l] = true
		}
	}
	if kind || content {
		for v := range x.mirrors.all(cluster) {
			x.staleVH[v] = true
		}
		for l := range x.shapes[cluster] {
			x.staleListeners[l] = true
		}
	}
}

// MarkStale marks the virtual host v stale for a reason outside the edges the index
// keeps: the caller found that it read something that changed (a plugin config of
// amesh-controller whose scope may select its routes).
func (x *Index[V]) MarkStale(v V) { x.staleVH[v] = true }

// TakeStale returns the virtual hosts marked stale since the last call, in no order.
func (x *Index[V]) TakeStale() []V {
	if len(x.staleVH) == 0 {
		return nil
	}
	vs := make([]V, 0, len(x.staleVH))
	for v := range x.staleVH {
		vs = append(vs, v)
	}
	x.staleVH = map[V]bool{}
	return vs
}

// MarkListenerStale marks listener stale for a reason outside the edges the index
// keeps (a remote JWKS its providers name was fetched anew).
func (x *Index[V]) MarkListenerStale(name string) { x.staleListeners[name] = true }

// ListenerStale reports whether a cluster that listener's stream routes read changed.
func (x *Index[V]) ListenerStale(name string) bool { return x.staleListeners[name] }

// AnyListenerStale reports whether ListenerStale holds for some listener.
func (x *Index[V]) AnyListenerStale() bool { return len(x.staleListeners) > 0 }

func add(m map[string]map[string]bool, k, v string) {
	s := m[k]
	if s == nil {
		s = map[string]bool{}
		m[k] = s
	}
	s[v] = true
}

func remove(m map[string]map[string]bool, k, v string) {
	if s := m[k]; s != nil {
		delete(s, v)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}
