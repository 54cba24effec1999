package nginx

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// providerConverged waits until every worker's amesh reader holds exactly the dict's
// objects at the dict's version.
func (n *instance) providerConverged(t *testing.T, what string) dump {
	t.Helper()
	return n.waitDump(what, func(d dump) bool {
		if d.Version == nil || len(d.Readers) != n.opts.Workers {
			return false
		}
		want := digestOf(d.Keys)
		for _, r := range d.Readers {
			if r.Version != *d.Version || r.Digest != want || !alive(r.PID) {
				return false
			}
		}
		return true
	})
}

// The selftest (selftest.lua) drives the provider core against dicts it writes
// itself: journal walking, markers, falling behind, invalid objects, tombstones, the
// change log.
func TestProviderSelftest(t *testing.T) {
	xds := newXDS(t, smallMesh(1).Resources())
	n := start(t, xds, options{Workers: 1})
	b, err := n.get("/selftest")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != "ok" {
		t.Fatalf("selftest:\n%s", got)
	}
}

// An endpoint change replaces exactly the upstreams it changed: every other object
// keeps its Lua table (its modifiedIndex), the routes' conf_version does not move (the
// router is not rebuilt), and nothing is re-read whole. A route change moves only the
// routes. A new library instance (initial() again) rewrites the whole dict with the
// same content: every kind is re-read and nothing changes.
func TestProviderAppliesOnlyWhatChanged(t *testing.T) {
	mesh := smallMesh(4)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 2, Reader: "amesh", View: true})
	want := expected(t, res)
	n.waitDump("the initial configuration", func(d dump) bool { return cmp.Equal(want, d.Keys) })
	d0 := n.providerConverged(t, "the workers to load the initial configuration")

	// One endpoint.
	mesh.ChangeEndpoint(1)
	res2 := mesh.Resources()
	changed := diffKeys(want, expected(t, res2))
	if len(changed) == 0 || !allOfKind(changed, "/upstreams/") {
		t.Fatalf("the endpoint change changes %v, want upstreams only", changed)
	}
	if err := xds.Update(res2[resource.EndpointType]...); err != nil {
		t.Fatal(err)
	}
	n.waitNewVersion(d0.version())
	d1 := n.providerConverged(t, "the workers to apply the endpoint change")
	checkOnly(t, d0, d1, changed)
	for id, r := range d1.Readers {
		r0 := d0.Readers[id]
		if r.ConfVersions["/routes"] != r0.ConfVersions["/routes"] || r.ConfVersions["/upstreams"] != r0.ConfVersions["/upstreams"]+1 {
			t.Errorf("worker %s: conf_versions %v -> %v, want only /upstreams up by one", id, r0.ConfVersions, r.ConfVersions)
		}
		if r.Stats.Resyncs != r0.Stats.Resyncs || r.Stats.Keys-r0.Stats.Keys != len(changed) {
			t.Errorf("worker %s: %d kinds re-read, %d keys applied; want 0 and %d", id,
				r.Stats.Resyncs-r0.Stats.Resyncs, r.Stats.Keys-r0.Stats.Keys, len(changed))
		}
	}

	// One route.
	res3 := maps.Clone(res2)
	res3[resource.RouteConfigType] = editRoute(res2[resource.RouteConfigType], 2, "user-x")
	want3 := expected(t, res3)
	changed = diffKeys(expected(t, res2), want3)
	if len(changed) == 0 || !allOfKind(changed, "/routes/") {
		t.Fatalf("the route change changes %v, want routes only", changed)
	}
	serve(xds, res3)
	n.waitDump("the route change", func(d dump) bool { return cmp.Equal(want3, d.Keys) })
	d2 := n.providerConverged(t, "the workers to apply the route change")
	checkOnly(t, d1, d2, changed)
	for id, r := range d2.Readers {
		r1 := d1.Readers[id]
		if r.ConfVersions["/upstreams"] != r1.ConfVersions["/upstreams"] || r.ConfVersions["/routes"] <= r1.ConfVersions["/routes"] {
			t.Errorf("worker %s: conf_versions %v -> %v, want only /routes up", id, r1.ConfVersions, r.ConfVersions)
		}
	}

	// The same content from a new instance of the library.
	n.reinit()
	n.waitDump("the second instance's first batch", func(d dump) bool { return d.Loads == 2 && d.version() > d2.version() })
	d3 := n.providerConverged(t, "the workers to follow the new instance")
	checkOnly(t, d2, d3, nil)
	for id, r := range d3.Readers {
		r2 := d2.Readers[id]
		if !cmp.Equal(r.ConfVersions, r2.ConfVersions) || r.Stats.Resyncs == r2.Stats.Resyncs {
			t.Errorf("worker %s: conf_versions %v -> %v, %d kinds re-read; want the same versions after re-reading", id,
				r2.ConfVersions, r.ConfVersions, r.Stats.Resyncs-r2.Stats.Resyncs)
		}
	}
}

// reinit calls initial() again in the process that loaded the library.
func (n *instance) reinit() {
	n.t.Helper()
	if _, err := n.get("/reinit"); err != nil {
		n.t.Fatal(err)
	}
}

func allOfKind(keys []string, prefix string) bool {
	for _, k := range keys {
		if !strings.HasPrefix(k, prefix) {
			return false
		}
	}
	return true
}

// checkOnly checks that between two dumps exactly the changed keys got a new
// modifiedIndex in every worker (a deleted key is gone, an added one is new) and all
// others kept theirs.
func checkOnly(t *testing.T, before, after dump, changed []string) {
	t.Helper()
	isChanged := map[string]bool{}
	for _, k := range changed {
		isChanged[k] = true
	}
	for id, v := range after.Views {
		old := before.Views[id]
		if before.Readers[id].PID != after.Readers[id].PID {
			continue // a new process: nothing to keep
		}
		for k, idx := range v {
			oldIdx, had := old[k]
			switch {
			case isChanged[k] && had && oldIdx == idx:
				t.Errorf("worker %s: %s changed but kept modifiedIndex %v", id, k, idx)
			case !isChanged[k] && (!had || oldIdx != idx):
				t.Errorf("worker %s: %s unchanged but modifiedIndex %v -> %v", id, k, oldIdx, idx)
			}
		}
	}
}

// editRoute returns route configurations where the first route of virtual host vh
// (of every port) matches the header value user instead: a VirtualService edit.
func editRoute(rcs []proto.Message, vh int, user string) []proto.Message {
	out := make([]proto.Message, len(rcs))
	for i, m := range rcs {
		rc := proto.Clone(m).(*routev3.RouteConfiguration)
		if vh < len(rc.GetVirtualHosts()) {
			r := rc.GetVirtualHosts()[vh].GetRoutes()[0]
			if hs := r.GetMatch().GetHeaders(); len(hs) > 0 {
				hs[0].HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: user},
				}}
			}
		}
		out[i] = rc
	}
	return out
}

// editDomains returns route configurations where virtual host vh gets one more
// domain (add) or loses its last one.
func editDomains(rcs []proto.Message, vh int, add string) []proto.Message {
	out := make([]proto.Message, len(rcs))
	for i, m := range rcs {
		rc := proto.Clone(m).(*routev3.RouteConfiguration)
		if vh < len(rc.GetVirtualHosts()) {
			v := rc.GetVirtualHosts()[vh]
			if add != "" {
				v.Domains = append(v.Domains, add)
			} else if len(v.Domains) > 1 {
				v.Domains = v.Domains[:len(v.Domains)-1]
			}
		}
		out[i] = rc
	}
	return out
}

// moveEndpoint returns the load assignments with one endpoint moved to a new address,
// in the i-th of the subset clusters (the ones routes use: a change of another is no
// change of any APISIX object).
func moveEndpoint(clas []proto.Message, i, seq int) []proto.Message {
	var used []int
	for j, m := range clas {
		if strings.Contains(m.(*endpointv3.ClusterLoadAssignment).GetClusterName(), "|v1|") {
			used = append(used, j)
		}
	}
	if len(used) == 0 {
		return clas
	}
	j := used[i%len(used)]
	out := slices.Clone(clas)
	c := proto.Clone(out[j]).(*endpointv3.ClusterLoadAssignment)
	lbs := c.GetEndpoints()[0].GetLbEndpoints()
	sa := lbs[seq%len(lbs)].GetEndpoint().GetAddress().GetSocketAddress()
	sa.Address = fmt.Sprintf("172.16.%d.%d", seq/250%250, seq%250+1)
	out[j] = c
	return out
}

// The randomized test: after any sequence of endpoint, route, host and cluster
// changes, library restarts (kill -9 of its process; initial() again), nginx
// reloads and workers that fall behind the journal (not polling while more versions
// pass than a small version dict keeps), every worker holds exactly the dict's objects.
func TestProviderRandomized(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("AMESH_TEST_SEED"); s != "" { // to replay a failed run
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("seed %d (AMESH_TEST_SEED replays it)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	mesh := smallMesh(6)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 2, Reader: "amesh", VersionDictSize: "24k"})
	n.waitDump("the initial configuration", func(d dump) bool { return cmp.Equal(expected(t, res), d.Keys) })
	n.providerConverged(t, "the initial configuration")

	clusters := res[resource.ClusterType]
	var removed []proto.Message // clusters taken out, with their load assignments
	removedCLA := map[string]proto.Message{}
	seq := 0
	counts := map[string]int{}
	ops := []string{"endpoint", "endpoint", "route", "domain", "cluster", "cluster", "restart", "reinit", "reload", "behind"}
	for step := range 60 {
		seq++
		op := ops[rng.IntN(len(ops))]
		counts[op]++
		t.Logf("step %d: %s", step, op)
		switch op {
		case "endpoint":
			res[resource.EndpointType] = moveEndpoint(res[resource.EndpointType], rng.IntN(len(res[resource.EndpointType])), seq)
		case "route":
			res[resource.RouteConfigType] = editRoute(res[resource.RouteConfigType], rng.IntN(6), fmt.Sprintf("user-%d", seq))
		case "domain":
			add := ""
			if rng.IntN(2) == 0 {
				add = fmt.Sprintf("alias-%d.example.com", seq)
			}
			res[resource.RouteConfigType] = editDomains(res[resource.RouteConfigType], rng.IntN(6), add)
		case "cluster":
			if len(removed) > 0 && rng.IntN(2) == 0 {
				c := removed[len(removed)-1]
				removed = removed[:len(removed)-1]
				name := c.(*clusterv3.Cluster).GetName()
				clusters = append(clusters, c)
				res[resource.EndpointType] = append(res[resource.EndpointType], removedCLA[name])
			} else {
				i := rng.IntN(len(clusters))
				c := clusters[i].(*clusterv3.Cluster)
				if !strings.HasPrefix(c.GetName(), "outbound|") {
					break
				}
				clusters = slices.Delete(slices.Clone(clusters), i, i+1)
				removed = append(removed, c)
				for j, m := range res[resource.EndpointType] {
					if m.(*endpointv3.ClusterLoadAssignment).GetClusterName() == resource.EDSName(c) {
						removedCLA[c.GetName()] = m
						res[resource.EndpointType] = slices.Delete(slices.Clone(res[resource.EndpointType]), j, j+1)
						break
					}
				}
			}
			res[resource.ClusterType] = clusters
		case "restart":
			// After a reload the new loader may not have reported itself yet.
			var pid int
			waitFor(t, "a live loader", func() bool { pid = n.dump().LoaderPID; return alive(pid) })
			if err := killPID(pid); err != nil {
				t.Fatal(err)
			}
		case "reinit":
			n.reinit()
		case "reload":
			n.signal("reload")
		case "behind":
			// Worker 1 does not poll while versions pass; the journal of a 24k dict
			// holds fewer than these (about 60).
			d := n.dump()
			r0, ok := d.Readers["1"]
			if !ok {
				break
			}
			if _, err := n.get("/pause?worker=1&on=1"); err != nil {
				t.Fatal(err)
			}
			for k, bumps, v := 0, 0, n.version(); bumps < 80 && k < 400; k++ {
				seq++
				res[resource.EndpointType] = moveEndpoint(res[resource.EndpointType], k, seq)
				serve(xds, res)
				want := expected(t, res)
				d := n.waitDump("the change while worker 1 pauses", func(d dump) bool { return cmp.Equal(want, d.Keys) })
				if d.version() != v {
					bumps++
					v = d.version()
				}
			}
			if _, err := n.get("/pause?worker=1&on=0"); err != nil {
				t.Fatal(err)
			}
			serve(xds, res)
			d = n.providerConverged(t, fmt.Sprintf("step %d: worker 1 to catch up", step))
			if r := d.Readers["1"]; r.PID == r0.PID && r.Stats.Resyncs <= r0.Stats.Resyncs {
				t.Errorf("step %d: worker 1 caught up without re-reading a kind: it was not behind the journal", step)
			}
		}
		serve(xds, res)
		want := expected(t, res)
		n.waitDump(fmt.Sprintf("step %d (%s): the dict", step, op), func(d dump) bool { return cmp.Equal(want, d.Keys) })
		n.providerConverged(t, fmt.Sprintf("step %d (%s): the workers", step, op))
	}
	t.Logf("operations: %v", counts)
}
