package install_test

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestControllerMatchesConfig: with controller.enabled and its defaults, the chart installs
// exactly the objects of config/ (`kubectl apply -k config`), so the two ways to install
// amesh-controller cannot drift apart.
func TestControllerMatchesConfig(t *testing.T) {
	r := renderChart(t, chartDir, "amesh", "istio-system", map[string]any{"controller": map[string]any{"enabled": true}})
	var kust struct {
		Resources []string `json:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "config", "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &kust); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, res := range kust.Resources {
		data, err := os.ReadFile(filepath.Join(repoRoot, "config", res))
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range parseObjects(t, res, data) {
			n++
			got := r.find(t, want["kind"].(string), str(want, "metadata", "name"))
			got = normalize(got)
			if !reflect.DeepEqual(got, normalize(want)) {
				gb, _ := yaml.Marshal(got)
				wb, _ := yaml.Marshal(want)
				t.Errorf("%s %s differs from config/%s:\nchart:\n%s\nconfig:\n%s", want["kind"], str(want, "metadata", "name"), res, gb, wb)
			}
		}
	}
	if controllerObjects := len(r.objects) - 1; controllerObjects != n { // minus the injection template
		t.Errorf("the chart installs %d controller objects, config/ has %d", controllerObjects, n)
	}
}

// normalize drops what the chart adds on purpose: the image pull policy (a value).
func normalize(o object) object {
	b, _ := yaml.Marshal(o)
	var c object
	_ = yaml.Unmarshal(b, &c)
	if c["kind"] == "Deployment" {
		for _, ctr := range at(c, "spec", "template", "spec", "containers").([]any) {
			delete(ctr.(map[string]any), "imagePullPolicy")
		}
	}
	return c
}
