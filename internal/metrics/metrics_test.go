package metrics

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestWriterFormat(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Family("amesh_xds_responses_total", "Responses received.\nPer type.", Counter)
	w.Sample("amesh_xds_responses_total", L("type", "cds"), 3)
	w.Sample("amesh_xds_responses_total", L("type", `we"ird\`+"\n"), 0.5)
	w.Single("amesh_up", "Up.", Gauge, 1)
	w.Family("amesh_lat_seconds", "Latency.", Histogram)
	w.Histogram("amesh_lat_seconds", L("sink", "file"), HistogramData{
		Bounds: []float64{0.01, 0.1},
		Counts: []uint64{2, 1},
		Sum:    0.25,
		Count:  4, // one observation above the last bound
	})
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	want := `# HELP amesh_xds_responses_total Responses received.\nPer type.
# TYPE amesh_xds_responses_total counter
amesh_xds_responses_total{type="cds"} 3
amesh_xds_responses_total{type="we\"ird\\\n"} 0.5
# HELP amesh_up Up.
# TYPE amesh_up gauge
amesh_up 1
# HELP amesh_lat_seconds Latency.
# TYPE amesh_lat_seconds histogram
amesh_lat_seconds_bucket{sink="file",le="0.01"} 2
amesh_lat_seconds_bucket{sink="file",le="0.1"} 3
amesh_lat_seconds_bucket{sink="file",le="+Inf"} 4
amesh_lat_seconds_sum{sink="file"} 0.25
amesh_lat_seconds_count{sink="file"} 4
`
	if got := buf.String(); got != want {
		t.Errorf("output:\n%s\nwant:\n%s", got, want)
	}
}

func TestFormatValue(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{0, "0"}, {42, "42"}, {-3, "-3"}, {0.001, "0.001"}, {1e20, "1e+20"},
		{math.Inf(1), "+Inf"}, {math.Inf(-1), "-Inf"}, {math.NaN(), "NaN"},
	} {
		if got := FormatValue(c.v); got != c.want {
			t.Errorf("FormatValue(%v) = %q, want %q", c.v, got, c.want)
		}
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	f.n++
	return 0, errors.New("disk on fire")
}

func TestWriterStickyError(t *testing.T) {
	fw := &failWriter{}
	w := NewWriter(fw)
	for i := 0; i < 10000; i++ { // more than the buffer holds
		w.Single("amesh_x", "x", Gauge, float64(i))
	}
	if err := w.Flush(); err == nil {
		t.Fatal("Flush returned nil after a failed write")
	}
	if fw.n != 1 {
		t.Errorf("underlying writer called %d times after the first failure, want 1", fw.n)
	}
}
