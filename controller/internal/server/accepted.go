package server

import (
	"sync"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/controller/internal/validate"
)

// accepted is a config that passed validation, in the forms the streams need.
type accepted struct {
	selector labels.Selector
	config   *pb.PluginConfig // shared by all streams: never modified
}

// acceptedCache remembers, per config object and generation, the outcome of
// validate.Spec (JSON-schema validation of every plugin) and the wire form, so that a
// change wakes N streams without validating N times. Safe for concurrent use.
type acceptedCache struct {
	mu sync.Mutex
	m  map[types.UID]*entry
}

type entry struct {
	generation int64
	a          *accepted // nil: rejected
}

// get returns the accepted form of c, or nil if c is not accepted.
func (ac *acceptedCache) get(c *v1alpha1.AmeshPluginConfig) *accepted {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if e, ok := ac.m[c.UID]; ok && e.generation == c.Generation && c.UID != "" {
		return e.a
	}
	e := &entry{generation: c.Generation}
	if validate.Spec(&c.Spec) == nil {
		sel, _ := validate.Selector(&c.Spec) // validated above
		e.a = &accepted{selector: sel, config: ToProto(c)}
	}
	if c.UID != "" {
		if ac.m == nil {
			ac.m = map[types.UID]*entry{}
		}
		ac.m[c.UID] = e
	}
	return e.a
}

func (ac *acceptedCache) forget(uid types.UID) {
	ac.mu.Lock()
	defer ac.mu.Unlock()
	delete(ac.m, uid)
}
