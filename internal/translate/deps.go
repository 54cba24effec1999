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

func buildUpstream(c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return upstream.Build(c, cla)
}

// buildUnnamed is buildUpstream without the id, for upstreams named by ApplyAs.
func buildUnnamed(c *clusterv3.Cluster, cla *resource.LoadAssignment) (*apisix.Upstream, []report.Entry) {
	return upstream.BuildUnnamed(c, cla)
}

func clusterReport(c *clusterv3.Cluster, cla *resource.LoadAssignment) []report.Entry {
	return upstream.Report(c, cla)
}

// specialKind is how Istio's special clusters are recognised.
type specialKind = upstream.SpecialKind

const (
	specialNone      = upstream.None
	specialBlackHole = upstream.BlackHole
)

func special(c *clusterv3.Cluster) specialKind { return upstream.Special(c) }

type pluginInput = plugins.Input

type pluginOutput = plugins.Output

func forRoute(in pluginInput) pluginOutput { return plugins.ForRoute(in) }
