// Command amesh-controller serves AmeshPluginConfig objects to amesh sidecars.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"google.golang.org/grpc/credentials"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/amesh-dev/amesh/controller/internal/app"
)

func main() {
	// flag.CommandLine also holds controller-runtime's -kubeconfig.
	parse := bindFlags(flag.CommandLine)
	flag.Parse()
	opts, err := parse()
	if err != nil {
		fmt.Fprintln(os.Stderr, "amesh-controller:", err)
		os.Exit(2)
	}
	// Before anything of controller-runtime runs: its messages go nowhere (and the
	// process exits without a word) until a logger is set.
	ctrl.SetLogger(opts.Log)
	cfg, err := ctrl.GetConfig()
	if err != nil {
		fmt.Fprintf(os.Stderr, "amesh-controller: no Kubernetes API server to use: %v\n"+
			"  give -kubeconfig FILE, set KUBECONFIG, or run it in a cluster (in-cluster service account)\n", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, cfg, opts); err != nil {
		opts.Log.Error(err, "amesh-controller stopped")
		os.Exit(1)
	}
}

// bindFlags defines the command's flags on fs and returns a function that turns the
// parsed values into app.Options.
func bindFlags(fs *flag.FlagSet) func() (app.Options, error) {
	var opts app.Options
	var certFile, keyFile, audiences string
	fs.StringVar(&opts.GRPCAddr, "grpc-bind-address", ":15090", "address sidecars connect to")
	fs.StringVar(&certFile, "tls-cert-file", "", "serve gRPC with TLS using this certificate (PEM)")
	fs.StringVar(&keyFile, "tls-key-file", "", "private key of -tls-cert-file")
	fs.BoolVar(&opts.InsecureSkipAuth, "insecure-skip-auth", false,
		"serve any client without verifying its service-account token (never in production)")
	fs.StringVar(&audiences, "token-audiences", "", "comma-separated audiences sidecar tokens must carry")
	fs.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", `metrics address ("0" disables)`)
	fs.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":8081", `health probe address ("0" disables)`)
	fs.BoolVar(&opts.LeaderElection, "leader-elect", false, "elect one replica to write status")
	fs.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader lease")
	zopts := zap.Options{}
	zopts.BindFlags(fs)
	return func() (app.Options, error) {
		opts.Log = zap.New(zap.UseFlagOptions(&zopts))
		if audiences != "" {
			opts.Audiences = strings.Split(audiences, ",")
		}
		if (certFile == "") != (keyFile == "") {
			return opts, fmt.Errorf("-tls-cert-file and -tls-key-file go together")
		}
		if certFile != "" {
			creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
			if err != nil {
				return opts, err
			}
			opts.TLS = creds
		}
		return opts, nil
	}
}
