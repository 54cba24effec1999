package translate

// x-forwarded-client-cert. Envoy's HTTP connection manager rewrites the header on every
// request before any HTTP filter runs (ConnectionManagerUtility::mutateXfccRequestHeader):
// forward_client_cert_details says how (SANITIZE by default: a client's header never
// reaches the application), set_current_client_cert_details what it writes about the
// mTLS peer. amesh's APISIX plugin amesh-xfcc (lua/apisix/plugins/amesh-xfcc.lua,
// lua/amesh/xfcc.lua) does the same on every route of the connection manager, before
// amesh-rbac reads headers. What it cannot write (the peer's PEM certificate or chain,
// the JSON format, a per-request forward_client_cert_matcher) fails the routes closed.

import (
	"strings"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// xfccPluginName is the APISIX plugin that rewrites the header.
const xfccPluginName = "amesh-xfcc"

// xfccConf is amesh-xfcc's config (its schema is in the plugin).
type xfccConf struct {
	// Mode is forward_client_cert_details: SANITIZE, FORWARD_ONLY, APPEND_FORWARD,
	// SANITIZE_SET or ALWAYS_FORWARD_ONLY.
	Mode string `json:"mode"`
	// Subject, URI and DNS are set_current_client_cert_details: what APPEND_FORWARD
	// and SANITIZE_SET write about the peer besides By and Hash.
	Subject bool `json:"subject,omitempty"`
	URI     bool `json:"uri,omitempty"`
	DNS     bool `json:"dns,omitempty"`
}

// xfccOf reads the connection manager's settings; why says what the plugin cannot do
// ("" when it can).
func xfccOf(h *hcmv3.HttpConnectionManager) (conf xfccConf, why string) {
	mode := h.GetForwardClientCertDetails()
	conf.Mode = mode.String()
	var gaps []string
	if h.GetForwardClientCertMatcher() != nil {
		gaps = append(gaps, "forward_client_cert_matcher (chosen per request)")
	}
	if mode == hcmv3.HttpConnectionManager_APPEND_FORWARD || mode == hcmv3.HttpConnectionManager_SANITIZE_SET {
		d := h.GetSetCurrentClientCertDetails()
		conf.Subject = d.GetSubject().GetValue()
		conf.URI = d.GetUri()
		conf.DNS = d.GetDns()
		if d.GetCert() {
			gaps = append(gaps, "set_current_client_cert_details.cert (the peer's PEM certificate)")
		}
		if d.GetChain() {
			gaps = append(gaps, "set_current_client_cert_details.chain (the peer's PEM chain)")
		}
		if d.GetFormat() != hcmv3.HttpConnectionManager_TEXT {
			gaps = append(gaps, "set_current_client_cert_details.format "+d.GetFormat().String())
		}
	}
	return conf, strings.Join(gaps, ", ")
}

// xfccPlugin is the amesh-xfcc config every route of the chain carries, nil for a
// chain without a connection manager (a tcp_proxy chain served as HTTP passes the
// bytes on untouched).
func (cf *ctxFilters) xfccPlugin() *xfccConf {
	if cf == nil {
		return nil
	}
	return cf.xfcc
}
