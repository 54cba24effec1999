package translate

// Clusters. A changed cluster, or one whose endpoints changed, is synced: its
// upstreams are rebuilt, and what read it is marked stale in the index (the virtual
// hosts and stream routes that route to it when what routes see of it changed; those
// that read its shape and endpoints whenever they changed).

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// clusters are the translated clusters of the current snapshot, by name.
type clusters map[string]*clusterState

// ref returns what routes need to know about a cluster and the name to keep: the
// snapshot's copy when the cluster exists. Routes name their cluster with strings of
// their own decoded configuration; keeping those in the index and references would
// hold a second copy of every referenced cluster's name.
func (c clusters) ref(name string) (string, clusterInfo) {
	if cs := c[name]; cs != nil {
		return cs.name, cs.info
	}
	return name, clusterInfo{}
}

// clusterState is a translated cluster: the snapshot's resource.Cluster (its names and
// shared shape; upstreams are built from those). There is one per cluster (tens of
// thousands), so it keeps only what cannot be derived.
type clusterState struct {
	src *resource.Cluster
	cla *resource.LoadAssignment
	// name is the snapshot's copy of the cluster's name (src.Name), next to info: routes
	// look both up (clusters.ref), and src is a cache miss away.
	name string
	info clusterInfo
	// ups are the ids of the cluster's referenced upstreams (upRef.id), in no order.
	// Here rather than in an index by name: only existing clusters have upstreams,
	// and a removed cluster's are all released in the call that removes it (its
	// routes and stream routes depend on it, see index.ClusterChanged).
	ups    []string
	report clusterFindings
	// tls is the amesh-upstream-tls configuration of the cluster's TLS context (nil
	// when its endpoints cannot use one); info.tls is its digest.
	tls *upstream.TLSConf
}

// eds returns the EDS name the cluster's endpoints are read from, "" when they do not
// come from EDS.
func (cs *clusterState) eds() string { return cs.src.EDS }

// clusterInfo is what routes need to know about a cluster.
type clusterInfo struct {
	exists  bool
	special upstream.SpecialKind
	hashLB  bool
	tls     uint64 // digest of clusterState.tls, 0 without
}

// syncClusters updates cluster state for changed clusters and endpoints.
func (t *Translator) syncClusters(full bool, ch *resource.Changes) {
	if full {
		t.syncSecrets(true, ch, nil)
		for n := range t.call.snap.Clusters {
			t.syncCluster(n)
		}
		for n := range t.clusters {
			if t.call.snap.Clusters[n] == nil {
				t.syncCluster(n) // removed
			}
		}
		return
	}
	names := map[string]bool{}
	t.syncSecrets(false, ch, names)
	for n := range ch.Clusters {
		names[n] = true
	}
	for e := range ch.Endpoints {
		if cs := t.clusters[e]; cs != nil && cs.eds() == e {
			names[e] = true // not in the index, see index.MoveEDS
		}
		for n := range t.idx.ClustersOfEDS(e) {
			names[n] = true
		}
	}
	for n := range names {
		t.syncCluster(n)
	}
}

// syncCluster brings one cluster up to date with the snapshot.
func (t *Translator) syncCluster(name string) {
	src := t.call.snap.Clusters[name]
	cs := t.clusters[name]
	if src == nil {
		if cs == nil {
			return
		}
		t.idx.MoveEDS(name, cs.eds(), "")
		t.setClusterSecrets(name, cs.src, nil, nil)
		delete(t.clusters, name)
		t.findings.dirty = true
		t.call.rebuilds[name] = true
		t.idx.ClusterChanged(name, cs.info != clusterInfo{}, false)
		return
	}
	c := src.Shape()
	eds := src.EDS
	var cla *resource.LoadAssignment
	if eds != "" {
		cla = t.call.snap.Endpoints[eds]
	}
	if cs == nil {
		cs = &clusterState{}
		t.clusters[name] = cs
	}
	secs := t.secretsOf(src)
	if cs.src == src && cs.cla == cla && t.sameSecrets(name, secs) {
		return
	}
	oldEDS := ""
	if cs.src != nil {
		oldEDS = cs.eds()
	}
	t.idx.MoveEDS(name, oldEDS, eds)
	contentChanged := cs.cla != cla || cs.src != src || !t.sameSecrets(name, secs)
	t.setClusterSecrets(name, cs.src, src, secs)
	old := cs.info
	cs.src, cs.cla = src, cla
	if cs.name = name; src.Name == name {
		cs.name = src.Name
	}
	cs.info = clusterInfo{exists: true, special: upstream.Special(name, c), hashLB: isHashLB(c)}
	cs.tls, cs.info.tls = upstream.ClusterTLS(name, c, t.up)
	t.call.rebuilds[name] = true
	t.idx.ClusterChanged(name, old != cs.info, contentChanged)
}

func isHashLB(c *clusterv3.Cluster) bool {
	p := c.GetLbPolicy()
	return p == clusterv3.Cluster_RING_HASH || p == clusterv3.Cluster_MAGLEV
}
