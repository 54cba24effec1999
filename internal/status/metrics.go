package status

import (
	"io"

	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// connectionStates are the xDS client's states (client.ConnState); all are always
// exported, the current one as 1, so alerts need no absent().
var connectionStates = []string{"idle", "connecting", "connected", "waiting"}

// severities are always exported, zero when there is no such entry.
var severities = []report.Severity{report.Ignored, report.Approximated, report.Unsupported, report.Invalid}

// TypeName returns the short name of an xDS type URL used as a metric label
// ("lds", "rds", "cds", "eds"), or the URL itself for other types.
func TypeName(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "lds"
	case resource.RouteConfigType:
		return "rds"
	case resource.ClusterType:
		return "cds"
	case resource.EndpointType:
		return "eds"
	}
	return typeURL
}

// WriteMetrics writes every metric of src in the Prometheus text format.
func WriteMetrics(out io.Writer, src Sources) error {
	w := metrics.NewWriter(out)
	w.Family("amesh_build_info", "amesh build; the value is always 1.", metrics.Gauge)
	w.Sample("amesh_build_info", metrics.L("version", src.Version), 1)
	if src.Ready != nil {
		w.Single("amesh_ready", "1 once the first consistent xDS snapshot has been applied.", metrics.Gauge, b2f(src.Ready()))
	}
	if src.XDS != nil {
		writeXDS(w, src.XDS())
	}
	if src.Pipeline != nil {
		writePipeline(w, src.Pipeline())
	}
	if src.Controller != nil {
		c := src.Controller()
		w.Single("amesh_controller_connected", "1 while a stream to amesh-controller is open and has delivered a plugin config set.", metrics.Gauge, b2f(c.Connected))
		w.Single("amesh_controller_plugin_configs", "Plugin configs from amesh-controller in force (kept while it is away).", metrics.Gauge, float64(len(c.Configs)))
	}
	if src.Report != nil {
		counts := map[report.Severity]int{}
		for _, e := range src.Report() {
			counts[e.Severity]++
		}
		w.Family("amesh_translation_report_entries", "xDS features not translated faithfully, by severity (see /debug/report).", metrics.Gauge)
		for _, s := range severities {
			w.Sample("amesh_translation_report_entries", metrics.L("severity", string(s)), float64(counts[s]))
			delete(counts, s)
		}
		for _, s := range metrics.SortedKeys(stringKeys(counts)) {
			w.Sample("amesh_translation_report_entries", metrics.L("severity", s), float64(counts[report.Severity(s)]))
		}
	}
	return w.Flush()
}

func writeXDS(w *metrics.Writer, x XDS) {
	w.Family("amesh_xds_connection_state", "State of the ADS stream to the control plane (1 for the current state).", metrics.Gauge)
	known := false
	for _, s := range connectionStates {
		known = known || s == x.State
		w.Sample("amesh_xds_connection_state", metrics.L("state", s), b2f(s == x.State))
	}
	if !known && x.State != "" {
		w.Sample("amesh_xds_connection_state", metrics.L("state", x.State), 1)
	}
	w.Single("amesh_xds_connected", "1 while the ADS stream is up.", metrics.Gauge, b2f(x.State == "connected"))
	w.Single("amesh_xds_reconnects_total", "ADS streams opened after the first.", metrics.Counter, float64(x.Reconnects))
	w.Single("amesh_xds_missing_resources", "Dependent resources (RDS, EDS) that did not arrive within the resource timeout.", metrics.Gauge, float64(x.Missing))
	perType := []struct {
		name, help string
		t          metrics.Type
		v          func(XDSType) float64
	}{
		{"amesh_xds_responses_total", "xDS responses received, per type.", metrics.Counter, func(t XDSType) float64 { return float64(t.Responses) }},
		{"amesh_xds_acks_total", "xDS responses accepted (ACKed), per type.", metrics.Counter, func(t XDSType) float64 { return float64(t.ACKs) }},
		{"amesh_xds_nacks_total", "xDS responses rejected (NACKed), per type.", metrics.Counter, func(t XDSType) float64 { return float64(t.NACKs) }},
		{"amesh_xds_resources", "Resources currently held, per type.", metrics.Gauge, func(t XDSType) float64 { return float64(t.Resources) }},
	}
	for _, m := range perType {
		w.Family(m.name, m.help, m.t)
		for _, t := range x.Types {
			w.Sample(m.name, metrics.L("type", TypeName(t.TypeURL)), m.v(t))
		}
	}
}

func writePipeline(w *metrics.Writer, p Pipeline) {
	w.Single("amesh_apisix_batches_total", "Batches of changes written and made visible to APISIX.", metrics.Counter, float64(p.Batches))
	w.Family("amesh_apisix_keys_written_total", "APISIX object keys written, by operation.", metrics.Counter)
	w.Sample("amesh_apisix_keys_written_total", metrics.L("op", "put"), float64(p.KeysPut))
	w.Sample("amesh_apisix_keys_written_total", metrics.L("op", "delete"), float64(p.KeysDeleted))
	w.Single("amesh_apisix_write_errors_total", "Failed writes of a batch (each is retried).", metrics.Counter, float64(p.WriteErrors))
	w.Single("amesh_apisix_config_version", "Version of the configuration last made visible to APISIX.", metrics.Gauge, float64(p.Version))
	w.Family("amesh_apisix_objects", "APISIX objects currently applied, by kind.", metrics.Gauge)
	for _, k := range metrics.SortedKeys(p.ObjectsByKind) {
		w.Sample("amesh_apisix_objects", metrics.L("kind", k), float64(p.ObjectsByKind[k]))
	}
	w.Family("amesh_push_to_write_seconds", "Latency from an xDS response to its batch being visible to APISIX.", metrics.Histogram)
	w.Histogram("amesh_push_to_write_seconds", nil, p.PushToWrite)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func stringKeys[V any](m map[report.Severity]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[string(k)] = v
	}
	return out
}
