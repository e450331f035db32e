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
//	'v' esc(doc)           → the snapshot's version: uvarint n, then
//	                         n × (replica: 16 bytes, seq: uvarint),
//	                         replicas in increasing order
//	'w' esc(doc) be64(seq) → what log batch seq raises, same layout
//
// A document's version is the entry-wise maximum of its 'v' record and of
// the 'w' records of the batches appended since. A batch's record holds
// only the replicas it raises (a keystroke: one), not the whole vector:
// with one replica per editor, writing the whole vector with every batch
// cost every keystroke bytes in proportion to the document's writers (3
// KB at 150 editors, 30 times the batch itself, through the WAL and the
// memtable). WriteSnapshotVersion deletes the 'w' records with the log
// and writes 'v' whole. So after a crash the recorded version is exactly
// what the data holds. A document written only through Append (no
// version known) has none, or the one recorded by its versioned writes;
// Versions reports what is recorded. (A binary from before the 'w'
// records reads only 'v', a version older than the data: anti-entropy
// then fetches what it thinks is missing, and the duplicates are no-ops.)
const (
	tagVersion      = 'v'
	tagVersionDelta = 'w'
)

func versionKey(doc string) []byte {
	return appendDocID(append(make([]byte, 0, len(doc)+3), tagVersion), doc)
}

// deltaKey is the key of the version record of doc's log batch seq.
func deltaKey(doc string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(appendDocID(append(make([]byte, 0, len(doc)+11), tagVersionDelta), doc), seq)
}

// deltaSpan covers every batch version record of doc.
func deltaSpan(doc string) (start, end []byte) {
	p := appendDocID(append(make([]byte, 0, len(doc)+3), tagVersionDelta), doc)
	// Every id's escape ends with 0x00 0x01 and no other id's escape
	// starts with it, so p's keys are exactly those between p and p with
	// its last byte raised.
	end = append(p[:len(p):len(p)], 0)
	end[len(end)-2]++
	return p, end[:len(end)-1]
}

// encodeVersion is the value layout above; nil for a nil vector.
func encodeVersion(v crdt.VersionVector) []byte { return appendVersion(nil, v) }

// smallVersionBytes fits the encoding of a vector of up to two replicas
// (a batch's record usually names one), so AppendVersion can encode into
// a stack buffer rather than allocate per write.
const smallVersionBytes = binary.MaxVarintLen64 + 2*(16+binary.MaxVarintLen64)

// appendVersion appends v's encoding to b (nil for a nil vector).
func appendVersion(b []byte, v crdt.VersionVector) []byte {
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
	b = slices.Grow(b[:0], binary.MaxVarintLen64+len(keys)*(16+binary.MaxVarintLen64))
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

// setVersion adds the snapshot's version record to a write batch, and
// deletes the batches' records it replaces (nothing when version is nil).
func setVersion(b *pebble.Batch, doc string, version []byte) error {
	if version == nil {
		return nil
	}
	lo, hi := deltaSpan(doc)
	if err := b.DeleteRange(lo, hi, nil); err != nil {
		return err
	}
	return b.Set(versionKey(doc), version, nil)
}

// setDelta adds log batch seq's version record to a write batch (nothing
// when version is nil).
func setDelta(b *pebble.Batch, doc string, seq uint64, version []byte) error {
	if version == nil {
		return nil
	}
	return b.Set(deltaKey(doc, seq), version, nil)
}

// AppendVersion is Append that also records version: what the document
// holds in the store once batch is appended is the entry-wise maximum of
// what it held and version. The ends of the batch's changes are enough
// (the replicas it raises); the whole vector after it is correct too, and
// costs bytes per writer. Same contract as Append.
func (s *Store) AppendVersion(ctx context.Context, doc string, batch []byte, version crdt.VersionVector) (int64, error) {
	var vb [smallVersionBytes]byte
	return s.append(ctx, doc, batch, appendVersion(vb[:0], version))
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
	if err := s.begin("", false); err != nil {
		return err
	}
	defer s.end("", false)
	// One view for both scans, so that a snapshot written meanwhile (it
	// moves 'w' records into 'v') is seen on both sides or on neither.
	snap := s.db.NewSnapshot()
	defer func() { _ = snap.Close() }()
	scan := func(tag byte) (*versionScan, error) {
		it, err := snap.NewIterWithContext(ctx, &pebble.IterOptions{LowerBound: []byte{tag}, UpperBound: []byte{tag + 1}})
		if err != nil {
			return nil, fmt.Errorf("storage: versions: %w", err)
		}
		vs := &versionScan{it: it, delta: tag == tagVersionDelta}
		vs.valid = it.First()
		return vs, vs.read()
	}
	base, err := scan(tagVersion)
	if base != nil {
		defer base.close()
	}
	if err != nil {
		return err
	}
	deltas, err := scan(tagVersionDelta)
	if deltas != nil {
		defer deltas.close()
	}
	if err != nil {
		return err
	}
	// Both scans run in document order: merge them.
	for base.valid || deltas.valid {
		if err := ctx.Err(); err != nil {
			return err
		}
		var doc string
		switch {
		case !deltas.valid || base.valid && base.doc <= deltas.doc:
			doc = base.doc
		default:
			doc = deltas.doc
		}
		var v crdt.VersionVector
		if base.valid && base.doc == doc {
			v = base.v
			if err := base.next(); err != nil {
				return err
			}
		}
		for deltas.valid && deltas.doc == doc {
			if v == nil {
				v = make(crdt.VersionVector, len(deltas.v))
			}
			v.Merge(deltas.v)
			if err := deltas.next(); err != nil {
				return err
			}
		}
		if err := fn(doc, v); err != nil {
			return err
		}
	}
	return nil
}

// versionScan walks the 'v' or the 'w' records, decoding each.
type versionScan struct {
	it    *pebble.Iterator
	delta bool
	valid bool
	doc   string
	v     crdt.VersionVector
}

func (vs *versionScan) next() error {
	vs.valid = vs.it.Next()
	return vs.read()
}

// read decodes the record the iterator is at, if any.
func (vs *versionScan) read() error {
	if !vs.valid {
		if err := vs.it.Error(); err != nil {
			return fmt.Errorf("storage: versions: %w", err)
		}
		return nil
	}
	doc, rest, err := decodeDocID(vs.it.Key()[1:])
	if err != nil || vs.delta && len(rest) != 8 || !vs.delta && len(rest) != 0 {
		return fmt.Errorf("%w: version key %x", ErrCorrupt, vs.it.Key())
	}
	val, err := vs.it.ValueAndErr()
	if err != nil {
		return fmt.Errorf("storage: versions: %w", err)
	}
	if vs.v, err = decodeVersion(doc, val); err != nil {
		return err
	}
	vs.doc = doc
	return nil
}

func (vs *versionScan) close() { _ = vs.it.Close() }
