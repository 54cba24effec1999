// Package v1alpha1 is the mesh.amesh.dev/v1alpha1 API: AmeshPluginConfig, which
// declares APISIX plugins for mesh workloads.
// +kubebuilder:object:generate=true
// +groupName=mesh.amesh.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of this API.
	GroupVersion = schema.GroupVersion{Group: "mesh.amesh.dev", Version: "v1alpha1"}

	// SchemeBuilder registers this API's types.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds this API's types to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
