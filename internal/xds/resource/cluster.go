package resource

// Clusters are kept as shapes. A decoded Istio cluster is ~900 bytes even with its
// repeated sub-messages shared (pruning interns them): the Cluster struct alone is 576.
// But the clusters of a mesh differ mostly in their names: once pruned, the outbound
// clusters of services without a DestinationRule are identical but for name and
// eds_cluster_config.service_name. So a cluster is kept as those two names and its
// shape, the pruned message without them, interned like the sub-messages pruning
// shares (bounded: beyond the table's capacity shapes are kept unshared, one per
// cluster). The translator builds upstreams from the shape
// and the name; nothing needs the whole message again but tests and debug views
// (Message).
//
// A cluster depends on the endpoints of its EDS name when its endpoints come from
// EDS: IsEDS is the one rule that decides it, for the client's subscriptions and
// for the translator alike.

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
)

var clusterKind = &kindFuncs[*clusterv3.Cluster, *Cluster]{
	kindNoun: "cluster",
	decodeFn: decodeCluster,
	pruneFn:  pruneCluster,
	keepFn:   func(c *clusterv3.Cluster) *Cluster { return withSecrets(newCluster(c, nil)) },
	nameFn:   func(r *Cluster) string { return r.Name },
	equalFn:  (*Cluster).Equal,
}

// decodeCluster decodes and validates a cluster and returns it as its names and
// shape, with its EDS name as d.Deps when it has one.
func decodeCluster(d *Decoded, b []byte, _ *Cluster, opts DecodeOptions) (*Cluster, error) {
	c := &clusterv3.Cluster{}
	if err := unmarshalValid(d, b, c); err != nil {
		return nil, err
	}
	// Pruned in two steps: its parts are interned only if its whole shape is not
	// shared (newCluster). c is this decode's own: it becomes the shape.
	secrets := clearCluster(c)
	r := newCluster(c, opts.Intern)
	r.secrets = secrets
	if r.EDS != "" {
		d.Deps = []string{r.EDS}
	}
	return r, nil
}

// IsEDS reports whether the endpoints of c come from EDS (under EDSName(c)).
func IsEDS(c *clusterv3.Cluster) bool {
	return c.GetType() == clusterv3.Cluster_EDS && c.GetClusterType() == nil
}

// EDSName returns the name under which the endpoints of c are requested and stored:
// its EDS service name, or its name when that is empty.
func EDSName(c *clusterv3.Cluster) string {
	return edsName(c.GetEdsClusterConfig().GetServiceName(), c.GetName())
}

func edsName(serviceName, name string) string {
	if serviceName != "" {
		return serviceName
	}
	return name
}

// Cluster is a validated, pruned cluster as the client keeps it. Immutable; safe for
// concurrent use.
type Cluster struct {
	Name string
	// EDS is the name the cluster's endpoints are requested and stored under (EDSName)
	// when they come from EDS (IsEDS), else "": what the cluster depends on.
	EDS string
	// serviceName is eds_cluster_config.service_name.
	serviceName string
	shape       *clusterv3.Cluster
	// secrets are ClusterSecrets(shape): read whenever the client resubscribes, so
	// worked out once, by the decoder while it prunes the TLS contexts (decoding
	// them again would cost every Istio cluster an allocation-heavy unmarshal).
	secrets []string
}

// Secrets returns the names of the SDS secrets served over ADS that the cluster's TLS
// contexts name (ClusterSecrets): what it depends on besides its endpoints. The
// caller must not modify the slice.
func (r *Cluster) Secrets() []string { return r.secrets }

// NewCluster keeps c (which it does not modify) as a Cluster. Its shape is its own:
// only clusters decoded with an Interner (pruned, so that what differs between
// Istio's clusters beyond their names is gone) share shapes. Messages built elsewhere
// (tests, generated meshes, dumps) are not pruned and would fill a table with shapes
// that differ in a TLS context each.
func NewCluster(c *clusterv3.Cluster) *Cluster {
	return withSecrets(newCluster(proto.Clone(c).(*clusterv3.Cluster), nil))
}

// withSecrets sets r's secrets from its shape, for clusters not decoded by the client
// (whose decoder reads them while pruning).
func withSecrets(r *Cluster) *Cluster {
	r.secrets = ClusterSecrets(r.shape)
	return r
}

// MustCluster is NewCluster; it is kept for symmetry with MustRouteConfig, which can
// fail, so that code building snapshots reads the same for both.
func MustCluster(c *clusterv3.Cluster) *Cluster { return NewCluster(c) }

// newCluster makes a Cluster of c, which it owns and which has been through
// clearCluster (or Prune): c loses its names and becomes the shape, or is dropped for
// an equal one shared through in (nil: none).
func newCluster(c *clusterv3.Cluster, in *Interner) *Cluster {
	r := &Cluster{}
	r.shape = r.takeNames(c)
	if in == nil {
		return r
	}
	k, keyed := sharedKey("cluster shape", c)
	if keyed {
		if v, ok := in.lookup(k); ok {
			r.shape = v.(*clusterv3.Cluster) // c is dropped: its parts need no interning
			return r
		}
	}
	// A new shape (or the table is full): share what parts can be, then offer it.
	// Interning parts changes no field's value, so k is still its key; and it must
	// happen before the shape is shared, as other decoders may read it from then on.
	internCluster(c, in)
	if keyed {
		if v, ok := in.share(k, c); ok {
			r.shape = v.(*clusterv3.Cluster)
		}
	}
	return r
}

// takeNames moves c's names into r and returns c without them.
func (r *Cluster) takeNames(c *clusterv3.Cluster) *clusterv3.Cluster {
	r.Name = c.GetName()
	if e := c.GetEdsClusterConfig(); e != nil {
		r.serviceName, e.ServiceName = e.GetServiceName(), ""
		if r.serviceName == r.Name {
			r.serviceName = r.Name // istiod repeats the name: keep one copy
		}
	}
	if IsEDS(c) {
		r.EDS = r.EDSName()
	}
	c.Name = ""
	return c
}

// Shape returns the cluster without its name and EDS service name, possibly shared
// with other clusters: callers must not modify it. Build from it with Name (and
// EDSName for the endpoints).
func (r *Cluster) Shape() *clusterv3.Cluster { return r.shape }

// EDSName is EDSName of the whole cluster: the EDS service name, or the cluster name
// when that is empty.
func (r *Cluster) EDSName() string { return edsName(r.serviceName, r.Name) }

// Message returns the whole cluster (as decoded and pruned, or as given to NewCluster)
// as a new message the caller owns. The error is always nil; the signature is
// RouteConfig.Message's, whose decoding can fail.
func (r *Cluster) Message() (*clusterv3.Cluster, error) {
	c := proto.Clone(r.shape).(*clusterv3.Cluster)
	c.Name = r.Name
	if r.serviceName != "" {
		if c.EdsClusterConfig == nil {
			c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{}
		}
		c.EdsClusterConfig.ServiceName = r.serviceName
	}
	return c, nil
}

// Equal reports whether r and o have the same content.
func (r *Cluster) Equal(o *Cluster) bool {
	if r == o {
		return true
	}
	return r != nil && o != nil && r.Name == o.Name && r.serviceName == o.serviceName &&
		(r.shape == o.shape || proto.Equal(r.shape, o.shape))
}
