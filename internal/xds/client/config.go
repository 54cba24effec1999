package client

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
)

// Protocol selects the ADS variant.
type Protocol string

const (
	// Delta is DeltaAggregatedResources, istiod's preferred protocol and the default.
	Delta Protocol = "delta"
	// SotW is StreamAggregatedResources (state of the world).
	SotW Protocol = "sotw"
)

// Config configures a Client. Zero durations take the defaults below.
type Config struct {
	// Server is "unix:///path" (istio-agent's local proxy) or "host:port".
	Server   string
	Protocol Protocol // default Delta
	// Node identifies amesh to istiod; see package bootstrap.
	Node *corev3.Node
	// TLS, when set, secures a TCP connection; nil means plaintext (or a unix socket).
	TLS *TLSConfig

	Backoff Backoff
	// ResourceTimeout bounds how long a snapshot waits for a dependent resource (RDS,
	// EDS) or a first wildcard response before publishing without it and reporting it
	// as missing. Default 15s (Envoy's initial_fetch_timeout).
	ResourceTimeout time.Duration
	// KeepaliveTime is the gRPC keepalive ping interval; KeepaliveTimeout how long a
	// ping may stay unanswered. Defaults bootstrap.DefaultKeepaliveInterval and
	// DefaultKeepaliveTimeout (istio-agent's; istiod permits pings every 15s).
	KeepaliveTime    time.Duration
	KeepaliveTimeout time.Duration
	// MaxMessageBytes is the largest response accepted (default
	// bootstrap.DefaultMaxMessageBytes); a larger one ends the stream with gRPC's
	// ResourceExhausted, and the last good state stays in force.
	MaxMessageBytes int
	// Logger receives connection events and NACKs; nil means slog.Default().
	Logger *slog.Logger
}

// TLSConfig is istiod's TLS port (15012) with a service-account token.
type TLSConfig struct {
	CAFile     string // PEM roots; empty means the system roots
	ServerName string // overrides the verified name; default the host of Server
	TokenFile  string // bearer token, re-read for every stream; empty means none
}

// Backoff is exponential backoff with jitter between connection attempts. The delay
// before attempt n (n >= 1 failures in a row) is min(Initial*Multiplier^(n-1), Max),
// scaled by a random factor in [1-Jitter, 1+Jitter]. It restarts from Initial once a
// stream has received a response.
type Backoff struct {
	Initial    time.Duration // default 500ms
	Max        time.Duration // default 30s
	Multiplier float64       // default 2
	Jitter     float64       // default 0.2; 0 < Jitter < 1
}

func (c Config) withDefaults() (Config, error) {
	if c.Server == "" {
		return c, errors.New("xds client: Config.Server is empty")
	}
	if c.Node == nil || c.Node.GetId() == "" {
		return c, errors.New("xds client: Config.Node with an id is required")
	}
	switch c.Protocol {
	case "":
		c.Protocol = Delta
	case Delta, SotW:
	default:
		return c, fmt.Errorf("xds client: unknown protocol %q", c.Protocol)
	}
	if c.TLS != nil && strings.HasPrefix(c.Server, "unix:") {
		return c, errors.New("xds client: TLS over a unix socket is not supported (istio-agent's socket is plaintext)")
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff.Initial = 500 * time.Millisecond
	}
	if c.Backoff.Max <= 0 {
		c.Backoff.Max = 30 * time.Second
	}
	if c.Backoff.Max < c.Backoff.Initial {
		c.Backoff.Max = c.Backoff.Initial
	}
	if c.Backoff.Multiplier < 1 {
		c.Backoff.Multiplier = 2
	}
	if c.Backoff.Jitter <= 0 || c.Backoff.Jitter >= 1 {
		c.Backoff.Jitter = 0.2
	}
	if c.ResourceTimeout <= 0 {
		c.ResourceTimeout = 15 * time.Second
	}
	if c.KeepaliveTime <= 0 {
		c.KeepaliveTime = bootstrap.DefaultKeepaliveInterval
	}
	if c.KeepaliveTimeout <= 0 {
		c.KeepaliveTimeout = bootstrap.DefaultKeepaliveTimeout
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = bootstrap.DefaultMaxMessageBytes
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// ConfigFrom turns a bootstrap configuration into a client Config with default
// backoff and resource timeout.
func ConfigFrom(b bootstrap.Config) Config {
	c := Config{Server: b.Server, Protocol: Protocol(b.Protocol), Node: b.Node,
		KeepaliveTime: b.KeepaliveInterval, KeepaliveTimeout: b.KeepaliveTimeout, MaxMessageBytes: b.MaxMessageBytes}
	if b.TLS != nil {
		c.TLS = &TLSConfig{CAFile: b.TLS.CAFile, ServerName: b.TLS.ServerName, TokenFile: b.TLS.TokenFile}
	}
	return c
}
