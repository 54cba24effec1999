package resource

// Unexported decoders, for the external tests (which need meshgen and dump, both of
// which import this package).
var (
	DecodeLoadAssignment      = decodeLoadAssignment
	DecodeLoadAssignmentWire  = decodeLoadAssignmentWire
	DecodeLoadAssignmentProto = decodeLoadAssignmentProto
)

// SetParallelRDSMin sets the size from which route configurations are decoded on
// every core, until the returned function restores it.
func SetParallelRDSMin(n int) (restore func()) {
	old := parallelRDSMin
	parallelRDSMin = n
	return func() { parallelRDSMin = old }
}
