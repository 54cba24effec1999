// Package config is the runtime configuration of the amesh agent (libxds.so inside
// nginx and the amesh command): environment variables, which nginx passes with `env`
// directives, optionally completed by a file. README.md lists every variable.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
)

// Variable names read by this package (bootstrap reads the xDS and identity ones).
const (
	EnvConfigFile     = "AMESH_CONFIG_FILE"
	EnvLogLevel       = "AMESH_LOG_LEVEL"
	EnvLogFile        = "AMESH_LOG_FILE"
	EnvOriginalDstVar = "AMESH_ORIGINAL_DST_VAR"
	EnvWindow         = "AMESH_COALESCE_WINDOW"
	EnvStatusAddr     = "AMESH_STATUS_ADDR"
	EnvWorkloadCert   = "AMESH_WORKLOAD_CERT_DIR"

	EnvControllerAddress    = "AMESH_CONTROLLER_ADDRESS"
	EnvControllerTokenFile  = "AMESH_CONTROLLER_TOKEN_FILE"
	EnvControllerTLS        = "AMESH_CONTROLLER_TLS"
	EnvControllerCAFile     = "AMESH_CONTROLLER_CA_FILE"
	EnvControllerServerName = "AMESH_CONTROLLER_SERVER_NAME"
)

// Defaults.
const (
	DefaultConfigFile     = "/etc/amesh/amesh.yaml" // read only if it exists
	DefaultOriginalDstVar = "connection_original_dst"
	DefaultWindow         = 20 * time.Millisecond // agent.DefaultWindow
	// DefaultControllerTokenFile is the pod's service-account token, which
	// amesh-controller verifies with a TokenReview.
	DefaultControllerTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	// DefaultWorkloadCertDir is where the sidecar template mounts istio-agent's
	// OUTPUT_CERTS.
	DefaultWorkloadCertDir = "/var/lib/istio/data"
)

// Config is the complete runtime configuration.
type Config struct {
	// XDS is the xDS server, protocol, TLS and node identity (package bootstrap).
	XDS bootstrap.Config
	// LogLevel is the minimum level logged; LogFile where ("" means stderr).
	LogLevel slog.Level
	LogFile  string
	// OriginalDstVar is the nginx variable routes match the original destination port on.
	OriginalDstVar string
	// Window is the agent's coalescing window.
	Window time.Duration
	// StatusAddr is the status/metrics server's listen address; "" means no server.
	StatusAddr string
	// Controller is the optional amesh-controller connection.
	Controller Controller
	// WorkloadCertDir holds the workload certificate istio-agent writes; "" is off.
	WorkloadCertDir string
	// File is the config file that was read ("" if none).
	File string
}

// Controller is how the sidecar reaches amesh-controller for plugin configs. With no
// Address amesh works from Istio's configuration alone.
type Controller struct {
	// Address is the controller's gRPC address (host:port or a gRPC target); "" is off.
	Address string
	// TokenFile holds the service-account token sent as "authorization: Bearer"
	// ("" sends none).
	TokenFile string
	// TLS is set when the connection uses TLS; CAFile ("" = system roots) and
	// ServerName ("" = host of Address) verify the controller's certificate.
	TLS        bool
	CAFile     string
	ServerName string
}

// Load reads the configuration from environ (os.Environ's "KEY=value" form). Values
// set in the environment win over those in the config file (AMESH_CONFIG_FILE,
// default /etc/amesh/amesh.yaml if it exists): a YAML map from the same variable
// names to values. It reports every problem it finds, one per line of the error.
func Load(environ []string) (Config, error) {
	env := map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	var cfg Config
	path, explicit := env[EnvConfigFile], true
	if strings.TrimSpace(path) == "" {
		path, explicit = DefaultConfigFile, false
	}
	fileVars, err := readFile(path)
	switch {
	case err == nil:
		cfg.File = path
	case os.IsNotExist(err) && !explicit:
	default:
		var each interface{ Unwrap() []error }
		if !errors.As(err, &each) {
			return Config{}, fmt.Errorf("config: %s=%s: %w", EnvConfigFile, path, err)
		}
		var errs []error
		for _, e := range each.Unwrap() {
			errs = append(errs, fmt.Errorf("config: %s: %w", path, e))
		}
		return Config{}, errors.Join(errs...)
	}
	for k, v := range fileVars {
		if strings.TrimSpace(env[k]) == "" {
			env[k] = v
			environ = append(environ, k+"="+v)
		}
	}
	get := func(k string) string { return strings.TrimSpace(env[k]) }

	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("config: "+format, args...)) }
	if cfg.XDS, err = bootstrap.FromEnviron(environ); err != nil {
		errs = append(errs, split(err)...)
	}
	if v := get(EnvLogLevel); v != "" {
		if err := cfg.LogLevel.UnmarshalText([]byte(v)); err != nil {
			bad("%s=%q: want debug, info, warn or error", EnvLogLevel, v)
		}
	}
	if cfg.LogFile = get(EnvLogFile); cfg.LogFile == "stderr" {
		cfg.LogFile = ""
	}
	if cfg.OriginalDstVar = get(EnvOriginalDstVar); cfg.OriginalDstVar == "" {
		cfg.OriginalDstVar = DefaultOriginalDstVar
	} else if !isVarName(cfg.OriginalDstVar) {
		bad("%s=%q: want an nginx variable name without $", EnvOriginalDstVar, cfg.OriginalDstVar)
	}
	cfg.Window = DefaultWindow
	if v := get(EnvWindow); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 || d > time.Minute {
			bad("%s=%q: want a duration in (0, 1m], e.g. 20ms", EnvWindow, v)
		}
		cfg.Window = d
	}
	if cfg.StatusAddr = get(EnvStatusAddr); cfg.StatusAddr == "off" {
		cfg.StatusAddr = ""
	}
	switch cfg.WorkloadCertDir = get(EnvWorkloadCert); cfg.WorkloadCertDir {
	case "":
		cfg.WorkloadCertDir = DefaultWorkloadCertDir
	case "off":
		cfg.WorkloadCertDir = ""
	}
	if cfg.Controller, err = loadController(get); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// split returns the errors err joins (errors.Join), or err alone.
func split(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// loadController reads the AMESH_CONTROLLER_* variables; without an address the
// others are ignored, so that a shared config file can carry them for every pod.
func loadController(get func(string) string) (Controller, error) {
	c := Controller{Address: get(EnvControllerAddress)}
	if c.Address == "" || c.Address == "off" {
		return Controller{}, nil
	}
	if c.TokenFile = get(EnvControllerTokenFile); c.TokenFile == "" {
		c.TokenFile = DefaultControllerTokenFile
	} else if c.TokenFile == "none" {
		c.TokenFile = ""
	}
	if v := get(EnvControllerTLS); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return Controller{}, fmt.Errorf("config: %s=%q: want true or false", EnvControllerTLS, v)
		}
		c.TLS = b
	}
	c.CAFile, c.ServerName = get(EnvControllerCAFile), get(EnvControllerServerName)
	c.TLS = c.TLS || c.CAFile != "" // a CA file only makes sense with TLS
	if strings.HasPrefix(c.Address, "unix:") && c.TLS {
		return Controller{}, fmt.Errorf("config: %s=%q: TLS cannot be used with a unix socket address", EnvControllerAddress, c.Address)
	}
	return c, nil
}

// readFile reads a YAML map of variable names to scalar values.
func readFile(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(raw))
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var unknown []error
	for _, k := range keys {
		if err := checkKnown(k); err != nil {
			unknown = append(unknown, err)
			continue
		}
		switch v := raw[k].(type) {
		case string:
			out[k] = v
		case bool:
			out[k] = strconv.FormatBool(v)
		case float64:
			out[k] = strconv.FormatFloat(v, 'f', -1, 64)
		case nil:
		default:
			return nil, fmt.Errorf("%s: value must be a string, number or boolean", k)
		}
	}
	if len(unknown) > 0 {
		return nil, errors.Join(unknown...)
	}
	return out, nil
}

func isVarName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

// Logger returns a slog.Logger writing text to LogFile (appending) or stderr at
// LogLevel, and a function closing the file. It never writes to stdout: inside nginx,
// stdout may be a terminal or /dev/null and is not the error log.
func (c Config) Logger() (*slog.Logger, func() error, error) {
	out, closeFn := os.Stderr, func() error { return nil }
	if c.LogFile != "" {
		f, err := os.OpenFile(c.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("config: %s: %w", EnvLogFile, err)
		}
		out, closeFn = f, f.Close
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: c.LogLevel})), closeFn, nil
}
