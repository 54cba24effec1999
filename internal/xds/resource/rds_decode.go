package resource

// A large route configuration is decoded on every core. istiod sends a sidecar one
// route configuration per port holding a virtual host per service, so at 10,000
// services a single resource is ~10 MB and took ~230 ms to decode on one core
// (unmarshal 110, validation 40, pruning 25, the wire form 45), on every change to any
// VirtualService. Its virtual hosts are independent: the configuration's bytes are
// split at its top-level fields, and each virtual host is unmarshalled, validated,
// pruned and re-encoded on its own. The result is exactly the serial one:
// RouteConfiguration's validation is its virtual hosts' plus its own fields' (the
// generated validator composes them, and so does Validate, but for the domains, which
// are checked once all virtual hosts are decoded), and anything unexpected (a
// malformed field, a virtual host that fails validation, a panic) falls back to the
// serial path, whose error is the one reported.

import (
	"errors"
	"fmt"
	"sync"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/parallel"
)

// parallelRDSMin is the size from which a route configuration is decoded on every
// core (a variable so that tests can force either path).
var parallelRDSMin = 256 << 10

// errFallback makes decodeRouteConfigParallel's caller decode serially.
var errFallback = errors.New("decode serially")

// decodeRouteConfigParallel decodes, validates and prunes b like the serial path
// (proto.Unmarshal, ValidateAll, Prune, newRouteConfig) and returns the same
// RouteConfig, or errFallback (or another error) when the serial path must decide.
// The virtual hosts are compressed on the workers too (vhkept.go), reusing prev's
// (nil: none) where unchanged; in shares their leaves.
func decodeRouteConfigParallel(b []byte, prev *RouteConfig, in *Interner) (rc *RouteConfig, msg *routev3.RouteConfiguration, err error) {
	var header []byte
	var spans [][]byte
	for rest := b; len(rest) > 0; {
		num, typ, n := protowire.ConsumeTag(rest)
		if n < 0 {
			return nil, nil, errFallback
		}
		m := protowire.ConsumeFieldValue(num, typ, rest[n:])
		if m < 0 {
			return nil, nil, errFallback
		}
		if num == virtualHostsField {
			if typ != protowire.BytesType {
				return nil, nil, errFallback
			}
			v, _ := protowire.ConsumeBytes(rest[n:])
			spans = append(spans, v)
		} else {
			header = append(header, rest[:n+m]...)
		}
		rest = rest[n+m:]
	}
	msg = &routev3.RouteConfiguration{}
	if err := proto.Unmarshal(header, msg); err != nil {
		return nil, nil, errFallback
	}
	if err := validate(msg); err != nil {
		return nil, nil, errFallback
	}
	pruneRouteConfigOwn(msg)
	hdr, err := deterministic.Marshal(msg)
	if err != nil {
		return nil, nil, errFallback
	}

	vhs := make([]*routev3.VirtualHost, len(spans))
	kept := make([][]byte, len(spans)) // kept forms, in per-worker buffers
	sums := make([]uint64, len(spans))
	x := newReuse(prev)
	var failed error
	var mu sync.Mutex
	parallel.For(len(spans), parallel.Workers(len(spans), 0), 0, func() func(lo, hi int) {
		return func(lo, hi int) {
			defer func() {
				if p := recover(); p != nil {
					mu.Lock()
					failed = fmt.Errorf("panic: %v", p)
					mu.Unlock()
				}
			}()
			// Not from compressors: garbage once this decode is done (see there).
			c := newVHCompressor()
			var buf, wire []byte
			for i := lo; i < hi; i++ {
				vh := &routev3.VirtualHost{}
				if proto.Unmarshal(spans[i], vh) != nil || validate(vh) != nil {
					mu.Lock()
					failed = errFallback
					mu.Unlock()
					return
				}
				pruneVirtualHost(vh, in)
				var err error
				if wire, err = deterministic.MarshalAppend(wire[:0], vh); err != nil {
					mu.Lock()
					failed = errFallback
					mu.Unlock()
					return
				}
				start := len(buf)
				buf, sums[i] = c.appendVH(buf, wire, i, x)
				vhs[i], kept[i] = vh, buf[start:len(buf):len(buf)]
			}
		}
	})
	if failed != nil {
		return nil, nil, failed
	}
	msg.VirtualHosts = vhs
	if checkDomains(msg) != nil {
		return nil, nil, errFallback
	}
	r := &RouteConfig{Name: msg.GetName(), Header: hdr, VirtualHosts: make([][]byte, len(spans)), sums: sums}
	// One array for all virtual hosts, as newRouteConfig makes (the workers' buffers
	// grew by doubling; copying them is cheaper than keeping their slack).
	total := 0
	for _, w := range kept {
		total += len(w)
	}
	all := make([]byte, 0, total)
	for i, w := range kept {
		start := len(all)
		all = append(all, w...)
		r.VirtualHosts[i] = all[start:len(all):len(all)]
		r.Routes += len(vhs[i].GetRoutes())
	}
	return r, msg, nil
}
