package harness

import (
	"slices"
	"testing"
)

func TestPath(t *testing.T) {
	for _, tc := range []struct {
		obj  Object
		want string
	}{
		{Object{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "a", "namespace": "ns"}}, "/api/v1/namespaces/ns/services/a"},
		{Object{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"}}, "/api/v1/namespaces/default/pods/p"},
		{Object{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "x", "namespace": "ignored"}}, "/api/v1/namespaces/x"},
		{Object{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": map[string]any{"name": "e", "namespace": "d"}}, "/apis/discovery.k8s.io/v1/namespaces/d/endpointslices/e"},
		{Object{"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": map[string]any{"name": "r", "namespace": "d"}}, "/apis/networking.istio.io/v1/namespaces/d/destinationrules/r"},
		{Object{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": map[string]any{"name": "s", "namespace": "d"}}, "/apis/networking.istio.io/v1/namespaces/d/serviceentries/s"},
		{Object{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": map[string]any{"name": "a", "namespace": "d"}}, "/apis/security.istio.io/v1/namespaces/d/authorizationpolicies/a"},
		{Object{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": map[string]any{"name": "x.y"}}, "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x.y"},
		{Object{"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter", "metadata": map[string]any{"name": "f", "namespace": "d"}}, "/apis/networking.istio.io/v1alpha3/namespaces/d/envoyfilters/f"},
	} {
		got, err := Path(tc.obj)
		if err != nil || got != tc.want {
			t.Errorf("Path(%v) = %q, %v; want %q", tc.obj, got, err, tc.want)
		}
	}
	if _, err := Path(Object{"kind": "Pod"}); err == nil {
		t.Error("Path of an object without apiVersion and name: no error")
	}
}

func TestParseYAML(t *testing.T) {
	objs, err := ParseYAML([]byte("# comment\n---\napiVersion: v1\nkind: A\nmetadata: {name: a}\n---\n\n---\napiVersion: v1\nkind: B\nmetadata:\n  name: b\n  labels: {x: \"---\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o["kind"].(string))
	}
	if !slices.Equal(kinds, []string{"A", "B"}) {
		t.Errorf("kinds = %v, want [A B]", kinds)
	}
	if _, err := ParseYAML([]byte("a: [unclosed\n")); err == nil {
		t.Error("invalid YAML: no error")
	}
}
