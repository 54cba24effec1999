package dump

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/emptypb"

	// The extension types istiod sends are registered there; this package resolves them
	// like the client does.
	_ "github.com/amesh-dev/amesh/internal/xds/resource"
)

// Control planes add typed configs of their own whose Go types amesh does not link
// (Istio's ALPN filter's is registered by package resource). protojson fails on an Any it cannot resolve, so
// decoding goes through two steps:
//
//  1. stripUnknownAny rewrites every JSON object whose "@type" is not registered to
//     {"@type": url}, dropping its fields;
//  2. lenientResolver resolves such URLs to google.protobuf.Empty, which protojson accepts
//     without a "value" field. The Any keeps the original type URL and gets an empty value.
//
// Registered types decode strictly: unknown fields and bad values are errors.

// lenientResolver resolves registered types normally and everything else to Empty.
type lenientResolver struct{}

func (lenientResolver) FindMessageByName(n protoreflect.FullName) (protoreflect.MessageType, error) {
	return protoregistry.GlobalTypes.FindMessageByName(n)
}

func (lenientResolver) FindMessageByURL(url string) (protoreflect.MessageType, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if errors.Is(err, protoregistry.NotFound) {
		return (&emptypb.Empty{}).ProtoReflect().Type(), nil
	}
	return mt, err
}

func (lenientResolver) FindExtensionByName(n protoreflect.FullName) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByName(n)
}

func (lenientResolver) FindExtensionByNumber(m protoreflect.FullName, f protoreflect.FieldNumber) (protoreflect.ExtensionType, error) {
	return protoregistry.GlobalTypes.FindExtensionByNumber(m, f)
}

var unmarshalOpts = protojson.UnmarshalOptions{Resolver: lenientResolver{}}

// unmarshal decodes protojson data into m, tolerating unregistered Any types.
func unmarshal(data []byte, m proto.Message) error {
	data, err := stripUnknownAny(data)
	if err != nil {
		return err
	}
	return unmarshalOpts.Unmarshal(data, m)
}

// stripUnknownAny returns data with the fields of every object whose "@type" is not a
// registered type removed. data is returned unchanged when it has no such object.
func stripUnknownAny(data []byte) ([]byte, error) {
	if !bytes.Contains(data, []byte(`"@type"`)) {
		return data, nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep 64-bit integers exact
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %w", err)
	}
	if !strip(v) {
		return data, nil
	}
	return json.Marshal(v)
}

// strip rewrites v in place and reports whether it changed anything.
func strip(v any) bool {
	changed := false
	switch t := v.(type) {
	case map[string]any:
		if u, ok := t["@type"].(string); ok && len(t) > 1 {
			if _, err := protoregistry.GlobalTypes.FindMessageByURL(u); errors.Is(err, protoregistry.NotFound) {
				for k := range t {
					if k != "@type" {
						delete(t, k)
					}
				}
				return true
			}
		}
		for _, e := range t {
			if strip(e) {
				changed = true
			}
		}
	case []any:
		for _, e := range t {
			if strip(e) {
				changed = true
			}
		}
	}
	return changed
}

// UnmarshalJSON decodes protojson data into m like the loaders do: registered types
// strictly, Any values of unregistered types as an Any with that type URL and an empty
// value.
func UnmarshalJSON(data []byte, m proto.Message) error { return unmarshal(data, m) }
