package client

import (
	"context"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// deltaStream speaks DeltaAggregatedResources: subscriptions change by difference, and
// a new stream tells the server which versions we hold (initial_resource_versions) so
// it sends only what changed while we were away.
type deltaStream struct {
	c        *Client
	s        discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	out      requests[*discoveryv3.DeltaDiscoveryRequest]
	sentNode bool
}

func (c *Client) openDelta(ctx context.Context, conn *grpc.ClientConn) (stream, error) {
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &deltaStream{c: c, s: s, out: newRequests[*discoveryv3.DeltaDiscoveryRequest]()}, nil
}

// send queues req; the first request of the stream carries the node.
func (s *deltaStream) send(req *discoveryv3.DeltaDiscoveryRequest) {
	if !s.sentNode {
		req.Node = s.c.cfg.Node
		s.sentNode = true
	}
	s.out.add(req)
}

func (s *deltaStream) flush() { s.out.flush() }

func (s *deltaStream) sendLoop(ctx context.Context) error { return s.out.run(ctx, s.s.Send) }

func (s *deltaStream) start() {
	for _, t := range s.c.types {
		req := &discoveryv3.DeltaDiscoveryRequest{TypeUrl: t.url}
		if t.wildcard {
			req.ResourceNamesSubscribe = []string{wildcardName}
		} else {
			if len(t.subscribed) == 0 {
				continue
			}
			req.ResourceNamesSubscribe = t.sortedSubscribed()
		}
		if len(t.res) > 0 {
			req.InitialResourceVersions = make(map[string]string, len(t.res))
			for n, e := range t.res {
				req.InitialResourceVersions[n] = e.versionString()
			}
		}
		s.send(req)
	}
}

func (s *deltaStream) recv() (any, error) { return s.s.Recv() }

func (s *deltaStream) handle(m any) {
	resp := m.(*discoveryv3.DeltaDiscoveryResponse)
	c := s.c
	i, t, entries, ok, err := c.receive(Delta, resp.GetTypeUrl(), resp.GetNonce(), deltaRaws(resp), resp.GetRemovedResources(), "")
	if !ok {
		return
	}
	if err != nil {
		s.send(&discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:       t.url,
			ResponseNonce: t.nonce,
			ErrorDetail:   &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()},
		})
		return
	}
	var removed []string
	for _, n := range resp.GetRemovedResources() {
		if t.wants(n) {
			removed = append(removed, n)
		} else {
			t.ignored++
		}
	}
	version := resp.GetSystemVersionInfo()
	if version == "" {
		version = t.version
	}
	for _, sc := range c.apply(accepted{idx: i, upserts: entries, removed: removed, version: version}) {
		// The new subscription goes out before the ACK, like Envoy.
		s.send(&discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:                  c.types[sc.idx].url,
			ResourceNamesSubscribe:   sc.added,
			ResourceNamesUnsubscribe: sc.removed,
		})
	}
	t.acks++
	s.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t.url, ResponseNonce: t.nonce})
	c.publish(time.Now())
}
