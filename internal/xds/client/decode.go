package client

import (
	"errors"
	"strings"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// rawResource is one resource of a response, before decoding. name is empty in SotW.
type rawResource struct {
	name, version string
	body          *anypb.Any
}

// decodeLocked decodes the resources of a response for type t. A resource whose bytes
// equal an accepted one is not decoded again. A resource with other bytes but the same
// content as the accepted one of its name (istiod marshals protobuf maps in no stable
// order) keeps the accepted entry too, so it is not reported changed; its new form is
// remembered when the response is applied. Resources of a dependent type that are
// not subscribed are dropped and counted as ignored (istiod sends them right after an
// unsubscribe). Any invalid resource rejects the whole response: the error lists every
// invalid resource with its problem, for the NACK.
func (c *Client) decodeLocked(t *typeState, raws []rawResource, sotwVersion string) ([]upsert, error) {
	out := make([]upsert, 0, len(raws))
	var errs []string
	for _, r := range raws {
		if r.name != "" && !t.wants(r.name) {
			t.ignored++
			continue
		}
		body, err := resource.Unwrap(r.body)
		if err != nil {
			errs = append(errs, (&resource.Error{TypeURL: t.url, Name: r.name, Err: err}).Error())
			continue
		}
		version := r.version
		if version == "" {
			version = sotwVersion
		}
		if body.GetTypeUrl() == t.url {
			h := resource.Hash(body.GetValue())
			if e := t.reuse(h, len(body.GetValue())); e != nil && (r.name == "" || r.name == e.name) {
				out = append(out, upsert{e: e, version: version}) // unchanged: no allocation
				continue
			}
		}
		d, err := resource.Decode(t.url, body, r.name)
		if err != nil {
			var re *resource.Error
			if errors.As(err, &re) && re.Name != "" && !t.wants(re.Name) {
				t.ignored++ // invalid but not ours to judge
				continue
			}
			errs = append(errs, err.Error())
			continue
		}
		if !t.wants(d.Name) {
			t.ignored++
			continue
		}
		// Equal content in another map order has the same length (only the order of
		// the entries differs), so a length change is a change without comparing.
		size := len(body.GetValue())
		if old := t.res[d.Name]; old != nil && old.size == size && resource.Equal(old.msg, d.Msg) {
			// Same message, new form: applyLocked keeps old and remembers the form.
			out = append(out, upsert{e: &entry{name: old.name, msg: old.msg, hash: d.Hash, size: size, deps: old.deps}, version: version})
			continue
		}
		out = append(out, upsert{e: &entry{name: d.Name, msg: d.Msg, hash: d.Hash, size: size, deps: d.Deps}, version: version})
	}
	if len(errs) > 0 {
		return nil, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
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

// receiveLocked does what both protocols do first with a response: find its type,
// record the nonce, count it and decode its resources. ok is false for a type never
// requested (the response is ignored). A non-nil err is the NACK detail, already
// counted and logged; the caller sends the protocol's NACK.
func (c *Client) receiveLocked(typeURL, nonce string, raws []rawResource, sotwVersion string) (i int, t *typeState, entries []upsert, ok bool, err error) {
	i, ok = typeIndex(typeURL)
	if !ok {
		c.log.Warn("xds: response for a type never requested", "type", typeURL)
		return 0, nil, nil, false, nil
	}
	t = c.types[i]
	t.nonce = nonce
	t.responses++
	entries, err = c.decodeLocked(t, raws, sotwVersion)
	if err != nil {
		t.nacks++
		t.lastNACK = err.Error()
		c.log.Warn("xds: NACK", "type", t.url, "version", sotwVersion, "nonce", nonce, "err", err)
	}
	return i, t, entries, true, err
}
