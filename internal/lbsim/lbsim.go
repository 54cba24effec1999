// Package lbsim simulates the balancers involved in mapping Envoy's LEAST_REQUEST to
// APISIX, written from their documented algorithms (not their code), to decide the
// mapping with numbers (package upstream's TestLeastRequestMapping) and to set real
// APISIX's figures beside Envoy's (test/nginx):
//
//   - Envoy's least request: with equal weights, the better (fewer active requests) of
//     choice_count = 2 hosts drawn at random with replacement, ties to the first drawn;
//     with unequal weights, an EDF schedule of weight / (active + 1) (active request
//     bias 1), the weight computed when a host is put back after being picked, and a
//     random number of picks skipped at the start.
//   - APISIX's least_conn: a binary min-heap of score = (active + 1) / weight (the
//     binaryheap library: update sifts up from a non-root position while the parent's
//     score is not <=, then down while a child's is <), the top picked; built in node
//     order from nothing each time the picker is rebuilt (a new version of the
//     upstream: any change of it, such as its endpoints) and per nginx worker.
//   - APISIX's roundrobin (lua-resty-balancer): interleaved weighted round robin (a
//     current weight stepping down by the weights' gcd from the largest, each pass
//     taking the nodes at least that heavy), starting after a random node.
//
// Requests come from a closed loop of clients: each sends its next request when the
// previous one completes; a host serves a request in an exponential time of its mean,
// independently of its load.
package lbsim

import (
	"container/heap"
	"fmt"
	"math"
	"math/rand"
	"strings"
)

type balancer interface {
	pick(rng *rand.Rand) int
	done(host int)
}

// envoyLeastRequest is Envoy's LEAST_REQUEST over hosts with the given weights.
type envoyLeastRequest struct {
	w        []float64
	active   []int
	equal    bool
	deadline []float64 // EDF, unequal weights only
	now      float64
}

func newEnvoyLeastRequest(w []float64, rng *rand.Rand) *envoyLeastRequest {
	e := &envoyLeastRequest{w: w, active: make([]int, len(w)), equal: true}
	for _, x := range w {
		e.equal = e.equal && x == w[0]
	}
	if !e.equal {
		e.deadline = make([]float64, len(w))
		for i := range w {
			e.deadline[i] = 1 / w[i]
		}
		for n := rng.Intn(len(w)); n > 0; n-- {
			e.edfPick()
		}
	}
	return e
}

func (e *envoyLeastRequest) edfPick() int {
	best := 0
	for i := range e.deadline {
		if e.deadline[i] < e.deadline[best] {
			best = i
		}
	}
	e.now = e.deadline[best]
	e.deadline[best] = e.now + float64(e.active[best]+1)/e.w[best]
	return best
}

func (e *envoyLeastRequest) pick(rng *rand.Rand) int {
	var h int
	if e.equal {
		h = rng.Intn(len(e.w))
		if s := rng.Intn(len(e.w)); e.active[s] < e.active[h] {
			h = s
		}
	} else {
		h = e.edfPick()
	}
	e.active[h]++
	return h
}

func (e *envoyLeastRequest) done(h int) { e.active[h]-- }

// apisixLeastConn is APISIX's least_conn picker: one heap per nginx worker, rebuilt
// every rebuildEvery picks (0: never).
type apisixLeastConn struct {
	w            []float64
	workers      []*lcHeap
	rebuildEvery int
	picks        int
	// last is the heap of the latest pick: a request is released on the heap it was
	// picked from (a rebuilt picker never sees the releases of the old one).
	last *lcHeap
}

type lcHeap struct {
	score []float64
	effw  []float64
	at    []int // position (1-based) of each host
	order []int // host at each position (1-based; [0] unused)
}

func newLCHeap(w []float64) *lcHeap {
	h := &lcHeap{score: make([]float64, len(w)), effw: make([]float64, len(w)), at: make([]int, len(w)), order: []int{-1}}
	for i, x := range w {
		h.effw[i] = 1 / x
		h.score[i] = 1 / x
		h.order = append(h.order, i)
		h.at[i] = len(h.order) - 1
		h.bubbleUp(len(h.order) - 1)
	}
	return h
}

func (h *lcHeap) swap(a, b int) {
	h.order[a], h.order[b] = h.order[b], h.order[a]
	h.at[h.order[a]], h.at[h.order[b]] = a, b
}

func (h *lcHeap) bubbleUp(pos int) {
	for pos > 1 {
		parent := pos / 2
		if h.score[h.order[parent]] <= h.score[h.order[pos]] {
			break
		}
		h.swap(parent, pos)
		pos = parent
	}
}

func (h *lcHeap) sinkDown(pos int) {
	last := len(h.order) - 1
	for {
		m := pos
		for c := 2 * pos; c <= 2*pos+1; c++ {
			if c <= last && h.score[h.order[c]] < h.score[h.order[m]] {
				m = c
			}
		}
		if m == pos {
			return
		}
		h.swap(pos, m)
		pos = m
	}
}

func (h *lcHeap) update(host int) {
	pos := h.at[host]
	if pos > 1 {
		h.bubbleUp(pos)
	}
	if pos < len(h.order)-1 {
		h.sinkDown(h.at[host])
	}
}

func (a *apisixLeastConn) pick(rng *rand.Rand) int {
	w := rng.Intn(len(a.workers))
	if a.workers[w] == nil || a.rebuildEvery > 0 && a.picks%a.rebuildEvery == 0 {
		a.workers[w] = newLCHeap(a.w)
	}
	a.picks++
	h := a.workers[w]
	host := h.order[1]
	h.score[host] += h.effw[host]
	h.update(host)
	a.last = h
	return host
}

// done is the release, which the simulation makes on the request's own heap.
func (a *apisixLeastConn) done(int) {}

// apisixRoundRobin is lua-resty-balancer's roundrobin, one per worker, rebuilt like
// least_conn's picker.
type apisixRoundRobin struct {
	w            []int
	workers      []*rrState
	rebuildEvery int
	picks        int
}

type rrState struct {
	last        int // -1: before the first node
	cw, g, maxW int
}

func (a *apisixRoundRobin) pick(rng *rand.Rand) int {
	wk := rng.Intn(len(a.workers))
	if a.workers[wk] == nil || a.rebuildEvery > 0 && a.picks%a.rebuildEvery == 0 {
		s := &rrState{last: rng.Intn(len(a.w))}
		for _, x := range a.w {
			s.g = gcdInt(s.g, x)
			s.maxW = max(s.maxW, x)
		}
		s.cw = s.maxW
		a.workers[wk] = s
	}
	a.picks++
	s := a.workers[wk]
	for {
		for i := s.last + 1; i < len(a.w); i++ {
			if a.w[i] >= s.cw {
				s.last = i
				return i
			}
		}
		s.last = -1
		s.cw -= s.g
		if s.cw <= 0 {
			s.cw = s.maxW
		}
	}
}

func (a *apisixRoundRobin) done(int) {}

func gcdInt(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Scenario is a load pattern over hosts.
type Scenario struct {
	Name    string
	Weights []int
	Latency []float64 // mean service time per host
	Clients int       // concurrency of the closed loop
	Workers int       // nginx workers (APISIX)
	Rebuild int       // APISIX picker rebuilt every n picks (0: never)
}

// Kind is a balancer.
type Kind string

const (
	Envoy      Kind = "envoy"      // Envoy's LEAST_REQUEST
	LeastConn  Kind = "least_conn" // APISIX's least_conn
	RoundRobin Kind = "roundrobin" // APISIX's roundrobin
)

type completion struct {
	at   float64
	host int
	// heap is the least_conn heap the request was picked from.
	heap *lcHeap
}

type events []completion

func (e events) Len() int           { return len(e) }
func (e events) Less(i, j int) bool { return e[i].at < e[j].at }
func (e events) Swap(i, j int)      { e[i], e[j] = e[j], e[i] }
func (e *events) Push(x any)        { *e = append(*e, x.(completion)) }
func (e *events) Pop() any {
	old := *e
	x := old[len(old)-1]
	*e = old[:len(old)-1]
	return x
}

// Run simulates n requests after a warm-up and returns each host's share of them.
func (s Scenario) Run(kind Kind, n int, seed int64) []float64 {
	rng := rand.New(rand.NewSource(seed))
	wf := make([]float64, len(s.Weights))
	for i, w := range s.Weights {
		wf[i] = float64(w)
	}
	var lb balancer
	var lc *apisixLeastConn
	switch kind {
	case Envoy:
		lb = newEnvoyLeastRequest(wf, rng)
	case LeastConn:
		lc = &apisixLeastConn{w: wf, workers: make([]*lcHeap, max(1, s.Workers)), rebuildEvery: s.Rebuild}
		lb = lc
	case RoundRobin:
		lb = &apisixRoundRobin{w: s.Weights, workers: make([]*rrState, max(1, s.Workers)), rebuildEvery: s.Rebuild}
	default:
		panic("lbsim: unknown balancer " + string(kind))
	}
	count := make([]float64, len(s.Weights))
	var q events
	warm := n / 10
	issue := func(now float64, i int) {
		h := lb.pick(rng)
		if i >= warm {
			count[h]++
		}
		c := completion{at: now + rng.ExpFloat64()*s.Latency[h], host: h}
		if lc != nil {
			c.heap = lc.last
		}
		heap.Push(&q, c)
	}
	for c := 0; c < s.Clients; c++ {
		issue(0, 0)
	}
	for i := 1; i < n+warm; i++ {
		c := heap.Pop(&q).(completion)
		if c.heap != nil {
			c.heap.score[c.host] -= c.heap.effw[c.host]
			c.heap.update(c.host)
		}
		lb.done(c.host)
		issue(c.at, i)
	}
	total := 0.0
	for _, x := range count {
		total += x
	}
	for i := range count {
		count[i] /= total
	}
	return count
}

// Distance is the total variation distance between two distributions.
func Distance(a, b []float64) float64 {
	d := 0.0
	for i := range a {
		d += math.Abs(a[i] - b[i])
	}
	return d / 2
}

// Shares prints a distribution as whole percentages: "74/26".
func Shares(s []float64) string {
	var b strings.Builder
	for i, x := range s {
		if i > 0 {
			b.WriteByte('/')
		}
		fmt.Fprintf(&b, "%.0f", 100*x)
	}
	return b.String()
}
