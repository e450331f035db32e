package crdt

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/weftsync/weft/hlc"
)

// Errors. Every error a Doc returns for bad input wraps one of these.
var (
	// ErrInvalidChange: a change is malformed or contradicts the document
	// (wrong field type, an id that names no character, a bad length).
	ErrInvalidChange = errors.New("crdt: invalid change")
	// ErrPendingFull: a change had to wait for missing dependencies and the
	// pending buffer is full.
	ErrPendingFull = errors.New("crdt: pending buffer full")
	// ErrOutOfRange: a local edit names a position outside the text.
	ErrOutOfRange = errors.New("crdt: position out of range")
	// ErrFieldType: a field name is used with two types in one transaction,
	// or a value does not suit the field.
	ErrFieldType = errors.New("crdt: wrong field type")
	// ErrReadOnly: an edit was attempted on a read-only view (Doc.At).
	ErrReadOnly = errors.New("crdt: document is read-only")
	// ErrTxDone: a transaction was used after Commit or Abort.
	ErrTxDone = errors.New("crdt: transaction already finished")
	// ErrChangeFull is returned for an edit that would take the
	// transaction's change past MaxChangeOps operations: commit and
	// continue in another transaction.
	ErrChangeFull = errors.New("crdt: the transaction's change holds the most operations a change may")
)

// ReplicaID identifies a replica (an editor tab or device, a server peer):
// the 16 bytes of a UUID. crdt does not generate them (that needs
// randomness); callers use github.com/google/uuid.
type ReplicaID [16]byte

// ParseReplicaID parses the canonical 36-character UUID form.
func ParseReplicaID(s string) (ReplicaID, error) {
	var r ReplicaID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return r, fmt.Errorf("crdt: replica id %q is not a UUID", s)
	}
	h := s[0:8] + s[9:13] + s[14:18] + s[19:23] + s[24:36]
	if _, err := hex.Decode(r[:], []byte(h)); err != nil {
		return r, fmt.Errorf("crdt: replica id %q is not a UUID: %v", s, err)
	}
	return r, nil
}

// String returns the canonical UUID form.
func (r ReplicaID) String() string {
	var b [36]byte
	hex.Encode(b[0:8], r[0:4])
	b[8] = '-'
	hex.Encode(b[9:13], r[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], r[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], r[8:10])
	b[23] = '-'
	hex.Encode(b[24:36], r[10:16])
	return string(b[:])
}

// IsZero reports whether r is the all-zero id, which no replica may use.
func (r ReplicaID) IsZero() bool { return r == ReplicaID{} }

// Compare orders replica ids bytewise; it breaks ties between concurrent
// register writes and concurrent inserts at one place. (bytes.Compare: the
// string conversions strings.Compare needed allocated when r escaped.)
func (r ReplicaID) Compare(o ReplicaID) int { return bytes.Compare(r[:], o[:]) }

// ID names one operation unit: the Seq'th unit a replica produced. Every
// inserted character, deleted character, counter increment and register write
// takes one sequence number. Seq starts at 1; the zero ID means "none" (the
// start or end of a text, for insert origins).
type ID struct {
	Replica ReplicaID
	Seq     uint64
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id.Seq == 0 }

func (id ID) String() string {
	if id.IsZero() {
		return "∅"
	}
	return fmt.Sprintf("%s@%d", id.Replica.String()[:8], id.Seq)
}

// VersionVector maps each replica to the highest sequence number seen from
// it. Changes of a replica are applied in sequence order, so a version vector
// says exactly which operations a document holds.
type VersionVector map[ReplicaID]uint64

// Clone returns a copy of v (nil stays nil... as an empty vector).
func (v VersionVector) Clone() VersionVector {
	c := make(VersionVector, len(v))
	maps.Copy(c, v)
	return c
}

// Includes reports whether v covers id.
func (v VersionVector) Includes(id ID) bool { return id.Seq <= v[id.Replica] }

// Merge raises v to cover o as well.
func (v VersionVector) Merge(o VersionVector) {
	for r, s := range o {
		if s > v[r] {
			v[r] = s
		}
	}
}

// Covers reports whether v includes everything o includes.
func (v VersionVector) Covers(o VersionVector) bool {
	for r, s := range o {
		if v[r] < s {
			return false
		}
	}
	return true
}

// Equal reports whether v and o include exactly the same operations.
func (v VersionVector) Equal(o VersionVector) bool { return v.Covers(o) && o.Covers(v) }

// String formats v deterministically (sorted by replica).
func (v VersionVector) String() string {
	keys := slices.SortedFunc(maps.Keys(v), ReplicaID.Compare)
	var b strings.Builder
	b.WriteByte('{')
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s:%d", k.String()[:8], v[k])
	}
	b.WriteByte('}')
	return b.String()
}

// FieldType is the CRDT type of a document field. A field is identified by
// its name and type together, so two replicas that create "title" with
// different types concurrently get two fields, never a conflict.
type FieldType uint8

const (
	// FieldCounter is a PN-counter: per-replica increments and decrements.
	FieldCounter FieldType = 1
	// FieldRegister is a last-writer-wins register holding one msgpack value.
	FieldRegister FieldType = 2
	// FieldText is a sequence CRDT of Unicode scalar values.
	FieldText FieldType = 3
)

func (t FieldType) String() string {
	switch t {
	case FieldCounter:
		return "counter"
	case FieldRegister:
		return "register"
	case FieldText:
		return "text"
	}
	return fmt.Sprintf("FieldType(%d)", uint8(t))
}

// OpKind says what an Op does.
type OpKind uint8

const (
	// OpCounterAdd adds Delta (non-zero, may be negative) to a counter.
	OpCounterAdd OpKind = 1
	// OpRegisterSet writes Value (one msgpack value) to a register.
	OpRegisterSet OpKind = 2
	// OpTextInsert inserts Text (n runes, ids Seq..Seq+n-1) between the
	// characters Left and Right (either may be zero: start / end).
	OpTextInsert OpKind = 3
	// OpTextDelete deletes Count characters: Target, then the ids after it
	// (Target.Seq+1, ...), or before it (Target.Seq-1, ...) when Backward.
	OpTextDelete OpKind = 4
)

func (k OpKind) String() string {
	switch k {
	case OpCounterAdd:
		return "add"
	case OpRegisterSet:
		return "set"
	case OpTextInsert:
		return "ins"
	case OpTextDelete:
		return "del"
	}
	return fmt.Sprintf("OpKind(%d)", uint8(k))
}

// FieldType returns the type of field the op applies to.
func (k OpKind) FieldType() FieldType {
	switch k {
	case OpCounterAdd:
		return FieldCounter
	case OpRegisterSet:
		return FieldRegister
	case OpTextInsert, OpTextDelete:
		return FieldText
	}
	return 0
}

// Op is one operation of a change. Which fields are meaningful depends on
// Kind; the others are zero.
type Op struct {
	Kind OpKind
	// Backward (OpTextDelete) sits next to Kind, in what would otherwise
	// be padding: changes carry thousands of ops.
	Backward bool // OpTextDelete: targets run downwards from Target
	Field    string

	Delta int64  // OpCounterAdd
	Value []byte // OpRegisterSet: one msgpack-encoded value

	Text        string // OpTextInsert: UTF-8, at least one rune
	Left, Right ID     // OpTextInsert: origins

	Target ID     // OpTextDelete: first character deleted
	Count  uint64 // OpTextDelete: characters deleted
}

// Len returns the number of sequence numbers the op takes.
func (op *Op) Len() uint64 {
	switch op.Kind {
	case OpTextInsert:
		return uint64(runeCount(op.Text))
	case OpTextDelete:
		return op.Count
	}
	return 1
}

// Change is the unit of replication: the operations of one local
// transaction, with ids Seq .. Seq+Len()-1 of Replica, all stamped Time.
type Change struct {
	Replica ReplicaID
	Seq     uint64
	Time    hlc.Timestamp
	Ops     []Op
}

// Len returns the number of sequence numbers the change takes.
func (c *Change) Len() uint64 {
	var n uint64
	for i := range c.Ops {
		n += c.Ops[i].Len()
	}
	return n
}

// End returns the last sequence number of the change.
func (c *Change) End() uint64 { return c.Seq + c.Len() - 1 }

// Side says which side of a character an anchor sticks to.
type Side uint8

const (
	// Before: the anchor is the position just before the character, so text
	// inserted right before the anchor does not move it past that text.
	Before Side = 0
	// After: the anchor is the position just after the character.
	After Side = 1
)

// Anchor is a position in a text that survives concurrent edits: the id of a
// character and a side. The zero Anchor with Side Before is the start of the
// text; with Side After, the end.
type Anchor struct {
	ID   ID
	Side Side
}

func runeCount(s string) int {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return utf8.RuneCountInString(s)
		}
	}
	return len(s)
}
