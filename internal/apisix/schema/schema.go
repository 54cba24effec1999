// Package schema validates APISIX objects against APISIX's own JSON schemas (APISIX
// 3.18, draft-04, embedded from schemas/; see schemas/README.md for their origin and
// how they differ from APISIX's Lua validator). APISIX drops an object that fails its
// schema, with only an error log, so amesh checks everything it writes in tests and
// the controller checks user plugin configs before they reach a sidecar.
//
// The schemas are compiled once, on first use; all functions are safe for concurrent use.
package schema

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// validID is APISIX's id_schema string form (schema_def.id_schema).
var validID = regexp.MustCompile(`^[a-zA-Z0-9-_.]{1,64}$`)

//go:embed schemas/*.json schemas/plugins/*.json schemas/stream_plugins/*.json schemas/plugin_metadata/*.json
var files embed.FS

// Plugin schemas by directory: APISIX loads HTTP plugins (apisix/plugins) and stream
// plugins (apisix/stream/plugins) apart, and a name may be both with different
// schemas, so routes and stream routes are checked against their own set.
const (
	pluginDir       = "schemas/plugins/"
	streamPluginDir = "schemas/stream_plugins/"
	// metadataDir holds the schemas of the plugin metadata amesh writes
	// ("/plugin_metadata/<plugin>"), by plugin.
	metadataDir = "schemas/plugin_metadata/"
)

// kindFiles maps the kind segment of a shared-dict key ("/routes/<id>") to its schema.
var kindFiles = map[string]string{
	"routes":          "route.json",
	"upstreams":       "upstream.json",
	"services":        "service.json",
	"plugin_configs":  "plugin_config.json",
	"global_rules":    "global_rule.json",
	"ssls":            "ssl.json",
	"stream_routes":   "stream_route.json",
	"consumers":       "consumer.json",
	"consumer_groups": "consumer_group.json",
	"credentials":     "credential.json",
	"protos":          "proto.json",
}

type compiled struct {
	kinds         map[string]*jsonschema.Schema
	plugins       pluginSet
	streamPlugins pluginSet
	metadata      pluginSet
}

// pluginSet is the schemas of one kind of plugin.
type pluginSet struct {
	what    string // "plugin", "stream plugin"
	schemas map[string]*jsonschema.Schema
	names   []string // sorted
}

// validate validates v against the schema of plugin name.
func (ps *pluginSet) validate(name string, v any) error {
	sch, ok := ps.schemas[name]
	if !ok {
		return fmt.Errorf("%s %s: unknown %s (known: %s)", ps.what, name, ps.what, strings.Join(ps.names, ", "))
	}
	if err := sch.Validate(v); err != nil {
		return fmt.Errorf("%s %s: %w", ps.what, name, err)
	}
	return nil
}

var (
	once   sync.Once
	schema *compiled
	// loadErr is set when the embedded schemas do not compile: a build defect that
	// every validation then reports.
	loadErr error
)

func load() (*compiled, error) {
	once.Do(func() { schema, loadErr = compile() })
	return schema, loadErr
}

func compile() (*compiled, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft4)
	c.AssertFormat()
	urls := map[string]string{} // embedded path -> resource URL
	err := fs.WalkDir(files, "schemas", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".json") {
			return err
		}
		data, err := files.ReadFile(p)
		if err != nil {
			return err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		u := "mem:///" + p
		if err := c.AddResource(u, doc); err != nil {
			return err
		}
		urls[p] = u
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("schema: loading embedded schemas: %w", err)
	}
	out := &compiled{kinds: map[string]*jsonschema.Schema{},
		plugins:       pluginSet{what: "plugin", schemas: map[string]*jsonschema.Schema{}},
		streamPlugins: pluginSet{what: "stream plugin", schemas: map[string]*jsonschema.Schema{}},
		metadata:      pluginSet{what: "plugin metadata", schemas: map[string]*jsonschema.Schema{}}}
	for kind, file := range kindFiles {
		s, err := c.Compile(urls[path.Join("schemas", file)])
		if err != nil {
			return nil, fmt.Errorf("schema: compiling %s: %w", file, err)
		}
		out.kinds[kind] = s
	}
	for p, u := range urls {
		dir, file := path.Split(p)
		set := map[string]*pluginSet{pluginDir: &out.plugins, streamPluginDir: &out.streamPlugins, metadataDir: &out.metadata}[dir]
		if set == nil {
			continue
		}
		name := strings.TrimSuffix(file, ".json")
		s, err := c.Compile(u)
		if err != nil {
			return nil, fmt.Errorf("schema: compiling %s %s: %w", set.what, name, err)
		}
		set.schemas[name] = s
		set.names = append(set.names, name)
	}
	sort.Strings(out.plugins.names)
	sort.Strings(out.streamPlugins.names)
	sort.Strings(out.metadata.names)
	return out, nil
}

// Plugins returns the names of the plugins whose schemas are known, sorted.
func Plugins() []string {
	s, err := load()
	if err != nil {
		return nil
	}
	return append([]string(nil), s.plugins.names...)
}

// KnownPlugin reports whether name is a plugin with a known schema.
func KnownPlugin(name string) bool {
	s, err := load()
	if err != nil {
		return false
	}
	_, ok := s.plugins.schemas[name]
	return ok
}

// Own reports whether name is one of amesh's own plugins (lua/apisix/plugins): the
// translation sets them where Envoy's configuration needs them; user configuration
// must not, since their settings decide where requests go (a route to the original
// destination without its source address would be captured again).
func Own(name string) bool { return strings.HasPrefix(name, "amesh-") }

// ValidatePlugin validates one plugin's configuration (the value of plugins.<name>).
func ValidatePlugin(name string, conf []byte) error {
	v, err := decode(conf)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", name, err)
	}
	return validatePlugin(name, v)
}

func validatePlugin(name string, v any) error {
	s, err := load()
	if err != nil {
		return err
	}
	return s.plugins.validate(name, v)
}

// validateStreamPlugin is validatePlugin for a stream route's plugin.
func validateStreamPlugin(name string, v any) error {
	s, err := load()
	if err != nil {
		return err
	}
	return s.streamPlugins.validate(name, v)
}

// Validate validates obj, the JSON value stored under key (e.g. "/routes/r1"), against
// the schema of the key's kind, then each plugins.<name> value against that plugin's
// schema (a stream route's against the stream plugin's; an unknown plugin is an error), then the checks APISIX makes in code on
// upstreams (see checkUpstream). An "id" in obj must equal the key's id.
func Validate(key string, obj []byte) error {
	kind, id, ok := splitKey(key)
	if !ok {
		return fmt.Errorf("%s: not a key of the form /<kind>/<id>", key)
	}
	if !validID.MatchString(id) {
		return fmt.Errorf("%s: id %q is not a valid APISIX id (^[a-zA-Z0-9-_.]+$, at most 64 characters)", key, id)
	}
	s, err := load()
	if err != nil {
		return err
	}
	v, err := decode(obj)
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if kind == "plugin_metadata" {
		// a plugin's metadata has that plugin's metadata schema, and no plugins
		if err := s.metadata.validate(id, v); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	} else {
		sch, ok := s.kinds[kind]
		if !ok {
			return fmt.Errorf("%s: unknown kind %q", key, kind)
		}
		if err := sch.Validate(v); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	m, _ := v.(map[string]any) // every kind's and metadata's schema requires an object
	if oid, ok := m["id"].(string); ok && oid != id {
		return fmt.Errorf("%s: id %q differs from the key's id %q", key, oid, id)
	}
	if err := validatePlugins(kind, m); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	if err := checkUpstreams(kind, m); err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	return nil
}

func splitKey(key string) (kind, id string, ok bool) {
	rest, ok := strings.CutPrefix(key, "/")
	if !ok {
		return "", "", false
	}
	kind, id, ok = strings.Cut(rest, "/")
	return kind, id, ok && kind != "" && id != ""
}

func validatePlugins(kind string, obj map[string]any) error {
	plugins, _ := obj["plugins"].(map[string]any)
	if len(plugins) == 0 {
		return nil
	}
	check := validatePlugin
	if kind == "stream_routes" {
		// Stream routes run APISIX's stream plugins; only those with an embedded
		// schema pass (the rest are refused rather than passed unchecked).
		check = validateStreamPlugin
	}
	names := make([]string, 0, len(plugins))
	for n := range plugins {
		names = append(names, n)
	}
	sort.Strings(names) // report the first failure deterministically
	for _, n := range names {
		if err := check(n, plugins[n]); err != nil {
			return err
		}
	}
	return nil
}

func decode(b []byte) (any, error) {
	dec := bytes.NewReader(b)
	v, err := jsonschema.UnmarshalJSON(dec)
	if err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	return v, nil
}
