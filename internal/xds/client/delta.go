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
	sentNode bool
}

func (c *Client) openDelta(ctx context.Context, conn *grpc.ClientConn) (stream, error) {
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	return &deltaStream{c: c, s: s}, nil
}

func (s *deltaStream) send(req *discoveryv3.DeltaDiscoveryRequest) error {
	if !s.sentNode {
		req.Node = s.c.cfg.Node
		s.sentNode = true
	}
	return s.s.Send(req)
}

func (s *deltaStream) start() error {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
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
		if err := s.send(req); err != nil {
			return err
		}
	}
	return nil
}

func (s *deltaStream) recv() (any, error) { return s.s.Recv() }

func (s *deltaStream) handle(m any) error {
	resp := m.(*discoveryv3.DeltaDiscoveryResponse)
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	i, t, entries, ok, err := c.receiveLocked(Delta, resp.GetTypeUrl(), resp.GetNonce(), deltaRaws(resp), resp.GetRemovedResources(), "")
	if !ok {
		return nil
	}
	if err != nil {
		return s.send(&discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:       t.url,
			ResponseNonce: t.nonce,
			ErrorDetail:   &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()},
		})
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
	sc := c.applyLocked(accepted{idx: i, upserts: entries, removed: removed, version: version})
	if !sc.empty() {
		// The new subscription goes out before the ACK, like Envoy.
		if err := s.send(&discoveryv3.DeltaDiscoveryRequest{
			TypeUrl:                  c.types[sc.idx].url,
			ResourceNamesSubscribe:   sc.added,
			ResourceNamesUnsubscribe: sc.removed,
		}); err != nil {
			return err
		}
	}
	t.acks++
	if err := s.send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: t.url, ResponseNonce: t.nonce}); err != nil {
		return err
	}
	c.publishLocked(time.Now())
	return nil
}
