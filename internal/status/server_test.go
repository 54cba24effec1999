package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

type fakeData struct {
	ready atomic.Bool
	panic atomic.Bool
}

func (f *fakeData) sources() Sources {
	return Sources{
		Version: "v9.9.9-test",
		Ready:   f.ready.Load,
		XDS: func() XDS {
			if f.panic.Load() {
				panic("source broke")
			}
			return XDS{State: "connected", Server: "127.0.0.1:15010", Protocol: "delta", Reconnects: 2, Missing: 1,
				Types: []XDSType{
					{TypeURL: resource.ClusterType, Resources: 13, Version: "v7", Nonce: "n7", Responses: 5, ACKs: 4, NACKs: 1, LastNACK: "cluster x: bad"},
					{TypeURL: resource.ListenerType, Resources: 4, Responses: 3, ACKs: 3},
				}}
		},
		Pipeline: func() Pipeline {
			return Pipeline{Batches: 3, KeysPut: 40, KeysDeleted: 2, WriteErrors: 1, Version: 17,
				ObjectsByKind: map[string]int{"routes": 9, "upstreams": 13},
				PushToWrite:   metrics.HistogramData{Bounds: []float64{0.01, 0.1}, Counts: []uint64{2, 1}, Sum: 0.12, Count: 3}}
		},
		Objects: func() map[string][]byte {
			return map[string][]byte{
				"/routes/r1":    []byte(`{"id":"r1","uri":"/"}`),
				"/upstreams/u1": []byte(`{"id":"u1","nodes":[]}`),
			}
		},
		Report: func() []report.Entry {
			return []report.Entry{
				{Kind: "route", Resource: "9080/a/r", Field: "route.retry_policy.retry_on", Severity: report.Approximated, Message: "m1"},
				{Kind: "cluster", Resource: "c", Field: "transport_socket_matches", Severity: report.Unsupported, Message: "m2"},
				{Kind: "cluster", Resource: "d", Field: "transport_socket_matches", Severity: report.Unsupported, Message: "m3"},
			}
		},
		Controller: func() Controller {
			return Controller{Address: "ctl:15090", Connected: f.ready.Load(), Version: 4, Configs: []string{"ns/a@2", "ns/b@1"}}
		},
	}
}

func startServer(t *testing.T, src Sources) string {
	t.Helper()
	s, err := Start("127.0.0.1:0", Handler(src, quiet), quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return "http://" + s.Addr()
}

func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
}

func TestProbes(t *testing.T) {
	f := &fakeData{}
	base := startServer(t, f.sources())
	if code, _, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, _, body := get(t, base+"/ready"); code != 503 {
		t.Errorf("/ready before the first snapshot = %d %q, want 503", code, body)
	}
	f.ready.Store(true)
	if code, _, _ := get(t, base+"/ready"); code != 200 {
		t.Errorf("/ready after the first snapshot = %d, want 200", code)
	}
	if code, _, _ := get(t, base+"/nope"); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}
}

// sampleLine is the text format of one sample: name, optional labels, value.
var sampleLine = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? (\+Inf|-Inf|NaN|-?[0-9.e+-]+)$`)

func TestMetrics(t *testing.T) {
	f := &fakeData{}
	f.ready.Store(true)
	code, ctype, body := get(t, startServer(t, f.sources())+"/metrics")
	if code != 200 || ctype != metrics.ContentType {
		t.Fatalf("/metrics = %d %q", code, ctype)
	}
	families := map[string]string{}
	for _, line := range strings.Split(strings.TrimSuffix(body, "\n"), "\n") {
		if strings.HasPrefix(line, "# TYPE ") {
			f := strings.Fields(line)
			if _, dup := families[f[2]]; dup {
				t.Errorf("family %s declared twice", f[2])
			}
			families[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		if !sampleLine.MatchString(line) {
			t.Errorf("malformed sample line %q", line)
		}
	}
	for name, typ := range map[string]string{
		"amesh_build_info": "gauge", "amesh_ready": "gauge",
		"amesh_xds_connection_state": "gauge", "amesh_xds_connected": "gauge",
		"amesh_xds_reconnects_total": "counter", "amesh_xds_missing_resources": "gauge",
		"amesh_xds_responses_total": "counter", "amesh_xds_acks_total": "counter",
		"amesh_xds_nacks_total": "counter", "amesh_xds_resources": "gauge",
		"amesh_apisix_batches_total": "counter", "amesh_apisix_keys_written_total": "counter",
		"amesh_apisix_write_errors_total": "counter", "amesh_apisix_config_version": "gauge",
		"amesh_apisix_objects": "gauge", "amesh_push_to_write_seconds": "histogram",
		"amesh_translation_report_entries": "gauge",
		"amesh_controller_connected":       "gauge", "amesh_controller_plugin_configs": "gauge",
	} {
		if families[name] != typ {
			t.Errorf("family %s has type %q, want %q", name, families[name], typ)
		}
	}
	for _, want := range []string{
		`amesh_build_info{version="v9.9.9-test"} 1`,
		`amesh_ready 1`,
		`amesh_xds_connection_state{state="connected"} 1`,
		`amesh_xds_connection_state{state="waiting"} 0`,
		`amesh_xds_reconnects_total 2`,
		`amesh_xds_responses_total{type="cds"} 5`,
		`amesh_xds_acks_total{type="lds"} 3`,
		`amesh_xds_nacks_total{type="cds"} 1`,
		`amesh_xds_resources{type="cds"} 13`,
		`amesh_apisix_keys_written_total{op="delete"} 2`,
		`amesh_apisix_write_errors_total 1`,
		`amesh_apisix_config_version 17`,
		`amesh_apisix_objects{kind="upstreams"} 13`,
		`amesh_push_to_write_seconds_bucket{le="0.1"} 3`,
		`amesh_push_to_write_seconds_count 3`,
		`amesh_translation_report_entries{severity="unsupported"} 2`,
		`amesh_translation_report_entries{severity="invalid"} 0`,
		`amesh_controller_connected 1`,
		`amesh_controller_plugin_configs 2`,
	} {
		if !strings.Contains(body, "\n"+want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestDebugViews(t *testing.T) {
	f := &fakeData{}
	base := startServer(t, f.sources())

	_, ctype, body := get(t, base+"/debug/apisix")
	var objs map[string]map[string]any
	if err := json.Unmarshal([]byte(body), &objs); err != nil || ctype != "application/json" {
		t.Fatalf("/debug/apisix: %v %q\n%s", err, ctype, body)
	}
	if len(objs) != 2 || objs["/routes/r1"]["uri"] != "/" {
		t.Errorf("/debug/apisix = %v", objs)
	}
	_, _, body = get(t, base+"/debug/apisix?kind=upstreams")
	objs = nil
	json.Unmarshal([]byte(body), &objs)
	if len(objs) != 1 || objs["/upstreams/u1"] == nil {
		t.Errorf("/debug/apisix?kind=upstreams = %v", objs)
	}

	_, _, body = get(t, base+"/debug/report")
	var rep struct {
		Counts  map[string]int
		Entries []report.Entry
	}
	if err := json.Unmarshal([]byte(body), &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Entries) != 3 || rep.Counts["unsupported"] != 2 || rep.Entries[0].Field != "route.retry_policy.retry_on" {
		t.Errorf("/debug/report = %+v", rep)
	}

	_, _, body = get(t, base+"/debug/xds")
	var x XDS
	if err := json.Unmarshal([]byte(body), &x); err != nil {
		t.Fatal(err)
	}
	if x.Server != "127.0.0.1:15010" || len(x.Types) != 2 || x.Types[0].Nonce != "n7" || x.Types[0].LastNACK != "cluster x: bad" {
		t.Errorf("/debug/xds = %+v", x)
	}

	_, _, body = get(t, base+"/debug/controller")
	var c struct {
		Configured bool
		Controller
	}
	if err := json.Unmarshal([]byte(body), &c); err != nil {
		t.Fatal(err)
	}
	if !c.Configured || c.Address != "ctl:15090" || c.Connected || c.Version != 4 || len(c.Configs) != 2 {
		t.Errorf("/debug/controller = %s", body)
	}
}

func TestDetailAndEmptySources(t *testing.T) {
	base := startServer(t, Sources{
		XDS:       func() XDS { return XDS{State: "connected"} },
		XDSDetail: func(context.Context) (any, error) { return map[string]string{"raw": "client status"}, nil },
	})
	if _, _, body := get(t, base+"/debug/xds"); !strings.Contains(body, `"raw": "client status"`) {
		t.Errorf("/debug/xds does not serve XDSDetail: %s", body)
	}
	failing := startServer(t, Sources{XDSDetail: func(context.Context) (any, error) { return nil, errors.New("gone") }})
	if code, _, body := get(t, failing+"/debug/xds"); code != 503 || !strings.Contains(body, "gone") {
		t.Errorf("/debug/xds with a failing XDSDetail = %d %s, want 503 and the error", code, body)
	}
	for _, path := range []string{"/debug/apisix", "/debug/report", "/metrics", "/"} {
		if code, _, body := get(t, base+path); code != 200 {
			t.Errorf("%s with empty sources = %d %s", path, code, body)
		}
	}
	if _, _, body := get(t, base+"/debug/controller"); !strings.Contains(body, `"configured": false`) {
		t.Errorf("/debug/controller without a controller = %s", body)
	}
	if _, _, body := get(t, base+"/debug/identity"); !strings.Contains(body, `"configured": false`) {
		t.Errorf("/debug/identity without a certificate directory = %s", body)
	}
	if _, _, body := get(t, base+"/metrics"); strings.Contains(body, "amesh_controller_") {
		t.Errorf("controller metrics exported without a controller:\n%s", body)
	}
	if code, _, _ := get(t, base+"/ready"); code != 503 {
		t.Errorf("/ready without a Ready source = %d, want 503", code)
	}
}

func TestPanickingSource(t *testing.T) {
	f := &fakeData{}
	base := startServer(t, f.sources())
	f.panic.Store(true)
	if code, _, _ := get(t, base+"/debug/xds"); code != 500 {
		t.Errorf("panicking source: %d, want 500", code)
	}
	f.panic.Store(false)
	if code, _, _ := get(t, base+"/debug/xds"); code != 200 {
		t.Errorf("after a panic the server answers %d, want 200", code)
	}
}

func TestStartError(t *testing.T) {
	s, err := Start("127.0.0.1:0", Handler(Sources{}, quiet), quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, err := Start(s.Addr(), Handler(Sources{}, quiet), quiet); err == nil || !strings.Contains(err.Error(), "status server") {
		t.Errorf("second Start on the same address: %v", err)
	}
}

// A value the sink holds that is not JSON (a truncated read, say) is shown, as a
// string, and so is a key the sink cannot read back (null): the view never hides an
// object it has.
func TestObjectsViewShowsEveryKey(t *testing.T) {
	base := startServer(t, Sources{Objects: func() map[string][]byte {
		return map[string][]byte{"/routes/ok": []byte(`{"id":"ok"}`), "/routes/cut": []byte(`{"id":"cu`), "/routes/gone": nil}
	}})
	_, _, body := get(t, base+"/debug/apisix")
	var objs map[string]any
	if err := json.Unmarshal([]byte(body), &objs); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"/routes/ok": map[string]any{"id": "ok"}, "/routes/cut": `{"id":"cu`, "/routes/gone": nil}
	if !reflect.DeepEqual(objs, want) {
		t.Errorf("/debug/apisix = %v, want %v", objs, want)
	}
}

// The private key of an ssl object never shows in /debug/apisix, whole or in part,
// nor does an ssl object the view cannot decode; its other fields do; /debug/identity
// shows the identity's source.
func TestObjectsViewRedactsKeys(t *testing.T) {
	const key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIH0zJcgmm8WKqBSkzXsqfBzJ8Ue2KoQWh4P4Om2HyyvgoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"
	enc, _ := json.Marshal(key)
	na := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	base := startServer(t, Sources{
		Objects: func() map[string][]byte {
			return map[string][]byte{
				"/ssls/ok":  []byte(`{"id":"ok","type":"client","cert":"CERT","key":` + string(enc) + `}`),
				"/ssls/cut": []byte(`{"id":"cut","key":` + string(enc[:40])),
			}
		},
		Identity: func() Identity {
			return Identity{Dir: "/var/lib/istio/data", Files: "consistent", SPIFFE: "spiffe://cluster.local/ns/default/sa/a", NotAfter: &na}
		},
	})
	for _, path := range []string{"/debug/apisix", "/debug/apisix?kind=ssls"} {
		_, _, body := get(t, base+path)
		if strings.Contains(body, "MHcCAQEEIH0zJcgmm8WKqBSkzXsqfBzJ8Ue2KoQWh4P4Om2HyyvgoAoGCCqGSM49") || strings.Contains(body, "PRIVATE KEY") {
			t.Fatalf("%s shows the key:\n%s", path, body)
		}
		var objs map[string]any
		if err := json.Unmarshal([]byte(body), &objs); err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"/ssls/ok":  map[string]any{"id": "ok", "type": "client", "cert": "CERT", "key": apisix.RedactedKey},
			"/ssls/cut": apisix.RedactedKey,
		}
		if !reflect.DeepEqual(objs, want) {
			t.Errorf("%s = %v, want %v", path, objs, want)
		}
	}
	_, _, body := get(t, base+"/debug/identity")
	for _, want := range []string{`"configured": true`, `"spiffe": "spiffe://cluster.local/ns/default/sa/a"`, `"not_after": "2030-01-02T03:04:05Z"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/debug/identity lacks %s:\n%s", want, body)
		}
	}
}
