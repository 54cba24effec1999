// Package bootstrap derives the identity amesh presents to istiod (the Envoy node) and
// the xDS transport settings from the environment and files of the pod, the way
// istio-agent does for Envoy. It does no network I/O; see README.md for every variable.
package bootstrap

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Defaults, matching an Istio sidecar injected by istiod.
const (
	DefaultServer        = "unix:///etc/istio/proxy/XDS"
	DefaultLabelsFile    = "/etc/istio/pod/labels"
	DefaultTokenFile     = "/var/run/secrets/tokens/istio-token"
	DefaultClusterID     = "Kubernetes"
	DefaultClusterDomain = "cluster.local"
	DefaultInterception  = "REDIRECT"
	DefaultNodeType      = "sidecar"
	ProtocolDelta        = "delta"
	ProtocolSotW         = "sotw"

	// DefaultKeepaliveInterval and DefaultKeepaliveTimeout are istio-agent's for its
	// connection to istiod (Istio's keepalive.DefaultOption: HTTP/2 pings every 30s,
	// 10s to answer); istiod lets clients ping every 15s.
	DefaultKeepaliveInterval = 30 * time.Second
	DefaultKeepaliveTimeout  = 10 * time.Second
	// MinKeepaliveInterval is the shortest interval gRPC sends pings at (it raises
	// shorter ones silently), so a shorter setting is refused instead.
	MinKeepaliveInterval = 10 * time.Second
	// DefaultMaxMessageBytes bounds one xDS response. Decoding and translating a
	// response takes several times its size in memory (about 6x for a route
	// configuration); 128 MiB keeps that within the 1 GiB Istio gives a sidecar by
	// default, while the largest response of a 10,000-service mesh with three
	// clusters per service (its CDS) is about a quarter of it.
	DefaultMaxMessageBytes = 128 << 20
)

// Variables lists every variable FromEnv reads, besides those starting with
// ISTIO_META_ and ISTIO_METAJSON_ (see README.md).
var Variables = []string{
	"AMESH_XDS_ADDRESS", "AMESH_XDS_PROTOCOL", "AMESH_XDS_TLS", "AMESH_XDS_CA_FILE",
	"AMESH_XDS_SERVER_NAME", "AMESH_XDS_TOKEN_FILE", EnvKeepaliveInterval, EnvKeepaliveTimeout,
	EnvMaxMessageBytes, "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP", "SERVICE_ACCOUNT",
	"CLUSTER_ID", "ISTIO_VERSION", "NODE_NAME", "PROXY_CONFIG", "CLUSTER_DOMAIN",
	"AMESH_NODE_TYPE", "AMESH_LABELS_FILE", "AMESH_VERSION",
}

// MetaPrefixes are the prefixes of the variables that become node metadata.
var MetaPrefixes = []string{metaPrefix, metaJSONPrefix}

// Variables of the transport (see README.md).
const (
	EnvKeepaliveInterval = "AMESH_XDS_KEEPALIVE_INTERVAL"
	EnvKeepaliveTimeout  = "AMESH_XDS_KEEPALIVE_TIMEOUT"
	EnvMaxMessageBytes   = "AMESH_XDS_MAX_MESSAGE_BYTES"
)

// Config is what the xDS client needs to reach istiod and present itself.
type Config struct {
	// Node is sent in the first request of every stream.
	Node *corev3.Node
	// Server is "unix:///path" or "host:port".
	Server string
	// Protocol is ProtocolDelta or ProtocolSotW.
	Protocol string
	// TLS is set when the connection to Server uses TLS.
	TLS *TLS
	// KeepaliveInterval is how long the connection may be idle before the client
	// pings the server; KeepaliveTimeout how long a ping may stay unanswered before
	// the connection is considered dead.
	KeepaliveInterval, KeepaliveTimeout time.Duration
	// MaxMessageBytes is the largest xDS response accepted; a larger one fails the
	// stream, as gRPC fails any message over its limit.
	MaxMessageBytes int
}

// TLS holds the settings for istiod's TLS port (15012).
type TLS struct {
	// CAFile is the PEM bundle the server certificate is verified against; empty
	// means the system roots.
	CAFile string
	// ServerName overrides the name verified in the server certificate (default: the
	// host of Server).
	ServerName string
	// TokenFile holds the service-account token sent as "authorization: Bearer"; it
	// is re-read for every stream so that a rotated token is picked up. Empty: none.
	TokenFile string
}

// FromEnv builds a Config from environment variables looked up with getenv (os.Getenv
// in production) and the pod labels file they point to. The ISTIO_META_* and
// ISTIO_METAJSON_* names are taken from os.Environ; their values from getenv.
func FromEnv(getenv func(string) string) (Config, error) {
	var names []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		names = append(names, k)
	}
	return fromEnv(getenv, names, net.InterfaceAddrs)
}

// FromEnviron is FromEnv for an explicit environment in os.Environ's "KEY=value" form.
func FromEnviron(environ []string) (Config, error) {
	return fromEnviron(environ, net.InterfaceAddrs)
}

// fromEnviron is FromEnviron with the host's addresses listed by hostAddrs.
func fromEnviron(environ []string, hostAddrs func() ([]net.Addr, error)) (Config, error) {
	m := make(map[string]string, len(environ))
	names := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
		names = append(names, k)
	}
	return fromEnv(func(k string) string { return m[k] }, names, hostAddrs)
}

// fromEnv reports every problem it finds, not only the first, so that a user fixes
// the environment in one go. hostAddrs lists the host's addresses (net.InterfaceAddrs).
func fromEnv(getenv func(string) string, names []string, hostAddrs func() ([]net.Addr, error)) (Config, error) {
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var cfg Config
	var errs []error
	cfg.Server = env("AMESH_XDS_ADDRESS", DefaultServer)
	cfg.Protocol = strings.ToLower(env("AMESH_XDS_PROTOCOL", ProtocolDelta))
	if cfg.Protocol != ProtocolDelta && cfg.Protocol != ProtocolSotW {
		errs = append(errs, fmt.Errorf("AMESH_XDS_PROTOCOL=%q: want %q or %q", cfg.Protocol, ProtocolDelta, ProtocolSotW))
	}
	if err := checkServer(cfg.Server); err != nil {
		errs = append(errs, fmt.Errorf("AMESH_XDS_ADDRESS=%q: %w", cfg.Server, err))
	}
	useTLS, err := strconv.ParseBool(env("AMESH_XDS_TLS", "false"))
	if err != nil {
		errs = append(errs, fmt.Errorf("AMESH_XDS_TLS=%q: want true or false", env("AMESH_XDS_TLS", "")))
	}
	if ca := env("AMESH_XDS_CA_FILE", ""); ca != "" || useTLS {
		if strings.HasPrefix(cfg.Server, "unix://") {
			errs = append(errs, errors.New("TLS (AMESH_XDS_TLS / AMESH_XDS_CA_FILE) cannot be used with a unix socket address"))
		}
		cfg.TLS = &TLS{
			CAFile:     ca,
			ServerName: env("AMESH_XDS_SERVER_NAME", ""),
			TokenFile:  env("AMESH_XDS_TOKEN_FILE", DefaultTokenFile),
		}
		if cfg.TLS.TokenFile == "none" {
			cfg.TLS.TokenFile = ""
		}
	}
	cfg.KeepaliveInterval, err = duration(env(EnvKeepaliveInterval, ""), DefaultKeepaliveInterval, MinKeepaliveInterval)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvKeepaliveInterval, err))
	}
	cfg.KeepaliveTimeout, err = duration(env(EnvKeepaliveTimeout, ""), DefaultKeepaliveTimeout, time.Second)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvKeepaliveTimeout, err))
	}
	cfg.MaxMessageBytes, err = ParseBytes(env(EnvMaxMessageBytes, ""), DefaultMaxMessageBytes)
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", EnvMaxMessageBytes, err))
	}
	var nodeErrs []error
	cfg.Node, nodeErrs = node(getenv, env, names, hostAddrs)
	errs = append(errs, nodeErrs...)
	if len(errs) > 0 {
		return Config{}, prefixed(errs)
	}
	return cfg, nil
}

// prefixed joins errs into one error, one per line, each prefixed with the package.
func prefixed(errs []error) error {
	for i, e := range errs {
		errs[i] = fmt.Errorf("bootstrap: %w", e)
	}
	return errors.Join(errs...)
}

// duration parses a Go duration of at least lowest; "" is def.
func duration(v string, def, lowest time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lowest {
		return 0, fmt.Errorf("%q: want a duration of at least %s, e.g. %s", v, lowest, def)
	}
	return d, nil
}

// maxBytes is the most gRPC can receive in one message.
const maxBytes = 1<<31 - 1

// ParseBytes parses a byte count: a number, optionally followed by KiB, MiB or GiB
// (e.g. 134217728 or 128MiB); "" is def.
func ParseBytes(v string, def int) (int, error) {
	if v == "" {
		return def, nil
	}
	num, unit := v, 1
	for _, u := range []struct {
		suffix string
		n      int
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if s, ok := strings.CutSuffix(v, u.suffix); ok {
			num, unit = strings.TrimSpace(s), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > maxBytes/int64(unit) {
		return 0, fmt.Errorf("%q: want a byte count between 1 and 2GiB-1, e.g. 128MiB", v)
	}
	return int(n) * unit, nil
}

func checkServer(s string) error {
	if p, ok := strings.CutPrefix(s, "unix://"); ok {
		if !strings.HasPrefix(p, "/") {
			return errors.New("unix socket path must be absolute (unix:///path)")
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(s); err != nil {
		return fmt.Errorf("want unix:///path or host:port: %w", err)
	}
	return nil
}

// metaPrefix and metaJSONPrefix are istio-agent's conventions: ISTIO_META_X=v becomes
// metadata X="v"; ISTIO_METAJSON_X=<json> becomes metadata X=<decoded json>.
const (
	metaPrefix     = "ISTIO_META_"
	metaJSONPrefix = "ISTIO_METAJSON_"
)

func node(getenv func(string) string, env func(string, string) string, names []string, hostAddrs func() ([]net.Addr, error)) (*corev3.Node, []error) {
	var errs []error
	meta := map[string]any{}
	// Generic variables first, so that the specific ones below win.
	sort.Strings(names) // deterministic when two names map to one key
	for _, k := range names {
		v := getenv(k)
		switch {
		case strings.HasPrefix(k, metaJSONPrefix) && v != "":
			var j any
			if err := json.Unmarshal([]byte(v), &j); err != nil {
				errs = append(errs, fmt.Errorf("%s is not JSON: %w", k, err))
				continue
			}
			meta[strings.TrimPrefix(k, metaJSONPrefix)] = j
		case strings.HasPrefix(k, metaPrefix) && v != "":
			meta[strings.TrimPrefix(k, metaPrefix)] = v
		}
	}
	str := func(key, def string) string {
		if s, ok := meta[key].(string); ok && s != "" {
			return s
		}
		return def
	}

	podName := env("POD_NAME", str("NAME", ""))
	ns := env("POD_NAMESPACE", str("NAMESPACE", ""))
	var missing []string
	if podName == "" {
		missing = append(missing, "POD_NAME")
	}
	if ns == "" {
		missing = append(missing, "POD_NAMESPACE")
	}
	if len(missing) > 0 {
		errs = append(errs, fmt.Errorf("%s must be set: the pod's name and namespace (downward API metadata.name, metadata.namespace; any names work outside Kubernetes)", strings.Join(missing, " and ")))
	}
	ips, err := instanceIPs(env("INSTANCE_IP", str("INSTANCE_IPS", "")), hostAddrs)
	if err != nil {
		errs = append(errs, err)
	}
	labels, err := podLabels(env("AMESH_LABELS_FILE", DefaultLabelsFile), meta["LABELS"])
	if err != nil {
		errs = append(errs, err)
	}
	domain := env("CLUSTER_DOMAIN", DefaultClusterDomain)
	nodeType := env("AMESH_NODE_TYPE", DefaultNodeType)
	if nodeType != "sidecar" && nodeType != "router" {
		errs = append(errs, fmt.Errorf("AMESH_NODE_TYPE=%q: want sidecar or router", nodeType))
	}
	if v := env("PROXY_CONFIG", ""); v != "" {
		var pc map[string]any
		if err := json.Unmarshal([]byte(v), &pc); err != nil {
			errs = append(errs, fmt.Errorf("PROXY_CONFIG is not a JSON object: %w", err))
		}
		meta["PROXY_CONFIG"] = pc
	}
	if len(errs) > 0 {
		return nil, errs
	}

	meta["NAME"] = podName
	meta["NAMESPACE"] = ns
	meta["INSTANCE_IPS"] = strings.Join(ips, ",")
	meta["CLUSTER_ID"] = env("CLUSTER_ID", str("CLUSTER_ID", DefaultClusterID))
	meta["INTERCEPTION_MODE"] = str("INTERCEPTION_MODE", DefaultInterception)
	if v := env("ISTIO_VERSION", str("ISTIO_VERSION", "")); v != "" {
		meta["ISTIO_VERSION"] = v
	}
	if v := env("SERVICE_ACCOUNT", str("SERVICE_ACCOUNT", "")); v != "" {
		meta["SERVICE_ACCOUNT"] = v
	}
	if v := env("NODE_NAME", str("NODE_NAME", "")); v != "" {
		meta["NODE_NAME"] = v
	}
	if len(labels) > 0 {
		lm := make(map[string]any, len(labels))
		for k, v := range labels {
			lm[k] = v
		}
		meta["LABELS"] = lm
	}
	workload := str("WORKLOAD_NAME", "")
	if workload == "" {
		workload = firstNonEmpty(labels["app.kubernetes.io/name"], labels["app"], podName)
		meta["WORKLOAD_NAME"] = workload
	}
	st, err := structpb.NewStruct(meta)
	if err != nil {
		return nil, []error{fmt.Errorf("node metadata: %w", err)}
	}
	// istio-agent's service cluster: the canonical service name and namespace.
	cluster := firstNonEmpty(labels["service.istio.io/canonical-name"], labels["app.kubernetes.io/name"], labels["app"], workload) + "." + ns
	return &corev3.Node{
		Id:                   fmt.Sprintf("%s~%s~%s.%s~%s.svc.%s", nodeType, ips[0], podName, ns, ns, domain),
		Cluster:              cluster,
		Metadata:             st,
		UserAgentName:        "amesh",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: env("AMESH_VERSION", "dev")},
	}, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// instanceIPs parses INSTANCE_IP (istio-agent accepts a comma-separated list; the first
// address goes into the node id). Unset, it is the host's first address that is not a
// loopback, link-local or multicast one, as istio-agent finds the pod IP without it.
func instanceIPs(v string, hostAddrs func() ([]net.Addr, error)) ([]string, error) {
	if v == "" {
		a, err := firstHostAddr(hostAddrs)
		if err != nil {
			return nil, fmt.Errorf("INSTANCE_IP is not set and %w; set it to the pod IP (downward API status.podIP)", err)
		}
		return []string{a.String()}, nil
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("INSTANCE_IP: %w", err)
		}
		out = append(out, a.String())
	}
	if len(out) == 0 {
		return nil, errors.New("INSTANCE_IP has no address")
	}
	return out, nil
}

// firstHostAddr returns the first address of the host's interfaces that can identify
// it to others: not loopback, link-local, multicast or unspecified.
func firstHostAddr(hostAddrs func() ([]net.Addr, error)) (netip.Addr, error) {
	addrs, err := hostAddrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("the host's addresses cannot be listed: %w", err)
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		if ip := p.Addr().Unmap(); ip.IsGlobalUnicast() {
			return ip, nil
		}
	}
	return netip.Addr{}, errors.New("the host has no address other than loopback and link-local ones")
}

// podLabels reads the downward API labels file; a missing file is not an error (the
// labels may come from ISTIO_METAJSON_LABELS, given as fromMeta, which the file
// overrides key by key).
func podLabels(path string, fromMeta any) (map[string]string, error) {
	labels := map[string]string{}
	if m, ok := fromMeta.(map[string]any); ok {
		for k, v := range m {
			if s, ok := v.(string); ok {
				labels[k] = s
			}
		}
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return labels, nil
	}
	if err != nil {
		return nil, fmt.Errorf("labels file: %w", err)
	}
	fromFile, err := ParseLabels(data)
	if err != nil {
		return nil, fmt.Errorf("labels file %s: %w", path, err)
	}
	for k, v := range fromFile {
		labels[k] = v
	}
	return labels, nil
}

// ParseLabels parses the Kubernetes downward API format: one key="value" per line, the
// value a Go-quoted string.
func ParseLabels(data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" {
			continue
		}
		k, q, ok := strings.Cut(s, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("line %d: want key=\"value\"", line)
		}
		v, err := strconv.Unquote(q)
		if err != nil {
			return nil, fmt.Errorf("line %d: value of %s: %w", line, k, err)
		}
		out[k] = v
	}
	return out, sc.Err()
}
