package upstream

// A weighted split over more clusters than APISIX's traffic-split takes (20 weighted
// upstreams per rule) is served by merging clusters: clusters whose upstreams would
// have the same settings (all but name and nodes, with the route's variant applied)
// share one upstream, whose nodes are theirs, weighted so that each cluster gets its
// weight's share of the group and each endpoint its share of its cluster. With round
// robin (ROUND_ROBIN, LEAST_REQUEST and RANDOM clusters) the shares are Envoy's
// exactly; what differs is reported (BuildSplit, and the route for retries and hashing).

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/bits"
	"sort"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// maxSplitWeight bounds the weights of one priority level of a merged upstream:
// exact shares are kept up to it, finer ones rounded to it. APISIX's chash balancer
// allocates points in proportion to the total weight.
const maxSplitWeight = 1 << 16

// Split is a group of weighted clusters served by one upstream: the clusters, in the
// route's order, and their weights. Immutable once made.
type Split struct {
	Clusters []string
	Weights  []uint32
}

// Member is a cluster of a split with what its upstream is built from.
type Member struct {
	Name   string
	Shape  *clusterv3.Cluster
	CLA    *resource.LoadAssignment
	Weight uint32
}

// SettingsKey identifies what an upstream of cluster (name, shape) with variant v sets
// besides its name and nodes: clusters with equal keys can share an upstream. Their TLS
// must be equal but for the SNI, which the nodes of a shared upstream then carry.
func SettingsKey(opts Options, name string, shape *clusterv3.Cluster, v Variant) string {
	base, _ := build(&builder{name: name, opts: opts, reportOnly: true, noID: true}, shape, nil)
	u := v.ApplyAs(base, "")
	u.Name, u.Nodes = "", nil
	b, err := json.Marshal(u)
	if err != nil {
		panic("upstream: encode settings of " + name + ": " + err.Error()) // only JSON values
	}
	if conf, _ := ClusterTLS(name, shape, opts); conf != nil {
		c := *conf
		c.SNI = ""
		t, err := json.Marshal(&c)
		if err != nil {
			panic("upstream: encode TLS of " + name + ": " + err.Error())
		}
		b = append(append(b, " tls "...), t...)
	}
	return string(b)
}

// SplitTLS is the plugin configuration of the upstream of split s: its clusters' TLS
// (SettingsKey made them equal but for the SNI), without an SNI when theirs differ (the
// nodes carry them, see BuildSplit); nil when none of them uses TLS.
func SplitTLS(opts Options, s *Split, shapes []*clusterv3.Cluster) *TLSConf {
	var out *TLSConf
	for i, name := range s.Clusters {
		conf, _ := ClusterTLS(name, shapes[i], opts)
		switch {
		case conf == nil:
		case out == nil:
			c := *conf
			out = &c
		case conf.SNI != out.SNI:
			out.SNI = ""
		}
	}
	return out
}

// SplitID returns the id of the upstream of split s with variant v: "split-", the
// first cluster's id cut to fit, and a hash of the clusters, weights and variant.
func SplitID(s *Split, v Variant) string {
	h := sha256.New()
	for i, c := range s.Clusters {
		h.Write([]byte(c))
		h.Write([]byte{0})
		h.Write([]byte(strconv.FormatUint(uint64(s.Weights[i]), 10)))
		h.Write([]byte{0})
	}
	h.Write(v.AppendKey(nil))
	sum := hex.EncodeToString(h.Sum(nil)[:variantHashLen/2])
	head := "split-" + ID(s.Clusters[0])
	if len(head) > 64-1-len(sum) {
		head = head[:64-1-len(sum)]
	}
	return head + "-" + sum
}

// BuildSplit builds the upstream id of the members (built as Build builds each, with
// variant v, equal in all but their nodes), and the findings on what differs from
// Envoy's split: Envoy first picks a cluster by weight, then a host of it.
func BuildSplit(opts Options, id string, members []Member, v Variant) (*apisix.Upstream, []report.Entry) {
	var rep []report.Entry
	add := func(field string, msg string) {
		rep = append(rep, report.Entry{Kind: "upstream", Resource: id, Field: field, Severity: report.Approximated, Message: msg})
	}
	names := make([]string, len(members))
	var all []splitNode
	levels := map[int]bool{}
	var empty []string
	var first *apisix.Upstream
	snis := make([]string, len(members))
	distinctSNI := false
	for i, m := range members {
		names[i] = m.Name
		u, _ := BuildUnnamed(opts, m.Name, m.Shape, m.CLA)
		if first == nil {
			first = u
		}
		if conf, _ := ClusterTLS(m.Name, m.Shape, opts); conf != nil && !conf.AutoSNI {
			snis[i] = conf.SNI
			distinctSNI = distinctSNI || snis[i] != snis[0]
		}
		if len(u.Nodes) == 0 {
			empty = append(empty, m.Name)
			continue
		}
		// Envoy's priorities are per cluster: a cluster without hosts at priority 0
		// sends its share to its next priority. So each cluster's best priority
		// becomes the group's best.
		top := u.Nodes[0].Priority
		for _, n := range u.Nodes {
			top = max(top, n.Priority)
		}
		for _, n := range u.Nodes {
			n.Priority -= top
			levels[n.Priority] = true
			all = append(all, splitNode{n: n, m: i, kind: nodeKind(u, &n)})
		}
	}
	u := v.ApplyAs(first, id)
	u.Name = truncate("split: "+strings.Join(names, ", "), maxNameLen)
	u.Nodes = make([]apisix.Node, 0, len(all))
	u.Scheme = ""
	var kinds []sockKind
	sniConflict := false
	rounded := false
	for _, level := range sortedLevels(levels) {
		// Per member: the sum of its nodes' weights at this level.
		sums := make([]uint64, len(members))
		var present uint64 // sum of the weights of the members with nodes here
		var idx []int
		for k, x := range all {
			if x.n.Priority == level {
				if sums[x.m] == 0 {
					present += uint64(members[x.m].Weight)
				}
				sums[x.m] += uint64(x.n.Weight)
				idx = append(idx, k)
			}
		}
		ws, exact := splitWeights(all, idx, sums, members, present)
		rounded = rounded || !exact
		// An endpoint in two clusters (subsets sharing pods) is one node with both
		// shares: APISIX keys nodes by address, and would keep one weight.
		at := map[string]int{}
		for j, k := range idx {
			n := all[k].n
			addr := n.Host + ":" + strconv.Itoa(n.Port)
			kind, sni := all[k].kind, ""
			if kind == sockTLS && distinctSNI {
				sni = snis[all[k].m]
			}
			if p, ok := at[addr]; ok {
				u.Nodes[p].Weight += int(ws[j])
				if kinds[p] != kind || u.Nodes[p].Metadata[NodeSNIKey] != nil && u.Nodes[p].Metadata[NodeSNIKey] != sni {
					// One node, two clusters: it is reached as the first one's.
					sniConflict = true
				}
				continue
			}
			at[addr] = len(u.Nodes)
			n.Weight = int(ws[j])
			n.Metadata = nil
			if sni != "" {
				setNodeMeta(&n, NodeSNIKey, sni)
			}
			u.Nodes = append(u.Nodes, n)
			kinds = append(kinds, kind)
		}
	}
	markTLS(u, kinds)
	if sniConflict {
		add("nodes", "an endpoint of two clusters of the group that differ in TLS or SNI is reached as the first cluster's")
	}
	if len(empty) > 0 {
		add("nodes", fmt.Sprintf("cluster(s) %s have no endpoints: Envoy answers their share with 503; here the other clusters of the group take it",
			strings.Join(empty, ", ")))
	}
	if len(levels) > 1 {
		add("nodes.priority", "the clusters' priorities are merged: APISIX moves to the next priority only when every host of the group at the current one failed, where Envoy does so per cluster")
	}
	if rounded {
		add("nodes.weight", fmt.Sprintf("the clusters' and endpoints' shares are rounded to 1/%d", maxSplitWeight))
	}
	return u, rep
}

// splitNode is a node of a merged upstream, the index of its member and its socket.
type splitNode struct {
	n    apisix.Node
	m    int
	kind sockKind
}

// nodeKind is the socket of node n of u (markTLS's scheme and metadata).
func nodeKind(u *apisix.Upstream, n *apisix.Node) sockKind {
	tls := u.Scheme == "https"
	if v, ok := n.Metadata[NodeTLSKey].(bool); ok {
		tls = v
	}
	if tls {
		return sockTLS
	}
	return sockPlain
}

func sortedLevels(m map[int]bool) []int {
	out := make([]int, 0, len(m))
	for l := range m {
		out = append(out, l)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(out))) // best (highest) first
	return out
}

// splitWeights returns the weights of nodes all[idx...] of one priority level: member
// m's weight times the node's share of m's weight at the level (sums[m]). Exact in
// integers where the common multiple allows, else rounded so that they add up to
// about maxSplitWeight (exact false).
func splitWeights(all []splitNode, idx []int, sums []uint64, members []Member, present uint64) ([]uint64, bool) {
	out := make([]uint64, len(idx))
	scale := uint64(1)
	for _, s := range sums {
		if s != 0 {
			scale = lcm(scale, s)
		}
	}
	exact := scale <= maxScale
	var g uint64
	for j, k := range idx {
		if !exact {
			break
		}
		x := all[k]
		hi, w := bits.Mul64(uint64(members[x.m].Weight), uint64(x.n.Weight)*(scale/sums[x.m]))
		if hi != 0 {
			exact = false
			break
		}
		out[j] = w
		g = gcd(g, w)
	}
	if exact {
		var total uint64
		for j := range out {
			out[j] /= g
			total += out[j]
		}
		if total <= maxSplitWeight {
			return out, true
		}
	}
	for j, k := range idx {
		x := all[k]
		share := float64(members[x.m].Weight) / float64(present) * float64(x.n.Weight) / float64(sums[x.m])
		out[j] = uint64(max(1, math.Round(share*maxSplitWeight)))
	}
	return out, false
}
