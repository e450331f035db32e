package codec

import "github.com/weftsync/weft/crdt"

// Chunk is a run of consecutive changes and its encoding.
type Chunk struct {
	Changes []crdt.Change
	Data    []byte // EncodeChanges(Changes)
}

// EncodeChunks encodes changes as consecutive batches that each decode:
// at most MaxChanges changes and MaxOps ops, and at most maxBytes bytes
// unless a single change is larger (it then goes alone, and the receiver
// refuses it if it exceeds its frame limit). Order is kept, so chunks sent
// in order arrive causally ordered. maxBytes ≤ 0 means no byte limit.
//
// NB: splitting by bytes alone is not enough: run-length columns let a
// small batch hold more than MaxOps ops, and DecodeChanges refuses those.
func EncodeChunks(changes []crdt.Change, maxBytes int) []Chunk {
	var out []Chunk
	start, ops := 0, 0
	for i := range changes {
		n := len(changes[i].Ops)
		if i > start && (ops+n > opsLimit || i-start >= changesLimit) {
			out = appendChunks(out, changes[start:i], maxBytes)
			start, ops = i, 0
		}
		ops += n
	}
	if start < len(changes) {
		out = appendChunks(out, changes[start:], maxBytes)
	}
	return out
}

// appendChunks encodes changes, halving until each part fits maxBytes.
func appendChunks(out []Chunk, changes []crdt.Change, maxBytes int) []Chunk {
	b := EncodeChanges(changes)
	if maxBytes <= 0 || len(b) <= maxBytes || len(changes) == 1 {
		return append(out, Chunk{Changes: changes, Data: b})
	}
	h := len(changes) / 2
	out = appendChunks(out, changes[:h], maxBytes)
	return appendChunks(out, changes[h:], maxBytes)
}
