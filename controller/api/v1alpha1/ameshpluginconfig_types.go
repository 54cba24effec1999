package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types and reasons of AmeshPluginConfig.status.conditions.
const (
	// ConditionAccepted is True when every plugin is known and its config passes
	// APISIX's schema; only accepted configs are sent to sidecars.
	ConditionAccepted = "Accepted"
	// ConditionReady is True when the config is accepted and being served to the
	// sidecars of the pods it selects.
	ConditionReady = "Ready"

	ReasonAccepted      = "Accepted"
	ReasonUnknownPlugin = "UnknownPlugin"
	ReasonInvalidConfig = "InvalidPluginConfig"
	ReasonInvalidSpec   = "InvalidSpec"
	ReasonServing       = "Serving"
	ReasonNotAccepted   = "NotAccepted"
)

// AmeshPluginConfigSpec declares APISIX plugins for the pods it selects.
type AmeshPluginConfigSpec struct {
	// Selector selects pods of this namespace by label; empty or absent selects all.
	// +optional
	Selector *metav1.LabelSelector `json:"selector,omitempty"`

	// Scope narrows the config to some of the selected pods' routes.
	// +optional
	Scope *Scope `json:"scope,omitempty"`

	// Priority decides between configs that set the same plugin on a route: the
	// higher priority wins; on equal priority the config whose namespace/name sorts
	// first wins. A plugin that amesh translated from Istio config (fault-injection,
	// traffic-split, ...) is only replaced by a plugin with override: true.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=-1000
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Priority int32 `json:"priority"`

	// Plugins to add to the selected routes, by APISIX plugin name.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +listType=map
	// +listMapKey=name
	Plugins []Plugin `json:"plugins"`
}

// Scope narrows a config to routes. Every non-empty list must match a route.
type Scope struct {
	// Hosts: a route matches if one of its hosts is listed ("*.example.com" matches
	// subdomains).
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// Ports: a route matches if its destination port is listed.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	// +optional
	Ports []int32 `json:"ports,omitempty"`
	// Paths: a route matches if its uri is listed; a trailing "*" matches a prefix.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:Pattern=`^/`
	// +optional
	Paths []string `json:"paths,omitempty"`
	// Direction: Inbound matches the routes of requests to the pod, Outbound those of
	// requests the pod makes; absent matches both.
	// +kubebuilder:validation:Enum=Inbound;Outbound
	// +optional
	Direction Direction `json:"direction,omitempty"`
}

// Direction of traffic, seen from the pod.
type Direction string

// The directions a Scope can name.
const (
	Inbound  Direction = "Inbound"
	Outbound Direction = "Outbound"
)

// Plugin is one APISIX plugin.
type Plugin struct {
	// Name is the APISIX plugin name, e.g. limit-count.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`
	Name string `json:"name"`
	// Config is the plugin's configuration, as in an APISIX route's plugins.<name>.
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Config *apiextensionsv1.JSON `json:"config,omitempty"`
	// Override replaces a plugin of the same name that amesh translated from Istio
	// config; without it the translated plugin is kept.
	// +optional
	Override bool `json:"override,omitempty"`
}

// AmeshPluginConfigStatus is the observed state.
type AmeshPluginConfigStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// MatchedPods is how many running pods the selector selects.
	// +optional
	MatchedPods int32 `json:"matchedPods"`
	// Conditions: Accepted and Ready.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AmeshPluginConfig adds APISIX plugins to the routes of selected mesh workloads.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=apc,categories=amesh
// +kubebuilder:printcolumn:name="Accepted",type=string,JSONPath=`.status.conditions[?(@.type=="Accepted")].status`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Pods",type=integer,JSONPath=`.status.matchedPods`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type AmeshPluginConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   AmeshPluginConfigSpec   `json:"spec"`
	Status AmeshPluginConfigStatus `json:"status,omitempty"`
}

// AmeshPluginConfigList is a list of AmeshPluginConfig.
// +kubebuilder:object:root=true
type AmeshPluginConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AmeshPluginConfig `json:"items"`
}
