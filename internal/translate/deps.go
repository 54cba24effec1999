package translate

// The two packages translation builds on, behind unexported names so that the rest of
// the package reads the same whichever way they evolve.

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/plugins"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// variant is the route-level part of an upstream (retries, timeouts, hash key).
type variant = upstream.Variant

func variantID(cluster string, v variant) string { return upstream.VariantID(cluster, v) }

// The cluster functions take the cluster's name and its shape (resource.Cluster).

func buildUpstream(name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return upstream.Build(name, c, cla)
}

// buildUnnamed is buildUpstream without the id, for upstreams named by ApplyAs.
func buildUnnamed(name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return upstream.BuildUnnamed(name, c, cla)
}

func clusterReport(name string, c *clusterv3.Cluster, cla *resource.LoadAssignment) []report.Entry {
	return upstream.Report(name, c, cla)
}

// specialKind is how Istio's special clusters are recognised.
type specialKind = upstream.SpecialKind

const (
	specialNone      = upstream.None
	specialBlackHole = upstream.BlackHole
)

func special(name string, c *clusterv3.Cluster) specialKind { return upstream.Special(name, c) }

type pluginInput = plugins.Input

type pluginOutput = plugins.Output

func forRoute(in pluginInput) pluginOutput { return plugins.ForRoute(in) }
