package meshgen

import (
	"maps"
	"slices"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// UpdateOf returns the update that brings a consumer holding the state s.Changes.Since
// to s: every resource of s when s.Changes.Full, else the changed names. For states
// built without a client (generated meshes, tests) that feed a consumer of updates.
func UpdateOf(s *resource.State) *resource.Update {
	u := &resource.Update{Seq: s.Seq, Missing: s.Missing, Received: s.Received}
	u.Listeners = kindOf(s.Listeners, s.Changes.Listeners, s.Changes.Full)
	u.RouteConfigs = kindOf(s.RouteConfigs, s.Changes.RouteConfigs, s.Changes.Full)
	u.Clusters = kindOf(s.Clusters, s.Changes.Clusters, s.Changes.Full)
	u.Endpoints = kindOf(s.Endpoints, s.Changes.Endpoints, s.Changes.Full)
	u.Secrets = kindOf(s.Secrets, s.Changes.Secrets, s.Changes.Full)
	u.Decoded = s.Changes.Decoded
	return u
}

func kindOf[T any](m map[string]T, changed map[string]struct{}, full bool) resource.Kind[T] {
	if full {
		if m == nil {
			m = map[string]T{}
		}
		return resource.Kind[T]{Replace: true, Upsert: maps.Clone(m)}
	}
	var k resource.Kind[T]
	for n := range changed {
		if v, ok := m[n]; ok {
			if k.Upsert == nil {
				k.Upsert = map[string]T{}
			}
			k.Upsert[n] = v
		} else {
			k.Remove = append(k.Remove, n)
		}
	}
	slices.Sort(k.Remove)
	return k
}
