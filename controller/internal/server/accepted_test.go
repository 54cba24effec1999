package server

import (
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
)

func TestAcceptedCache(t *testing.T) {
	c := &v1alpha1.AmeshPluginConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "u1", Generation: 1},
		Spec: v1alpha1.AmeshPluginConfigSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}},
			Plugins:  []v1alpha1.Plugin{{Name: "cors"}},
		},
	}
	var ac acceptedCache
	a := ac.get(c)
	if a == nil || !a.selector.Matches(labels.Set{"app": "a"}) || a.selector.Matches(labels.Set{"app": "b"}) {
		t.Fatalf("accepted %+v", a)
	}
	if ac.get(c) != a {
		t.Error("same generation must reuse the cached result")
	}
	// A new generation is validated again: now rejected.
	c.Generation = 2
	c.Spec.Plugins = []v1alpha1.Plugin{{Name: "limit-count", Config: &apiextensionsv1.JSON{Raw: []byte(`{}`)}}}
	if got := ac.get(c); got != nil {
		t.Errorf("invalid generation 2 accepted: %+v", got)
	}
	ac.forget("u1")
	if len(ac.m) != 0 {
		t.Errorf("forget left %v", ac.m)
	}
}

// BenchmarkAcceptedCache measures what one stream pays per wake-up for a
// namespace's configs, cached (the normal case) against validating every time.
func BenchmarkAcceptedCache(b *testing.B) {
	c := &v1alpha1.AmeshPluginConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "c", UID: "u1", Generation: 1},
		Spec: v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{
			{Name: "limit-count", Config: &apiextensionsv1.JSON{Raw: []byte(`{"count":10,"time_window":60}`)}},
			{Name: "cors"},
		}},
	}
	b.Run("cached", func(b *testing.B) {
		var ac acceptedCache
		for b.Loop() {
			ac.get(c)
		}
	})
	b.Run("uncached", func(b *testing.B) {
		for b.Loop() {
			var ac acceptedCache
			ac.get(c)
		}
	})
}
