// Package sidecar builds and runs the pipeline that libxds.so and `amesh agent` share:
// xDS client (and amesh-controller's plugin configs, the workload certificate's
// watcher) → translate → agent → sink, plus the optional status server. Callers bring the configuration and the sink; everything
// else is wired here once, so the two entry points cannot drift apart.
package sidecar

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/certwatch"
	"github.com/amesh-dev/amesh/internal/config"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/jwks"
	"github.com/amesh-dev/amesh/internal/pluginsync"
	"github.com/amesh-dev/amesh/internal/status"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/client"
)

// Options configure a Sidecar beyond config.Config.
type Options struct {
	// Version is the build version shown by the status server.
	Version string
	// Logger defaults to slog.Default(); components log with a "component" attribute.
	Logger *slog.Logger
	// ControllerMinBackoff and ControllerMaxBackoff bound the delay between attempts to
	// reach amesh-controller (pluginsync's defaults when zero: 200ms and 30s).
	ControllerMinBackoff, ControllerMaxBackoff time.Duration
}

// Sidecar is one built pipeline. Run it once; build a new one to start over.
type Sidecar struct {
	// All read-only after New.
	cfg     config.Config
	log     *slog.Logger
	xds     *client.Client
	plugins *pluginsync.Client // nil when no controller is configured
	certs   *certwatch.Watcher // nil when the certificate directory is off
	jwks    *jwks.Fetcher
	agent   *agent.Agent
	sources status.Sources
}

// New builds the pipeline for cfg writing to sink. Nothing connects before Run.
func New(cfg config.Config, sink agent.Sink, opts Options) (*Sidecar, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	ccfg := client.ConfigFrom(cfg.XDS)
	ccfg.Logger = log.With("component", "xds")
	cl, err := client.New(ccfg)
	if err != nil {
		return nil, err
	}
	topts := translateOptions(cfg)
	newTr := func() agent.Translator { return translate.New(topts) }
	aopts := agent.Options{Window: cfg.Window, Logger: log.With("component", "agent")}
	var ps *pluginsync.Client
	if cfg.Controller.Address != "" {
		if ps, err = newPluginSync(cfg, log, opts); err != nil {
			return nil, err
		}
		// The controller's set is the agent's second input; until one arrives it is
		// empty and the routes are the translation alone.
		aopts.Plugins = ps
	}
	var certs *certwatch.Watcher
	if cfg.WorkloadCertDir != "" {
		// The workload certificate is the agent's third input: until the files hold
		// one, APISIX has no identity and everything else is written as usual.
		certs = certwatch.New(certwatch.Options{Dir: cfg.WorkloadCertDir, Logger: log.With("component", "certwatch")})
		aopts.Identity = certs
	}
	// Remote JWKS that jwt_authn providers name are fetched over their clusters, as
	// Envoy fetches them.
	fetcher := jwks.New(jwks.Options{Logger: log.With("component", "jwks")})
	aopts.JWKS = fetcher
	ag := agent.New(cl, newTr, sink, aopts)
	s := &Sidecar{cfg: cfg, log: log, xds: cl, plugins: ps, certs: certs, jwks: fetcher, agent: ag,
		sources: status.ForPipeline(opts.Version, cl, ag)}
	if ps != nil {
		s.sources.Controller = s.controllerStatus
	}
	if certs != nil {
		s.sources.Identity = s.identityStatus
	}
	return s, nil
}

// identityStatus is the status server's view of the workload identity.
func (s *Sidecar) identityStatus() status.Identity {
	cur, _ := s.certs.Current()
	ws := s.certs.Status()
	st := status.Identity{Dir: ws.Dir, Files: ws.Files, Problem: cur.Problem, Published: ws.Published}
	if id := cur.Identity; id != nil {
		st.SPIFFE, st.Serial, st.NotBefore, st.NotAfter = id.URI, id.Serial, &id.NotBefore, &id.NotAfter
		st.LastPublished = &ws.LastPublished
	}
	return st
}

// newPluginSync returns the amesh-controller client for the pod in cfg's node identity.
func newPluginSync(cfg config.Config, log *slog.Logger, opts Options) (*pluginsync.Client, error) {
	meta := cfg.XDS.Node.GetMetadata().GetFields()
	ns, pod := stringField(meta, "NAMESPACE"), stringField(meta, "NAME")
	if ns == "" || pod == "" {
		return nil, fmt.Errorf("sidecar: the controller needs the pod's name and namespace (POD_NAME, POD_NAMESPACE)")
	}
	c := cfg.Controller
	var creds credentials.TransportCredentials
	if c.TLS {
		var err error
		if creds, err = controllerTLS(c); err != nil {
			return nil, err
		}
	}
	return pluginsync.New(pluginsync.Options{
		Addr: c.Address, Namespace: ns, Pod: pod, TokenFile: c.TokenFile, Creds: creds,
		MinBackoff: opts.ControllerMinBackoff, MaxBackoff: opts.ControllerMaxBackoff,
		Logger: log.With("component", "controller"),
	}), nil
}

// controllerTLS verifies the controller against CAFile (system roots if empty) and
// ServerName (the address's host if empty).
func controllerTLS(c config.Controller) (credentials.TransportCredentials, error) {
	name := c.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(c.Address[strings.LastIndex(c.Address, "/")+1:])
		if err != nil {
			return nil, fmt.Errorf("sidecar: controller TLS needs a host:port address or %s, got %q", config.EnvControllerServerName, c.Address)
		}
		name = host
	}
	if c.CAFile == "" {
		return credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS12, ServerName: name}), nil
	}
	creds, err := credentials.NewClientTLSFromFile(c.CAFile, name)
	if err != nil {
		return nil, fmt.Errorf("sidecar: controller CA file: %w", err)
	}
	return creds, nil
}

func stringField(m map[string]*structpb.Value, k string) string {
	return m[k].GetStringValue()
}

// XDS returns the xDS client (for its Status).
func (s *Sidecar) XDS() *client.Client { return s.xds }

// Agent returns the agent (ReadyC, Stats, Objects).
func (s *Sidecar) Agent() *agent.Agent { return s.agent }

// Handler returns the status server's handler; Run serves it on cfg.StatusAddr.
func (s *Sidecar) Handler() http.Handler { return status.Handler(s.sources, s.log) }

// controllerStatus is the status server's view of the controller connection.
func (s *Sidecar) controllerStatus() status.Controller {
	set, _ := s.plugins.Current()
	st := status.Controller{Address: s.cfg.Controller.Address, Connected: s.plugins.Connected(), Version: set.Version,
		Configs: make([]string, 0, len(set.Configs))}
	for _, c := range set.Configs {
		st.Configs = append(st.Configs, fmt.Sprintf("%s/%s@%d", c.Namespace, c.Name, c.Generation))
	}
	return st
}

// Run starts the status server (when cfg.StatusAddr is set) and runs the xDS client,
// the agent and the controller client until ctx is done (then it returns nil) or one
// of them stops or panics (then it stops the others and returns why). A panic never
// escapes: the pipeline may run inside nginx. Run must be called once.
func (s *Sidecar) Run(ctx context.Context) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicked(s.log, "sidecar", p)
		}
	}()
	if s.cfg.StatusAddr != "" {
		srv, err := status.Start(s.cfg.StatusAddr, s.Handler(), s.log.With("component", "status"))
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = srv.Close(cctx)
		}()
		s.log.Info("status server listening", "addr", srv.Addr())
	}
	tasks := []task{{"xds client", s.xds.Run}, {"agent", s.agent.Run}, {"JWKS fetcher", s.jwks.Run}}
	if s.certs != nil {
		tasks = append(tasks, task{"workload certificate watcher", s.certs.Run})
	}
	if s.plugins != nil {
		tasks = append(tasks, task{"controller client", s.plugins.Run})
		s.log.Info("plugin configs from amesh-controller", "addr", s.cfg.Controller.Address, "tls", s.cfg.Controller.TLS)
	}
	return runAll(ctx, s.log, tasks)
}

// translateOptions returns the translation's options for cfg. With the workload
// certificate watched, upstream mTLS presents the client ssl object the watcher's
// identity becomes and trusts the roots istio-agent writes beside it; until the agent
// has written a certificate that object is missing and those endpoints fail closed, as
// Envoy's clusters wait for their SDS secret.
func translateOptions(cfg config.Config) translate.Options {
	o := translate.Options{OriginalDstVar: cfg.OriginalDstVar}
	if cfg.WorkloadCertDir != "" {
		o.WorkloadCertID = translate.ClientSSLID
		o.MeshRootFile = filepath.Join(cfg.WorkloadCertDir, identity.RootFile)
	}
	return o
}
