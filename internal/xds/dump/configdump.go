package dump

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Type URLs of the config dump sections LoadConfigDump reads; the others (bootstrap,
// secrets, scoped routes, ...) are skipped without being decoded.
const (
	listenersDumpType = "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"
	routesDumpType    = "type.googleapis.com/envoy.admin.v3.RoutesConfigDump"
	clustersDumpType  = "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"
	endpointsDumpType = "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"
)

// LoadConfigDump reads an Envoy /config_dump document ({"configs": [...]}, as Envoy's
// admin endpoint and `istioctl proxy-config all -o json` print it; a bare array of
// configs is accepted too) and returns the resources Envoy had in force:
//   - listeners: static ones and the active_state of dynamic ones (warming and
//     draining listeners are not serving the configuration, so they are left out);
//   - route configurations and clusters: static and dynamic active ones;
//   - endpoints: dynamic ones, and static ones that an EDS cluster names (Envoy lists
//     the load assignments of STATIC clusters there too; those stay in the cluster).
//
// The endpoints section is only present when the dump was taken with ?include_eds.
// At most DefaultMaxBytes are read (LoadConfigDumpMax sets the limit).
func LoadConfigDump(r io.Reader) (*Resources, error) {
	return LoadConfigDumpMax(r, "config dump", DefaultMaxBytes)
}

// LoadConfigDumpMax is LoadConfigDump reading at most maxBytes (DefaultMaxBytes if
// <= 0) from r, which name describes in errors.
func LoadConfigDumpMax(r io.Reader, name string, maxBytes int64) (*Resources, error) {
	data, err := newBudget(maxBytes).read(r, name)
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	return parseConfigDump(data)
}

// LoadConfigDumpFile loads the config dump in the regular file at path (of at most
// maxBytes, DefaultMaxBytes if <= 0).
func LoadConfigDumpFile(path string, maxBytes int64) (*Resources, error) {
	data, err := ReadFile(path, maxBytes)
	if err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	}
	res, err := parseConfigDump(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return res, nil
}

func parseConfigDump(data []byte) (*Resources, error) {
	configs, err := splitConfigs(data)
	if err != nil {
		return nil, fmt.Errorf("dump: config dump: %w", err)
	}
	res := &Resources{}
	var staticCLAs []*endpointv3.ClusterLoadAssignment
	for i, raw := range configs {
		var head struct {
			Type string `json:"@type"`
		}
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("dump: config dump: configs[%d]: %w", i, err)
		}
		var section proto.Message
		switch head.Type {
		case listenersDumpType:
			section = &adminv3.ListenersConfigDump{}
		case routesDumpType:
			section = &adminv3.RoutesConfigDump{}
		case clustersDumpType:
			section = &adminv3.ClustersConfigDump{}
		case endpointsDumpType:
			section = &adminv3.EndpointsConfigDump{}
		default:
			continue
		}
		var a anypb.Any
		if err := unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("dump: config dump: configs[%d] (%s): %w", i, head.Type, err)
		}
		if err := a.UnmarshalTo(section); err != nil {
			return nil, fmt.Errorf("dump: config dump: configs[%d] (%s): %w", i, head.Type, err)
		}
		var serr error
		switch s := section.(type) {
		case *adminv3.ListenersConfigDump:
			serr = res.addListeners(s)
		case *adminv3.RoutesConfigDump:
			serr = res.addRoutes(s)
		case *adminv3.ClustersConfigDump:
			serr = res.addClusters(s)
		case *adminv3.EndpointsConfigDump:
			var st []*endpointv3.ClusterLoadAssignment
			st, serr = res.addEndpoints(s)
			staticCLAs = append(staticCLAs, st...)
		}
		if serr != nil {
			return nil, fmt.Errorf("dump: config dump: configs[%d] (%s): %w", i, head.Type, serr)
		}
	}
	res.addStaticEndpoints(staticCLAs)
	if err := res.checkUnique(); err != nil {
		return nil, fmt.Errorf("dump: config dump: %w", err)
	}
	res.sort()
	return res, nil
}

// splitConfigs returns the raw entries of the "configs" list.
func splitConfigs(data []byte) ([]json.RawMessage, error) {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '[' {
		var list []json.RawMessage
		if err := json.Unmarshal(data, &list); err != nil {
			return nil, err
		}
		return list, nil
	}
	var doc struct {
		Configs []json.RawMessage `json:"configs"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Configs == nil {
		return nil, errors.New(`no "configs" list: not an Envoy config dump`)
	}
	return doc.Configs, nil
}

func (r *Resources) addListeners(s *adminv3.ListenersConfigDump) error {
	for i, sl := range s.GetStaticListeners() {
		l := &listenerv3.Listener{}
		if err := sl.GetListener().UnmarshalTo(l); err != nil {
			return fmt.Errorf("static_listeners[%d]: %w", i, err)
		}
		r.Listeners = append(r.Listeners, l)
	}
	for i, dl := range s.GetDynamicListeners() {
		if dl.GetActiveState().GetListener() == nil {
			continue
		}
		l := &listenerv3.Listener{}
		if err := dl.GetActiveState().GetListener().UnmarshalTo(l); err != nil {
			return fmt.Errorf("dynamic_listeners[%d] (%s): %w", i, dl.GetName(), err)
		}
		r.Listeners = append(r.Listeners, l)
	}
	return nil
}

func (r *Resources) addRoutes(s *adminv3.RoutesConfigDump) error {
	for i, sr := range s.GetStaticRouteConfigs() {
		rc := &routev3.RouteConfiguration{}
		if err := sr.GetRouteConfig().UnmarshalTo(rc); err != nil {
			return fmt.Errorf("static_route_configs[%d]: %w", i, err)
		}
		r.RouteConfigs = append(r.RouteConfigs, rc)
	}
	for i, dr := range s.GetDynamicRouteConfigs() {
		rc := &routev3.RouteConfiguration{}
		if err := dr.GetRouteConfig().UnmarshalTo(rc); err != nil {
			return fmt.Errorf("dynamic_route_configs[%d]: %w", i, err)
		}
		r.RouteConfigs = append(r.RouteConfigs, rc)
	}
	return nil
}

func (r *Resources) addClusters(s *adminv3.ClustersConfigDump) error {
	for i, sc := range s.GetStaticClusters() {
		c := &clusterv3.Cluster{}
		if err := sc.GetCluster().UnmarshalTo(c); err != nil {
			return fmt.Errorf("static_clusters[%d]: %w", i, err)
		}
		r.Clusters = append(r.Clusters, c)
	}
	for i, dc := range s.GetDynamicActiveClusters() {
		c := &clusterv3.Cluster{}
		if err := dc.GetCluster().UnmarshalTo(c); err != nil {
			return fmt.Errorf("dynamic_active_clusters[%d]: %w", i, err)
		}
		r.Clusters = append(r.Clusters, c)
	}
	return nil
}

// addEndpoints adds the dynamic load assignments and returns the static ones.
func (r *Resources) addEndpoints(s *adminv3.EndpointsConfigDump) ([]*endpointv3.ClusterLoadAssignment, error) {
	for i, de := range s.GetDynamicEndpointConfigs() {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := de.GetEndpointConfig().UnmarshalTo(cla); err != nil {
			return nil, fmt.Errorf("dynamic_endpoint_configs[%d]: %w", i, err)
		}
		if cla.GetClusterName() == "" {
			return nil, fmt.Errorf("dynamic_endpoint_configs[%d]: cluster_name is empty", i)
		}
		r.Endpoints = append(r.Endpoints, cla)
	}
	var static []*endpointv3.ClusterLoadAssignment
	for i, se := range s.GetStaticEndpointConfigs() {
		cla := &endpointv3.ClusterLoadAssignment{}
		if err := se.GetEndpointConfig().UnmarshalTo(cla); err != nil {
			return nil, fmt.Errorf("static_endpoint_configs[%d]: %w", i, err)
		}
		static = append(static, cla)
	}
	return static, nil
}

// addStaticEndpoints keeps the static load assignments that an EDS cluster needs and
// that no dynamic one provides.
func (r *Resources) addStaticEndpoints(static []*endpointv3.ClusterLoadAssignment) {
	need := map[string]bool{}
	for _, c := range r.Clusters {
		if resource.IsEDS(c) {
			need[resource.EDSName(c)] = true
		}
	}
	for _, e := range r.Endpoints {
		delete(need, e.GetClusterName())
	}
	for _, cla := range static {
		if need[cla.GetClusterName()] {
			delete(need, cla.GetClusterName())
			r.Endpoints = append(r.Endpoints, cla)
		}
	}
}
