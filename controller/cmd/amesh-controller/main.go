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
	var opts app.Options
	var certFile, keyFile, audiences string
	flag.StringVar(&opts.GRPCAddr, "grpc-bind-address", ":15090", "address sidecars connect to")
	flag.StringVar(&certFile, "tls-cert-file", "", "serve gRPC with TLS using this certificate (PEM)")
	flag.StringVar(&keyFile, "tls-key-file", "", "private key of -tls-cert-file")
	flag.BoolVar(&opts.InsecureSkipAuth, "insecure-skip-auth", false,
		"serve any client without verifying its service-account token (never in production)")
	flag.StringVar(&audiences, "token-audiences", "", "comma-separated audiences sidecar tokens must carry")
	flag.StringVar(&opts.MetricsAddr, "metrics-bind-address", ":8080", `metrics address ("0" disables)`)
	flag.StringVar(&opts.HealthAddr, "health-probe-bind-address", ":8081", `health probe address ("0" disables)`)
	flag.BoolVar(&opts.LeaderElection, "leader-elect", false, "elect one replica to write status")
	flag.StringVar(&opts.LeaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader lease")
	zopts := zap.Options{}
	zopts.BindFlags(flag.CommandLine)
	flag.Parse()
	opts.Log = zap.New(zap.UseFlagOptions(&zopts))
	if audiences != "" {
		opts.Audiences = strings.Split(audiences, ",")
	}
	if certFile != "" {
		creds, err := credentials.NewServerTLSFromFile(certFile, keyFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "amesh-controller:", err)
			os.Exit(2)
		}
		opts.TLS = creds
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, ctrl.GetConfigOrDie(), opts); err != nil {
		opts.Log.Error(err, "amesh-controller stopped")
		os.Exit(1)
	}
}
