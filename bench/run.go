package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

type runConfig struct {
	proto   string
	window  time.Duration
	updates int
	subsets int     // fake control plane: extra subset clusters per service
	plugins float64 // fraction of services with controller plugin configs; 0: no ctlMode run
}

// pipelines lists the runs per mesh: the floor, amesh, and amesh with a controller
// configured when cfg asks for it.
func (cfg runConfig) pipelines() []string {
	if cfg.plugins > 0 {
		return []string{"floor", "amesh", ctlMode}
	}
	return []string{"floor", "amesh"}
}

// row is one line of the result table.
type row struct {
	services          int
	source            string // "fake" or "istiod"
	mode              string // "floor", "amesh" or ctlMode
	firstMS           float64
	afterFirst, final event           // stats
	lat               []time.Duration // control plane push → written
	own               []time.Duration // xDS response received by the client → written
	timerLate         []time.Duration // bare window timers in the child: how late they fired
	// identical push: did the server resend, and what was written after it
	resent      bool
	identWrites int
	identBytes  int64
}

// childProc is a running data-plane child.
type childProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	events chan event
}

// startChild starts a child running pipeline mode; ctlSet is the controller's config set
// for ctlMode (pluginSet), sent as the first stdin line.
func startChild(mode, addr string, cfg runConfig, ctlSet []byte) (*childProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{"-child", "-mode", mode, "-addr", addr, "-proto", cfg.proto, "-window", cfg.window.String()}
	if mode == ctlMode {
		args[2] = "amesh"
		args = append(args, "-controller")
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if mode == ctlMode {
		if _, err := stdin.Write(append(ctlSet, '\n')); err != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			return nil, err
		}
	}
	p := &childProc{cmd: cmd, stdin: stdin, events: make(chan event, 1024)}
	go func() {
		defer close(p.events)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev event
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				p.events <- ev
			}
		}
	}()
	return p, nil
}

// wait returns the next event of kind ev (other kinds are dropped), or an error after d.
func (p *childProc) wait(kind string, d time.Duration) (event, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case ev, ok := <-p.events:
			if !ok {
				return event{}, fmt.Errorf("child exited while waiting for %q", kind)
			}
			if ev.Ev == "error" {
				return event{}, fmt.Errorf("child: %s", ev.Error)
			}
			if ev.Ev == kind {
				return ev, nil
			}
		case <-t.C:
			return event{}, fmt.Errorf("no %q event within %v", kind, d)
		}
	}
}

func (p *childProc) stats() (event, error) {
	if _, err := io.WriteString(p.stdin, "stats\n"); err != nil {
		return event{}, err
	}
	return p.wait("stats", time.Minute)
}

func (p *childProc) stop() {
	_, _ = io.WriteString(p.stdin, "quit\n")
	p.stdin.Close()
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// fakeRuns measures cfg's pipelines for an n-service mesh on the fake control plane.
func fakeRuns(n int, cfg runConfig) ([]row, error) {
	var rows []row
	for _, mode := range cfg.pipelines() {
		subsets := cfg.subsets
		if subsets == 0 {
			subsets = -1 // meshgen's "none"
		}
		mesh := meshgen.Generate(meshgen.Options{Services: n, Subsets: subsets})
		srv, err := xdstest.New(xdstest.Options{})
		if err != nil {
			return nil, err
		}
		resources := mesh.Resources()
		for typ, res := range resources {
			srv.Set(typ, res...)
		}
		var ctlSet []byte
		if mode == ctlMode {
			if ctlSet, err = pluginSet(meshServices(resources[resource.RouteConfigType]), cfg.plugins); err != nil {
				srv.Close()
				return nil, err
			}
		}
		r, err := measure(n, "fake", mode, srv.Addr(), cfg, ctlSet,
			func(i int) (func() error, error) {
				// Spread over the services; meshgen lists each service's clusters as default,
				// v1, v2, ... and with subsets its routes use only the subsets (an
				// unreferenced cluster becomes no APISIX object, so changing it rightly
				// writes nothing).
				k := i * 7919 % n
				if cfg.subsets > 0 {
					k = k*(cfg.subsets+1) + 1 + i%cfg.subsets
				}
				snap := mesh.ChangeEndpoint(k)
				var cla proto.Message
				for name := range snap.Changes.Endpoints {
					cla = mesh.LoadAssignment(name)
				}
				return func() error { return srv.Update(cla) }, nil
			},
			func() error {
				mesh.Resend()
				for typ, res := range mesh.Resources() {
					srv.Set(typ, res...)
				}
				return nil
			})
		srv.Close()
		if err != nil {
			return nil, fmt.Errorf("%d services, %s: %w", n, mode, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// measure runs one child against addr: first config, stats, cfg.updates one-endpoint changes
// (prepare(i) returns the push), an identical push (resend), final stats. ctlSet is the
// controller's config set for ctlMode.
func measure(n int, source, mode, addr string, cfg runConfig, ctlSet []byte, prepare func(i int) (func() error, error), resend func() error) (row, error) {
	r := row{services: n, source: source, mode: mode}
	p, err := startChild(mode, addr, cfg, ctlSet)
	if err != nil {
		return r, err
	}
	defer p.stop()
	first, err := p.wait("first", 10*time.Minute)
	if err != nil {
		return r, err
	}
	r.firstMS = first.FirstMS
	if r.afterFirst, err = p.stats(); err != nil {
		return r, err
	}
	// The parent (control plane and mesh generator, over a GiB at 10,000 services)
	// shares the machine's cores with the child: one of its garbage collections takes a
	// core for most of a second, which showed up as the child's update latency tail.
	// The control plane runs elsewhere in a mesh, so the parent collects now and not
	// during the updates (what it allocates meanwhile is small).
	runtime.GC()
	gcPercent := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(gcPercent) // on errors; restored below before the resend
	for i := range cfg.updates {
		push, err := prepare(i)
		if err != nil {
			return r, err
		}
		t0 := time.Now()
		if err := push(); err != nil {
			return r, err
		}
		ev, err := p.wait("apply", 30*time.Second)
		if err != nil {
			st, _ := p.stats()
			return r, fmt.Errorf("update %d: %w (data plane: %d batches, %d unchanged, %d panics, last error %q, %d xDS responses)",
				i, err, st.Applies, st.Unchanged, st.Panics, st.LastError, st.Responses)
		}
		r.lat = append(r.lat, time.Duration(ev.At-t0.UnixNano()))
		r.own = append(r.own, time.Duration(ev.At-ev.RecvAt))
	}

	if mode != "floor" {
		// The machine's own share of the window: as many bare timers as updates, so
		// that the percentiles compare like for like.
		if _, err := fmt.Fprintf(p.stdin, "timers %d\n", cfg.updates); err != nil {
			return r, err
		}
		ev, err := p.wait("timers", time.Minute+time.Duration(cfg.updates)*cfg.window)
		if err != nil {
			return r, err
		}
		for _, ns := range ev.Late {
			r.timerLate = append(r.timerLate, time.Duration(ns))
		}
	}

	debug.SetGCPercent(gcPercent) // the resend allocates the whole mesh again

	before, err := p.stats()
	if err != nil {
		return r, err
	}
	if err := resend(); err != nil {
		return r, err
	}
	// Wait (bounded) for the resend to reach the client: a Delta server may send nothing
	// for unchanged resources, a SotW server sends everything again.
	deadline := time.Now().Add(20 * time.Second)
	after := before
	for time.Now().Before(deadline) {
		if after, err = p.stats(); err != nil {
			return r, err
		}
		if after.Responses > before.Responses {
			r.resent = true
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r.resent {
		// Give the pipeline time to (wrongly) write something: well over the window.
		time.Sleep(cfg.window*10 + time.Second)
		if after, err = p.stats(); err != nil {
			return r, err
		}
	}
	r.identWrites = after.Applies - before.Applies
	r.identBytes = after.TotalBytes - before.TotalBytes
	r.final = after
	return r, nil
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
