// Package xdstest is a fake xDS control plane for tests and demos: go-control-plane's
// ADS server (SotW and Delta) over one linear cache per resource type, on a loopback
// TCP port, with optional TLS and bearer-token checking. Tests set, replace and remove
// resources, restart the server on the same address, and observe every request the
// client sends (to check ACK/NACK contents).
//
//	srv, err := xdstest.New(xdstest.Options{})
//	defer srv.Close()
//	srv.Set(resource.ClusterType, xdstest.Cluster("c1")...)
//	// point the client at srv.Addr()
//	req, err := srv.WaitRequest(ctx, 0, func(r xdstest.Request) bool { return r.IsNACK() })
package xdstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Options configure a Server.
type Options struct {
	// Addr to listen on; default "127.0.0.1:0" (a free port).
	Addr string
	// TLS serves TLS with a certificate for 127.0.0.1 and localhost signed by a fresh
	// CA, written to Server.CAFile.
	TLS bool
	// Token, when set, is the bearer token every stream must present
	// ("authorization: Bearer <Token>"); others are rejected with Unauthenticated.
	Token string
}

// Request is one request a client sent. Exactly one of SotW and Delta is set.
type Request struct {
	Stream int64 // unique per stream, across restarts
	SotW   *discoveryv3.DiscoveryRequest
	Delta  *discoveryv3.DeltaDiscoveryRequest
}

// TypeURL returns the type of the request.
func (r Request) TypeURL() string {
	if r.SotW != nil {
		return r.SotW.GetTypeUrl()
	}
	return r.Delta.GetTypeUrl()
}

// Nonce returns the response_nonce of the request.
func (r Request) Nonce() string {
	if r.SotW != nil {
		return r.SotW.GetResponseNonce()
	}
	return r.Delta.GetResponseNonce()
}

// IsNACK reports whether the request carries an error_detail.
func (r Request) IsNACK() bool {
	if r.SotW != nil {
		return r.SotW.GetErrorDetail() != nil
	}
	return r.Delta.GetErrorDetail() != nil
}

// ErrorDetail returns the error_detail message ("" for none).
func (r Request) ErrorDetail() string {
	if r.SotW != nil {
		return r.SotW.GetErrorDetail().GetMessage()
	}
	return r.Delta.GetErrorDetail().GetMessage()
}

// Response is what the server sent in one response.
type Response struct {
	Stream  int64
	TypeURL string
	Version string // version_info (SotW) or system_version_info (Delta)
	Nonce   string
	Names   []string // resource names sent (Delta: with the removed ones in Removed)
	Removed []string
}

// Server is a running fake control plane. Its methods are safe for concurrent use.
type Server struct {
	opts   Options
	caches map[string]*cachev3.LinearCache // by type URL; survive restarts
	cache  *cachev3.MuxCache
	cert   *serverCert // nil without TLS

	mu        sync.Mutex
	addr      string
	grpc      *grpc.Server
	cancel    context.CancelFunc
	done      chan struct{}
	requests  []Request
	responses []Response
	notify    chan struct{} // closed and replaced when a request is recorded
	inject    map[string][]proto.Message
	starts    int // number of Start calls, to keep stream ids unique across restarts
}

// New starts a Server.
func New(opts Options) (*Server, error) {
	if opts.Addr == "" {
		opts.Addr = "127.0.0.1:0"
	}
	s := &Server{
		opts:   opts,
		caches: map[string]*cachev3.LinearCache{},
		notify: make(chan struct{}),
		inject: map[string][]proto.Message{},
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return r.GetTypeUrl() },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return r.GetTypeUrl() },
		Caches:        map[string]cachev3.Cache{},
	}
	for _, u := range []string{resource.ListenerType, resource.RouteConfigType, resource.ClusterType, resource.EndpointType, resource.SecretType} {
		lc := cachev3.NewLinearCache(u)
		s.caches[u] = lc
		mux.Caches[u] = lc
	}
	s.cache = mux
	if opts.TLS {
		cert, err := newServerCert()
		if err != nil {
			return nil, err
		}
		s.cert = cert
	}
	if err := s.Start(); err != nil {
		s.cert.cleanup()
		return nil, err
	}
	return s, nil
}

// Addr is the host:port the server listens on (stable across Stop/Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// CAFile is the PEM file of the CA that signed the server certificate ("" without TLS).
func (s *Server) CAFile() string {
	if s.cert == nil {
		return ""
	}
	return s.cert.caFile
}

// Start starts serving again after Stop, on the same address, with the same resources.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grpc != nil {
		return errors.New("xdstest: already running")
	}
	addr := s.addr
	if addr == "" {
		addr = s.opts.Addr
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("xdstest: listen %s: %w", addr, err)
	}
	s.addr = lis.Addr().String()
	// Clients may ping as often as gRPC lets them: grpc.NewServer's default policy
	// (at most one ping per 5 minutes) answers a 30s keepalive with GOAWAY
	// "too_many_pings", which would show up as reconnects in every long test.
	gopts := []grpc.ServerOption{grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime: bootstrap.MinKeepaliveInterval, PermitWithoutStream: true,
	})}
	if s.cert != nil {
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(s.cert.tlsConfig())))
	}
	if s.opts.Token != "" {
		gopts = append(gopts, grpc.StreamInterceptor(s.checkToken))
	}
	g := grpc.NewServer(gopts...)
	ctx, cancel := context.WithCancel(context.Background())
	s.starts++
	xds := serverv3.NewServer(ctx, s.cache, s.callbacks(int64(s.starts)<<32))
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, xds)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Serve(lis)
	}()
	s.grpc, s.cancel, s.done = g, cancel, done
	return nil
}

// Stop closes the listener and every stream abruptly (like a crashed istiod). The
// resources are kept for Start.
func (s *Server) Stop() {
	s.mu.Lock()
	g, cancel, done := s.grpc, s.cancel, s.done
	s.grpc = nil
	s.mu.Unlock()
	if g == nil {
		return
	}
	g.Stop()
	cancel()
	<-done
}

// Restart is Stop then Start on the same address.
func (s *Server) Restart() error {
	s.Stop()
	return s.Start()
}

// Close stops the server and removes its temporary files.
func (s *Server) Close() {
	s.Stop()
	s.cert.cleanup()
}

func (s *Server) checkToken(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	md, _ := metadata.FromIncomingContext(ss.Context())
	want := "Bearer " + s.opts.Token
	for _, v := range md.Get("authorization") {
		if v == want {
			return handler(srv, ss)
		}
	}
	return status.Error(codes.Unauthenticated, "xdstest: missing or wrong bearer token")
}

// Set replaces all resources of typeURL with res (SotW and Delta clients see the
// removals of the others).
func (s *Server) Set(typeURL string, res ...proto.Message) {
	m := make(map[string]types.Resource, len(res))
	for _, r := range res {
		m[cachev3.GetResourceName(r)] = r
	}
	s.caches[typeURL].SetResources(m)
}

// Update adds or replaces resources, each under its own type and name.
func (s *Server) Update(res ...proto.Message) error {
	byType := map[string]map[string]types.Resource{}
	for _, r := range res {
		u := typeURLOf(r)
		if s.caches[u] == nil {
			return fmt.Errorf("xdstest: unsupported resource type %s", u)
		}
		if byType[u] == nil {
			byType[u] = map[string]types.Resource{}
		}
		byType[u][cachev3.GetResourceName(r)] = r
	}
	// Clusters before endpoints and secrets, listeners before routes, like istiod pushes.
	for _, u := range []string{resource.ClusterType, resource.EndpointType, resource.SecretType, resource.ListenerType, resource.RouteConfigType} {
		if m := byType[u]; m != nil {
			if err := s.caches[u].UpdateResources(m, nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// Remove deletes resources of typeURL by name.
func (s *Server) Remove(typeURL string, names ...string) error {
	return s.caches[typeURL].UpdateResources(nil, names)
}

// InjectNext adds res to the next response of typeURL that the server sends, whatever
// the client subscribed to. istiod does this when a push is in flight while the client
// unsubscribes; a cache never would.
func (s *Server) InjectNext(typeURL string, res ...proto.Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inject[typeURL] = append(s.inject[typeURL], res...)
}

func (s *Server) takeInjected(typeURL string) []proto.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := s.inject[typeURL]
	delete(s.inject, typeURL)
	return res
}

func typeURLOf(m proto.Message) string {
	return "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName())
}

// callbacks records traffic; go-control-plane's stream ids restart at 1 with every
// server, so base is added to keep them unique.
func (s *Server) callbacks(base int64) serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamRequestFunc: func(id int64, r *discoveryv3.DiscoveryRequest) error {
			s.record(Request{Stream: base + id, SotW: proto.Clone(r).(*discoveryv3.DiscoveryRequest)})
			return nil
		},
		StreamDeltaRequestFunc: func(id int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			s.record(Request{Stream: base + id, Delta: proto.Clone(r).(*discoveryv3.DeltaDiscoveryRequest)})
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			for _, r := range s.takeInjected(resp.GetTypeUrl()) {
				a, err := anypb.New(r)
				if err == nil {
					resp.Resources = append(resp.Resources, a)
				}
			}
			out := Response{Stream: base + id, TypeURL: resp.GetTypeUrl(), Version: resp.GetVersionInfo(), Nonce: resp.GetNonce()}
			for _, a := range resp.GetResources() {
				if m, err := a.UnmarshalNew(); err == nil {
					out.Names = append(out.Names, cachev3.GetResourceName(m))
				}
			}
			s.recordResponse(out)
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			for _, r := range s.takeInjected(resp.GetTypeUrl()) {
				a, err := anypb.New(r)
				if err == nil {
					resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: cachev3.GetResourceName(r), Version: "injected", Resource: a})
				}
			}
			out := Response{Stream: base + id, TypeURL: resp.GetTypeUrl(), Version: resp.GetSystemVersionInfo(), Nonce: resp.GetNonce(), Removed: resp.GetRemovedResources()}
			for _, r := range resp.GetResources() {
				out.Names = append(out.Names, r.GetName())
			}
			s.recordResponse(out)
		},
	}
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
	close(s.notify)
	s.notify = make(chan struct{})
}

func (s *Server) recordResponse(r Response) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.responses = append(s.responses, r)
}

// Responses returns every response sent so far, oldest first. A response is recorded
// just before it is sent, so it is there when the client's ACK arrives.
func (s *Server) Responses() []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Response(nil), s.responses...)
}

// ResponseByNonce returns the response with the nonce on stream (false if none).
func (s *Server) ResponseByNonce(stream int64, nonce string) (Response, bool) {
	for _, r := range s.Responses() {
		if r.Stream == stream && r.Nonce == nonce {
			return r, true
		}
	}
	return Response{}, false
}

// Requests returns every request received so far, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Mark returns the number of requests received so far, to pass to WaitRequest as from.
func (s *Server) Mark() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// WaitRequest returns the first request with index >= from for which match is true,
// waiting for it until ctx is done.
func (s *Server) WaitRequest(ctx context.Context, from int, match func(Request) bool) (Request, error) {
	for {
		s.mu.Lock()
		var todo []Request
		if from < len(s.requests) {
			todo = append(todo, s.requests[from:]...)
		}
		ch := s.notify
		s.mu.Unlock()
		// match runs without the lock: it may call other methods of s.
		for _, r := range todo {
			if match(r) {
				return r, nil
			}
		}
		from += len(todo)
		select {
		case <-ctx.Done():
			return Request{}, fmt.Errorf("xdstest: no matching request: %w", ctx.Err())
		case <-ch:
		}
	}
}

// NodeID returns the node id of the first request that carried a node ("" if none).
func (s *Server) NodeID() string {
	for _, r := range s.Requests() {
		var n *corev3.Node
		if r.SotW != nil {
			n = r.SotW.GetNode()
		} else {
			n = r.Delta.GetNode()
		}
		if n != nil {
			return n.GetId()
		}
	}
	return ""
}

// IsType returns a WaitRequest matcher for requests of typeURL (short names like
// "Cluster" match the end of the type URL).
func IsType(typeURL string) func(Request) bool {
	return func(r Request) bool { return r.TypeURL() == typeURL || strings.HasSuffix(r.TypeURL(), "."+typeURL) }
}
