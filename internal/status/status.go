// Package status is the HTTP status server of the amesh agent and libxds.so: health and
// readiness probes, Prometheus metrics and debug views of the xDS state, the APISIX
// objects and the translation report. It reads everything through the functions in
// Sources at request time, so it depends on no sink and holds no state of its own; the
// same server runs in the amesh command and inside nginx.
package status

import (
	"context"
	"time"

	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/report"
)

// Sources is where the server takes its data. Every function is called per request
// and must be safe for concurrent use; a nil function makes its view empty (and its
// metrics absent).
type Sources struct {
	// Version is the amesh build version.
	Version string
	// Ready reports whether the first consistent snapshot has been applied.
	Ready func() bool
	// XDS describes the connection to the control plane. Every scrape calls it, so it
	// must be cheap.
	XDS func() XDS
	// XDSDetail is what /debug/xds serves: the xDS client's complete state (resource
	// names, versions, nonces, last NACK), computed for the request; the XDS value when
	// nil.
	XDSDetail func(ctx context.Context) (any, error)
	// Pipeline describes translation and writes.
	Pipeline func() Pipeline
	// Objects returns the APISIX objects currently applied, keyed "/<kind>/<id>" (as
	// the sink reads them back; a nil value, shown as null, when it cannot). The map is
	// only read.
	Objects func() map[string][]byte
	// Report returns the current translation report.
	Report func() []report.Entry
	// Controller describes the connection to amesh-controller; nil when none is
	// configured.
	Controller func() Controller
	// Identity describes the workload identity; nil when its directory is off.
	Identity func() Identity
}

// Identity is the state of the workload identity (AMESH_WORKLOAD_CERT_DIR). It holds
// nothing of the private key.
type Identity struct {
	Dir string `json:"dir"`
	// Files is "absent", "consistent" or "inconsistent" (Problem says why).
	Files string `json:"files"`
	// The certificate in force, if any.
	SPIFFE    string     `json:"spiffe,omitempty"`
	Serial    string     `json:"serial,omitempty"`
	NotBefore *time.Time `json:"not_before,omitempty"`
	NotAfter  *time.Time `json:"not_after,omitempty"`
	// Problem says why what the files hold is not in force.
	Problem string `json:"problem,omitempty"`
	// Published counts the identities published; LastPublished is when the one in
	// force was.
	Published     uint64     `json:"published"`
	LastPublished *time.Time `json:"last_published,omitempty"`
}

// Controller is the state of the optional amesh-controller connection (plugin configs).
type Controller struct {
	Address string `json:"address"`
	// Connected is true while a stream is open and has delivered a set.
	Connected bool `json:"connected"`
	// Version is the version of the config set in force (0: none received yet); the
	// set stays in force while the controller is away.
	Version uint64 `json:"version"`
	// Configs names the plugin configs in force, "namespace/name@generation".
	Configs []string `json:"configs"`
}

// XDS is the state of the xDS client.
type XDS struct {
	// State is the client's connection state: "idle", "connecting", "connected" or
	// "waiting" (backing off); exported as a label of amesh_xds_connection_state.
	State      string
	Server     string
	Protocol   string
	Reconnects uint64
	// Types has one entry per subscribed resource type.
	Types []XDSType
	// Missing counts dependent resources that never arrived.
	Missing int
}

// XDSType is the state of one resource type on the ADS stream.
type XDSType struct {
	TypeURL   string
	Resources int
	Version   string
	Nonce     string
	Responses uint64
	ACKs      uint64
	NACKs     uint64
	LastNACK  string
}

// Pipeline is the state of translation and writing.
type Pipeline struct {
	// Batches counts batches applied; KeysPut and KeysDeleted the keys they wrote.
	Batches, KeysPut, KeysDeleted uint64
	// WriteErrors counts failed Apply calls (each retried).
	WriteErrors uint64
	LastError   string
	// Version is the APISIX config version last made visible.
	Version uint64
	// ObjectsByKind counts the applied objects per APISIX kind ("routes", ...).
	ObjectsByKind map[string]int
	// PushToWrite is the latency from receiving an xDS response to the batch holding
	// it being visible to APISIX, in seconds.
	PushToWrite metrics.HistogramData
}
