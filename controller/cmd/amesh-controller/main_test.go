package main

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"
)

// TestDeploymentArgs parses the shipped Deployment's arguments with the real flag set,
// so that a renamed flag cannot leave config/ behind.
func TestDeploymentArgs(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "config", "manager", "deployment.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		t.Fatal(err)
	}
	c := d.Spec.Template.Spec.Containers[0]
	fs := flag.NewFlagSet("amesh-controller", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	parse := bindFlags(fs)
	if err := fs.Parse(c.Args); err != nil {
		t.Fatalf("deployment args %q: %v", c.Args, err)
	}
	opts, err := parse()
	if err != nil {
		t.Fatal(err)
	}
	if opts.InsecureSkipAuth {
		t.Error("the shipped Deployment must authenticate sidecars")
	}
	port := opts.GRPCAddr[strings.LastIndex(opts.GRPCAddr, ":")+1:]
	found := false
	for _, p := range c.Ports {
		found = found || (p.Name == "grpc-pluginsync" && port == "15090" && p.ContainerPort == 15090)
	}
	if !found {
		t.Errorf("gRPC address %s does not match the container port grpc-pluginsync", opts.GRPCAddr)
	}
}

func TestTLSFlagsGoTogether(t *testing.T) {
	fs := flag.NewFlagSet("amesh-controller", flag.ContinueOnError)
	parse := bindFlags(fs)
	if err := fs.Parse([]string{"-tls-cert-file=/x.pem"}); err != nil {
		t.Fatal(err)
	}
	if _, err := parse(); err == nil {
		t.Error("a certificate without a key must be refused")
	}
}
