package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
)

// One API server for the package: starting one costs seconds.
var (
	restConfig *rest.Config
	k8s        client.Client
	envErr     error
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		envErr = fmt.Errorf("KUBEBUILDER_ASSETS not set; export KUBEBUILDER_ASSETS=\"$(bash scripts/kube-assets.sh)\"")
		return m.Run()
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join("..", "..", "..", "config", "crd")},
		ErrorIfCRDPathMissing: true,
	}
	restConfig, envErr = env.Start()
	if envErr != nil {
		fmt.Fprintln(os.Stderr, "envtest:", envErr)
		return 1
	}
	defer env.Stop() //nolint:errcheck // best effort at exit
	k8s, envErr = client.New(restConfig, client.Options{Scheme: Scheme()})
	if envErr != nil {
		fmt.Fprintln(os.Stderr, envErr)
		return 1
	}
	return m.Run()
}

func needEnv(t *testing.T) {
	t.Helper()
	if restConfig == nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI needs the envtest control plane: %v", envErr)
		}
		t.Skip(envErr)
	}
}

var nsCounter atomic.Int32

// namespace creates a fresh namespace for one test.
func namespace(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e6, nsCounter.Add(1))
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	return name
}

// pod creates a pod (and its service account) in ns. Nothing runs it: envtest has no
// kubelet, which does not matter to the controller.
func pod(t testing.TB, ns, name, sa string, labels map[string]string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa,
			Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app"}}},
	}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// controller runs the controller on lis until the test ends or stop is called.
func controller(t *testing.T, lis net.Listener, opts Options) (stop func()) {
	t.Helper()
	needEnv(t)
	opts.Listener = lis
	opts.HealthAddr = "0"
	if opts.Log.GetSink() == nil {
		opts.Log = bufferedLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, restConfig, opts) }()
	var once atomic.Bool
	stop = func() {
		if once.Swap(true) {
			return
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("controller: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("controller did not stop")
		}
	}
	t.Cleanup(stop)
	return stop
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// stream is a sidecar's Watch stream, read in the background.
type stream struct {
	sets chan *pb.ConfigSet
	err  chan error
}

func watch(t *testing.T, addr, ns, podName, token string) *stream {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); conn.Close() })
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	s := &stream{sets: make(chan *pb.ConfigSet, 100), err: make(chan error, 1)}
	ws, err := pb.NewPluginSyncClient(conn).Watch(ctx, &pb.WatchRequest{Namespace: ns, Pod: podName}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			set, err := ws.Recv()
			if err != nil {
				s.err <- err
				return
			}
			s.sets <- set
		}
	}()
	return s
}

// next waits for the next set on the stream.
func (s *stream) next(t *testing.T) *pb.ConfigSet {
	t.Helper()
	select {
	case set := <-s.sets:
		return set
	case err := <-s.err:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no config set within 30s")
	}
	return nil
}

// until reads sets until one satisfies ok.
func (s *stream) until(t *testing.T, what string, ok func(*pb.ConfigSet) bool) *pb.ConfigSet {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for {
		select {
		case set := <-s.sets:
			if ok(set) {
				return set
			}
		case err := <-s.err:
			t.Fatalf("stream ended while waiting for %s: %v", what, err)
		case <-deadline:
			t.Fatalf("no set with %s within 30s", what)
		}
	}
}

// eventually polls cond until it holds (API state reached through the controller).
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		lastErr = err
		time.Sleep(50 * time.Millisecond) // polling the API server, not waiting for it to settle
	}
	t.Fatalf("%s: not reached within 30s (last error %v)", what, lastErr)
}

// update applies mutate to the latest version of obj, retrying on conflicts with the
// controller's status writes.
func update[T client.Object](t testing.TB, obj T, mutate func(T)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj); err != nil {
			return err
		}
		mutate(obj)
		return k8s.Update(context.Background(), obj)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// bufferedLogger collects the controller's log and prints it only if the test failed.
// controller-runtime's goroutines may still log after the test returns, which t.Log
// does not allow.
func bufferedLogger(t testing.TB) logr.Logger {
	var mu sync.Mutex
	var buf strings.Builder
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Log("controller log:\n" + buf.String())
		}
	})
	return funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		buf.WriteString(prefix + " " + args + "\n")
	}, funcr.Options{})
}
