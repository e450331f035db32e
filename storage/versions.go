package storage

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/cockroachdb/pebble/v2"

	"github.com/weftsync/weft/crdt"
)

// Document versions. A cluster compares what servers hold without loading
// documents (cluster anti-entropy), so a writer that knows the version
// vector its write leaves in the store (the room does) passes it to
// AppendVersion or WriteSnapshotVersion, and the store records it in the
// same atomic batch as the data:
//
//	'v' esc(doc) → uvarint n, then n × (replica: 16 bytes, seq: uvarint),
//	               replicas in increasing order
//
// After a crash the recorded version is exactly what the data holds. A
// document written only through Append (no version known) has none, or
// the one recorded by its last versioned write; Versions reports what is
// recorded.
const tagVersion = 'v'

func versionKey(doc string) []byte {
	return appendDocID(append(make([]byte, 0, len(doc)+3), tagVersion), doc)
}

// encodeVersion is the value layout above; nil for a nil vector.
func encodeVersion(v crdt.VersionVector) []byte {
	if v == nil {
		return nil
	}
	keys := make([]crdt.ReplicaID, 0, len(v))
	for r, s := range v {
		if s > 0 {
			keys = append(keys, r)
		}
	}
	slices.SortFunc(keys, crdt.ReplicaID.Compare)
	b := make([]byte, 0, binary.MaxVarintLen64+len(keys)*(16+binary.MaxVarintLen64))
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, r := range keys {
		b = append(b, r[:]...)
		b = binary.AppendUvarint(b, v[r])
	}
	return b
}

func decodeVersion(doc string, b []byte) (crdt.VersionVector, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b))/17 {
		return nil, fmt.Errorf("%w: version of %q has a bad count", ErrCorrupt, doc)
	}
	b = b[k:]
	v := make(crdt.VersionVector, n)
	var prev crdt.ReplicaID
	for i := uint64(0); i < n; i++ {
		if len(b) < 17 {
			return nil, fmt.Errorf("%w: version of %q is truncated", ErrCorrupt, doc)
		}
		var r crdt.ReplicaID
		copy(r[:], b[:16])
		if i > 0 && bytes.Compare(prev[:], r[:]) >= 0 {
			return nil, fmt.Errorf("%w: version of %q has unordered replicas", ErrCorrupt, doc)
		}
		s, k := binary.Uvarint(b[16:])
		if k <= 0 || s == 0 {
			return nil, fmt.Errorf("%w: version of %q has a bad seq", ErrCorrupt, doc)
		}
		v[r], prev, b = s, r, b[16+k:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: version of %q has %d trailing bytes", ErrCorrupt, doc, len(b))
	}
	return v, nil
}

// setVersion adds the version record to a write batch (nothing when
// version is nil).
func setVersion(b *pebble.Batch, doc string, version []byte) error {
	if version == nil {
		return nil
	}
	return b.Set(versionKey(doc), version, nil)
}

// AppendVersion is Append that also records version: the version vector
// the document has in the store once batch is appended. Same contract as
// Append.
func (s *Store) AppendVersion(ctx context.Context, doc string, batch []byte, version crdt.VersionVector) (int64, error) {
	return s.append(ctx, doc, batch, encodeVersion(version))
}

// WriteSnapshotVersion is WriteSnapshot that also records version, the
// snapshot's version vector. Same contract as WriteSnapshot.
func (s *Store) WriteSnapshotVersion(ctx context.Context, doc string, snapshot []byte, version crdt.VersionVector) error {
	return s.writeSnapshot(ctx, doc, snapshot, encodeVersion(version))
}

// Versions calls fn with every document that has a recorded version, in
// id order, from a consistent point-in-time view. It reads only the small
// version records, never a document's data. fn owns the vector; an error
// from fn stops the scan and is returned.
func (s *Store) Versions(ctx context.Context, fn func(doc string, v crdt.VersionVector) error) error {
	end, err := s.begin("", false)
	if err != nil {
		return err
	}
	defer end()
	lo := []byte{tagVersion}
	it, err := s.db.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: lo, UpperBound: []byte{tagVersion + 1}})
	if err != nil {
		return fmt.Errorf("storage: versions: %w", err)
	}
	defer func() { _ = it.Close() }()
	for valid := it.First(); valid; valid = it.Next() {
		if err := ctx.Err(); err != nil {
			return err
		}
		doc, rest, err := decodeDocID(it.Key()[1:])
		if err != nil || len(rest) != 0 {
			return fmt.Errorf("%w: version key %x", ErrCorrupt, it.Key())
		}
		val, err := it.ValueAndErr()
		if err != nil {
			return fmt.Errorf("storage: versions: %w", err)
		}
		v, err := decodeVersion(doc, val)
		if err != nil {
			return err
		}
		if err := fn(doc, v); err != nil {
			return err
		}
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("storage: versions: %w", err)
	}
	return nil
}
