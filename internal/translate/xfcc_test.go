package translate

import (
	"encoding/json"
	"testing"

	xdsmatcherv3 "github.com/cncf/xds/go/xds/type/matcher/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/report"
)

// xfccListener is httpListener with its connection manager changed by edit.
func xfccListener(edit func(*hcmv3.HttpConnectionManager)) *listenerv3.Listener {
	l := httpListener(80, "80")
	h := &hcmv3.HttpConnectionManager{}
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(h); err != nil {
		panic(err)
	}
	edit(h)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
	return l
}

// Every route of a connection manager, the no-route route included, carries its
// x-forwarded-client-cert settings: SANITIZE by default, the details only where the
// mode writes them.
func TestXFCCOnEveryRoute(t *testing.T) {
	istio := &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Dns: true, Uri: true}
	for _, tc := range []struct {
		name string
		edit func(*hcmv3.HttpConnectionManager)
		want string
	}{
		{"default", func(*hcmv3.HttpConnectionManager) {}, `{"mode":"SANITIZE"}`},
		{"Istio's inbound", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
			h.SetCurrentClientCertDetails = istio
		}, `{"dns":true,"mode":"APPEND_FORWARD","subject":true,"uri":true}`},
		{"SANITIZE_SET, uri only", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
		}, `{"mode":"SANITIZE_SET","uri":true}`},
		// The details of a mode that writes nothing are not used, cert included.
		{"FORWARD_ONLY with details", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_FORWARD_ONLY
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Cert: true, Uri: true}
		}, `{"mode":"FORWARD_ONLY"}`},
		{"ALWAYS_FORWARD_ONLY", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY
		}, `{"mode":"ALWAYS_FORWARD_ONLY"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, _ := translateOne(t, []*listenerv3.Listener{xfccListener(tc.edit)}, twoRoutes("80"))
			wantRoutes(t, objs, "out-80", map[string]int{"a": 0, "b": 0, "no-route": 404}, "")
			for name, r := range routeObjs(t, objs, "out-80") {
				p, _ := r["plugins"].(map[string]any)
				got, _ := json.Marshal(p[xfccPluginName])
				if string(got) != tc.want {
					t.Errorf("route %s: %s %s, want %s", name, xfccPluginName, got, tc.want)
				}
			}
		})
	}
}

// What amesh-xfcc cannot write fails every route of the connection manager closed
// (500), reported; a request Envoy would forward with other details never goes out.
func TestXFCCUnsupportedFailsClosed(t *testing.T) {
	for _, tc := range []struct {
		name, why string
		edit      func(*hcmv3.HttpConnectionManager)
	}{
		{"cert", "set_current_client_cert_details.cert", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_APPEND_FORWARD
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Cert: true}
		}},
		{"chain", "set_current_client_cert_details.chain", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Chain: true}
		}},
		{"JSON", "format JSON", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true, Format: hcmv3.HttpConnectionManager_JSON}
		}},
		{"matcher", "forward_client_cert_matcher", func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertMatcher = &xdsmatcherv3.Matcher{}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, rep := translateOne(t, []*listenerv3.Listener{xfccListener(tc.edit)}, twoRoutes("80"))
			wantRoutes(t, objs, "out-80", map[string]int{"a": 500, "b": 500, "no-route": 500}, "")
			if !findEntry(rep, "filter_chains.filters.http_connection_manager.set_current_client_cert_details", report.Unsupported, tc.why) {
				t.Errorf("report: %v", rep)
			}
		})
	}
}
