package meshgen

import (
	"embed"
	"fmt"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/dump"
)

// The templates are resources a real istiod sent a sidecar (testdata/istiod/sotw): the
// fixed listeners and clusters every sidecar gets, and one outbound HTTP listener and one
// outbound cluster that Generate copies per port and per service. Starting from istiod's
// own output keeps every field istiod sets (filters, tracing, access logs, transport
// socket matches, ...) without re-deriving them.
//
//go:embed templates/*.json
var templateFS embed.FS

type templateSet struct {
	virtualInbound, virtualOutbound, outboundHTTP *listenerv3.Listener

	passthrough, blackHole, inboundPassthrough, inbound, outbound *clusterv3.Cluster
}

var (
	templatesOnce sync.Once
	templateCache *templateSet
)

// templates decodes the embedded templates once; callers must clone before modifying.
func templates() *templateSet {
	templatesOnce.Do(func() {
		t := &templateSet{
			virtualInbound:     &listenerv3.Listener{},
			virtualOutbound:    &listenerv3.Listener{},
			outboundHTTP:       &listenerv3.Listener{},
			passthrough:        &clusterv3.Cluster{},
			blackHole:          &clusterv3.Cluster{},
			inboundPassthrough: &clusterv3.Cluster{},
			inbound:            &clusterv3.Cluster{},
			outbound:           &clusterv3.Cluster{},
		}
		for file, m := range map[string]proto.Message{
			"virtualInbound.json":            t.virtualInbound,
			"virtualOutbound.json":           t.virtualOutbound,
			"outbound_http_listener.json":    t.outboundHTTP,
			"PassthroughCluster.json":        t.passthrough,
			"BlackHoleCluster.json":          t.blackHole,
			"InboundPassthroughCluster.json": t.inboundPassthrough,
			"inbound_cluster.json":           t.inbound,
			"outbound_cluster.json":          t.outbound,
		} {
			data, err := templateFS.ReadFile("templates/" + file)
			if err == nil {
				err = dump.UnmarshalJSON(data, m)
			}
			if err != nil {
				// The templates are compiled in; a failure is a build defect.
				panic(fmt.Sprintf("meshgen: template %s: %v", file, err))
			}
		}
		templateCache = t
	})
	return templateCache
}

func clone[M proto.Message](m M) M { return proto.Clone(m).(M) }
