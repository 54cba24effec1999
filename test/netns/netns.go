// Package netns gives tests network namespaces of their own: a pod with Istio's iptables rules,
// a client on the other side of a veth pair. Everything runs through iproute2 (`ip netns`), and
// every namespace is deleted when its test ends, failed or not; namespaces that a killed test
// binary left behind are deleted by the next run.
//
// It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN); Available says why it cannot run.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// prefix starts every namespace name this package makes; the pid after it lets a later run
// find the leftovers of a dead one.
const prefix = "amesh-"

// NS is a named network namespace (/run/netns/Name).
type NS struct {
	Name string
}

var seq atomic.Int64

// Available returns nil when this process can make network namespaces, else the reason.
func Available() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("iproute2's ip is missing: run scripts/install-test-deps.sh")
	}
	removeStale()
	name := fmt.Sprintf("%s%d-probe", prefix, os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add: %v: %s", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", name).Run()
	return nil
}

// removeStale deletes the namespaces of test processes that are gone.
func removeStale() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(out), "\n") {
		name, _, _ := strings.Cut(strings.TrimSpace(line), " ")
		rest, ok := strings.CutPrefix(name, prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat("/proc/" + pidText); errors.Is(err, os.ErrNotExist) {
			_ = exec.Command("ip", "netns", "del", name).Run()
		}
	}
}

// New makes a namespace with its loopback up; the test's cleanup deletes it, which also
// removes its interfaces and iptables rules and ends the sockets in it.
func New(t testing.TB, role string) *NS {
	t.Helper()
	n := &NS{Name: fmt.Sprintf("%s%d-%s%d", prefix, os.Getpid(), role, seq.Add(1))}
	if out, err := exec.Command("ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", n.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", n.Name, err, out)
		}
	})
	n.MustRun(t, "ip", "link", "set", "lo", "up")
	return n
}

// Command is cmd run inside the namespace (`ip netns exec` execs it, so the process is cmd).
func (n *NS) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Run runs a command inside the namespace and returns its combined output.
func (n *NS) Run(name string, args ...string) ([]byte, error) {
	out, err := n.Command(name, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), n.Name, err, out)
	}
	return out, nil
}

// MustRun is Run that fails the test on error.
func (n *NS) MustRun(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := n.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Link joins a and b with a veth pair, named eth0 on both sides (names are per namespace), and
// gives each side its addresses (CIDR form; IPv6 without duplicate address detection, so they
// are usable at once).
func Link(t testing.TB, a *NS, aAddrs []string, b *NS, bAddrs []string) {
	t.Helper()
	if out, err := exec.Command("ip", "link", "add", "eth0", "netns", a.Name, "type", "veth",
		"peer", "name", "eth0", "netns", b.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip link add veth %s-%s: %v: %s", a.Name, b.Name, err, out)
	}
	for _, side := range []struct {
		ns    *NS
		addrs []string
	}{{a, aAddrs}, {b, bAddrs}} {
		for _, addr := range side.addrs {
			args := []string{"addr", "add", addr, "dev", "eth0"}
			if strings.Contains(addr, ":") {
				args = append(args, "nodad")
			}
			side.ns.MustRun(t, "ip", args...)
		}
		side.ns.MustRun(t, "ip", "link", "set", "eth0", "up")
	}
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn creates belong to the
// namespace for their whole life, whichever thread uses them later.
func (n *NS) Do(fn func() error) error {
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		return err
	}
	defer target.Close()
	runtime.LockOSThread()
	home, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer home.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", n.Name, err)
	}
	fnErr := fn()
	if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked, so the runtime retires it with this goroutine instead of
		// running other goroutines in the wrong namespace.
		return fmt.Errorf("setns back from %s: %w", n.Name, err)
	}
	runtime.UnlockOSThread()
	return fnErr
}

// Start starts cmd inside the namespace: it is forked from a thread that has entered it, so
// cmd keeps cmd.SysProcAttr (e.g. the credentials to run as another user), which `ip netns
// exec` would not.
func (n *NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Dial connects from inside the namespace.
func (n *NS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens inside the namespace.
func (n *NS) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// IstioPod makes a pod namespace with the traffic capture of an Istio sidecar, linked to a
// client namespace that routes for it. The rules come from agent (an unmodified pilot-agent)
// with the arguments Istio's injection template gives istio-init for a sidecar: outbound TCP to
// 15001, inbound to 15006, all ports but the agent's (15090, 15021, 15020), the proxy UID 1337
// exempt, REDIRECT, IPv4 and IPv6. podAddrs and clientAddrs are the two ends' addresses (CIDR
// form); the pod's default routes go to the client's first IPv4 and IPv6 address.
func IstioPod(t testing.TB, agent string, podAddrs, clientAddrs []string) (pod, client *NS) {
	t.Helper()
	pod, client = New(t, "pod"), New(t, "client")
	Link(t, pod, podAddrs, client, clientAddrs)
	routed := map[bool]bool{}
	for _, a := range clientAddrs {
		ip, _, _ := strings.Cut(a, "/")
		v6 := strings.Contains(ip, ":")
		if routed[v6] {
			continue
		}
		routed[v6] = true
		if v6 {
			pod.MustRun(t, "ip", "-6", "route", "add", "default", "via", ip)
		} else {
			pod.MustRun(t, "ip", "route", "add", "default", "via", ip)
		}
	}
	pod.MustRun(t, agent, "istio-iptables",
		"-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--dual-stack",
		"--log_output_level=default:warn")
	// istio-iptables writes IPv6 rules only for a pod with an IPv6 address.
	families := 1
	if slices.ContainsFunc(podAddrs, func(a string) bool { return strings.Contains(a, ":") }) {
		families = 2
	}
	rules := string(pod.MustRun(t, "iptables-save", "-t", "nat")) + string(pod.MustRun(t, "ip6tables-save", "-t", "nat"))
	for _, want := range []string{"ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001", "ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006"} {
		if strings.Count(rules, want) != families {
			t.Fatalf("istio-iptables did not install %q for each of the pod's %d address families:\n%s", want, families, rules)
		}
	}
	return pod, client
}
