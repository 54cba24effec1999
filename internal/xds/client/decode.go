package client

import (
	"errors"
	"fmt"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/parallel"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// rawResource is one resource of a response, before decoding. name is empty in SotW.
type rawResource struct {
	name, version string
	body          *anypb.Any
}

// decode decodes the resources of a response for type t. A resource whose bytes
// equal an accepted one is not decoded again. A resource with other bytes but the same
// content as the accepted one of its name (istiod marshals protobuf maps in no stable
// order) keeps the accepted entry too, so it is not reported changed; its new form is
// remembered when the response is applied. Resources of a dependent type that are
// not subscribed are dropped and counted as ignored (istiod sends them right after an
// unsubscribe). Any invalid resource rejects the whole response: the error lists every
// invalid resource with its problem, for the NACK.
func (c *Client) decode(t *typeState, raws []rawResource, sotwVersion string) ([]upsert, error) {
	results := make([]decoded, len(raws))
	decodeAll(t, raws, results, resource.DecodeOptions{Intern: c.intern})
	out := make([]upsert, 0, len(raws))
	var errs []string
	// Entries keep their versions. A Delta response carries one string per resource
	// even when they are equal (istiod sends the push's version with each): equal
	// ones share the first's storage.
	var last string
	for i, r := range raws {
		res := &results[i]
		v := sotwVersion // the whole SotW response's
		if r.version != "" {
			if r.version != last {
				last = r.version
			}
			v = last
		}
		switch {
		case res.ignored:
			t.ignored++
		case res.err != "":
			errs = append(errs, res.err)
		default:
			out = append(out, upsert{e: res.e, version: v, route: res.route})
		}
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// duplicateDelta rejects a Delta response that names a resource twice, among its
// resources or its resources and removals together, as Envoy does
// (DeltaSubscriptionState), before anything is decoded; the details are Envoy's.
func duplicateDelta(raws []rawResource, removed []string) error {
	if len(raws) < 2 && len(removed) == 0 || len(raws) == 0 && len(removed) < 2 {
		return nil
	}
	seen := make(map[string]struct{}, len(raws)+len(removed))
	for _, r := range raws {
		if _, dup := seen[r.name]; dup {
			return fmt.Errorf("duplicate name %s found among added/updated resources", r.name)
		}
		seen[r.name] = struct{}{}
	}
	for _, n := range removed {
		if _, dup := seen[n]; dup {
			return fmt.Errorf("duplicate name %s found in the union of added+removed resources", n)
		}
		seen[n] = struct{}{}
	}
	return nil
}

// duplicateSotW rejects a SotW response holding two resources of the same name. Envoy
// rejects it for listeners and clusters ("duplicate listener X found"); for route
// configurations and endpoints, its default ADS implementation uses the first copy
// and its unified one rejects the response. One copy taken without a word would
// leave which one unspecified, so every kind is rejected.
func duplicateSotW(typeURL string, ups []upsert) error {
	if len(ups) < 2 {
		return nil
	}
	seen := make(map[string]struct{}, len(ups))
	for _, u := range ups {
		n := msgName(u.e.msg)
		if _, dup := seen[n]; dup {
			return fmt.Errorf("duplicate %s %s found", resource.KindOf(typeURL), n)
		}
		seen[n] = struct{}{}
	}
	return nil
}

// decoded is the outcome of decoding one resource of a response: ignored, invalid
// (err, the NACK detail) or an entry (the accepted one when unchanged).
type decoded struct {
	ignored bool
	err     string
	e       *entry
	route   *routev3.RouteConfiguration // resource.Decoded.Route
}

// parallelDecodeMin is the number of resources from which a response is decoded on
// every core: an initial sync of 10,000 services brings 30,000 clusters and as many
// load assignments in one response each.
const parallelDecodeMin = 256

// decodeAll fills results[i] for raws[i]. Decoding only reads t (nothing writes it
// while a response is decoded: the goroutine that owns it waits here), so large
// responses are split between GOMAXPROCS goroutines; the results keep the response's
// order, and so do the NACK details built from them.
func decodeAll(t *typeState, raws []rawResource, results []decoded, opts resource.DecodeOptions) {
	workers := parallel.Workers(len(raws), parallelDecodeMin)
	if workers < 2 {
		for i := range raws {
			results[i] = decodeOne(t, raws[i], opts)
		}
		return
	}
	parallel.For(len(raws), workers, 0, func() func(lo, hi int) {
		return func(lo, hi int) {
			for i := lo; i < hi; i++ {
				results[i] = decodeOneSafely(t, raws[i], opts)
			}
		}
	})
}

// decodeOneSafely is decodeOne on a goroutine of decodeAll: a panic in a decoder
// (a bug) must not take the process down from a goroutine nobody recovers; it
// rejects the resource like any other decoding error.
func decodeOneSafely(t *typeState, r rawResource, opts resource.DecodeOptions) (res decoded) {
	defer func() {
		if p := recover(); p != nil {
			res = decoded{err: (&resource.Error{TypeURL: t.url, Name: r.name, Err: fmt.Errorf("decoder panic: %v", p)}).Error()}
		}
	}()
	return decodeOne(t, r, opts)
}

// decodeOne decodes one resource. A resource whose bytes equal an accepted one is not
// decoded again; one with other bytes but the content of the accepted one of its name
// keeps the accepted message (see decode).
func decodeOne(t *typeState, r rawResource, opts resource.DecodeOptions) decoded {
	if r.name != "" && !t.wants(r.name) {
		return decoded{ignored: true}
	}
	body, err := resource.Unwrap(r.body)
	if err != nil {
		return decoded{err: (&resource.Error{TypeURL: t.url, Name: r.name, Err: err}).Error()}
	}
	var prev any // the accepted message of that name: decoding reuses its unchanged parts
	if body.GetTypeUrl() == t.url {
		// A resend of accepted bytes is found by name: Delta's, or in SotW the
		// name field read from the bytes (no decoding, no allocation).
		b := body.GetValue()
		var e *entry
		if r.name != "" {
			e = t.res[r.name]
		} else {
			e = t.res[string(wireName(b))]
		}
		if e != nil && e.hasForm(resource.Hash(b), uint32(len(b))) {
			return decoded{e: e} // unchanged: no allocation
		}
		if e != nil {
			prev = e.msg
		}
	}
	d, err := resource.DecodeUpdate(t.url, body, r.name, prev, opts)
	if err != nil {
		var re *resource.Error
		if errors.As(err, &re) && re.Name != "" && !t.wants(re.Name) {
			return decoded{ignored: true} // invalid but not ours to judge
		}
		return decoded{err: err.Error()}
	}
	if !t.wants(d.Name) {
		return decoded{ignored: true}
	}
	if msgName(d.Msg) != d.Name {
		// Entries take their names from their messages (entry); a decoder that
		// named them otherwise would be a bug, so it is reported, not stored.
		return decoded{err: (&resource.Error{TypeURL: t.url, Name: d.Name, Err: fmt.Errorf("decoded message is named %q", msgName(d.Msg))}).Error()}
	}
	// Equal content in another map order has the same length (only the order of
	// the entries differs), so a length change is a change without comparing.
	size := uint32(len(body.GetValue()))
	if old := t.res[d.Name]; old != nil && old.size == size && resource.Equal(old.msg, d.Msg) {
		// Same message, new form: apply keeps old and remembers the form.
		return decoded{e: newEntry(old.msg, d.Hash, size, old.deps())}
	}
	return decoded{e: newEntry(d.Msg, d.Hash, size, d.Deps), route: d.Route}
}

// wireName is the name of a serialized Listener, RouteConfiguration, Cluster or
// ClusterLoadAssignment: field 1 in each, which deterministic marshalling puts first.
// It returns the first occurrence (unmarshalling keeps the last; bytes naming a
// resource twice just miss the lookup, as the entry found is matched by hash and
// length of the whole bytes), and nil when the bytes are malformed or have no name:
// the resource is then decoded, which reports the problem.
func wireName(b []byte) []byte {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return nil
			}
			return v
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return nil
		}
		b = b[m:]
	}
	return nil
}

func sotwRaws(resp *discoveryv3.DiscoveryResponse) []rawResource {
	out := make([]rawResource, len(resp.GetResources()))
	for i, a := range resp.GetResources() {
		out[i] = rawResource{body: a}
	}
	return out
}

func deltaRaws(resp *discoveryv3.DeltaDiscoveryResponse) []rawResource {
	out := make([]rawResource, len(resp.GetResources()))
	for i, r := range resp.GetResources() {
		out[i] = rawResource{name: r.GetName(), version: r.GetVersion(), body: r.GetResource()}
	}
	return out
}

// receive does what both protocols do first with a response: find its type, record
// the nonce, count it (posted at once: Status shows the response while it is
// decoded) and decode its resources. ok is false for a type never
// requested (the response is ignored). A non-nil err is the NACK detail, already
// counted and logged; the caller sends the protocol's NACK.
//
// A response that names a resource twice is rejected too (duplicateDelta,
// duplicateSotW); removed are a Delta response's removed names, nil in SotW.
func (c *Client) receive(p Protocol, typeURL, nonce string, raws []rawResource, removed []string, sotwVersion string) (i int, t *typeState, entries []upsert, ok bool, err error) {
	i, ok = typeIndex(typeURL)
	if !ok {
		c.log.Warn("xds: response for a type never requested", "type", typeURL)
		return 0, nil, nil, false, nil
	}
	t = c.types[i]
	t.nonce = nonce
	t.responses++
	c.post()
	if p == Delta {
		err = duplicateDelta(raws, removed)
	}
	if err == nil {
		entries, err = c.decode(t, raws, sotwVersion)
	}
	if err == nil && p == SotW {
		err = duplicateSotW(t.url, entries)
	}
	if err != nil {
		t.nacks++
		t.lastNACK = err.Error()
		c.log.Warn("xds: NACK", "type", t.url, "version", sotwVersion, "nonce", nonce, "err", err)
	}
	return i, t, entries, true, err
}
