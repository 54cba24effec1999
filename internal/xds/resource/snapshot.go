// Package resource holds the xDS resource kinds amesh consumes, their decoders and
// validators, and the consistent Snapshot the xDS client publishes to the rest of amesh.
package resource

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// Snapshot is a consistent view of the xDS state: every RDS name that a listener in
// Listeners references is in RouteConfigs, and every EDS cluster in Clusters has its
// ClusterLoadAssignment in Endpoints (unless it was reported missing after the
// resource timeout, see Missing).
//
// Consumers must never modify a Snapshot's maps or the messages in them. The messages
// are immutable and may be kept; a resource that did not change between two snapshots
// is the same pointer in both, so consumers may cache per-resource work keyed by
// pointer identity. The maps need not outlive the consumer's use of the snapshot: the
// xDS client patches them in place so that a change costs O(changed resources), and a
// snapshot it returned stays valid only until its Next has returned two more (see
// client.Client.Next). A consumer that keeps resources across snapshots keeps the
// messages, not the maps. Snapshots built elsewhere (tests, meshgen, dump) document
// their own lifetime.
type Snapshot struct {
	// Seq increases by one with every snapshot the client publishes.
	Seq uint64

	Listeners map[string]*listenerv3.Listener
	// RouteConfigs are kept in wire form (RouteConfig); a consumer gets the decoded
	// message of a changed one from RouteConfig.Message.
	RouteConfigs map[string]*RouteConfig
	// Clusters are kept as names and shared shapes (Cluster).
	Clusters map[string]*Cluster
	// Endpoints is keyed by the EDS service name (eds_cluster_config.service_name, or
	// the cluster name when that is empty), which is also ClusterLoadAssignment.cluster_name.
	// Endpoints are kept in compact form (LoadAssignment), not as Envoy messages.
	Endpoints map[string]*LoadAssignment

	// Missing names the dependent resources (RDS or EDS names) that were still absent
	// when the resource timeout fired; the listeners and clusters that need them are
	// included anyway so that the rest of the mesh is served.
	Missing []MissingResource

	// Received is when the xDS client received the newest response this snapshot
	// includes (zero when none arrived yet): where the latency of a change begins.
	Received time.Time

	// Changes says what differs from the snapshot with Seq == Changes.Since. A
	// consumer that last saw exactly that snapshot may do incremental work;
	// any other consumer must treat the snapshot as new.
	Changes Changes
}

// MissingResource is a dependent resource that never arrived.
type MissingResource struct {
	TypeURL string
	Name    string
}

// Changes lists, per kind, the names that were added, updated or removed since the
// snapshot with sequence number Since. Full means "assume everything changed".
type Changes struct {
	Since        uint64
	Full         bool
	Listeners    map[string]struct{}
	RouteConfigs map[string]struct{}
	Clusters     map[string]struct{}
	Endpoints    map[string]struct{}
}

// Empty reports whether nothing changed.
func (c *Changes) Empty() bool {
	return !c.Full && len(c.Listeners) == 0 && len(c.RouteConfigs) == 0 &&
		len(c.Clusters) == 0 && len(c.Endpoints) == 0
}

// Merge folds the changes of a later snapshot into c, so that c then describes the
// difference from c.Since to the later snapshot. Used when a consumer skips snapshots.
func (c *Changes) Merge(later Changes) {
	if later.Full {
		c.Full = true
	}
	c.Listeners = mergeSet(c.Listeners, later.Listeners)
	c.RouteConfigs = mergeSet(c.RouteConfigs, later.RouteConfigs)
	c.Clusters = mergeSet(c.Clusters, later.Clusters)
	c.Endpoints = mergeSet(c.Endpoints, later.Endpoints)
}

func mergeSet(dst, src map[string]struct{}) map[string]struct{} {
	if len(src) == 0 {
		return dst
	}
	if dst == nil {
		dst = make(map[string]struct{}, len(src))
	}
	for k := range src {
		dst[k] = struct{}{}
	}
	return dst
}

// EDSName returns the name under which the endpoints of c are requested and stored.
func EDSName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}
