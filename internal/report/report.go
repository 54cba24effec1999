// Package report describes what amesh could not translate faithfully. Entries are
// produced by pure translation code and exposed by the agent in logs, metrics and
// the /debug/report view.
package report

import (
	"slices"
	"strings"
)

// Severity says what happened to the feature an Entry describes.
type Severity string

const (
	// Ignored: the field has no effect on routing in APISIX and was left out
	// (e.g. Envoy stats or tracing settings).
	Ignored Severity = "ignored"
	// Approximated: translated, but APISIX behaves slightly differently; the message says how.
	Approximated Severity = "approximated"
	// Unsupported: the feature cannot be expressed; the message says what was emitted instead
	// (for a route: a route that fails closed rather than one that behaves differently).
	Unsupported Severity = "unsupported"
	// Invalid: the resource is unusable as sent (e.g. references something that does not exist).
	Invalid Severity = "invalid"
)

// Entry is one finding about one xDS resource.
type Entry struct {
	// Kind is the xDS resource kind: "listener", "route_config", "virtual_host", "route",
	// "cluster" or "endpoints".
	Kind string `json:"kind"`
	// Resource names the resource, as precisely as possible: "9080/reviews:9080/route-0".
	Resource string `json:"resource"`
	// Field is the proto field path, e.g. "route.retry_policy.retry_on".
	Field    string   `json:"field"`
	Severity Severity `json:"severity"`
	// Message says what was done, in a sentence a user understands.
	Message string `json:"message"`
}

// Sort orders entries deterministically (by kind, resource, field, message).
func Sort(es []Entry) {
	// slices.SortFunc, not sort.Slice: a first translation sorts tens of thousands of
	// entries, and sort.Slice swaps through reflection.
	slices.SortFunc(es, func(a, b Entry) int { return Compare(&a, &b) })
}

// Compare orders entries by kind, resource, field, message and severity; only equal
// entries compare equal, so a sorted list is deterministic.
func Compare(a, b *Entry) int {
	if c := strings.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := strings.Compare(a.Resource, b.Resource); c != 0 {
		return c
	}
	if c := strings.Compare(a.Field, b.Field); c != 0 {
		return c
	}
	if c := strings.Compare(a.Message, b.Message); c != 0 {
		return c
	}
	return strings.Compare(string(a.Severity), string(b.Severity))
}
