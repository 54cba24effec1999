// Package v1alpha1 is the mesh.amesh.dev/v1alpha1 API: AmeshPluginConfig, which
// declares APISIX plugins for mesh workloads.
// +kubebuilder:object:generate=true
// +groupName=mesh.amesh.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "mesh.amesh.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types.
	// (apimachinery's builder keeps this package free of controller-runtime.)
	SchemeBuilder = runtime.NewSchemeBuilder(addKnownTypes)

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)

func addKnownTypes(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &AmeshPluginConfig{}, &AmeshPluginConfigList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
