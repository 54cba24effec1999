package translate

import (
	"slices"
	"testing"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/report"
)

// Clusters with the same findings but for their names share one slice, and the
// report still names each cluster.
func TestClusterFindingsShared(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 3, Subsets: -1})
	tr := New(Options{})
	r := tr.Translate(m.Snapshot())
	names := m.EDSClusters()
	a, b := tr.clusters[names[0]].report, tr.clusters[names[1]].report
	if !a.shared || len(a.es) == 0 || &a.es[0] != &b.es[0] {
		t.Fatalf("the findings of %s and %s are not shared: %+v %+v", names[0], names[1], a, b)
	}
	for _, n := range names {
		if !slices.ContainsFunc(r.Report, func(e report.Entry) bool { return e.Kind == "cluster" && e.Resource == n }) {
			t.Errorf("the report has no finding for cluster %s", n)
		}
	}
	if slices.ContainsFunc(r.Report, func(e report.Entry) bool { return e.Resource == "" }) {
		t.Error("a finding without its resource reached the report")
	}
}

func TestShareReport(t *testing.T) {
	tr := New(Options{})
	entry := func(res, msg string) report.Entry {
		return report.Entry{Kind: "cluster", Resource: res, Field: "f", Severity: report.Unsupported, Message: msg}
	}
	a := tr.findings.share("a", []report.Entry{entry("a", "m")})
	b := tr.findings.share("b", []report.Entry{entry("b", "m")})
	if !a.shared || !b.shared || &a.es[0] != &b.es[0] {
		t.Fatalf("equal findings are not shared: %+v %+v", a, b)
	}
	// Another message, or a finding naming something else, is kept as is.
	if c := tr.findings.share("c", []report.Entry{entry("c", "m"), entry("c", "other")}); !c.shared || &c.es[0] == &a.es[0] {
		t.Fatalf("different findings: %+v", c)
	}
	own := []report.Entry{entry("d", "m"), entry("x", "m")}
	if d := tr.findings.share("d", own); d.shared || !slices.Equal(d.es, []report.Entry{entry("d", "m"), entry("x", "m")}) {
		t.Fatalf("findings naming another resource must be kept as they are: %+v", d)
	}
	for _, n := range []string{"a", "b"} {
		got := tr.findings.share(n, []report.Entry{entry(n, "m")}).appendTo(nil, n)
		if !slices.Equal(got, []report.Entry{entry(n, "m")}) {
			t.Fatalf("%s: appendTo = %+v", n, got)
		}
	}
	if (clusterFindings{}).equal(a) || !a.equal(b) {
		t.Fatal("equal: findings of different content compare equal, or shared ones unequal")
	}
}
