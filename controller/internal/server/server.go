// Package server is the controller side of the plugin-sync protocol: it authenticates
// each sidecar's stream and sends the sidecar's pod the full set of accepted
// AmeshPluginConfigs that select it, again whenever that set changes.
package server

import (
	"context"
	"sort"
	"strings"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/controller/internal/validate"
)

// Server implements pb.PluginSyncServer.
type Server struct {
	pb.UnimplementedPluginSyncServer

	// Reader reads pods and configs, normally the manager's cache.
	Reader client.Reader
	// Auth verifies the sidecar's token. Nil disables authentication: any client may
	// read any pod's config (the --insecure-skip-auth flag; tests and trusted networks).
	Auth Authenticator
	// Notifier wakes streams when configs or pod labels change.
	Notifier *Notifier
	Log      logr.Logger

	accepted acceptedCache
}

// Forget drops what the server remembers about a deleted config.
func (s *Server) Forget(uid types.UID) { s.accepted.forget(uid) }

var _ pb.PluginSyncServer = (*Server)(nil)

// Watch implements the stream described in the .proto.
func (s *Server) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.ConfigSet]) error {
	ctx := stream.Context()
	if req.GetNamespace() == "" || req.GetPod() == "" {
		return status.Error(codes.InvalidArgument, "namespace and pod are required")
	}
	log := s.Log.WithValues("pod", req.GetNamespace()+"/"+req.GetPod())
	var id *Identity
	if s.Auth != nil {
		got, err := s.authenticate(ctx, req)
		if err != nil {
			log.Info("stream refused", "err", err)
			return err
		}
		id = &got
	}
	var version uint64
	var sent []*pb.PluginConfig
	for {
		changed := s.Notifier.Changed(req.GetNamespace()) // taken before reading, so no change is missed
		var pod corev1.Pod
		if err := s.Reader.Get(ctx, client.ObjectKey{Namespace: req.GetNamespace(), Name: req.GetPod()}, &pod); err != nil {
			if apierrors.IsNotFound(err) {
				return status.Errorf(codes.NotFound, "pod %s/%s not found", req.GetNamespace(), req.GetPod())
			}
			return status.Errorf(codes.Unavailable, "read pod: %v", err)
		}
		if id != nil && pod.Spec.ServiceAccountName != id.ServiceAccount {
			log.Info("stream refused: token of another service account", "serviceAccount", id.ServiceAccount)
			return status.Errorf(codes.PermissionDenied, "pod %s/%s does not run as service account %s",
				pod.Namespace, pod.Name, id.ServiceAccount)
		}
		configs, err := s.configsFor(ctx, &pod)
		if err != nil {
			return status.Errorf(codes.Unavailable, "list configs: %v", err)
		}
		if version == 0 || !equal(configs, sent) {
			version++
			if err := stream.Send(&pb.ConfigSet{Version: version, Configs: configs}); err != nil {
				return err
			}
			log.V(1).Info("config set sent", "version", version, "configs", len(configs))
			sent = configs
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

func (s *Server) authenticate(ctx context.Context, req *pb.WatchRequest) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	var token string
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			token = strings.TrimSpace(t)
		}
	}
	if token == "" {
		return Identity{}, status.Error(codes.Unauthenticated, "missing authorization: Bearer <service-account token>")
	}
	id, err := s.Auth.Authenticate(ctx, token)
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "%v", err)
	}
	if id.Namespace != req.GetNamespace() || (id.Pod != "" && id.Pod != req.GetPod()) {
		return Identity{}, status.Errorf(codes.PermissionDenied, "token of %s/%s (pod %q) may not read pod %s/%s",
			id.Namespace, id.ServiceAccount, id.Pod, req.GetNamespace(), req.GetPod())
	}
	return id, nil
}

// configsFor returns the accepted configs of the pod's namespace that select it,
// sorted by name. Configs that fail validation are never sent.
func (s *Server) configsFor(ctx context.Context, pod *corev1.Pod) ([]*pb.PluginConfig, error) {
	var list v1alpha1.AmeshPluginConfigList
	// Read-only use: skip the cache's deep copy, which every stream would pay.
	if err := s.Reader.List(ctx, &list, client.InNamespace(pod.Namespace), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var out []*pb.PluginConfig
	for i := range list.Items {
		c := &list.Items[i]
		if c.DeletionTimestamp != nil {
			continue
		}
		a := s.accepted.get(c)
		if a == nil || !a.selector.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, a.config)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// ToProto converts an accepted config to its wire form.
func ToProto(c *v1alpha1.AmeshPluginConfig) *pb.PluginConfig {
	pc := &pb.PluginConfig{
		Namespace: c.Namespace, Name: c.Name, Generation: c.Generation, Priority: c.Spec.Priority,
	}
	if sc := c.Spec.Scope; sc != nil {
		pc.Scope = &pb.Scope{Hosts: sc.Hosts, Paths: sc.Paths}
		switch sc.Direction {
		case v1alpha1.Inbound:
			pc.Scope.Direction = pb.Direction_DIRECTION_INBOUND
		case v1alpha1.Outbound:
			pc.Scope.Direction = pb.Direction_DIRECTION_OUTBOUND
		}
		for _, p := range sc.Ports {
			pc.Scope.Ports = append(pc.Scope.Ports, uint32(p))
		}
	}
	for i := range c.Spec.Plugins {
		p := &c.Spec.Plugins[i]
		pc.Plugins = append(pc.Plugins, &pb.Plugin{Name: p.Name, ConfigJson: validate.ConfigJSON(p), Override: p.Override})
	}
	return pc
}

func equal(a, b []*pb.PluginConfig) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !proto.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}
