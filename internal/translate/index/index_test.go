package index

import (
	"maps"
	"slices"
	"testing"
)

// A cluster whose kind changed makes stale the virtual hosts that route to it or read
// it and the listeners with stream routes to it; one whose content changed, only the
// virtual hosts that read its shape and endpoints and the listeners whose stream
// routes read its shape.
func TestClusterChanged(t *testing.T) {
	x := New[string]()
	x.AddVirtualHost("routes", []string{"c"}, nil)
	x.AddVirtualHost("mirrors", []string{"other"}, []string{"c"})
	x.AddVirtualHost("unrelated", []string{"other"}, nil)
	x.AddStream("c", "tcp", false)
	x.AddStream("c", "odst", true)

	x.Begin()
	x.ClusterChanged("c", false, true)
	if got := slices.Sorted(slices.Values(x.TakeStale())); !slices.Equal(got, []string{"mirrors"}) || x.ListenerStale("tcp") || !x.ListenerStale("odst") {
		t.Fatalf("content changed: stale %v, tcp stale %v, odst stale %v", got, x.ListenerStale("tcp"), x.ListenerStale("odst"))
	}
	x.ClusterChanged("c", true, false)
	if got := slices.Sorted(slices.Values(x.TakeStale())); !slices.Equal(got, []string{"mirrors", "routes"}) || !x.ListenerStale("tcp") {
		t.Fatalf("kind changed: stale %v, tcp stale %v", got, x.ListenerStale("tcp"))
	}
	if got := x.TakeStale(); len(got) != 0 {
		t.Fatalf("taken twice: %v", got)
	}
	// A virtual host removed while stale is no longer stale, nor found again.
	x.ClusterChanged("c", true, false)
	x.RemoveVirtualHost("routes", []string{"c"}, nil)
	if got := x.TakeStale(); !slices.Equal(got, []string{"mirrors"}) {
		t.Fatalf("after removal: stale %v", got)
	}
	x.End()
	x.RemoveStream("c", "tcp")
	x.RemoveStream("c", "odst")
	x.Begin()
	x.ClusterChanged("c", true, true)
	if x.AnyListenerStale() {
		t.Fatal("a removed stream route's listener is stale")
	}
	x.End()
}

// A virtual host marked stale by the caller is taken with the others, once; one
// removed meanwhile is not.
func TestMarkStale(t *testing.T) {
	x := New[string]()
	x.AddVirtualHost("a", []string{"c"}, nil)
	x.AddVirtualHost("b", nil, nil)
	x.AddVirtualHost("gone", nil, nil)
	x.Begin()
	x.ClusterChanged("c", true, false)
	x.MarkStale("a")
	x.MarkStale("b")
	x.MarkStale("gone")
	x.RemoveVirtualHost("gone", nil, nil)
	if got := slices.Sorted(slices.Values(x.TakeStale())); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("stale %v", got)
	}
	if got := x.TakeStale(); len(got) != 0 {
		t.Fatalf("taken twice: %v", got)
	}
	x.End()
}

// Clusters reading the EDS resource of their own name are not indexed; others are
// found by the resource's name, and moved when they read another.
func TestMoveEDS(t *testing.T) {
	x := New[string]()
	x.MoveEDS("own", "", "own")
	x.MoveEDS("a", "", "shared")
	x.MoveEDS("b", "", "shared")
	eds := func(name string) []string { return slices.Sorted(x.ClustersOfEDS(name)) }
	if got := eds("shared"); !slices.Equal(got, []string{"a", "b"}) || len(eds("own")) != 0 {
		t.Fatalf("shared %v, own %v", got, eds("own"))
	}
	x.MoveEDS("a", "shared", "elsewhere")
	x.MoveEDS("b", "shared", "")
	if len(eds("shared")) != 0 || !slices.Equal(eds("elsewhere"), []string{"a"}) {
		t.Fatalf("after moves: shared %v, elsewhere %v", eds("shared"), eds("elsewhere"))
	}
}

func TestContexts(t *testing.T) {
	x := New[string]()
	x.AddContext("rds", "out-80")
	x.AddContext("rds", "in-80")
	x.AddContext("other", "out-81")
	got := map[string]bool{"before": true}
	x.CollectContexts("rds", got)
	if !maps.Equal(got, map[string]bool{"before": true, "in-80": true, "out-80": true}) {
		t.Fatalf("contexts of rds: %v", got)
	}
	x.RemoveContext("other", "out-81")
	if got := slices.Sorted(x.RouteConfigs()); !slices.Equal(got, []string{"rds"}) || len(x.contexts) != 1 {
		t.Fatalf("route configurations: %v", got)
	}
}
