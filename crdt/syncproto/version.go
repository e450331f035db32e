package syncproto

import (
	"errors"
	"fmt"
	"slices"

	"github.com/weftsync/weft/crdt"
)

// MaxVersionEntries bounds the replicas of one version vector that a
// receiver assembles from VersionPart messages and the subscribe or sync
// that ends them: a sender cannot make it hold more.
const MaxVersionEntries = 1 << 20

// ErrVersionTooLarge is wrapped when version parts announce more than
// MaxVersionEntries replicas.
var ErrVersionTooLarge = errors.New("syncproto: version vector too large")

// versionOverhead bounds what a version vector adds around its entries:
// array(2) and two array32 headers.
const versionOverhead = 1 + 5 + 5

// versionEntryBytes is the encoded size of one entry: a bin8 of 16 bytes
// and the seq as a msgpack uint.
func versionEntryBytes(seq uint64) int {
	n := 9
	switch {
	case seq < 1<<7:
		n = 1
	case seq < 1<<8:
		n = 2
	case seq < 1<<16:
		n = 3
	case seq < 1<<32:
		n = 5
	}
	return 2 + 16 + n
}

// SplitVersion cuts v into parts (in replica order) whose encoded size is
// at most maxBytes each (a part has at least one replica, whatever
// maxBytes). It returns one part, v itself, when v fits; otherwise the
// caller sends every part but the last as a VersionPart and the last in
// the Subscribe or Sync. The parts are new maps; v is not modified.
func SplitVersion(v crdt.VersionVector, maxBytes int) []crdt.VersionVector {
	size := versionOverhead
	for _, s := range v {
		size += versionEntryBytes(s)
	}
	if size <= maxBytes {
		return []crdt.VersionVector{v}
	}
	keys := make([]crdt.ReplicaID, 0, len(v))
	for r, s := range v {
		if s > 0 {
			keys = append(keys, r)
		}
	}
	slices.SortFunc(keys, crdt.ReplicaID.Compare)
	var parts []crdt.VersionVector
	cur, n := crdt.VersionVector{}, versionOverhead
	for _, r := range keys {
		e := versionEntryBytes(v[r])
		if len(cur) > 0 && n+e > maxBytes {
			parts = append(parts, cur)
			cur, n = crdt.VersionVector{}, versionOverhead
		}
		cur[r] = v[r]
		n += e
	}
	return append(parts, cur)
}

// versionMessages returns the messages that carry v with final (a
// Subscribe or Sync whose Version it sets): VersionParts first, each
// within maxBytes, then final with the last part.
func versionMessages(doc string, v crdt.VersionVector, maxBytes int, final Message) []Message {
	parts := SplitVersion(v, maxBytes)
	out := make([]Message, 0, len(parts))
	for _, p := range parts[:len(parts)-1] {
		out = append(out, &VersionPart{Doc: doc, Version: p})
	}
	last := parts[len(parts)-1]
	switch f := final.(type) {
	case *Subscribe:
		f.Version = last
	case *Sync:
		f.Version = last
	default:
		panic(fmt.Sprintf("syncproto: versionMessages with a %T", final))
	}
	return append(out, final)
}

// VersionParts assembles a version vector from VersionPart messages and the
// Subscribe or Sync that ends them, for a receiver that does not drive a
// Peer (a server session). The zero value is ready; it is not safe for
// concurrent use.
type VersionParts struct {
	v crdt.VersionVector
}

// Add merges a part. It fails, and forgets what it held, when the parts
// exceed MaxVersionEntries replicas.
func (vp *VersionParts) Add(part crdt.VersionVector) error {
	if vp.v == nil {
		vp.v = make(crdt.VersionVector, len(part))
	}
	vp.v.Merge(part)
	if len(vp.v) > MaxVersionEntries {
		vp.v = nil
		return fmt.Errorf("%w: more than %d replicas in version parts", ErrVersionTooLarge, MaxVersionEntries)
	}
	return nil
}

// Len returns the replicas held so far.
func (vp *VersionParts) Len() int { return len(vp.v) }

// Take merges last (the final message's version) and returns the whole
// vector, leaving vp empty. Without parts it returns last itself.
func (vp *VersionParts) Take(last crdt.VersionVector) (crdt.VersionVector, error) {
	if vp.v == nil {
		return last, nil
	}
	if err := vp.Add(last); err != nil {
		return nil, err
	}
	v := vp.v
	vp.v = nil
	return v, nil
}

// Reset forgets the parts held.
func (vp *VersionParts) Reset() { vp.v = nil }
