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
	return fromEnv(getenv, names)
}

// FromEnviron is FromEnv for an explicit environment in os.Environ's "KEY=value" form.
func FromEnviron(environ []string) (Config, error) {
	m := make(map[string]string, len(environ))
	names := make([]string, 0, len(environ))
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
		names = append(names, k)
	}
	return fromEnv(func(k string) string { return m[k] }, names)
}

func fromEnv(getenv func(string) string, names []string) (Config, error) {
	env := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	var cfg Config
	cfg.Server = env("AMESH_XDS_ADDRESS", DefaultServer)
	cfg.Protocol = strings.ToLower(env("AMESH_XDS_PROTOCOL", ProtocolDelta))
	if cfg.Protocol != ProtocolDelta && cfg.Protocol != ProtocolSotW {
		return Config{}, fmt.Errorf("bootstrap: AMESH_XDS_PROTOCOL=%q: want %q or %q", cfg.Protocol, ProtocolDelta, ProtocolSotW)
	}
	if err := checkServer(cfg.Server); err != nil {
		return Config{}, fmt.Errorf("bootstrap: AMESH_XDS_ADDRESS=%q: %w", cfg.Server, err)
	}
	useTLS, err := strconv.ParseBool(env("AMESH_XDS_TLS", "false"))
	if err != nil {
		return Config{}, fmt.Errorf("bootstrap: AMESH_XDS_TLS: %w", err)
	}
	if ca := env("AMESH_XDS_CA_FILE", ""); ca != "" || useTLS {
		if strings.HasPrefix(cfg.Server, "unix://") {
			return Config{}, errors.New("bootstrap: TLS (AMESH_XDS_TLS / AMESH_XDS_CA_FILE) cannot be used with a unix socket address")
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
	cfg.Node, err = node(getenv, env, names)
	if err != nil {
		return Config{}, err
	}
	return cfg, nil
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

func node(getenv func(string) string, env func(string, string) string, names []string) (*corev3.Node, error) {
	meta := map[string]any{}
	// Generic variables first, so that the specific ones below win.
	sort.Strings(names) // deterministic when two names map to one key
	for _, k := range names {
		v := getenv(k)
		switch {
		case strings.HasPrefix(k, metaJSONPrefix) && v != "":
			var j any
			if err := json.Unmarshal([]byte(v), &j); err != nil {
				return nil, fmt.Errorf("bootstrap: %s is not JSON: %w", k, err)
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
	if podName == "" || ns == "" {
		return nil, errors.New("bootstrap: POD_NAME and POD_NAMESPACE must be set (downward API)")
	}
	ips, err := instanceIPs(env("INSTANCE_IP", str("INSTANCE_IPS", "")))
	if err != nil {
		return nil, err
	}
	labels, err := podLabels(env("AMESH_LABELS_FILE", DefaultLabelsFile), meta["LABELS"])
	if err != nil {
		return nil, err
	}
	domain := env("CLUSTER_DOMAIN", DefaultClusterDomain)
	nodeType := env("AMESH_NODE_TYPE", DefaultNodeType)
	if nodeType != "sidecar" && nodeType != "router" {
		return nil, fmt.Errorf("bootstrap: AMESH_NODE_TYPE=%q: want sidecar or router", nodeType)
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
	if v := env("PROXY_CONFIG", ""); v != "" {
		var pc map[string]any
		if err := json.Unmarshal([]byte(v), &pc); err != nil {
			return nil, fmt.Errorf("bootstrap: PROXY_CONFIG is not a JSON object: %w", err)
		}
		meta["PROXY_CONFIG"] = pc
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
		return nil, fmt.Errorf("bootstrap: node metadata: %w", err)
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
// address goes into the node id).
func instanceIPs(v string) ([]string, error) {
	if v == "" {
		return nil, errors.New("bootstrap: INSTANCE_IP must be set to the pod IP (downward API status.podIP)")
	}
	var out []string
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("bootstrap: INSTANCE_IP: %w", err)
		}
		out = append(out, a.String())
	}
	if len(out) == 0 {
		return nil, errors.New("bootstrap: INSTANCE_IP has no address")
	}
	return out, nil
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
		return nil, fmt.Errorf("bootstrap: labels file: %w", err)
	}
	fromFile, err := ParseLabels(data)
	if err != nil {
		return nil, fmt.Errorf("bootstrap: labels file %s: %w", path, err)
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
