package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
	// The name controller/Dockerfile and `make controller-image` build.
	if !strings.HasPrefix(c.Image, "ghcr.io/amesh-dev/amesh-controller:") {
		t.Errorf("image %q, want ghcr.io/amesh-dev/amesh-controller:<version>", c.Image)
	}
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

// runMainEnv makes the test binary run main() instead of the tests (TestNoKubeconfig).
const runMainEnv = "AMESH_CONTROLLER_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// Without a kubeconfig (and outside a cluster) the command says so and how to give
// one, instead of exiting 1 without a word.
func TestNoKubeconfig(t *testing.T) {
	home := t.TempDir()
	cmd := exec.Command(os.Args[0], "-grpc-bind-address=127.0.0.1:0", "-metrics-bind-address=0", "-health-probe-bind-address=0")
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "KUBECONFIG" && k != "HOME" && !strings.HasPrefix(k, "KUBERNETES_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, runMainEnv+"=1", "HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatal("amesh-controller without a kubeconfig did not exit")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want code 1", err)
	}
	for _, want := range []string{"amesh-controller: no Kubernetes API server to use", "-kubeconfig", "KUBECONFIG"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
}
