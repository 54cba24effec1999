// Package resource holds the xDS resource kinds amesh consumes, their decoders and
// validators, the Update the xDS client publishes and the State a consumer builds
// from those updates.
package resource

import (
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Update is what changed in the xDS client's accepted state since the Update before
// it. The consumer owns it: the client keeps no reference to its maps or slices. The
// messages in it are immutable and may be shared with the client and kept.
type Update struct {
	// Seq increases by one with every update the client publishes; an update that
	// the consumer took late covers the ones it skipped.
	Seq uint64

	Listeners    Kind[*listenerv3.Listener]
	RouteConfigs Kind[*RouteConfig]
	Clusters     Kind[*Cluster]
	Endpoints    Kind[*LoadAssignment]
	// Secrets are the SDS secrets served over ADS that clusters name (see
	// ClusterSecrets). They hold private keys: see Secret.
	Secrets Kind[*Secret]

	// Decoded holds the decoded message of each route configuration in
	// RouteConfigs.Upsert, for the one translation that needs it: the state keeps
	// only the wire form.
	Decoded map[string]*routev3.RouteConfiguration

	// Missing names the dependent resources (RDS, EDS or secret names) absent when the
	// resource timeout fired; the listeners and clusters that need them are
	// included anyway so that the rest of the mesh is served. It is the whole list,
	// not a change.
	Missing []MissingResource

	// Received is when the client received the newest response this update includes
	// (zero when none arrived yet): where the latency of a change begins.
	Received time.Time
}

// Kind is one kind's part of an Update.
type Kind[T any] struct {
	// Replace: Upsert is the kind's whole state; names not in it are gone.
	Replace bool
	Upsert  map[string]T
	Remove  []string
}

func (k *Kind[T]) empty() bool { return !k.Replace && len(k.Upsert) == 0 && len(k.Remove) == 0 }

// apply applies k to m (allocated when nil) and returns it with the names that
// changed: nil for a Replace (everything changed) and when nothing did.
func (k *Kind[T]) apply(m map[string]T) (out map[string]T, changed map[string]struct{}) {
	if k.Replace || m == nil {
		m = make(map[string]T, len(k.Upsert))
	}
	if n := len(k.Upsert) + len(k.Remove); !k.Replace && n > 0 {
		changed = make(map[string]struct{}, n)
	}
	for _, n := range k.Remove {
		delete(m, n)
		if changed != nil {
			changed[n] = struct{}{}
		}
	}
	for n, v := range k.Upsert {
		m[n] = v
		if changed != nil {
			changed[n] = struct{}{}
		}
	}
	return m, changed
}

// State is the resources a consumer holds, by kind, brought up to date by Apply. It
// is consistent when the client's updates are applied in order: every RDS name a
// listener references is in RouteConfigs, and every EDS cluster in Clusters has its
// endpoints in Endpoints, unless listed in Missing. The consumer owns the maps;
// their messages are shared with the client and never modified.
type State struct {
	// Seq is the Seq of the last update applied.
	Seq uint64

	Listeners    map[string]*listenerv3.Listener
	RouteConfigs map[string]*RouteConfig
	Clusters     map[string]*Cluster
	// Endpoints is keyed by the EDS service name (eds_cluster_config.service_name, or
	// the cluster name when that is empty), which is also ClusterLoadAssignment.cluster_name.
	Endpoints map[string]*LoadAssignment
	// Secrets are keyed by name; every secret a cluster names (Cluster.Secrets) is in
	// it unless listed in Missing.
	Secrets map[string]*Secret

	Missing  []MissingResource
	Received time.Time

	// Changes says what the last Apply changed. A state built by hand (tests,
	// generated meshes) sets Changes.Full.
	Changes Changes
}

// MissingResource is a dependent resource that never arrived.
type MissingResource struct {
	TypeURL string
	Name    string
}

// Apply brings s up to date with u and sets s.Changes to what u changed, relative to
// the state s was (Changes.Since is s's previous Seq).
func (s *State) Apply(u *Update) {
	ch := Changes{Since: s.Seq, Decoded: u.Decoded}
	var c [5]map[string]struct{}
	s.Listeners, c[0] = u.Listeners.apply(s.Listeners)
	s.RouteConfigs, c[1] = u.RouteConfigs.apply(s.RouteConfigs)
	s.Clusters, c[2] = u.Clusters.apply(s.Clusters)
	s.Endpoints, c[3] = u.Endpoints.apply(s.Endpoints)
	s.Secrets, c[4] = u.Secrets.apply(s.Secrets)
	if u.Listeners.Replace || u.RouteConfigs.Replace || u.Clusters.Replace || u.Endpoints.Replace || u.Secrets.Replace {
		ch.Full = true
	} else {
		ch.Listeners, ch.RouteConfigs, ch.Clusters, ch.Endpoints, ch.Secrets = c[0], c[1], c[2], c[3], c[4]
	}
	s.Seq, s.Missing, s.Received, s.Changes = u.Seq, u.Missing, u.Received, ch
}

// Done tells s that its Changes were consumed: they are dropped with the decoded
// route configurations they carry, so that only the wire forms stay in memory.
func (s *State) Done() { s.Changes = Changes{Since: s.Seq} }

// Empty reports whether u changes no resource.
func (u *Update) Empty() bool {
	return u.Listeners.empty() && u.RouteConfigs.empty() && u.Clusters.empty() && u.Endpoints.empty() && u.Secrets.empty()
}

// Changes lists, per kind, the names that were added, updated or removed since the
// state with sequence number Since. Full means "assume everything changed".
type Changes struct {
	Since        uint64
	Full         bool
	Listeners    map[string]struct{}
	RouteConfigs map[string]struct{}
	Clusters     map[string]struct{}
	Endpoints    map[string]struct{}
	Secrets      map[string]struct{}
	// Decoded is Update.Decoded: the decoded message of each changed route
	// configuration (all of them when Full), where the update brought one.
	Decoded map[string]*routev3.RouteConfiguration
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool {
	return !c.Full && len(c.Listeners) == 0 && len(c.RouteConfigs) == 0 &&
		len(c.Clusters) == 0 && len(c.Endpoints) == 0 && len(c.Secrets) == 0
}

// RouteMessage returns the decoded route configuration rc: the message the update
// brought when rc changed with it, else decoded anew from its wire form.
func (c *Changes) RouteMessage(rc *RouteConfig) (*routev3.RouteConfiguration, error) {
	if m := c.Decoded[rc.Name]; m != nil {
		return m, nil
	}
	return rc.Message()
}
