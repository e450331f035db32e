package crdt

import (
	"fmt"
	"unicode/utf8"

	"github.com/weftsync/weft/hlc"
)

// Tx is a local transaction: every edit made through it becomes part of one
// Change, stamped with one HLC time. Each edit applies to the document at
// once and is atomic: an edit that returns an error changes nothing.
//
// HAZARD: a Doc has one Tx, reused by every Begin, so a *Tx must not be kept
// past its Commit.
type Tx struct {
	d     *Doc
	open  bool
	timed bool
	t     hlc.Timestamp
	first uint32 // first seq of the transaction
	ops   int    // operations its change holds at most (see MaxChangeOps)
}

// MaxChangeOps bounds the operations of the change one transaction makes:
// an insert (of any length), a counter add and a register set take one,
// a delete one per run of adjacent characters it removes. A change is
// atomic and goes alone in a batch when it is larger than a client's batch
// size, and a server refuses a batch declaring more operations than its
// rate limit's burst (which it may not configure below this bound), so
// every change a transaction makes can be sent. An edit that would exceed
// it fails with ErrChangeFull and changes nothing.
const MaxChangeOps = 4096

// addOps counts n more operations for the transaction's change, or
// refuses them.
func (tx *Tx) addOps(n int) error {
	if tx.ops+n > MaxChangeOps {
		return fmt.Errorf("%w (%d): commit and continue in a new transaction", ErrChangeFull, MaxChangeOps)
	}
	tx.ops += n
	return nil
}

// Begin starts a local transaction, committing one left open.
func (d *Doc) Begin() *Tx {
	if d.tx.open {
		d.tx.Commit()
	}
	d.tx = Tx{d: d, open: true, first: d.logs[0].next}
	return &d.tx
}

// Commit ends the transaction. The change it made (if it made any) is then
// part of ChangesSince for every version vector that lacks it.
func (tx *Tx) Commit() error {
	if !tx.open {
		return ErrTxDone
	}
	tx.open = false
	if invariants {
		tx.d.checkInvariants()
	}
	return nil
}

func (tx *Tx) check() error {
	if !tx.open {
		return ErrTxDone
	}
	if tx.d.readOnly {
		return ErrReadOnly
	}
	return nil
}

// stamp returns the transaction's time, taking it from the clock on first
// use, and records it for n seqs from seq.
func (tx *Tx) stamp(seq, n uint32) hlc.Timestamp {
	if !tx.timed {
		tx.t = tx.d.clock.Now()
		tx.timed = true
	}
	tx.d.appendTime(0, seq, n, tx.t)
	tx.d.logs[0].next = seq + n
	tx.d.passed += uint64(n)
	return tx.t
}

func (tx *Tx) reserve(n int) (uint32, error) {
	seq := tx.d.logs[0].next
	if uint64(seq)+uint64(n) > maxSeq {
		return 0, fmt.Errorf("crdt: replica %s exhausted its sequence numbers", tx.d.replica)
	}
	return seq, nil
}

func checkName(name string) error {
	if name == "" || len(name) > MaxFieldName || !validUTF8(name) {
		return fmt.Errorf("%w: field name must be 1..%d bytes of UTF-8", ErrFieldType, MaxFieldName)
	}
	return nil
}

// Insert inserts s at rune position pos of text field name.
func (tx *Tx) Insert(name string, pos int, s string) error {
	if err := tx.check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: inserted text is not valid UTF-8", ErrFieldType)
	}
	d := tx.d
	f := d.field(Field{name, FieldText}, false)
	vis := 0
	if f != nil {
		vis = f.text.vis
	}
	if pos < 0 || pos > vis {
		return fmt.Errorf("%w: insert at %d in text %q of length %d", ErrOutOfRange, pos, name, vis)
	}
	if s == "" {
		return nil
	}
	n := runeCount(s)
	seq, err := tx.reserve(n)
	if err != nil {
		return err
	}
	if err := tx.addOps(1); err != nil {
		return err
	}
	if f == nil {
		f = d.field(Field{name, FieldText}, true)
	}
	tx.stamp(seq, uint32(n))
	off, nb := d.appendContent(s)
	t := f.text
	fi := f.idx

	// Find the insertion point: just after the visible char pos-1.
	var l *leaf
	var i int
	var left, right ref
	if pos == 0 {
		l, i = t.leaves[0], 0
		if len(l.items) > 0 {
			right = ref{l.items[0].r, l.items[0].seq}
		}
	} else {
		var k uint32
		l, i, k = t.visAt(pos - 1)
		it := &l.items[i]
		left = ref{it.r, it.seq + k}
		if k+1 < it.n {
			right = ref{it.r, it.seq + k + 1}
			t.split(l, i, k+1)
		} else {
			right = t.nextID(l, i)
			// Typing at the end of our own run: grow it in place.
			lg := &d.logs[0]
			if it.r == 0 && it.seq+it.n == seq && it.off+it.nb == off && len(lg.spans) > 0 {
				sp := &lg.spans[len(lg.spans)-1]
				if sp.kind == OpTextInsert && sp.field == fi && sp.seq+sp.n == seq && sp.b == right {
					it.n += uint32(n)
					it.nb += nb
					l.vis += n
					l.raw += n
					t.vis += n
					t.raw += n
					t.lens.add(l.idx, n, n)
					t.assign(0, seq, seq+uint32(n), l, i)
					t.markChars(0, seq, seq+uint32(n))
					sp.n += uint32(n)
					sp.nb += nb
					lg.indexTail()
					// The grown item still starts where it did, and nothing
					// else moved: the cursor stays valid.
					t.ver++
					t.cur = cursor{l: l, i: i, start: pos - 1 - int(k), ver: t.ver}
					return nil
				}
			}
		}
		i++
	}
	t.insertItem(l, i, item{r: 0, seq: seq, n: uint32(n), off: off, nb: nb})
	d.appendSpan(0, span{seq: seq, n: uint32(n), field: fi, kind: OpTextInsert, off: off, nb: nb, a: left, b: right})
	return nil
}

// Delete deletes n runes from rune position pos of text field name.
func (tx *Tx) Delete(name string, pos, n int) error {
	if err := tx.check(); err != nil {
		return err
	}
	d := tx.d
	f := d.field(Field{name, FieldText}, false)
	vis := 0
	if f != nil {
		vis = f.text.vis
	}
	if pos < 0 || n < 0 || pos+n > vis {
		return fmt.Errorf("%w: delete %d at %d in text %q of length %d", ErrOutOfRange, n, pos, name, vis)
	}
	if n == 0 {
		return nil
	}
	seq, err := tx.reserve(n)
	if err != nil {
		return err
	}
	t := f.text
	if err := tx.addOps(t.visRuns(pos, n, MaxChangeOps-tx.ops+1)); err != nil {
		return err
	}
	tx.stamp(seq, uint32(n))
	fi := f.idx
	for n > 0 {
		l, i, k := t.visAt(pos)
		it := l.items[i]
		m := min(uint32(n), it.n-k)
		t.deleteRange(l, i, k, m)
		if m == 1 {
			d.appendSpan(0, span{seq: seq, n: 1, field: fi, kind: OpTextDelete, a: ref{it.r, it.seq + k}})
		} else {
			d.appendSpan(0, span{seq: seq, n: m, field: fi, kind: OpTextDelete, a: ref{it.r, it.seq + k}})
		}
		seq += m
		n -= int(m)
	}
	return nil
}

// Add adds delta (non-zero) to counter field name.
func (tx *Tx) Add(name string, delta int64) error {
	if err := tx.check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if delta == 0 {
		return fmt.Errorf("%w: counter delta must be non-zero", ErrFieldType)
	}
	seq, err := tx.reserve(1)
	if err != nil {
		return err
	}
	if err := tx.addOps(1); err != nil {
		return err
	}
	f := tx.d.field(Field{name, FieldCounter}, true)
	tx.stamp(seq, 1)
	tx.d.applyCounter(f, 0, seq, delta)
	return nil
}

// Set writes value, one msgpack-encoded value, to register field name.
func (tx *Tx) Set(name string, value []byte) error {
	if err := tx.check(); err != nil {
		return err
	}
	if err := checkName(name); err != nil {
		return err
	}
	if err := CheckMsgpack(value); err != nil {
		return fmt.Errorf("%w: %v", ErrFieldType, err)
	}
	seq, err := tx.reserve(1)
	if err != nil {
		return err
	}
	if err := tx.addOps(1); err != nil {
		return err
	}
	f := tx.d.field(Field{name, FieldRegister}, true)
	t := tx.stamp(seq, 1)
	tx.d.applyRegister(f, 0, seq, t, value)
	return nil
}
