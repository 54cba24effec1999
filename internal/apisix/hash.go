package apisix

import "hash/maphash"

// Holders of the output (the translator, the agent) keep a 64-bit digest per object
// instead of its JSON: the JSON is most of the output and already lives in the sink (nginx's shared memory, or the file), and a digest is all that deciding
// "did this object change?" needs.

// hashSeed is chosen per process: digests are only compared within one process, and a
// random seed means no input can be crafted to collide.
var hashSeed = maphash.MakeSeed()

// Hash returns the digest of an object's JSON. Equal bytes give equal digests within a
// process; different bytes collide with probability 2^-64.
func Hash(b []byte) uint64 { return maphash.Bytes(hashSeed, b) }

// ApplyTo brings objects (the state before c) to the state after c. Values are shared
// with c, not copied.
func (c *ChangeSet) ApplyTo(objects map[string][]byte) {
	for _, k := range c.Delete {
		delete(objects, k)
	}
	for k, v := range c.Put {
		objects[k] = v
	}
}
