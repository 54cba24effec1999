package translate

import (
	"fmt"

	"github.com/amesh-dev/amesh/internal/apisix"
)

// PriorOf is Result.Prior for the changes cs made to the output prev: the digest of
// prev's value of each changed key it holds. For translators (and test doubles) that
// diff whole outputs.
func PriorOf(prev map[string][]byte, cs apisix.ChangeSet) map[string]uint64 {
	prior := map[string]uint64{}
	add := func(k string) {
		if v, ok := prev[k]; ok {
			prior[k] = apisix.Hash(v)
		}
	}
	for k := range cs.Put {
		add(k)
	}
	for _, k := range cs.Delete {
		add(k)
	}
	return prior
}

// CheckPrior reports whether r.Prior describes the output prev that r.Changes
// change: every changed key prev holds has the digest of its value there, and no
// other key has an entry. Implementations of the translator contract test with it.
func (r Result) CheckPrior(prev map[string][]byte) error {
	changed := make(map[string]bool, len(r.Changes.Put)+len(r.Changes.Delete))
	for k := range r.Changes.Put {
		changed[k] = true
	}
	for _, k := range r.Changes.Delete {
		changed[k] = true
	}
	for k := range changed {
		v, had := prev[k]
		h, ok := r.Prior[k]
		switch {
		case had && !ok:
			return fmt.Errorf("prior lacks %s, which the previous output had", k)
		case !had && ok:
			return fmt.Errorf("prior has %s, which the previous output did not have", k)
		case had && h != apisix.Hash(v):
			return fmt.Errorf("prior of %s is not the digest of its previous value", k)
		}
	}
	for k := range r.Prior {
		if !changed[k] {
			return fmt.Errorf("prior has %s, which did not change", k)
		}
	}
	return nil
}
