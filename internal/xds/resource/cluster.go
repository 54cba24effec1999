package resource

// Clusters are kept in wire form too (see routeconfig.go for route configurations). A
// decoded Istio cluster is ~900 bytes even with its repeated sub-messages shared
// (Prune interns them): the Cluster struct alone is 576. Its pruned wire form is
// ~440 bytes. The translator needs the message when the cluster changes and when one
// of its upstreams is rebuilt (an endpoint change), a decode of a few microseconds.

import (
	"bytes"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
)

// Cluster is a cluster in deterministic wire form plus (until released) the decoded
// message it was made from. Immutable but for that release; safe for concurrent use.
type Cluster struct {
	Name string
	// EDS is the name the cluster's endpoints are requested and stored under (EDSName)
	// when they come from EDS (IsEDS), else "".
	EDS  string
	Wire []byte

	msg atomic.Pointer[clusterv3.Cluster]
}

// NewCluster encodes c (which must not be modified afterwards: it is handed out by
// Message until released). It fails only for messages that cannot be encoded.
func NewCluster(c *clusterv3.Cluster) (*Cluster, error) {
	b, err := deterministic.Marshal(c)
	if err != nil {
		return nil, err
	}
	r := &Cluster{Name: c.GetName(), Wire: b}
	if IsEDS(c) {
		r.EDS = EDSName(c)
	}
	r.msg.Store(c)
	return r, nil
}

// MustCluster is NewCluster for messages built in code (tests, generated meshes),
// which always encode; it panics otherwise.
func MustCluster(c *clusterv3.Cluster) *Cluster {
	r, err := NewCluster(c)
	if err != nil {
		panic(err)
	}
	return r
}

// Message returns the decoded cluster: the message r was made from until Release, a
// newly decoded one (equal to it) afterwards.
func (r *Cluster) Message() (*clusterv3.Cluster, error) {
	if m := r.msg.Load(); m != nil {
		return m, nil
	}
	m := &clusterv3.Cluster{}
	if err := proto.Unmarshal(r.Wire, m); err != nil {
		return nil, err
	}
	return m, nil
}

// Release drops the decoded message, so that only the wire form stays in memory.
func (r *Cluster) Release() { r.msg.Store(nil) }

// Equal reports whether r and o have the same content.
func (r *Cluster) Equal(o *Cluster) bool {
	if r == o {
		return true
	}
	return r != nil && o != nil && r.Name == o.Name && bytes.Equal(r.Wire, o.Wire)
}
