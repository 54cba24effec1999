package dump

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// LoadDir loads a directory laid out like testdata/istiod/<mode>: subdirectories lds/,
// rds/, cds/ and eds/, each holding one protojson file (*.json) per resource. Missing
// subdirectories are empty; other files are ignored. It reads at most DefaultMaxBytes
// in all (LoadDirMax sets the limit), and only regular files.
//
// File names are the resource names with unsafe characters replaced, so they are not
// used as names, except that a ClusterLoadAssignment without cluster_name takes the EDS
// name of the cluster stored under the same file name in cds/.
func LoadDir(dir string) (*Resources, error) { return LoadDirMax(dir, DefaultMaxBytes) }

// LoadDirMax is LoadDir reading at most maxBytes in all (DefaultMaxBytes if <= 0).
func LoadDirMax(dir string, maxBytes int64) (*Resources, error) {
	if st, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("dump: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("dump: %s is not a directory", dir)
	}
	b := newBudget(maxBytes)
	load := func(sub string, newMsg func() proto.Message, add func(file string, m proto.Message) error) error {
		return loadFiles(b, dir, sub, newMsg, add)
	}
	r := &Resources{}
	err := load("lds", func() proto.Message { return &listenerv3.Listener{} }, func(_ string, m proto.Message) error {
		l := m.(*listenerv3.Listener)
		if l.GetName() == "" {
			return errors.New("listener has no name")
		}
		r.Listeners = append(r.Listeners, l)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = load("rds", func() proto.Message { return &routev3.RouteConfiguration{} }, func(_ string, m proto.Message) error {
		rc := m.(*routev3.RouteConfiguration)
		if rc.GetName() == "" {
			return errors.New("route configuration has no name")
		}
		r.RouteConfigs = append(r.RouteConfigs, rc)
		return nil
	})
	if err != nil {
		return nil, err
	}
	clusterByFile := map[string]*clusterv3.Cluster{}
	err = load("cds", func() proto.Message { return &clusterv3.Cluster{} }, func(file string, m proto.Message) error {
		c := m.(*clusterv3.Cluster)
		if c.GetName() == "" {
			return errors.New("cluster has no name")
		}
		clusterByFile[file] = c
		r.Clusters = append(r.Clusters, c)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = load("eds", func() proto.Message { return &endpointv3.ClusterLoadAssignment{} }, func(file string, m proto.Message) error {
		cla := m.(*endpointv3.ClusterLoadAssignment)
		if cla.GetClusterName() == "" {
			c := clusterByFile[file]
			if c == nil {
				return errors.New("cluster_name is empty and cds/ has no cluster in a file of the same name")
			}
			cla.ClusterName = resource.EDSName(c)
		}
		r.Endpoints = append(r.Endpoints, cla)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.checkUnique(); err != nil {
		return nil, fmt.Errorf("dump: %s: %w", dir, err)
	}
	r.sort()
	return r, nil
}

// loadFiles decodes every *.json file of dir/sub in name order and hands it to add.
func loadFiles(b *budget, dir, sub string, newMsg func() proto.Message, add func(file string, m proto.Message) error) error {
	entries, err := os.ReadDir(filepath.Join(dir, sub))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		path := filepath.Join(dir, sub, e.Name())
		data, err := b.readFile(path)
		if err != nil {
			return fmt.Errorf("dump: %w", err)
		}
		m := newMsg()
		if err := unmarshal(data, m); err != nil {
			return fmt.Errorf("dump: %s: decoding %s: %w", path, m.ProtoReflect().Descriptor().Name(), err)
		}
		if err := add(strings.TrimSuffix(e.Name(), ".json"), m); err != nil {
			return fmt.Errorf("dump: %s: %w", path, err)
		}
	}
	return nil
}

// checkUnique rejects two resources of one kind with the same name: a snapshot could
// only keep one of them, silently.
func (r *Resources) checkUnique() error {
	check := func(kind string, names []string) error {
		seen := make(map[string]bool, len(names))
		for _, n := range names {
			if seen[n] {
				return fmt.Errorf("two %s resources named %q", kind, n)
			}
			seen[n] = true
		}
		return nil
	}
	var ls, rs, cs, es []string
	for _, l := range r.Listeners {
		ls = append(ls, l.GetName())
	}
	for _, rc := range r.RouteConfigs {
		rs = append(rs, rc.GetName())
	}
	for _, c := range r.Clusters {
		cs = append(cs, c.GetName())
	}
	for _, e := range r.Endpoints {
		es = append(es, e.GetClusterName())
	}
	return errors.Join(check("listener", ls), check("route configuration", rs), check("cluster", cs), check("endpoints", es))
}
