// Package metrics writes the Prometheus text exposition format (version 0.0.4). It is a
// writer, not a registry: the status server gathers its figures from the pipeline at
// scrape time and writes them here. Keeping it this small keeps the Prometheus client
// library (and its dependencies) out of libxds.so, which serves the same endpoint.
package metrics

import (
	"bufio"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
)

// ContentType is the HTTP Content-Type of the text format.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// Type is a metric family's type.
type Type string

// The metric types amesh exposes.
const (
	Counter   Type = "counter"
	Gauge     Type = "gauge"
	Histogram Type = "histogram"
)

// Label is one name="value" pair of a sample.
type Label struct{ Name, Value string }

// L builds labels from alternating names and values: L("type", "cds", "code", "ok").
// An odd trailing name is ignored.
func L(pairs ...string) []Label {
	ls := make([]Label, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		ls = append(ls, Label{pairs[i], pairs[i+1]})
	}
	return ls
}

// Writer writes metric families. Write errors are sticky: the first one is returned by
// Flush and everything after it is dropped, so callers need not check every call.
type Writer struct {
	w   *bufio.Writer
	err error
}

// NewWriter returns a Writer on w. Call Flush when done.
func NewWriter(w io.Writer) *Writer { return &Writer{w: bufio.NewWriter(w)} }

// Family writes the HELP and TYPE lines that must precede a family's samples.
func (w *Writer) Family(name, help string, t Type) {
	w.str("# HELP " + name + " " + escapeHelp(help) + "\n")
	w.str("# TYPE " + name + " " + string(t) + "\n")
}

// Sample writes one sample of the current family.
func (w *Writer) Sample(name string, labels []Label, v float64) {
	w.str(name)
	w.labels(labels, "", "")
	w.str(" " + FormatValue(v) + "\n")
}

// Single writes a family with exactly one unlabelled sample.
func (w *Writer) Single(name, help string, t Type, v float64) {
	w.Family(name, help, t)
	w.Sample(name, nil, v)
}

// HistogramData is a histogram with fixed upper bounds. Counts[i] is the number of
// observations <= Bounds[i] that were not counted in an earlier bucket (not
// cumulative); observations above the last bound are only in Count.
type HistogramData struct {
	Bounds []float64
	Counts []uint64
	Sum    float64
	Count  uint64
}

// Histogram writes the _bucket (cumulative, with le="+Inf"), _sum and _count samples of
// one histogram of the current family.
func (w *Writer) Histogram(name string, labels []Label, h HistogramData) {
	var cum uint64
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		w.str(name + "_bucket")
		w.labels(labels, "le", FormatValue(b))
		w.str(" " + strconv.FormatUint(cum, 10) + "\n")
	}
	w.str(name + "_bucket")
	w.labels(labels, "le", "+Inf")
	w.str(" " + strconv.FormatUint(h.Count, 10) + "\n")
	w.Sample(name+"_sum", labels, h.Sum)
	w.Sample(name+"_count", labels, float64(h.Count))
}

// Flush writes buffered output and returns the first error seen.
func (w *Writer) Flush() error {
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

func (w *Writer) str(s string) {
	if w.err == nil {
		_, w.err = w.w.WriteString(s)
	}
}

func (w *Writer) labels(ls []Label, extraName, extraValue string) {
	if len(ls) == 0 && extraName == "" {
		return
	}
	w.str("{")
	for i, l := range ls {
		if i > 0 {
			w.str(",")
		}
		w.str(l.Name + `="` + escapeLabel(l.Value) + `"`)
	}
	if extraName != "" {
		if len(ls) > 0 {
			w.str(",")
		}
		w.str(extraName + `="` + extraValue + `"`)
	}
	w.str("}")
}

// FormatValue formats a sample value the way Prometheus parses it.
func FormatValue(v float64) string {
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	case math.IsNaN(v):
		return "NaN"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

var (
	helpEscaper  = strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	labelEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`)
)

func escapeHelp(s string) string  { return helpEscaper.Replace(s) }
func escapeLabel(s string) string { return labelEscaper.Replace(s) }

// SortedKeys returns the keys of m in order, for deterministic sample order.
func SortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
