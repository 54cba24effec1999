package resource

// Type URLs of the resources amesh subscribes to over ADS.
const (
	ListenerType    = "type.googleapis.com/envoy.config.listener.v3.Listener"
	RouteConfigType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	ClusterType     = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	EndpointType    = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)
