package translate

// RBAC. An RBAC filter (HTTP or network) allows or denies each request by matching it
// against its policies. rbacRules decides what it does when the answer does not
// depend on the request: no rules (Envoy enforces nothing), an action that decides the
// same for every request (ALLOW without policies denies everything, DENY without
// policies allows everything, a policy that matches every request and principal), or
// LOG (it never denies). An HTTP filter whose ALLOW or DENY rules depend on the
// request is enforced per request by the amesh-rbac plugin (rbacrules.go); a matcher
// tree, and a network filter that depends on the connection, fail closed.

import (
	"fmt"
	"sort"
	"strings"

	matcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// rbacDecision is what RBAC rules decide.
type rbacDecision uint8

const (
	rbacAllowAll rbacDecision = iota
	rbacDenyAll
	rbacDepends // on the request: not enforced exactly
)

// rbacOutcome is the decision with what the report says of it.
type rbacOutcome struct {
	decision rbacDecision
	why      string
}

// rbacRules decides an RBAC filter's enforced policy: matcher, when set, replaces
// rules; neither set enforces nothing. Shadow rules and shadow matchers only produce
// stats and logs.
func rbacRules(rules *rbacv3.RBAC, matcher *matcherv3.Matcher, shadow bool) rbacOutcome {
	shadowNote := ""
	if shadow {
		shadowNote = "; its shadow rules only log, as in Envoy"
	}
	if matcher != nil {
		if matcher.GetMatcherType() == nil && matcher.GetOnNoMatch() == nil {
			return rbacOutcome{rbacDenyAll, "an empty matcher denies every request" + shadowNote}
		}
		return rbacOutcome{rbacDepends, "its matcher depends on the request" + shadowNote}
	}
	if rules == nil {
		return rbacOutcome{rbacAllowAll, "no rules, Envoy enforces nothing" + shadowNote}
	}
	names := policyNames(rules)
	switch rules.GetAction() {
	case rbacv3.RBAC_LOG:
		return rbacOutcome{rbacAllowAll, "action LOG never denies (policies " + names + ")" + shadowNote}
	case rbacv3.RBAC_ALLOW:
		switch {
		case len(rules.GetPolicies()) == 0:
			return rbacOutcome{rbacDenyAll, "action ALLOW without policies denies every request" + shadowNote}
		case anyPolicy(rules, policyAlways):
			return rbacOutcome{rbacAllowAll, "action ALLOW with a policy that matches every request (" + names + ")" + shadowNote}
		case allPolicies(rules, policyNever):
			return rbacOutcome{rbacDenyAll, "action ALLOW whose policies match no request (" + names + ") denies every request" + shadowNote}
		}
		return rbacOutcome{rbacDepends, "action ALLOW with policies " + names + " that depend on the request" + shadowNote}
	case rbacv3.RBAC_DENY:
		switch {
		case len(rules.GetPolicies()) == 0:
			return rbacOutcome{rbacAllowAll, "action DENY without policies allows every request" + shadowNote}
		case anyPolicy(rules, policyAlways):
			return rbacOutcome{rbacDenyAll, "action DENY with a policy that matches every request (" + names + ") denies every request" + shadowNote}
		case allPolicies(rules, policyNever):
			return rbacOutcome{rbacAllowAll, "action DENY whose policies match no request (" + names + ") allows every request" + shadowNote}
		}
		return rbacOutcome{rbacDepends, "action DENY with policies " + names + " that depend on the request" + shadowNote}
	}
	return rbacOutcome{rbacDepends, fmt.Sprintf("action %v is not known", rules.GetAction())}
}

// policyNames lists the policy names (Istio names them after the AuthorizationPolicy:
// "ns[default]-policy[deny-path]-rule[0]"), sorted, the first few.
func policyNames(rules *rbacv3.RBAC) string {
	names := make([]string, 0, len(rules.GetPolicies()))
	for n := range rules.GetPolicies() {
		names = append(names, n)
	}
	sort.Strings(names)
	const show = 5
	if len(names) > show {
		return strings.Join(names[:show], ", ") + fmt.Sprintf(" and %d more", len(names)-show)
	}
	return strings.Join(names, ", ")
}

func anyPolicy(rules *rbacv3.RBAC, f func(*rbacv3.Policy) bool) bool {
	for _, p := range rules.GetPolicies() {
		if f(p) {
			return true
		}
	}
	return false
}

func allPolicies(rules *rbacv3.RBAC, f func(*rbacv3.Policy) bool) bool {
	for _, p := range rules.GetPolicies() {
		if !f(p) {
			return false
		}
	}
	return true
}

// maxRBACDepth bounds the recursion into nested rules; deeper rules count as
// depending on the request.
const maxRBACDepth = 32

// policyAlways: the policy matches every request (a permission and a principal that
// match everything, no condition).
func policyAlways(p *rbacv3.Policy) bool {
	if p.GetCondition() != nil || p.GetCheckedCondition() != nil {
		return false
	}
	perm, princ := false, false
	for _, x := range p.GetPermissions() {
		perm = perm || permAlways(x, 0)
	}
	for _, x := range p.GetPrincipals() {
		princ = princ || principalAlways(x, 0)
	}
	return perm && princ
}

// policyNever: the policy matches no request.
func policyNever(p *rbacv3.Policy) bool {
	perm, princ := true, true
	for _, x := range p.GetPermissions() {
		perm = perm && permNever(x, 0)
	}
	for _, x := range p.GetPrincipals() {
		princ = princ && principalNever(x, 0)
	}
	return perm || princ
}

func permAlways(p *rbacv3.Permission, d int) bool {
	if d > maxRBACDepth {
		return false
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any
	case *rbacv3.Permission_AndRules:
		rs := r.AndRules.GetRules()
		for _, x := range rs {
			if !permAlways(x, d+1) {
				return false
			}
		}
		return len(rs) > 0
	case *rbacv3.Permission_OrRules:
		for _, x := range r.OrRules.GetRules() {
			if permAlways(x, d+1) {
				return true
			}
		}
	case *rbacv3.Permission_NotRule:
		return permNever(r.NotRule, d+1)
	}
	return false
}

func permNever(p *rbacv3.Permission, d int) bool {
	if d > maxRBACDepth {
		return false
	}
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_AndRules:
		for _, x := range r.AndRules.GetRules() {
			if permNever(x, d+1) {
				return true
			}
		}
	case *rbacv3.Permission_OrRules:
		rs := r.OrRules.GetRules()
		for _, x := range rs {
			if !permNever(x, d+1) {
				return false
			}
		}
		return len(rs) > 0
	case *rbacv3.Permission_NotRule:
		return permAlways(r.NotRule, d+1)
	}
	return false
}

func principalAlways(p *rbacv3.Principal, d int) bool {
	if d > maxRBACDepth {
		return false
	}
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Any:
		return r.Any
	case *rbacv3.Principal_AndIds:
		ids := r.AndIds.GetIds()
		for _, x := range ids {
			if !principalAlways(x, d+1) {
				return false
			}
		}
		return len(ids) > 0
	case *rbacv3.Principal_OrIds:
		for _, x := range r.OrIds.GetIds() {
			if principalAlways(x, d+1) {
				return true
			}
		}
	case *rbacv3.Principal_NotId:
		return principalNever(r.NotId, d+1)
	}
	return false
}

func principalNever(p *rbacv3.Principal, d int) bool {
	if d > maxRBACDepth {
		return false
	}
	switch r := p.GetIdentifier().(type) {
	case *rbacv3.Principal_AndIds:
		for _, x := range r.AndIds.GetIds() {
			if principalNever(x, d+1) {
				return true
			}
		}
	case *rbacv3.Principal_OrIds:
		ids := r.OrIds.GetIds()
		for _, x := range ids {
			if !principalNever(x, d+1) {
				return false
			}
		}
		return len(ids) > 0
	case *rbacv3.Principal_NotId:
		return principalAlways(r.NotId, d+1)
	}
	return false
}
