package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/dump"
)

func runTranslate(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("translate", stderr)
	dir := fs.String("dir", "", "directory of xDS resources, one protojson file per resource in lds/, rds/, cds/, eds/ (the layout of testdata/istiod/sotw)")
	configDump := fs.String("config-dump", "", "Envoy /config_dump JSON file (istioctl proxy-config all -o json); - reads stdin")
	format := fs.String("format", "yaml", "output format: yaml (conf/apisix.yaml) or json (conf/apisix.json)")
	out := fs.String("o", "", "write the APISIX configuration to this file (atomically) instead of stdout")
	origDst := fs.String("original-dst-var", "", "nginx variable holding the original destination port (default connection_original_dst)")
	logLevel := logLevelFlag(fs, "warn")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: amesh translate (-dir DIR | -config-dump FILE) [flags]")
		fmt.Fprintln(fs.Output(), "\nTranslates recorded xDS into APISIX's standalone configuration, printed on stdout;")
		fmt.Fprintln(fs.Output(), "what could not be translated faithfully is listed on stderr.")
		fs.PrintDefaults()
	}
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if _, err := newLogger(stderr, *logLevel); err != nil {
		return fail(stderr, "translate", err)
	}
	f, err := file.ParseFormat(*format)
	if err != nil {
		return fail(stderr, "translate", err)
	}
	if (*dir == "") == (*configDump == "") {
		return fail(stderr, "translate", errors.New("give exactly one of -dir or -config-dump"))
	}
	res, err := load(*dir, *configDump)
	if err != nil {
		return fail(stderr, "translate", err)
	}
	// A fresh translator's first change set is its complete output.
	result := translate.New(translate.Options{OriginalDstVar: *origDst}).Translate(res.Snapshot())
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
	return 0
}

func load(dir, configDump string) (*dump.Resources, error) {
	if dir != "" {
		return dump.LoadDir(dir)
	}
	if configDump == "-" {
		return dump.LoadConfigDump(os.Stdin)
	}
	fh, err := os.Open(configDump)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	res, err := dump.LoadConfigDump(fh)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", configDump, err)
	}
	return res, nil
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
		fmt.Fprintf(w, "  %-12s %s %s: %s: %s\n", e.Severity, e.Kind, e.Resource, e.Field, e.Message)
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
