// Package app assembles amesh-controller: a controller-runtime manager with the status
// reconciler and the plugin-sync gRPC server, fed by the manager's cache. The binary and
// the end-to-end tests both start the controller through Run.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/controller/internal/reconciler"
	"github.com/amesh-dev/amesh/controller/internal/server"
)

// Options configure the controller.
type Options struct {
	// GRPCAddr is where sidecars connect (default ":15090"); Listener, if set, is used
	// instead.
	GRPCAddr string
	Listener net.Listener
	// TLS secures the gRPC server; nil serves plaintext (inside a mesh, or for tests).
	TLS credentials.TransportCredentials
	// InsecureSkipAuth serves any client without verifying its service-account token.
	InsecureSkipAuth bool
	// Audiences the sidecars' tokens must carry; empty accepts the API server's default.
	Audiences []string
	// MetricsAddr and HealthAddr of the manager; "0" or "" disables them.
	MetricsAddr, HealthAddr string
	// LeaderElection makes only one replica write status; every replica serves gRPC.
	LeaderElection          bool
	LeaderElectionNamespace string
	Log                     logr.Logger
}

// Scheme returns the scheme with the types the controller reads.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s) // static registrations, cannot fail
	_ = v1alpha1.AddToScheme(s)
	return s
}

// Run runs the controller until ctx is done.
func Run(ctx context.Context, cfg *rest.Config, opts Options) error {
	if opts.GRPCAddr == "" {
		opts.GRPCAddr = ":15090"
	}
	if opts.MetricsAddr == "" {
		opts.MetricsAddr = "0"
	}
	if opts.HealthAddr == "0" {
		opts.HealthAddr = ""
	}
	ctrl.SetLogger(opts.Log)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  Scheme(),
		Logger:                  opts.Log,
		Metrics:                 metricsserver.Options{BindAddress: opts.MetricsAddr},
		HealthProbeBindAddress:  opts.HealthAddr,
		LeaderElection:          opts.LeaderElection,
		LeaderElectionID:        "amesh-controller.mesh.amesh.dev",
		LeaderElectionNamespace: opts.LeaderElectionNamespace,
		Controller:              ctrlConfig(),
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if err := (&reconciler.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("reconciler: %w", err)
	}
	if opts.HealthAddr != "" {
		if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
			return err
		}
		if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
			return err
		}
	}
	srv := &server.Server{Reader: mgr.GetCache(), Notifier: &server.Notifier{}, Log: opts.Log.WithName("pluginsync")}
	if !opts.InsecureSkipAuth {
		// TokenReview is a create-only API: it needs the direct client, not the cache.
		srv.Auth = &server.TokenReviewer{Client: mgr.GetClient(), Audiences: opts.Audiences}
	}
	if err := mgr.Add(&grpcRunnable{mgr: mgr, srv: srv, opts: opts}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// grpcRunnable serves gRPC on every replica (not only the leader) once the cache has
// synced, so that the first set a sidecar gets is complete.
type grpcRunnable struct {
	mgr  manager.Manager
	srv  *server.Server
	opts Options
}

func (g *grpcRunnable) NeedLeaderElection() bool { return false }

func (g *grpcRunnable) Start(ctx context.Context) error {
	if !g.mgr.GetCache().WaitForCacheSync(ctx) {
		return errors.New("cache did not sync")
	}
	if err := g.watchChanges(ctx); err != nil {
		return err
	}
	lis := g.opts.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", g.opts.GRPCAddr); err != nil {
			return fmt.Errorf("grpc listen: %w", err)
		}
	}
	sopts := []grpc.ServerOption{
		// Sidecars ping every 30s to detect a vanished controller (pluginsync); the
		// server pings idle connections to drop sidecars that vanished.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 20 * time.Second, PermitWithoutStream: true}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
	}
	if g.opts.TLS != nil {
		sopts = append(sopts, grpc.Creds(g.opts.TLS))
	}
	gs := grpc.NewServer(sopts...)
	pb.RegisterPluginSyncServer(gs, g.srv)
	errc := make(chan error, 1)
	go func() { errc <- gs.Serve(lis) }()
	g.opts.Log.Info("serving plugin configs", "addr", lis.Addr().String(), "auth", !g.opts.InsecureSkipAuth)
	select {
	case <-ctx.Done():
		gs.Stop() // streams are endless: do not wait for them
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("grpc: %w", err)
	}
}

// watchChanges wakes the streams of a namespace on every config change there and on
// pod changes that can change a selection (labels, service account, creation, deletion).
func (g *grpcRunnable) watchChanges(ctx context.Context) error {
	notify := func(obj any) {
		if o := object(obj); o != nil {
			g.srv.Notifier.Notify(o.GetNamespace())
		}
	}
	cfgInf, err := g.mgr.GetCache().GetInformer(ctx, &v1alpha1.AmeshPluginConfig{})
	if err != nil {
		return err
	}
	if _, err := cfgInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, n any) { notify(n) },
		DeleteFunc: func(obj any) {
			if o := object(obj); o != nil {
				g.srv.Forget(o.GetUID())
			}
			notify(obj)
		},
	}); err != nil {
		return err
	}
	podInf, err := g.mgr.GetCache().GetInformer(ctx, &corev1.Pod{})
	if err != nil {
		return err
	}
	_, err = podInf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: notify, DeleteFunc: notify,
		UpdateFunc: func(o, n any) {
			op, ok1 := o.(*corev1.Pod)
			np, ok2 := n.(*corev1.Pod)
			if !ok1 || !ok2 || !labels.Equals(op.Labels, np.Labels) || op.Spec.ServiceAccountName != np.Spec.ServiceAccountName {
				notify(n)
			}
		},
	})
	return err
}

// object unwraps an informer event object, including a deletion tombstone.
func object(obj any) metav1.Object {
	if t, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, _ := obj.(metav1.Object)
	return o
}

// ctrlConfig allows several managers with the same controller name in one process
// (the tests restart the controller in-process).
func ctrlConfig() config.Controller {
	return config.Controller{SkipNameValidation: ptr.To(true)}
}
