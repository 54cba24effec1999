package translate

// Route order. Envoy takes the first route of a virtual host whose match holds.
// APISIX's radixtree (within one host) tries routes whose uri equals the path first,
// then prefix uris ("/x*") from the longest to the shortest, and only among routes with
// the same uri does priority decide. Keeping every route on its natural uri is fast
// (the radix tree does the path work) but may change the winner; putting every route
// on "/*" with its path in vars is always right but scans linearly.
//
// assignBuckets keeps a route on its natural uri unless an earlier route that can match
// some of the same requests would then be tried after it; such a route is moved to
// "/*" (tried last by APISIX) with its path as a condition and a priority below every
// earlier route there. Moving a route only makes it later, so the check is greedy and
// one pass suffices. Later routes are checked against the final bucket of earlier ones.

import "strings"

// uriEntry is one APISIX uri of a route: an exact path or a prefix ("lit*").
type uriEntry struct {
	prefix bool
	lit    string
}

// bucket is where a route sits in APISIX: its uris, or the catch-all "/*".
type bucket struct {
	all     bool       // "/*": demoted, or a route that matches every path
	entries []uriEntry // natural uris when !all
}

// uris returns the uri list for the APISIX route.
func (b bucket) uris() []string {
	if b.all {
		return []string{"/*"}
	}
	out := make([]string, len(b.entries))
	for i, e := range b.entries {
		out[i] = e.lit
		if e.prefix {
			out[i] += "*"
		}
	}
	return out
}

// naturalBucket returns the uris that match exactly the paths of p, if APISIX's router
// can express them. ok=false means the route needs "/*" plus a path condition.
func naturalBucket(p pathSpec) (b bucket, exact bool) {
	if p.ci {
		return bucket{all: true}, false
	}
	switch p.kind {
	case pathPrefix:
		if p.lit == "" || p.lit == "/" {
			return bucket{all: true}, true
		}
		if radixSafe(p.lit) {
			return bucket{entries: []uriEntry{{prefix: true, lit: p.lit}}}, true
		}
	case pathExact:
		if radixSafe(p.lit) {
			return bucket{entries: []uriEntry{{lit: p.lit}}}, true
		}
	case pathSepPrefix:
		if radixSafe(p.lit) && p.lit != "/" && p.lit[len(p.lit)-1] != '/' {
			return bucket{entries: []uriEntry{{lit: p.lit}, {prefix: true, lit: p.lit + "/"}}}, true
		}
	}
	return bucket{all: true}, false
}

// radixSafe reports whether lit can be a radixtree uri literally: it must start with
// "/", and ':' and '*' are parameter syntax there.
func radixSafe(lit string) bool {
	if lit == "" || lit[0] != '/' {
		return false
	}
	for i := 0; i < len(lit); i++ {
		c := lit[i]
		if c == ':' || c == '*' || c < 0x21 || c >= 0x7f {
			return false
		}
	}
	return true
}

// pathSet is a conservative description of the paths a matcher (or a uri) accepts,
// compared case-insensitively when any side is: a superset is always fine here.
type pathSet struct {
	any    bool
	prefix bool
	lit    string
	fold   bool
}

func setsOf(p pathSpec) []pathSet {
	switch p.kind {
	case pathPrefix:
		return []pathSet{{prefix: true, lit: p.lit, fold: p.ci}}
	case pathExact:
		return []pathSet{{lit: p.lit, fold: p.ci}}
	case pathSepPrefix:
		return []pathSet{{prefix: true, lit: p.lit, fold: p.ci}}
	case pathRegex:
		// Every match starts with the regex's literal prefix (if any).
		// A leading "^" is redundant under whole-string matching and hides the prefix.
		if re, err := compileWhole(strings.TrimPrefix(p.lit, "^")); err == nil {
			if lp, _ := re.LiteralPrefix(); lp != "" {
				return []pathSet{{prefix: true, lit: lp}}
			}
		}
	}
	return []pathSet{{any: true}}
}

func entrySet(e uriEntry) pathSet { return pathSet{prefix: e.prefix, lit: e.lit} }

// overlap reports whether some path may be in both sets.
func overlap(a, b pathSet) bool {
	if a.any || b.any {
		return true
	}
	al, bl := a.lit, b.lit
	if a.fold || b.fold {
		al, bl = lower(al), lower(bl)
	}
	switch {
	case a.prefix && b.prefix:
		return strings.HasPrefix(al, bl) || strings.HasPrefix(bl, al)
	case a.prefix:
		return strings.HasPrefix(bl, al)
	case b.prefix:
		return strings.HasPrefix(al, bl)
	}
	return al == bl
}

// overlapAll reports whether some path may be in every set (prefix and exact sets form
// chains, so pairwise overlap is enough).
func overlapAll(sets ...pathSet) bool {
	for i := range sets {
		for j := i + 1; j < len(sets); j++ {
			if !overlap(sets[i], sets[j]) {
				return false
			}
		}
	}
	return true
}

// triedBefore reports whether, for a path in both entries, APISIX tries uri entry a
// before uri entry b (exact before prefix; longer prefix first). Equal entries are
// ordered by priority, which follows the route order, so they count as "before".
func triedBefore(a, b uriEntry) bool {
	if a == b {
		return true
	}
	if !a.prefix {
		return true
	}
	if !b.prefix {
		return false
	}
	return len(a.lit) > len(b.lit)
}

// routeShape is what bucket assignment needs to know about a route.
type routeShape struct {
	sets []pathSet // paths the route's path matcher accepts
	nat  bucket    // natural bucket (all=true when the path cannot be a uri)
}

// assignBuckets returns the bucket of each route, in order.
func assignBuckets(shapes []routeShape) []bucket {
	out := make([]bucket, len(shapes))
	for i, s := range shapes {
		b := s.nat
		if !b.all {
		check:
			for j := 0; j < i; j++ {
				if conflicts(shapes[j], out[j], s, b) {
					b = bucket{all: true}
					break check
				}
			}
		}
		out[i] = b
	}
	return out
}

// conflicts reports whether earlier route j (in bucket bj) could be tried after route i
// (in candidate bucket bi) for a request both can match.
func conflicts(j routeShape, bj bucket, i routeShape, bi bucket) bool {
	for _, sj := range j.sets {
		for _, si := range i.sets {
			if !overlap(sj, si) {
				continue
			}
			if bj.all {
				// j is tried after every uri of i; any common path is a conflict.
				for _, ei := range bi.entries {
					if overlapAll(sj, si, entrySet(ei)) {
						return true
					}
				}
				continue
			}
			for _, ej := range bj.entries {
				for _, ei := range bi.entries {
					if overlapAll(sj, si, entrySet(ej), entrySet(ei)) && !triedBefore(ej, ei) {
						return true
					}
				}
			}
		}
	}
	return false
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for k := i; k < len(b); k++ {
				if b[k] >= 'A' && b[k] <= 'Z' {
					b[k] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
