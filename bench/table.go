package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"
)

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s %s/%s", model, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func mib(b uint64) string       { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
func mibi(b int64) string       { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func printTable(w io.Writer, rows []row, cfg runConfig) {
	floors := map[string]row{}
	for _, r := range rows {
		if r.mode == "floor" {
			floors[fmt.Sprint(r.source, r.services)] = r
		}
	}
	fmt.Fprintln(w, "| services | source | pipeline | first config ms | ×floor | heap MiB (first / after) | RSS MiB (peak) | dict keys | dict MiB (slab est.) | update p50 ms | p99 ms | p50 − floor p50 | response→write p50 ms | p99 ms | p50 − window | bare timer − window p50 / p99 ms | identical push: writes / bytes |")
	fmt.Fprintln(w, "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		f, hasFloor := floors[fmt.Sprint(r.source, r.services)]
		ratio, latRatio := "", ""
		p50, p99 := percentile(r.lat, 0.5), percentile(r.lat, 0.99)
		if hasFloor && r.mode != "floor" && f.firstMS > 0 {
			ratio = fmt.Sprintf("%.2f", r.firstMS/f.firstMS)
			if fp := percentile(f.lat, 0.5); fp > 0 {
				latRatio = ms(p50 - fp)
			}
		}
		o50, o99 := percentile(r.own, 0.5), percentile(r.own, 0.99)
		lessWindow, timer := "", ""
		if r.mode != "floor" {
			lessWindow = ms(o50 - cfg.window)
		}
		if len(r.timerLate) > 0 {
			timer = ms(percentile(r.timerLate, 0.5)) + " / " + ms(percentile(r.timerLate, 0.99))
		}
		ident := "server sent nothing (Delta dedupes)"
		if r.resent {
			ident = fmt.Sprintf("%d / %d", r.identWrites, r.identBytes)
		}
		fmt.Fprintf(w, "| %d | %s | %s | %.0f | %s | %s / %s | %s (%s) | %d | %s (%s) | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.services, r.source, r.mode, r.firstMS, ratio,
			mib(r.afterFirst.HeapBytes), mib(r.final.HeapBytes), mib(r.final.RSSBytes), mib(r.final.PeakRSS),
			r.final.Keys, mibi(r.final.DictBytes), mibi(r.final.DictSlab),
			ms(p50), ms(p99), latRatio, ms(o50), ms(o99), lessWindow, timer, ident)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "first config: client start → first complete config written. update: the control plane changes one endpoint → the")
	fmt.Fprintln(w, "batch is written (the version bump), wall clock across processes, incl. the control plane. response→write: the xDS")
	fmt.Fprintln(w, "client receives the response → written (decode + window + translate + diff + write). floor: decode + naive")
	fmt.Fprintln(w, "encode, no coalescing window. dict slab est.: key+value + ~80 B node, rounded as nginx's slab allocator does;")
	fmt.Fprintln(w, "configure lua_shared_dict xds-config with headroom above it (a changed value is allocated before the old is freed).")
	fmt.Fprintln(w, "bare timer: as many plain time.After waits of the window in the data-plane child as there are updates: how late")
	fmt.Fprintln(w, "Go's timers fire here (the agent's window timer ends with a kernel sleep instead, see internal/agent/timer.go).")
	if cfg.plugins > 0 {
		fmt.Fprintf(w, "%s: amesh with a controller configured (its plugin set as the agent's second input, as internal/sidecar\n", ctlMode)
		fmt.Fprintf(w, "wires it), the set in place from the start: one config per service for %g of the services, scoped to that\n", cfg.plugins)
		fmt.Fprintln(w, "service's outbound routes (limit-count + proxy-rewrite headers, or proxy-rewrite headers alone).")
	}
}
