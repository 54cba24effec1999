package resource

// Listeners are kept as decoded, pruned messages: a sidecar has few (one per port),
// and their HTTP connection managers are serialized inside Anys that translation
// decodes, so there is nothing to gain from another form. A listener depends on the
// route configurations its HTTP connection managers name (RDS).

import (
	"errors"
	"fmt"
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
)

var listenerKind = &kindFuncs[*listenerv3.Listener, *listenerv3.Listener]{
	kindNoun: "listener",
	decodeFn: decodeListener,
	pruneFn:  pruneListener,
	keepFn:   func(l *listenerv3.Listener) *listenerv3.Listener { return l },
	nameFn:   (*listenerv3.Listener).GetName,
	equalFn:  func(a, b *listenerv3.Listener) bool { return proto.Equal(a, b) },
}

// decodeListener decodes a listener, validates it and its network filters as Envoy
// does, and returns it pruned, with its RDS names as d.Deps.
func decodeListener(d *Decoded, b []byte, _ *listenerv3.Listener, opts DecodeOptions) (*listenerv3.Listener, error) {
	l := &listenerv3.Listener{}
	if err := unmarshalValid(d, b, l); err != nil {
		return nil, err
	}
	if err := ValidateListenerFilters(l); err != nil {
		return nil, err
	}
	deps, err := ListenerRouteNames(l)
	if err != nil {
		return nil, err
	}
	d.Deps = deps
	pruneListener(l, opts.Intern)
	return l, nil
}

// HCMs calls fn for every HTTP connection manager in the filter chains of l, the
// default_filter_chain included, with the name of the chain it is in. A network filter
// is an HTTP connection manager by the type of its typed_config, as Envoy decides,
// whatever its name. It stops at the first error, which names the chain and the filter.
func HCMs(l *listenerv3.Listener, fn func(chain string, h *hcmv3.HttpConnectionManager) error) error {
	for i, fc := range chainsOf(l) {
		chain := chainName(fc, i)
		for _, f := range fc.GetFilters() {
			h, err := HCMOf(f)
			if err == nil && h != nil {
				err = fn(chain, h)
			}
			if err != nil {
				return fmt.Errorf("filter chain %s, filter %s: %w", chain, f.GetName(), err)
			}
		}
	}
	return nil
}

// HCMOf decodes f when it is an HTTP connection manager (by the type of its
// typed_config, a TypedStruct naming that type included); it returns nil for any
// other filter.
func HCMOf(f *listenerv3.Filter) (*hcmv3.HttpConnectionManager, error) {
	typ, err := FilterTypeName(f.GetTypedConfig())
	if err != nil || typ != hcmTypeName {
		return nil, err
	}
	h := &hcmv3.HttpConnectionManager{}
	if err := UnpackFilterConfig(f.GetTypedConfig(), h); err != nil {
		return nil, err
	}
	return h, nil
}

// ListenerRouteNames validates every HTTP connection manager of l and returns the
// sorted, deduplicated RDS route_config_names they reference. An HCM must either name
// an RDS route configuration or carry one inline; amesh supports nothing else
// (scoped routes included), so anything else is an error.
func ListenerRouteNames(l *listenerv3.Listener) ([]string, error) {
	var names []string
	err := HCMs(l, func(_ string, h *hcmv3.HttpConnectionManager) error {
		if err := h.ValidateAll(); err != nil {
			return err
		}
		switch {
		case h.GetRds() != nil:
			n := h.GetRds().GetRouteConfigName()
			if n == "" {
				return errors.New("rds without route_config_name")
			}
			names = append(names, n)
		case h.GetRouteConfig() != nil:
		case h.GetScopedRoutes() != nil:
			return errors.New("scoped_routes are not supported")
		default:
			return errors.New("http connection manager has neither rds nor route_config")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}
