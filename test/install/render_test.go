package install_test

import (
	"bytes"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"sigs.k8s.io/yaml"
)

// object is one Kubernetes object of a rendered chart, as generic JSON.
type object = map[string]any

// rendered is a chart rendered the way `helm template` renders it: the objects of every
// template (in file name order) and of crds/.
type rendered struct {
	objects []object
}

// renderChart renders the chart in dir as release name in namespace with vals (merged over
// the chart's values.yaml, as `helm install -f` does).
func renderChart(t *testing.T, dir, name, namespace string, vals map[string]any) rendered {
	t.Helper()
	chrt, err := loader.Load(dir)
	if err != nil {
		t.Fatalf("load chart %s: %v", dir, err)
	}
	return renderLoaded(t, chrt, name, namespace, vals)
}

func renderLoaded(t *testing.T, chrt *chartv2.Chart, name, namespace string, vals map[string]any) rendered {
	t.Helper()
	caps := *common.DefaultCapabilities
	rv, err := commonutil.ToRenderValues(chrt, vals, common.ReleaseOptions{Name: name, Namespace: namespace, IsInstall: true}, &caps)
	if err != nil {
		t.Fatalf("values for %s: %v", chrt.Metadata.Name, err)
	}
	files, err := engine.Render(chrt, rv)
	if err != nil {
		t.Fatalf("render %s: %v", chrt.Metadata.Name, err)
	}
	names := make([]string, 0, len(files))
	for f := range files {
		if strings.HasSuffix(f, ".yaml") || strings.HasSuffix(f, ".yml") {
			names = append(names, f)
		}
	}
	sort.Strings(names)
	var r rendered
	for _, f := range names {
		r.objects = append(r.objects, parseObjects(t, f, []byte(files[f]))...)
	}
	for _, crd := range chrt.CRDObjects() {
		r.objects = append(r.objects, parseObjects(t, crd.Filename, crd.File.Data)...)
	}
	return r
}

// parseObjects splits a multi-document YAML file into objects, skipping empty documents.
func parseObjects(t *testing.T, name string, data []byte) []object {
	t.Helper()
	var out []object
	for _, doc := range bytes.Split(data, []byte("\n---")) {
		var o object
		if err := yaml.Unmarshal(doc, &o); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, doc)
		}
		if len(o) > 0 {
			out = append(out, o)
		}
	}
	return out
}

// find returns the rendered object of kind and name, failing the test when there is none.
func (r rendered) find(t *testing.T, kind, name string) object {
	t.Helper()
	for _, o := range r.objects {
		if o["kind"] == kind && str(o, "metadata", "name") == name {
			return o
		}
	}
	t.Fatalf("no %s %q among the rendered objects", kind, name)
	return nil
}

// str reads a string at path in o ("" when absent).
func str(o map[string]any, path ...string) string {
	var cur any = o
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	s, _ := cur.(string)
	return s
}

var chartDir = filepath.Join("..", "..", "charts", "amesh")
