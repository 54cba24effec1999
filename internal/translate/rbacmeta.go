package translate

// RBAC conditions on dynamic metadata. Istio's requestPrincipals ("iss/sub") and its
// request.auth.claims, audiences and presenter conditions are metadata matchers on
// what jwt_authn writes under "envoy.filters.http.jwt_authn" (each provider's
// payload_in_metadata key, then the claim's path). amesh-rbac runs the jwt_authn
// steps in filter order and keeps their verified payloads for the request, so a
// matcher on that filter's metadata is evaluated exactly: before a jwt_authn step (or
// on a route where none runs) the metadata is absent, as in Envoy. Metadata of any
// other filter is decided as Envoy's worst case.

import (
	"fmt"

	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// rbacMeta is Envoy's MetadataMatcher: the value at Path under filter F's metadata,
// matched by V, inverted by Inv.
type rbacMeta struct {
	F    string    `json:"f"`
	Path []string  `json:"path"`
	V    rbacValue `json:"v"`
	Inv  bool      `json:"inv,omitempty"`
}

// rbacValue is Envoy's ValueMatcher: exactly one field is set.
type rbacValue struct {
	Null    bool        `json:"null,omitempty"`
	Num     *rbacDouble `json:"num,omitempty"`
	Str     *rbacString `json:"str,omitempty"`
	Bool    *bool       `json:"bool,omitempty"`
	Present *bool       `json:"present,omitempty"`
	List    *rbacValue  `json:"list,omitempty"` // one of the list's elements matches
	Or      []rbacValue `json:"or,omitempty"`
}

// rbacDouble is Envoy's DoubleMatcher: a number in [Range[0], Range[1]) or equal to Exact.
type rbacDouble struct {
	Range *[2]float64 `json:"range,omitempty"`
	Exact *float64    `json:"exact,omitempty"`
}

const maxValueDepth = 16

func (c *rbacCompiler) metadata(m *matcherv3.MetadataMatcher, neg bool) rbacNode {
	if m.GetFilter() != jwtFilterMetadata {
		return c.unknown(neg, "metadata of filter "+m.GetFilter())
	}
	path := make([]string, 0, len(m.GetPath()))
	for _, seg := range m.GetPath() {
		path = append(path, seg.GetKey())
	}
	v, err := c.value(m.GetValue(), 0)
	if err != nil {
		return c.unknown(neg, "JWT metadata matcher with "+err.Error())
	}
	// An inverted matcher flips the polarity of what the plugin may not evaluate.
	return rbacNode{Meta: &rbacMeta{F: m.GetFilter(), Path: path, V: v, Inv: m.GetInvert()}, U: c.worst(neg)}
}

func (c *rbacCompiler) value(v *matcherv3.ValueMatcher, d int) (rbacValue, error) {
	if d > maxValueDepth {
		return rbacValue{}, fmt.Errorf("value matchers nested deeper than %d", maxValueDepth)
	}
	switch m := v.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return rbacValue{Null: true}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		switch dm := m.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Range:
			return rbacValue{Num: &rbacDouble{Range: &[2]float64{dm.Range.GetStart(), dm.Range.GetEnd()}}}, nil
		case *matcherv3.DoubleMatcher_Exact:
			x := dm.Exact
			return rbacValue{Num: &rbacDouble{Exact: &x}}, nil
		}
	case *matcherv3.ValueMatcher_StringMatch:
		s, ok := c.str(m.StringMatch)
		if !ok {
			return rbacValue{}, fmt.Errorf("a string matcher of an unsupported kind")
		}
		return rbacValue{Str: s}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		b := m.BoolMatch
		return rbacValue{Bool: &b}, nil
	case *matcherv3.ValueMatcher_PresentMatch:
		b := m.PresentMatch
		return rbacValue{Present: &b}, nil
	case *matcherv3.ValueMatcher_ListMatch:
		one, ok := m.ListMatch.GetMatchPattern().(*matcherv3.ListMatcher_OneOf)
		if !ok {
			return rbacValue{}, fmt.Errorf("a list matcher of an unsupported kind")
		}
		x, err := c.value(one.OneOf, d+1)
		if err != nil {
			return rbacValue{}, err
		}
		return rbacValue{List: &x}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		out := rbacValue{Or: []rbacValue{}}
		for _, x := range m.OrMatch.GetValueMatchers() {
			y, err := c.value(x, d+1)
			if err != nil {
				return rbacValue{}, err
			}
			out.Or = append(out.Or, y)
		}
		return out, nil
	}
	return rbacValue{}, fmt.Errorf("a value matcher of an unsupported kind (%T)", v.GetMatchPattern())
}
