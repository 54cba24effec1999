package client

import (
	"context"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// sotwStream speaks StreamAggregatedResources. SotW requests carry the complete list
// of names for their type, so every request (subscription change, ACK or NACK) sends
// the current subscription: an ACK never changes what is subscribed.
type sotwStream struct {
	c        *Client
	s        discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	out      requests[*discoveryv3.DiscoveryRequest]
	sentNode bool
	// requested: a request for the type was queued on this stream.
	requested [numTypes]bool
}

func (c *Client) openSotw(ctx context.Context, conn *grpc.ClientConn) (stream, error) {
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &sotwStream{c: c, s: s, out: newRequests[*discoveryv3.DiscoveryRequest]()}, nil
}

// send queues req; the first request of the stream carries the node.
func (s *sotwStream) send(req *discoveryv3.DiscoveryRequest) {
	if !s.sentNode {
		req.Node = s.c.cfg.Node
		s.sentNode = true
	}
	if i, ok := typeIndex(req.GetTypeUrl()); ok {
		s.requested[i] = true
	}
	s.out.add(req)
}

func (s *sotwStream) flush() { s.out.flush() }

func (s *sotwStream) sendLoop(ctx context.Context) error { return s.out.run(ctx, s.s.Send) }

// names is the resource_names of a request for type i: empty for wildcard types
// (legacy wildcard, understood by every istiod), the sorted subscription otherwise.
func (s *sotwStream) names(i int) []string {
	t := s.c.types[i]
	if t.wildcard {
		return nil
	}
	return t.sortedSubscribed()
}

func (s *sotwStream) start() {
	for i, t := range s.c.types {
		if !t.wildcard && len(t.subscribed) == 0 {
			continue // an empty non-wildcard request would mean "everything"
		}
		// version_info tells the server what we hold (Envoy does the same).
		s.send(&discoveryv3.DiscoveryRequest{TypeUrl: t.url, VersionInfo: t.version, ResourceNames: s.names(i)})
	}
}

func (s *sotwStream) recv() (any, error) { return s.s.Recv() }

func (s *sotwStream) handle(m any) {
	resp := m.(*discoveryv3.DiscoveryResponse)
	c := s.c
	i, t, entries, ok, err := c.receive(SotW, resp.GetTypeUrl(), resp.GetNonce(), sotwRaws(resp), nil, resp.GetVersionInfo())
	if !ok {
		return
	}
	if err != nil {
		s.send(&discoveryv3.DiscoveryRequest{
			TypeUrl:       t.url,
			VersionInfo:   t.version, // the last accepted version stays in force
			ResponseNonce: t.nonce,
			ResourceNames: s.names(i),
			ErrorDetail:   &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()},
		})
		return
	}
	// Listeners and clusters are full state in SotW: a missing one was removed.
	// Route configurations and endpoints are sent only when they change.
	for _, sc := range c.apply(accepted{idx: i, upserts: entries, full: t.wildcard, version: resp.GetVersionInfo()}) {
		d := c.types[sc.idx]
		if len(d.subscribed) > 0 || s.requested[sc.idx] {
			// The new subscription goes out before the ACK, like Envoy.
			s.send(&discoveryv3.DiscoveryRequest{TypeUrl: d.url, VersionInfo: d.version, ResponseNonce: d.nonce, ResourceNames: s.names(sc.idx)})
		}
	}
	t.acks++
	s.send(&discoveryv3.DiscoveryRequest{TypeUrl: t.url, VersionInfo: t.version, ResponseNonce: t.nonce, ResourceNames: s.names(i)})
	c.publish(time.Now())
}
