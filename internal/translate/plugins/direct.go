package plugins

import (
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// defaultMaxDirectResponseBody is Envoy's limit when the route configuration sets none.
const defaultMaxDirectResponseBody = 4096

// directResponse translates a DirectResponseAction into the mocking plugin.
//
// mocking rather than fault-injection's abort: it sets the status and the body and,
// unlike abort, the Content-Type (Envoy sends text/plain with a body), it accepts
// every status Envoy does, it runs in the access phase after a fault-injection that
// the same route may carry (Envoy's fault filter runs before the router answers), and
// it leaves fault-injection free for that. with_mock_header is turned off so that no
// header Envoy would not send is added.
func (b *builder) directResponse(d *routev3.DirectResponseAction) {
	const field = "route.direct_response"
	status := d.GetStatus()
	if status < 200 || status > 599 {
		b.fail(field+".status", report.Invalid, "status %d is outside Envoy's range [200, 600)", status)
		return
	}
	if d.GetBodyFormat() != nil {
		b.fail(field+".body_format", report.Unsupported, "body_format is evaluated per request; it has no APISIX equivalent")
		return
	}
	body, ok := b.dataSource(field+".body", d.GetBody())
	if !ok {
		return
	}
	limit := uint32(defaultMaxDirectResponseBody)
	if l := b.in.RouteConfig.GetMaxDirectResponseBodySizeBytes(); l != nil {
		limit = l.GetValue()
	}
	if uint64(len(body)) > uint64(limit) {
		b.fail(field+".body", report.Invalid, "body of %d bytes exceeds max_direct_response_body_size_bytes %d (Envoy rejects this configuration)", len(body), limit)
		return
	}
	if err := checkAPISIXLiteral(body); err != nil {
		b.fail(field+".body", report.Unsupported, "%v", err)
		return
	}
	if status == 201 || status >= 300 && status < 400 {
		b.note(field+".status", report.Approximated, "Envoy adds a Location header (the request URL) to a %d direct response; APISIX does not", status)
	}
	conf := map[string]any{
		"response_status":  status,
		"response_example": body,
		"content_type":     "text/plain",
		"with_mock_header": false,
	}
	if body == "" {
		b.note(field+".body", report.Approximated, "the empty response carries Content-Type: text/plain; Envoy sends none")
	}
	b.setPlugin(pluginMocking, conf)
}

// dataSource reads an inline DataSource. Files and environment variables belong to
// the Envoy host and are not available here.
func (b *builder) dataSource(field string, ds *corev3.DataSource) (string, bool) {
	switch s := ds.GetSpecifier().(type) {
	case nil:
		return "", true
	case *corev3.DataSource_InlineString:
		return s.InlineString, true
	case *corev3.DataSource_InlineBytes:
		if !utf8.Valid(s.InlineBytes) {
			b.fail(field, report.Unsupported, "inline_bytes body is not valid UTF-8 and cannot be carried in APISIX's JSON configuration")
			return "", false
		}
		return string(s.InlineBytes), true
	default:
		b.fail(field, report.Unsupported, "body from %T is not available to amesh", s)
		return "", false
	}
}
