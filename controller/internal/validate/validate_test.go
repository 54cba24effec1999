package validate

import (
	"errors"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
)

func plugin(name, conf string) v1alpha1.Plugin {
	p := v1alpha1.Plugin{Name: name}
	if conf != "" {
		p.Config = &apiextensionsv1.JSON{Raw: []byte(conf)}
	}
	return p
}

func TestSpec(t *testing.T) {
	tests := []struct {
		name   string
		spec   v1alpha1.AmeshPluginConfigSpec
		reason string // "" = accepted
	}{
		{"valid", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("limit-count", `{"count":1,"time_window":1}`)}}, ""},
		{"absent config is an empty object", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("cors", "")}}, ""},
		{"unknown plugin", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("nope", `{}`)}}, v1alpha1.ReasonUnknownPlugin},
		{"amesh's own plugin", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("amesh-original-dst", `{}`)}}, v1alpha1.ReasonInvalidSpec},
		{"config fails the schema", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("limit-count", `{"count":"x"}`)}}, v1alpha1.ReasonInvalidConfig},
		{"missing required field", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("limit-count", `{}`)}}, v1alpha1.ReasonInvalidConfig},
		{"duplicate plugin", v1alpha1.AmeshPluginConfigSpec{Plugins: []v1alpha1.Plugin{plugin("cors", ""), plugin("cors", "")}}, v1alpha1.ReasonInvalidSpec},
		{"no plugins", v1alpha1.AmeshPluginConfigSpec{}, v1alpha1.ReasonInvalidSpec},
		{"bad selector", v1alpha1.AmeshPluginConfigSpec{
			Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: "Near"}}},
			Plugins:  []v1alpha1.Plugin{plugin("cors", "")}}, v1alpha1.ReasonInvalidSpec},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Spec(&tt.spec)
			var ve *Error
			switch {
			case tt.reason == "" && err != nil:
				t.Errorf("rejected: %v", err)
			case tt.reason != "" && (!errors.As(err, &ve) || ve.Reason != tt.reason):
				t.Errorf("got %v, want reason %s", err, tt.reason)
			}
		})
	}
}

func TestSelector(t *testing.T) {
	all, err := Selector(&v1alpha1.AmeshPluginConfigSpec{})
	if err != nil || !all.Matches(labels.Set{"any": "thing"}) {
		t.Errorf("absent selector must select everything: %v %v", all, err)
	}
	empty, err := Selector(&v1alpha1.AmeshPluginConfigSpec{Selector: &metav1.LabelSelector{}})
	if err != nil || !empty.Matches(labels.Set{}) {
		t.Errorf("empty selector must select everything: %v %v", empty, err)
	}
	sel, err := Selector(&v1alpha1.AmeshPluginConfigSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}})
	if err != nil || !sel.Matches(labels.Set{"app": "a", "v": "1"}) || sel.Matches(labels.Set{"app": "b"}) {
		t.Errorf("matchLabels selector wrong: %v %v", sel, err)
	}
}
