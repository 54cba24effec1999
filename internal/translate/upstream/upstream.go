// Package upstream translates an Envoy cluster (CDS) and its endpoints (EDS) into an
// APISIX upstream, and derives the per-route variants of an upstream that carry the
// settings APISIX keeps on upstreams rather than routes (retries, hash key, timeouts).
//
// Build is pure: the same cluster and endpoints always give the same upstream. What
// APISIX cannot express is returned as report entries, never dropped silently.
package upstream

import (
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// NoTimeout (seconds) stands for "no timeout" where APISIX needs a number: Envoy has no
// per-read or per-send timeout on a cluster, but an APISIX upstream timeout needs all
// three values (and nginx would otherwise apply 60 s). One day is far beyond any
// request Envoy would let run while staying below nginx's limit (2^31 ms).
const NoTimeout = 86400.0

// MaxTimeout (seconds) is the longest timeout nginx holds: its timeouts are
// milliseconds in an int32 (2^31-1 ms, about 24.8 days). Through lua-resty-core's
// balancer a longer one overflows, and nginx applies its default (60 s) instead.
const MaxTimeout = float64(math.MaxInt32) / 1000

// Timeout converts a timeout as Envoy reads it (whole milliseconds,
// DurationUtil::durationToMilliseconds; the client rejected negative and
// out-of-range durations) into seconds for nginx: at most MaxTimeout, clamped
// reporting that it was longer. 0 stays 0 (Envoy: no timeout).
func Timeout(d *durationpb.Duration) (secs float64, clamped bool) {
	ms := d.GetSeconds()*1000 + int64(d.GetNanos())/1e6
	if d.GetSeconds() > math.MaxInt32/1000 || ms > math.MaxInt32 {
		return MaxTimeout, true
	}
	return float64(ms) / 1000, false
}

// defaultConnectTimeout is Envoy's connect_timeout when the cluster does not set one.
const defaultConnectTimeout = 5 * time.Second

// labelLB marks an upstream whose cluster hashes (RING_HASH, MAGLEV); see Hashing.
const labelLB = "amesh-lb"

// maxNameLen is APISIX's limit on an upstream's name.
const maxNameLen = 256

// ID returns the APISIX id of the upstream of a cluster: stable, readable where the
// name allows (apisix.SafeID).
func ID(cluster string) string { return apisix.SafeID(cluster) }

// Build translates cluster c with its load assignment cla into the base upstream of
// the cluster (the one routes without per-route settings use). cla is used for EDS
// clusters; STATIC, STRICT_DNS and LOGICAL_DNS clusters use c.load_assignment. An EDS
// cluster whose cla is nil gets an upstream without nodes, which APISIX answers with
// 503 like Envoy's "no healthy upstream".
//
// The returned entries describe what could not be translated faithfully.
//
// name is the cluster's name: c's own is not read, so that c can be a cluster shape
// shared by clusters that differ only in their names (resource.Cluster.Shape).
//
// Build uses no workload identity (Options): endpoints Envoy reaches with Istio mTLS
// are left out. BuildWith takes the options.
func Build(name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return BuildWith(Options{}, name, c, cla)
}

// BuildWith is Build with opts.
func BuildWith(opts Options, name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return build(&builder{name: name, opts: opts}, c, cla)
}

// Report returns the entries BuildWith(opts, c, cla) returns, without building the
// upstream's nodes or id: a cluster no route uses still has its findings reported, and
// in Istio's output that is about a third of the clusters, each with its endpoints.
func Report(opts Options, name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) []report.Entry {
	_, es := build(&builder{name: name, opts: opts, reportOnly: true}, c, cla)
	return es
}

// BuildUnnamed is BuildWith without the upstream's id (ID is left empty), for callers
// that name every upstream they emit through ApplyAs: hashing the id they would
// discard is a visible share of a first translation.
func BuildUnnamed(opts Options, name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return build(&builder{name: name, opts: opts, noID: true}, c, cla)
}

func build(b *builder, c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	u := &apisix.Upstream{
		Name:  truncate(b.name, maxNameLen),
		Type:  "roundrobin",
		Nodes: []apisix.Node{},
		// Envoy retries only when a route's retry_policy asks; APISIX's default is
		// "number of nodes - 1". Route variants override this.
		Retries: intPtr(0),
		Timeout: &apisix.Timeout{Connect: b.connectTimeout(c), Send: NoTimeout, Read: NoTimeout},
	}
	if !b.reportOnly && !b.noID {
		u.ID = ID(b.name)
	}
	b.lb(c, u)
	b.httpOptions(c, u)
	b.circuitBreakers(c)
	b.outlierDetection(c, u)
	b.unsupportedClusterFields(c)
	switch kind := Special(b.name, c); kind {
	case Passthrough, InboundPassthrough, OriginalDst:
		// No nodes: routes to the cluster name this upstream for its settings and add
		// OriginalDstPlugin, which sets the node from the connection's original
		// destination. Without the plugin the upstream answers 503.
		if _, field, reason := OriginalDstConfig(c); reason != "" {
			b.add("cluster", field, report.Unsupported, fmt.Sprintf(
				"%s cluster: %s; routes to it fail closed (502)", kind, reason))
		}
		return u, b.entries
	case BlackHole:
		// Envoy's BlackHoleCluster has no hosts: every request gets 503, exactly what an
		// APISIX upstream without nodes does.
		return u, b.entries
	}
	switch t := c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type:
		switch t.Type {
		case clusterv3.Cluster_EDS:
			if cla == nil {
				b.add("endpoints", "", report.Invalid, "no ClusterLoadAssignment received; the upstream has no nodes (503)")
			} else {
				u.Nodes = b.nodes(c, cla, false)
			}
		case clusterv3.Cluster_STATIC:
			u.Nodes = b.nodes(c, inline(c), false)
		case clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
			u.Nodes = b.nodes(c, inline(c), true)
			if t.Type == clusterv3.Cluster_LOGICAL_DNS {
				b.add("cluster", "type", report.Approximated,
					"LOGICAL_DNS: APISIX resolves the host names itself and may use any of their addresses, where Envoy connects to the first")
			}
		default:
			b.add("cluster", "type", report.Unsupported, fmt.Sprintf("cluster type %s is not supported; the upstream has no nodes (503)", t.Type))
		}
	case *clusterv3.Cluster_ClusterType:
		b.add("cluster", "cluster_type", report.Unsupported, fmt.Sprintf(
			"custom cluster type %q is not supported; the upstream has no nodes (503)", t.ClusterType.GetName()))
	default:
		// Unset means STATIC.
		u.Nodes = b.nodes(c, inline(c), false)
	}
	if !b.reportOnly {
		markTLS(u, b.kinds)
	}
	return u, b.entries
}

// inline is the load assignment a STATIC or DNS cluster carries itself, nil when unset.
// Converted per build: such clusters are few (istiod's own, ServiceEntries).
func inline(c *clusterv3.Cluster) *resource.LoadAssignment {
	if la := c.GetLoadAssignment(); la != nil {
		return resource.FromCLA(la)
	}
	return nil
}

// builder collects report entries for one cluster.
type builder struct {
	name    string
	opts    Options
	entries []report.Entry
	// tls is how the cluster's endpoints get their transport sockets (set by nodes);
	// kinds the socket of each node built.
	tls   *tlsPlan
	kinds []sockKind
	// reportOnly: only the entries are wanted (Report); nodes are not built.
	reportOnly bool
	// noID: the caller names the upstream (BuildUnnamed).
	noID bool
}

func (b *builder) add(kind, field string, sev report.Severity, msg string) {
	b.entries = append(b.entries, report.Entry{Kind: kind, Resource: b.name, Field: field, Severity: sev, Message: msg})
}

func (b *builder) connectTimeout(c *clusterv3.Cluster) float64 {
	ct := c.GetConnectTimeout()
	if ct.GetSeconds() == 0 && ct.GetNanos() == 0 {
		// Unset (validation requires more than 0 when set).
		return seconds(defaultConnectTimeout)
	}
	secs, clamped := Timeout(ct)
	if clamped {
		b.add("cluster", "connect_timeout", report.Approximated, fmt.Sprintf(
			"connect_timeout %ds exceeds what nginx holds; %gs is used", ct.GetSeconds(), MaxTimeout))
	}
	if secs == 0 {
		// Below a millisecond (validation requires more than 0): the smallest
		// timeout nginx holds.
		secs = 0.001
	}
	return secs
}

// seconds keeps sub-second precision (APISIX takes fractional seconds).
func seconds(d time.Duration) float64 { return d.Seconds() }

func intPtr(i int) *int { return &i }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	// Do not cut a UTF-8 sequence in half (proto3 strings are valid UTF-8).
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
