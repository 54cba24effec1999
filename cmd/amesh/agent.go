package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/amesh-dev/amesh/internal/config"
	"github.com/amesh-dev/amesh/internal/sidecar"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/status"
	"github.com/amesh-dev/amesh/internal/version"
)

// agentEnvFlags are the flags that override a configuration variable (see
// internal/config/README.md): a flag that is given wins over the environment and the
// config file.
var agentEnvFlags = []struct{ flag, env, usage string }{
	{"config", config.EnvConfigFile, "YAML file of configuration variables (default " + config.DefaultConfigFile + " if it exists)"},
	{"xds-address", "AMESH_XDS_ADDRESS", "xDS server: unix:///path or host:port (default unix:///etc/istio/proxy/XDS)"},
	{"xds-protocol", "AMESH_XDS_PROTOCOL", "xDS protocol: delta or sotw (default delta)"},
	{"original-dst-var", config.EnvOriginalDstVar, "nginx variable holding the original destination port (default " + config.DefaultOriginalDstVar + ")"},
	{"window", config.EnvWindow, "coalescing window: changes within it become one write (default 20ms)"},
	{"log-level", config.EnvLogLevel, "log level: debug, info, warn or error (default info)"},
	{"controller-address", config.EnvControllerAddress, "amesh-controller gRPC address for plugin configs (default off: Istio's config only)"},
	{"workload-cert-dir", config.EnvWorkloadCert, "directory of istio-agent's workload certificate, written as APISIX ssls (default " + config.DefaultWorkloadCertDir + "; off: none)"},
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("agent", stderr)
	envFlags := map[string]*string{}
	for _, f := range agentEnvFlags {
		envFlags[f.flag] = fs.String(f.flag, "", f.usage+"; overrides $"+f.env)
	}
	output := fs.String("output", "", "standalone file to write (default /usr/local/apisix/conf/apisix.yaml, or apisix.json with -format json)")
	format := fs.String("format", "yaml", "file format: yaml (config_provider: yaml) or json (config_provider: json)")
	statusAddr := fs.String("status-addr", "", `status server address, "off" to disable (default $`+config.EnvStatusAddr+", else "+status.DefaultAddr+")")
	startupTimeout := fs.Duration("startup-timeout", time.Minute, "exit with an error if no configuration was written within this time (0: wait forever)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: amesh agent [flags]")
		fmt.Fprintln(fs.Output(), "\nConnects to istiod like an Envoy sidecar and keeps APISIX's standalone configuration file")
		fmt.Fprintln(fs.Output(), "up to date. Configuration comes from the environment and an optional file, like libxds.so")
		fmt.Fprintln(fs.Output(), "(POD_NAME, POD_NAMESPACE, INSTANCE_IP, ISTIO_META_*, AMESH_*; see internal/config/README.md).")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	// Flags win: they are appended to the environment, where the last value counts.
	environ := os.Environ()
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, f := range agentEnvFlags {
		if given[f.flag] {
			environ = append(environ, f.env+"="+*envFlags[f.flag])
		}
	}
	cfg, err := config.Load(environ)
	if err != nil {
		return fail(stderr, "agent", err)
	}
	switch {
	case given["status-addr"]:
		cfg.StatusAddr = *statusAddr
	case cfg.StatusAddr == "" && strings.TrimSpace(os.Getenv(config.EnvStatusAddr)) != "off":
		cfg.StatusAddr = status.DefaultAddr // on by default here, unlike inside nginx
	}
	if cfg.StatusAddr == "off" {
		cfg.StatusAddr = ""
	}
	f, err := file.ParseFormat(*format)
	if err != nil {
		return fail(stderr, "agent", err)
	}
	if *output == "" {
		*output = "/usr/local/apisix/conf/apisix." + string(f)
	}
	// APISIX's conf/ exists where APISIX is installed; elsewhere (trying amesh out)
	// the directory is made, as an editor would when saving a new file.
	if err := os.MkdirAll(filepath.Dir(*output), 0o755); err != nil {
		return fail(stderr, "agent", fmt.Errorf("-output %s: %w", *output, err))
	}
	if err := agentMain(ctx, cfg, *output, f, *startupTimeout, stdout, stderr); err != nil {
		return fail(stderr, "agent", err)
	}
	return 0
}

// agentMain runs the shared pipeline (package sidecar) with the file sink until ctx is
// done.
func agentMain(ctx context.Context, cfg config.Config, output string, format file.Format, startupTimeout time.Duration, stdout, stderr io.Writer) error {
	log, closeLog, err := cfg.Logger()
	if err != nil {
		return err
	}
	defer closeLog()
	if cfg.LogFile == "" {
		// Logger writes to os.Stderr; use the command's stderr (tests capture it).
		log, _ = newLogger(stderr, cfg.LogLevel.String())
	}

	sink, err := file.New(file.Options{Path: output, Format: format, Logger: log})
	if err != nil {
		return err
	}
	sc, err := sidecar.New(cfg, sink, sidecar.Options{Version: version.String(), Logger: log})
	if err != nil {
		return err
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sc.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	log.Info("agent started", "version", version.String(), "xds_server", cfg.XDS.Server, "protocol", cfg.XDS.Protocol,
		"node", cfg.XDS.Node.GetId(), "output", absPath(output), "config_file", cfg.File, "controller", cfg.Controller.Address)

	var startup <-chan time.Time
	if startupTimeout > 0 {
		t := time.NewTimer(startupTimeout)
		defer t.Stop()
		startup = t.C
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-done:
		done <- err // for the deferred wait
		return err
	case <-sc.Agent().ReadyC():
		fmt.Fprintf(stdout, "amesh agent: wrote %s (version %d); keeping it in sync\n", output, sink.Version())
	case <-startup:
		st := sc.XDS().Status()
		why := st.LastError
		if why == "" {
			why = "no consistent configuration received (xDS state " + string(st.State) + ")"
		}
		return fmt.Errorf("no configuration from xDS server %s within %s: %s", cfg.XDS.Server, startupTimeout, why)
	}
	select {
	case <-ctx.Done():
	case err := <-done:
		done <- err
		return err
	}
	log.Info("agent stopping")
	return nil
}

func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
