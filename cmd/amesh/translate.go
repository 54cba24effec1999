package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func runTranslate(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("translate", stderr)
	dir := fs.String("dir", "", "directory of xDS resources, one protojson file per resource in lds/, rds/, cds/, eds/ (the layout of testdata/istiod/sotw)")
	configDump := fs.String("config-dump", "", "Envoy /config_dump JSON file (istioctl proxy-config all POD -o json); - reads stdin")
	format := fs.String("format", "yaml", "output format: yaml (conf/apisix.yaml) or json (conf/apisix.json)")
	out := fs.String("o", "", "write the APISIX configuration to this file (atomically) instead of stdout")
	origDst := fs.String("original-dst-var", "", "nginx variable holding the original destination port (default connection_original_dst)")
	maxBytes := fs.String("max-bytes", "512MiB", "read at most this much input in all (bytes, or with KiB, MiB, GiB)")
	certID := fs.String("workload-cert-id", "", "APISIX /ssls object (type client) with the workload certificate, for Istio mTLS upstreams")
	rootFile := fs.String("mesh-root-file", "", "PEM file with the mesh's roots, for Istio mTLS upstreams (pilot-agent's root-cert.pem)")
	logLevel := logLevelFlag(fs, "warn")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: amesh translate [flags] (DIR | FILE | -dir DIR | -config-dump FILE)")
		fmt.Fprintln(fs.Output(), "\nTranslates recorded xDS into APISIX's standalone configuration, printed on stdout;")
		fmt.Fprintln(fs.Output(), "what could not be translated faithfully is listed on stderr. A DIR or FILE given")
		fmt.Fprintln(fs.Output(), "without a flag is a directory of resources or a config dump, by what it is.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch {
	case fs.NArg() > 1:
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q (give one directory or file)\n", fs.Name(), fs.Arg(1))
		return 2
	case fs.NArg() == 1 && (*dir != "" || *configDump != ""):
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q (-dir or -config-dump is given)\n", fs.Name(), fs.Arg(0))
		return 2
	case fs.NArg() == 1:
		if st, err := os.Stat(fs.Arg(0)); err == nil && st.IsDir() {
			*dir = fs.Arg(0)
		} else {
			*configDump = fs.Arg(0)
		}
	}
	if _, err := newLogger(stderr, *logLevel); err != nil {
		return fail(stderr, "translate", err)
	}
	f, err := file.ParseFormat(*format)
	if err != nil {
		return fail(stderr, "translate", err)
	}
	limit, err := bootstrap.ParseBytes(*maxBytes, 0)
	if err != nil || limit == 0 {
		return fail(stderr, "translate", fmt.Errorf("bad -max-bytes %q: want a byte count, e.g. 512MiB", *maxBytes))
	}
	if (*dir == "") == (*configDump == "") {
		return fail(stderr, "translate", errors.New("give exactly one of DIR, -dir or -config-dump"))
	}
	res, err := load(*dir, *configDump, int64(limit))
	if err != nil {
		var tooLarge *dump.TooLargeError
		if errors.As(err, &tooLarge) {
			err = fmt.Errorf("%w; raise -max-bytes if this really is the input", err)
		}
		return fail(stderr, "translate", err)
	}
	if err := nothingFound(res, *dir, *configDump); err != nil {
		return fail(stderr, "translate", err)
	}
	// A fresh translator's first change set is its complete output.
	result := translate.New(translate.Options{OriginalDstVar: *origDst, WorkloadCertID: *certID, MeshRootFile: *rootFile}).Translate(res.Snapshot())
	if len(result.Changes.Put) == 0 {
		return fail(stderr, "translate", fmt.Errorf("nothing to translate: %s has %s, which make no APISIX object (listeners and clusters do)",
			firstNonEmpty(*dir, *configDump), inventory(res)))
	}
	content, err := file.Render(result.Changes.Put, f)
	if err != nil {
		return fail(stderr, "translate", err)
	}
	if *out != "" {
		err = file.WriteAtomic(*out, content)
	} else {
		_, err = stdout.Write(content)
	}
	if err != nil {
		return fail(stderr, "translate", err)
	}
	writeReport(stderr, result.Report)
	if *configDump != "" {
		writeEDSHint(stderr, res)
	}
	return 0
}

func load(dir, configDump string, maxBytes int64) (*dump.Resources, error) {
	switch {
	case dir != "":
		return dump.LoadDirMax(dir, maxBytes)
	case configDump == "-":
		return dump.LoadConfigDumpMax(os.Stdin, "standard input", maxBytes)
	}
	return dump.LoadConfigDumpFile(configDump, maxBytes)
}

// nothingFound explains an input without a single resource: a wrong path must not
// look like a mesh that translated faithfully.
func nothingFound(res *dump.Resources, dir, configDump string) error {
	if len(res.Listeners)+len(res.RouteConfigs)+len(res.Clusters)+len(res.Endpoints) > 0 {
		return nil
	}
	if configDump != "" {
		return fmt.Errorf("nothing to translate: the config dump %s has no listeners, route configurations, clusters or endpoints", configDump)
	}
	hint := "want subdirectories lds/, rds/, cds/ and eds/ with one .json file per resource, as in testdata/istiod/sotw"
	if jsons, _ := filepath.Glob(filepath.Join(dir, "*.json")); len(jsons) > 0 {
		hint = fmt.Sprintf("it holds %d .json file(s) itself: give the directory above it, which holds lds/, rds/, cds/ and eds/", len(jsons))
	}
	return fmt.Errorf("nothing to translate: no xDS resources in %s (%s)", dir, hint)
}

// inventory describes the counts of res, e.g. "3 endpoints".
func inventory(res *dump.Resources) string {
	var parts []string
	for _, c := range []struct {
		n    int
		noun string
	}{{len(res.Listeners), "listeners"}, {len(res.RouteConfigs), "route configurations"}, {len(res.Clusters), "clusters"}, {len(res.Endpoints), "load assignments"}} {
		if c.n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", c.n, c.noun))
		}
	}
	return strings.Join(parts, ", ")
}

// writeEDSHint says how to get endpoints when a config dump has EDS clusters but no
// load assignment at all: Envoy's /config_dump leaves them out unless asked.
func writeEDSHint(w io.Writer, res *dump.Resources) {
	if len(res.Endpoints) > 0 {
		return
	}
	eds := 0
	for _, c := range res.Clusters {
		if resource.IsEDS(c) {
			eds++
		}
	}
	if eds == 0 {
		return
	}
	fmt.Fprintf(w, "hint: the config dump has no endpoints, so the upstreams of its %d EDS clusters have no nodes (503).\n"+
		"      Take it with `istioctl proxy-config all POD -o json` (which includes endpoints) or from Envoy's /config_dump?include_eds.\n", eds)
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// writeReport prints the translation report for people: a count per severity, then one
// line per entry.
func writeReport(w io.Writer, entries []report.Entry) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "translation report: everything was translated faithfully")
		return
	}
	fmt.Fprintf(w, "translation report: %s\n", severityCounts(entries))
	for _, e := range entries {
		where := e.Resource
		if e.Field != "" { // empty when the finding is about the whole resource
			where += ": " + e.Field
		}
		fmt.Fprintf(w, "  %-12s %s %s: %s\n", e.Severity, e.Kind, where, e.Message)
	}
}

// severityCounts returns e.g. "3 entries (1 approximated, 2 unsupported)".
func severityCounts(entries []report.Entry) string {
	counts := map[report.Severity]int{}
	for _, e := range entries {
		counts[e.Severity]++
	}
	var parts []string
	for _, s := range []report.Severity{report.Invalid, report.Unsupported, report.Approximated, report.Ignored} {
		if counts[s] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", counts[s], s))
		}
	}
	noun := "entries"
	if len(entries) == 1 {
		noun = "entry"
	}
	return fmt.Sprintf("%d %s (%s)", len(entries), noun, strings.Join(parts, ", "))
}
