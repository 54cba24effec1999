// Package validate decides whether an AmeshPluginConfig may be sent to sidecars: its
// selector must parse and every plugin must be one APISIX knows, with a config that
// passes the plugin's APISIX schema. The reconciler reports the outcome in status and
// the gRPC server only distributes configs that pass, so both use this one function.
package validate

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
)

// Error says why a config was not accepted; Reason is a status condition reason.
type Error struct {
	Reason  string
	Message string
}

func (e *Error) Error() string { return e.Reason + ": " + e.Message }

// Selector returns the pod selector of spec; nil or empty selects everything.
func Selector(spec *v1alpha1.AmeshPluginConfigSpec) (labels.Selector, error) {
	if spec.Selector == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(spec.Selector)
}

// Spec checks what the CRD's OpenAPI schema cannot: the selector, unknown plugins and
// plugin configs against APISIX's schemas. It returns nil or an *Error.
func Spec(spec *v1alpha1.AmeshPluginConfigSpec) error {
	if _, err := Selector(spec); err != nil {
		return &Error{Reason: v1alpha1.ReasonInvalidSpec, Message: fmt.Sprintf("selector: %v", err)}
	}
	if len(spec.Plugins) == 0 {
		return &Error{Reason: v1alpha1.ReasonInvalidSpec, Message: "no plugins"}
	}
	seen := map[string]bool{}
	for _, p := range spec.Plugins {
		if seen[p.Name] {
			return &Error{Reason: v1alpha1.ReasonInvalidSpec, Message: fmt.Sprintf("plugin %s listed twice", p.Name)}
		}
		seen[p.Name] = true
		if schema.Own(p.Name) {
			return &Error{Reason: v1alpha1.ReasonInvalidSpec, Message: fmt.Sprintf("plugin %s is amesh's own: the translation sets it", p.Name)}
		}
		if !schema.KnownPlugin(p.Name) {
			return &Error{Reason: v1alpha1.ReasonUnknownPlugin, Message: fmt.Sprintf("unknown APISIX plugin %q", p.Name)}
		}
		if err := schema.ValidatePlugin(p.Name, ConfigJSON(&p)); err != nil {
			return &Error{Reason: v1alpha1.ReasonInvalidConfig, Message: err.Error()}
		}
	}
	return nil
}

// ConfigJSON returns a plugin's config as JSON; an absent config is an empty object.
func ConfigJSON(p *v1alpha1.Plugin) []byte {
	if p.Config == nil || len(p.Config.Raw) == 0 {
		return []byte("{}")
	}
	return p.Config.Raw
}
