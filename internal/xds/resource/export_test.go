package resource

// Unexported decoders, for the external tests (which need meshgen and dump, both of
// which import this package).
var (
	DecodeLoadAssignment      = decodeLoadAssignment
	DecodeLoadAssignmentWire  = decodeLoadAssignmentWire
	DecodeLoadAssignmentProto = decodeLoadAssignmentProto
)
