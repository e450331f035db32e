package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/weftsync/weft/crdt"
)

// Key layout. Every key starts with a one-byte keyspace tag, then the escaped
// document id (see appendDocID), then a suffix:
//
//	'm' esc(doc)                 → meta (metaVersion, uvarints; see DocMeta)
//	'd' esc(doc) 'l' be64(seq)   → one change batch, seq = 1, 2, ...
//	'd' esc(doc) 's'             → the snapshot
//	'o' esc(doc) replica(16)     → the principal owning that replica id
//
// Metadata lives in its own keyspace so that List scans only small values,
// and a document's batches and snapshot are contiguous so that Load is one
// short range scan. Big-endian batch numbers make the scan return batches in
// append order.
//
// Owners live in a keyspace of their own too: a snapshot's range delete of
// the log never touches them, and Load's scan never sees them.
const (
	tagMeta  = 'm'
	tagData  = 'd'
	tagOwner = 'o'

	suffixLog      = 'l'
	suffixSnapshot = 's'
)

// appendDocID appends the order-preserving, prefix-free escape of doc:
// every 0x00 byte becomes 0x00 0xFF and the id ends with 0x00 0x01. So no
// escaped id is a prefix of another ("a" and "a/b" never collide, neither do
// "a" and "a\x00"), and escaped ids sort as the raw ids do.
func appendDocID(dst []byte, doc string) []byte {
	for i := 0; i < len(doc); i++ {
		if doc[i] == 0 {
			dst = append(dst, 0x00, 0xFF)
		} else {
			dst = append(dst, doc[i])
		}
	}
	return append(dst, 0x00, 0x01)
}

// appendDocIDPrefix is appendDocID without the terminator: the byte prefix
// shared by the escapes of all ids that start with prefix.
func appendDocIDPrefix(dst []byte, prefix string) []byte {
	e := appendDocID(dst, prefix)
	return e[:len(e)-2]
}

// decodeDocID reverses appendDocID; it returns the id and the bytes after it.
func decodeDocID(b []byte) (string, []byte, error) {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		if b[i] != 0 {
			out = append(out, b[i])
			continue
		}
		if i+1 >= len(b) {
			return "", nil, errors.New("storage: truncated document id in key")
		}
		switch b[i+1] {
		case 0xFF:
			out = append(out, 0)
			i++
		case 0x01:
			return string(out), b[i+2:], nil
		default:
			return "", nil, fmt.Errorf("storage: bad escape 0x00 0x%02x in document id", b[i+1])
		}
	}
	return "", nil, errors.New("storage: unterminated document id in key")
}

func metaKey(doc string) []byte {
	return appendDocID(append(make([]byte, 0, len(doc)+3), tagMeta), doc)
}

func dataPrefix(doc string) []byte {
	return appendDocID(append(make([]byte, 0, len(doc)+12), tagData), doc)
}

func ownerPrefix(doc string) []byte {
	return appendDocID(append(make([]byte, 0, len(doc)+3+16), tagOwner), doc)
}

func ownerKey(doc string, replica crdt.ReplicaID) []byte {
	return append(ownerPrefix(doc), replica[:]...)
}

func snapshotKey(doc string) []byte {
	return append(dataPrefix(doc), suffixSnapshot)
}

func logKey(doc string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(append(dataPrefix(doc), suffixLog), seq)
}

// logSpan returns [start, end) covering every batch key of doc.
func logSpan(doc string) (start, end []byte) {
	p := dataPrefix(doc)
	start = append(p[:len(p):len(p)], suffixLog)
	end = append(p[:len(p):len(p)], suffixLog+1)
	return start, end
}

// dataSpan returns [start, end) covering every data key of doc.
func dataSpan(doc string) (start, end []byte) {
	start = dataPrefix(doc)
	end = append(start[:len(start):len(start)], 0xFF)
	return start, end
}

// prefixEnd returns the smallest key greater than every key starting with p,
// or nil when there is none (p is all 0xFF).
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xFF {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// DocMeta is the per-document metadata the store keeps in the same atomic
// batch as every write of the document.
type DocMeta struct {
	// ID is the document id.
	ID string
	// Created is when the document was first written to this store.
	Created time.Time
	// Updated is when it was last written.
	Updated time.Time
	// SnapshotBytes is the size of the current snapshot (0: none yet).
	SnapshotBytes int64
	// LogBytes is the total size of the batches appended since the snapshot.
	LogBytes int64
	// Batches is the number of batches appended since the snapshot.
	Batches int64

	// nextSeq is the number of the next batch; never reused, so a batch key
	// names one batch for the life of the store.
	nextSeq uint64
}

const metaVersion = 1

// metaMaxBytes bounds an encoded DocMeta.
const metaMaxBytes = 1 + 6*binary.MaxVarintLen64

func encodeMeta(m *DocMeta) []byte { return appendMeta(make([]byte, 0, metaMaxBytes), m) }

// appendMeta appends m's encoding to b. A writer passes a stack buffer of
// metaMaxBytes, sparing an allocation per write.
func appendMeta(b []byte, m *DocMeta) []byte {
	b = append(b, metaVersion)
	b = binary.AppendUvarint(b, uint64(m.Created.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(m.Updated.UnixMilli()))
	b = binary.AppendUvarint(b, uint64(m.SnapshotBytes))
	b = binary.AppendUvarint(b, uint64(m.LogBytes))
	b = binary.AppendUvarint(b, uint64(m.Batches))
	b = binary.AppendUvarint(b, m.nextSeq)
	return b
}

// decodeMeta decodes a meta value of doc. A value it cannot read is
// corruption: the store wrote every meta value itself.
func decodeMeta(doc string, v []byte) (DocMeta, error) {
	m := DocMeta{ID: doc}
	if len(v) == 0 || v[0] != metaVersion {
		return m, fmt.Errorf("%w: metadata of %q has unknown version", ErrCorrupt, doc)
	}
	v = v[1:]
	var f [6]uint64
	for i := range f {
		x, n := binary.Uvarint(v)
		if n <= 0 {
			return m, fmt.Errorf("%w: metadata of %q is truncated", ErrCorrupt, doc)
		}
		f[i], v = x, v[n:]
	}
	if len(v) != 0 {
		return m, fmt.Errorf("%w: metadata of %q has %d trailing bytes", ErrCorrupt, doc, len(v))
	}
	for i := 2; i < 5; i++ {
		if f[i] > 1<<62 {
			return m, fmt.Errorf("%w: metadata of %q has an impossible size", ErrCorrupt, doc)
		}
	}
	m.Created = time.UnixMilli(int64(f[0])).UTC()
	m.Updated = time.UnixMilli(int64(f[1])).UTC()
	m.SnapshotBytes, m.LogBytes, m.Batches = int64(f[2]), int64(f[3]), int64(f[4])
	m.nextSeq = f[5]
	if m.nextSeq == 0 {
		return m, fmt.Errorf("%w: metadata of %q has batch number 0", ErrCorrupt, doc)
	}
	return m, nil
}
