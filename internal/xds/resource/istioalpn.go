package resource

// Istio's ALPN override filter (istio.alpn, in every outbound HTTP connection manager
// istiod sends a sidecar): for each upstream HTTP protocol, the ALPN list Envoy offers
// upstream instead of the TLS context's. The peer's inbound listener picks its mTLS HTTP
// chain by it. Its Go type lives in istio.io/api, which amesh does not link; the
// message is small, so its descriptor is built here and registered, so that the
// config decodes like any other (UnpackFilterConfig, protojson in dumps).
//
//	message FilterConfig {
//	  enum Protocol { HTTP10 = 0; HTTP11 = 1; HTTP2 = 2; }
//	  message AlpnOverride {
//	    Protocol upstream_protocol = 1;
//	    repeated string alpn_override = 2;
//	  }
//	  repeated AlpnOverride alpn_override = 1;
//	}

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/anypb"
)

// IstioALPNType is the filter config's message name.
const IstioALPNType = "istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig"

var istioALPNDesc protoreflect.MessageDescriptor

func init() {
	opt := descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum()
	rep := descriptorpb.FieldDescriptorProto_LABEL_REPEATED.Enum()
	fd := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("envoy/config/filter/http/alpn/v2alpha1/config.proto"),
		Package: proto.String("istio.envoy.config.filter.http.alpn.v2alpha1"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{{
			Name: proto.String("FilterConfig"),
			EnumType: []*descriptorpb.EnumDescriptorProto{{
				Name: proto.String("Protocol"),
				Value: []*descriptorpb.EnumValueDescriptorProto{
					{Name: proto.String("HTTP10"), Number: proto.Int32(0)},
					{Name: proto.String("HTTP11"), Number: proto.Int32(1)},
					{Name: proto.String("HTTP2"), Number: proto.Int32(2)},
				},
			}},
			NestedType: []*descriptorpb.DescriptorProto{{
				Name: proto.String("AlpnOverride"),
				Field: []*descriptorpb.FieldDescriptorProto{
					{Name: proto.String("upstream_protocol"), JsonName: proto.String("upstreamProtocol"), Number: proto.Int32(1), Label: opt,
						Type: descriptorpb.FieldDescriptorProto_TYPE_ENUM.Enum(), TypeName: proto.String(".istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig.Protocol")},
					{Name: proto.String("alpn_override"), JsonName: proto.String("alpnOverride"), Number: proto.Int32(2), Label: rep,
						Type: descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()},
				},
			}},
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("alpn_override"), JsonName: proto.String("alpnOverride"), Number: proto.Int32(1), Label: rep,
					Type: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE.Enum(), TypeName: proto.String(".istio.envoy.config.filter.http.alpn.v2alpha1.FilterConfig.AlpnOverride")},
			},
		}},
	}
	if _, err := protoregistry.GlobalTypes.FindMessageByName(IstioALPNType); err == nil {
		return // linked from istio.io/api after all
	}
	f, err := protodesc.NewFile(fd, protoregistry.GlobalFiles)
	if err != nil {
		panic("resource: Istio ALPN filter descriptor: " + err.Error())
	}
	istioALPNDesc = f.Messages().ByName("FilterConfig")
	if err := protoregistry.GlobalFiles.RegisterFile(f); err != nil {
		panic("resource: register Istio ALPN filter file: " + err.Error())
	}
	if err := protoregistry.GlobalTypes.RegisterMessage(dynamicpb.NewMessageType(istioALPNDesc)); err != nil {
		panic("resource: register Istio ALPN filter type: " + err.Error())
	}
}

// IstioALPN returns the ALPN list Istio's ALPN filter config a sets for upstream
// protocol HTTP/1.1, nil when it sets none or does not decode.
func IstioALPN(a *anypb.Any) []string {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(IstioALPNType)
	if err != nil {
		return nil
	}
	m := mt.New().Interface()
	if err := UnpackFilterConfig(a, m); err != nil {
		return nil
	}
	d := m.ProtoReflect().Descriptor()
	overrides := m.ProtoReflect().Get(d.Fields().ByNumber(1)).List()
	var out []string
	for i := 0; i < overrides.Len(); i++ {
		o := overrides.Get(i).Message()
		od := o.Descriptor()
		if o.Get(od.Fields().ByNumber(1)).Enum() != 1 { // HTTP11
			continue
		}
		list := o.Get(od.Fields().ByNumber(2)).List()
		out = make([]string, 0, list.Len())
		for j := 0; j < list.Len(); j++ {
			out = append(out, list.Get(j).String())
		}
	}
	return out
}
