// Package pluginsync is the sidecar side of the plugin-sync protocol: it keeps a Watch
// stream open to amesh-controller, reconnecting with backoff forever, and publishes each
// config set it receives as an overlay.Feed (the agent's plugin input). When the controller goes away the last set
// stays in force; nothing is published until a new stream delivers a set.
package pluginsync

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/internal/backoff"
	"github.com/amesh-dev/amesh/internal/overlay"
)

// Options configure a Client.
type Options struct {
	// Addr is the controller's gRPC address (host:port or any gRPC target).
	Addr string
	// Namespace and Pod identify the pod this sidecar runs in.
	Namespace, Pod string
	// TokenFile holds the pod's service-account token, sent as "authorization: Bearer".
	// It is read again for every stream because projected tokens are rotated. Empty: no
	// token (only a controller started with authentication disabled answers).
	TokenFile string
	// Creds secure the connection; default plaintext.
	Creds credentials.TransportCredentials
	// MinBackoff and MaxBackoff bound the delay between stream attempts
	// (defaults 200ms and 30s); the delay doubles after each failed attempt, with jitter.
	MinBackoff, MaxBackoff time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Client watches the controller and implements overlay.Feed.
type Client struct {
	opts      Options
	latest    overlay.Latest
	connected atomic.Bool // a stream is open and has delivered a set
}

var _ overlay.Feed = (*Client)(nil)

// New returns a Client; Run connects it.
func New(opts Options) *Client {
	if opts.Creds == nil {
		opts.Creds = insecure.NewCredentials()
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(30*time.Second, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Client{opts: opts}
}

// Current returns the last config set received (zero Version before the first).
func (c *Client) Current() (overlay.Set, <-chan struct{}) { return c.latest.Current() }

// Connected reports whether a stream to the controller is open and has delivered a set
// (for status views; the set in force is Current's either way).
func (c *Client) Connected() bool { return c.connected.Load() }

// Run keeps a stream to the controller open until ctx is done, and then returns nil.
// It never gives up: failures are logged and retried after a backoff.
func (c *Client) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(c.opts.Addr, grpc.WithTransportCredentials(c.opts.Creds),
		// Pings detect a controller that vanished without closing the connection (a
		// node failure), so that the client moves to another replica. amesh-controller
		// permits pings every 20s.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}))
	if err != nil {
		return fmt.Errorf("pluginsync: %w", err)
	}
	defer conn.Close()
	client := pb.NewPluginSyncClient(conn)
	retry := backoff.Exponential{Initial: c.opts.MinBackoff, Max: c.opts.MaxBackoff, Multiplier: 2}
	failures := 0
	for {
		received, err := c.watch(ctx, client)
		c.connected.Store(false)
		if ctx.Err() != nil {
			return nil
		}
		if received {
			failures = 0 // the controller was healthy: retry promptly
		}
		// Warn once per outage; the retries of a controller that is absent (it is
		// optional) are only worth a debug line.
		level := slog.LevelDebug
		if failures == 0 {
			level = slog.LevelWarn
		}
		failures++
		delay := retry.Delay(failures, 0)
		c.opts.Logger.Log(ctx, level, "no plugin config stream; keeping the last config", "addr", c.opts.Addr, "err", err, "retry_in", delay)
		// Between half the delay and all of it.
		t := time.NewTimer(delay/2 + rand.N(delay/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// watch runs one stream and reports whether it delivered at least one set. A panic
// (the client may run inside nginx) ends the stream like an error and is retried.
func (c *Client) watch(ctx context.Context, client pb.PluginSyncClient) (received bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if c.opts.TokenFile != "" {
		tok, err := os.ReadFile(c.opts.TokenFile)
		if err != nil {
			return false, fmt.Errorf("read token: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	stream, err := client.Watch(ctx, &pb.WatchRequest{Namespace: c.opts.Namespace, Pod: c.opts.Pod})
	if err != nil {
		return false, err
	}
	var last uint64
	for {
		msg, err := stream.Recv()
		if err != nil {
			return received, err
		}
		if received && msg.GetVersion() <= last {
			c.opts.Logger.Warn("ignoring an older plugin config set", "version", msg.GetVersion(), "applied", last)
			continue
		}
		received, last = true, msg.GetVersion()
		set, errs := Convert(msg)
		for _, e := range errs {
			c.opts.Logger.Error("plugin not applied", "err", e)
		}
		// Connected before the set is published: whoever the set wakes sees it.
		c.connected.Store(true)
		c.latest.Publish(set)
		c.opts.Logger.Info("plugin config set applied", "version", set.Version, "configs", len(set.Configs))
	}
}

// Convert turns a received set into an overlay.Set. A plugin whose config is not a
// JSON object is left out and reported; the rest of its config still applies.
func Convert(msg *pb.ConfigSet) (overlay.Set, []error) {
	set := overlay.Set{Version: msg.GetVersion()}
	var errs []error
	for _, pc := range msg.GetConfigs() {
		c := overlay.Config{
			Namespace: pc.GetNamespace(), Name: pc.GetName(),
			Generation: pc.GetGeneration(), Priority: pc.GetPriority(),
			Scope: overlay.Scope{
				Hosts: pc.GetScope().GetHosts(), Ports: pc.GetScope().GetPorts(), Paths: pc.GetScope().GetPaths(),
				Direction: direction(pc.GetScope().GetDirection()),
			},
		}
		for _, p := range pc.GetPlugins() {
			conf := p.GetConfigJson()
			if len(conf) == 0 {
				conf = []byte("{}")
			}
			var obj map[string]json.RawMessage
			if p.GetName() == "" || json.Unmarshal(conf, &obj) != nil || obj == nil {
				errs = append(errs, fmt.Errorf("%s/%s: plugin %q: %w", c.Namespace, c.Name, p.GetName(), errBadPlugin))
				continue
			}
			c.Plugins = append(c.Plugins, overlay.Plugin{Name: p.GetName(), Config: json.RawMessage(conf), Override: p.GetOverride()})
		}
		set.Configs = append(set.Configs, c)
	}
	return set, errs
}

var errBadPlugin = errors.New("empty name or config is not a JSON object")

func direction(d pb.Direction) overlay.Direction {
	switch d {
	case pb.Direction_DIRECTION_INBOUND:
		return overlay.DirectionInbound
	case pb.Direction_DIRECTION_OUTBOUND:
		return overlay.DirectionOutbound
	}
	return overlay.DirectionAny
}
