package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"iter"
	"math/bits"
	"slices"
	"sync"
	"sync/atomic"
	"unicode/utf8"
	"unsafe"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// ChangesFormat is the first byte of an encoded change batch. A format that
// old decoders cannot read gets a new number.
const ChangesFormat = 1

// Limits DecodeChanges enforces. Columns are run-length encoded, so a few
// bytes may legitimately describe many ops; these caps bound the memory one
// message can make a decoder allocate. Senders split larger deltas into
// several messages (see docs/PROTOCOL.md).
const (
	// MaxChanges bounds the changes in one encoded batch.
	MaxChanges = 1 << 18
	// MaxOps bounds the ops in one encoded batch (an Op takes 152 bytes in
	// memory, so MaxOps ops take 38 MiB; ChangeSeq holds one change's). A 1 MiB frame of typical edits
	// (3-5 bytes per op) stays well under it.
	MaxOps = 1 << 18
	// MaxSeq bounds every sequence number in a batch (crdt itself uses 32
	// bits; 2^40 keeps every seq exact in a JavaScript number and leaves room
	// in the origin code for millions of replicas).
	MaxSeq = 1 << 40
	// MaxFieldName bounds a field name, in bytes.
	MaxFieldName = 1024
)

// opsLimit and changesLimit are what the code checks: MaxOps and
// MaxChanges, lowered by tests to exercise the limits cheaply.
var opsLimit, changesLimit = MaxOps, MaxChanges

// ErrCorrupt is wrapped by every error DecodeChanges returns.
var ErrCorrupt = errors.New("codec: corrupt change batch")

// Column order in the body. Every column is present (possibly empty) and
// prefixed by its byte length.
const (
	colChReplica   = iota // RLE: replica table index of each change
	colChSeq              // RLE: zigzag(seq - expected), expected = end of the replica's previous change + 1 (first: 1)
	colChTime             // RLE: same wall ms as the previous change: zigzag(logical delta)<<1; else zigzag(wall delta)<<1 | 1
	colChLogical          // RLE: logical counter, only for changes whose wall ms differs from the previous change's
	colChOps              // RLE: ops in the change (≥ 1)
	colOpKind             // kind runs: (runLength-1)<<2 | (kind-1)
	colOpField            // RLE: field table index
	colInsLen             // RLE: runes inserted (≥ 1)
	colInsLeft            // RLE: origin code of Left
	colInsRight           // RLE: origin code of Right
	colInsText            // raw UTF-8: all inserted text, concatenated
	colDelTarget          // RLE: origin code of Target (never 0)
	colDelCount           // RLE: Count (≥ 1)
	colDelBackward        // RLE: 1 if Backward, else 0
	colAddDelta           // RLE: zigzag(Delta)
	colSetLen             // RLE: byte length of Value
	colSetValue           // raw: all register values, concatenated
	numColumns
)

var columnNames = [numColumns]string{
	"change.replica", "change.seq", "change.time", "change.logical", "change.ops",
	"op.kind", "op.field", "ins.len", "ins.left", "ins.right", "ins.text",
	"del.target", "del.count", "del.backward", "add.delta", "set.len", "set.value",
}

// idCoder turns ids into origin codes and back. Each replica has a cursor,
// the seq of the id last coded for it; an id is coded as the distance from
// its replica's cursor, mixed-radix with the replica index:
//
//	code = 0                                  the zero ID
//	code = 1 + zigzag(seq-cursor[r])*nRep + r otherwise
//
// Typing makes the distances constant (Left = cursor+1, Right = the same id
// again, a backspace = cursor-1), so the RLE columns collapse them into runs.
// The encoder learns nRep only at the end of the batch, so encode returns
// the code's parts (an idVal); nRep is the decoder's.
type idCoder struct {
	cursor []uint64
	nRep   uint64 // decode only
}

// The three id columns keep separate cursors, so that each keeps its own
// locality: Left follows the typing, Right mostly repeats, Target walks
// backwards under backspace.
const (
	idLeft = iota
	idRight
	idTarget
	numIDCols
)

// startChange primes the Left and Target cursors of a replica seen for the
// first time: its first insert usually continues, and its first delete
// usually removes, its own last character.
func startChange(ids *[numIDCols]idCoder, r int, seq uint64) {
	if ids[idLeft].cursor[r] == 0 {
		ids[idLeft].cursor[r] = seq - 1
	}
	if ids[idTarget].cursor[r] == 0 {
		ids[idTarget].cursor[r] = seq - 1
	}
}

// encode codes seq of replica index r: the code (1 + zigzag(d)*nRep + r)
// needs the replica count, known only once the batch is, so encode
// returns its parts as an idVal for finish to complete.
func (c *idCoder) encode(r int, seq uint64) idVal {
	d := int64(seq) - int64(c.cursor[r])
	c.cursor[r] = seq
	return idVal{zz: zigzag(d), r: uint64(r), coded: true}
}

func (c *idCoder) decode(code uint64) (r int, seq uint64, err error) {
	code--
	r = int(code % c.nRep)
	d := unzigzag(code / c.nRep)
	s := int64(c.cursor[r]) + d
	if d > MaxSeq || d < -MaxSeq || s < 1 || s > MaxSeq {
		return 0, 0, fmt.Errorf("id seq out of range [1, 2^40]")
	}
	c.cursor[r] = uint64(s)
	return r, uint64(s), nil
}

// idVal is a value of an origin column (ins.left, ins.right, del.target)
// before the replica count is known: a plain value v, or an origin code's
// parts, plus one for ins.right.
type idVal struct {
	v, zz, r       uint64
	coded, plusOne bool
}

// appendIDVal appends x to b as the varints h [zz]: h = v<<1 for a plain
// value, r<<2 | plusOne<<1 | 1 for a code (two or three bytes an id, where
// a slice of values would take eight).
func appendIDVal(b []byte, x idVal) []byte {
	b = room(b, 2*binary.MaxVarintLen64)
	if !x.coded {
		return binary.AppendUvarint(b, x.v<<1)
	}
	h := x.r<<2 | 1
	if x.plusOne {
		h |= 2
	}
	b = binary.AppendUvarint(b, h)
	return binary.AppendUvarint(b, x.zz)
}

// flushIDVals adds the values appendIDVal wrote to b to column w, the codes
// completed with the replica count nRep.
func flushIDVals(w *rleWriter, b []byte, nRep uint64) {
	w.out = room(w.out, idColumnRoom(b))
	in := byteReader{b: b}
	for in.left() > 0 {
		h, _ := in.uvarint() // written by appendIDVal: cannot fail
		if h&1 == 0 {
			w.add(h >> 1)
			continue
		}
		zz, _ := in.uvarint()
		code := 1 + zz*nRep + h>>2
		if h&2 != 0 {
			code++
		}
		w.add(code)
	}
}

// idColumnRoom is the room to make for the column of the values b holds:
// a code takes about the bytes of its parts, so room for all of them and
// some for codes a byte longer spares the column's doublings.
func idColumnRoom(b []byte) int { return len(b) + len(b)/8 + 2*binary.MaxVarintLen64 }

// appendIDColumn appends to out the column of the id values b holds,
// after its length. It writes the column straight into out's spare room
// when out has enough, after room for the longest length, then moves it
// down to the length: the column needs no buffer of its own (three of
// them were an eighth of what encoding a merge's delta allocated).
func appendIDColumn(out, b []byte, nRep uint64) []byte {
	var w rleWriter
	if at := len(out) + binary.MaxVarintLen64; cap(out)-at >= idColumnRoom(b) {
		w.out = out[at:at]
	}
	flushIDVals(&w, b, nRep)
	w.close()
	out = binary.AppendUvarint(out, uint64(len(w.out)))
	// NB: w.out may lie in out just past the length; append moves it
	// down as copy does, correct when the two overlap.
	return append(out, w.out...)
}

// EncodeChanges encodes changes (as returned by crdt.Doc.ChangesSince, in
// that order) in the columnar format of docs/PROTOCOL.md. The output is
// deterministic and decodes to equal changes.
//
// The changes must be well-formed as crdt produces them: a non-zero replica,
// 1 ≤ seq ≤ MaxSeq, at least one op, known kinds. EncodeChanges panics on a
// seq above MaxSeq or an unknown op kind (crdt never produces either); other
// malformed input encodes to bytes that DecodeChanges rejects.
func EncodeChanges(changes []crdt.Change) []byte {
	nIns := 0
	for i := range changes {
		nIns += len(changes[i].Ops) // bounds the inserts
	}
	e := newEncoder()
	e.start(nIns)
	defer e.release()
	for i := range changes {
		e.change(&changes[i])
	}
	return e.finish(len(changes))
}

// EncodeChangeSeq encodes the changes seq yields exactly as EncodeChanges
// encodes the same changes in a slice, without needing them all in memory:
// with crdt.Doc.EachChangeSince, a delta is encoded straight from the
// document's log. A yielded change is not used after the next is asked
// for. The batch's size is not known in advance, so the predictor's tables
// start from what a pooled predictor has (see newPredictor).
func EncodeChangeSeq(seq iter.Seq[*crdt.Change]) []byte {
	return EncodeChangeSeqSize(seq, -1, -1)
}

// EncodeChangeSeqSize is EncodeChangeSeq for changes of about ops ops of
// which about inserts are inserts (-1: unknown), as crdt.Doc.SizeSince
// bounds a delta: the predictor's tables and the largest columns are
// sized for them once rather than grown step by step (a delta of 10,000
// keystrokes grew its tables twice, and its columns a dozen times). The
// bytes are the same whatever the sizes say.
func EncodeChangeSeqSize(seq iter.Seq[*crdt.Change], ops, inserts int) []byte {
	e := newEncoder()
	e.startSized(ops, inserts)
	defer e.release()
	nCh := 0
	for ch := range seq {
		e.change(ch)
		nCh++
	}
	return e.finish(nCh)
}

// newEncoder returns an encoder in a pooled scratch (see encodeScratch),
// to be started, then released when done.
func newEncoder() *encoder {
	sc := encodeScratches.get()
	e := &sc.enc
	*e = encoder{sc: sc}
	return e
}

// start readies the encoder for about inserts inserts (-1: unknown); the
// caller releases it when done.
func (e *encoder) start(inserts int) {
	e.pred = newPredictor(inserts)
	sc := e.sc
	for c := range e.col {
		e.col[c].out = sc.cols[c][:0]
	}
	for k := range e.idVals {
		e.idVals[k] = sc.idVals[k][:0]
	}
	e.kinds.out, e.text, e.values = sc.kinds[:0], sc.text[:0], sc.values[:0]
}

// release gives back the encoder's pooled predictor and scratch, the
// latter with the room its buffers grew to, unless they hold more than
// maxPooledScratch bytes. Nothing the encoder returned points into them.
func (e *encoder) release() {
	e.pred.release()
	sc, n := e.sc, 0
	for c := range e.col {
		sc.cols[c] = e.col[c].out
		n += cap(e.col[c].out)
	}
	for k := range e.idVals {
		sc.idVals[k] = e.idVals[k]
		n += cap(e.idVals[k])
	}
	sc.kinds, sc.text, sc.values = e.kinds.out, e.text, e.values
	n += cap(sc.kinds) + cap(sc.text) + cap(sc.values) + cap(sc.idCols)
	sc.enc = encoder{} // e is sc.enc: nothing of the batch stays
	encodeScratches.put(sc, n <= maxKeptScratch, n <= maxPooledScratch)
}

// encodeScratch is an encoder's room for what it builds before it lays out
// the batch: its columns, the origin columns' values and the origin
// columns themselves. A delta of 10,000 keystrokes built 75 KB of them
// for 50 KB of batch, garbage once encoded; pooled, the next encoding
// takes them (see release).
//
// The encoder itself lives here too: on its own it was a 1.4 KB
// allocation for every batch encoded (a keystroke's too), in a size
// class whose spans are two pages of eleven, which the pacer counts
// whole when the allocator takes one.
type encodeScratch struct {
	cols   [numColumns][]byte
	idVals [numIDCols][]byte
	idCols []byte
	kinds  []byte
	text   []byte
	values []byte
	enc    encoder
}

// encodeScratches recycles encodeScratch, one of them across collections
// (see keptPool; a delta of 10,000 keystrokes built 64 KB of scratch
// afresh when the pool had been emptied), at most maxKeptScratch bytes
// for the life of the process.
var encodeScratches keptPool[encodeScratch]

// maxPooledScratch bounds the bytes a pooled encodeScratch keeps: a
// catch-up of tens of thousands of keystrokes, not a whole history.
const maxPooledScratch = 1 << 20

// maxKeptScratch bounds the bytes a kept encodeScratch holds: a delta of
// 10,000 keystrokes takes about 75 KB.
const maxKeptScratch = 256 << 10

// withRoom returns b, emptied, with room for n bytes.
func withRoom(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:0]
	}
	return make([]byte, 0, n)
}

// startSized is start for a stream of about ops ops, inserts of them
// inserts (-1: unknown). The predictor is sized for the inserts (up to
// what the pool keeps: a larger batch grows its tables as an unknown one
// does), and the buffers that ops of a common kind write to get the room
// typing takes there: two bytes a change's time, three and a quarter an
// insert's left origin (a delta of 10,000 keystrokes at random places
// took 3.01, and its buffer doubled at three), one its right origin and
// its character, three a delete's target. A wrong guess costs a growth
// or some unused room, never other bytes.
func (e *encoder) startSized(ops, inserts int) {
	if ops < 0 || inserts < 0 {
		e.start(-1)
		return
	}
	e.start(min(inserts, maxPooledTable/2))
	ops, inserts = min(ops, MaxOps), min(inserts, MaxOps)
	const slack = 64 // a writer wants room for its longest value
	e.col[colChTime].out = withRoom(e.col[colChTime].out, 2*ops+slack)
	e.idVals[idLeft] = withRoom(e.idVals[idLeft], 3*inserts+inserts/4+slack)
	e.idVals[idRight] = withRoom(e.idVals[idRight], inserts+slack)
	e.idVals[idTarget] = withRoom(e.idVals[idTarget], 3*max(ops-inserts, 0)+slack)
	e.text = withRoom(e.text, inserts)
	e.kinds.out = withRoom(e.kinds.out, ops/2+slack)
}

// addReplica returns the index of replica r in the batch's table, adding
// it (and its cursors) when it is new.
func (e *encoder) addReplica(r crdt.ReplicaID) int {
	if i, ok := e.reps.find(r); ok {
		return i
	}
	e.reps.insert(r)
	for k := range e.ids {
		e.ids[k].cursor = append(e.ids[k].cursor, 0)
	}
	e.expected = append(e.expected, 0)
	return len(e.reps.list) - 1
}

// finish lays out the batch of nCh changes.
func (e *encoder) finish(nCh int) []byte {
	nRep := len(e.reps.list)
	// The origin columns first, into scratch: their codes' radix is the
	// replica count, known only now, and their sizes, far below their
	// values' (a run of predicted right origins is a few bytes), make
	// the batch's exact. (Sized by their values, a delta of 10,000
	// keystrokes took 72 KB for 50.)
	radix := uint64(max(nRep, 1))
	need := 0
	for k := range e.idVals {
		need += binary.MaxVarintLen64 + idColumnRoom(e.idVals[k])
	}
	idCols := withRoom(e.sc.idCols, need)
	var idAt [numIDCols + 1]int
	for k := range e.idVals {
		idAt[k] = len(idCols)
		idCols = appendIDColumn(idCols, e.idVals[k], radix)
	}
	idAt[numIDCols] = len(idCols)
	e.sc.idCols = idCols
	size := 64 + 16*nRep + len(idCols)
	for _, f := range e.fields.list {
		size += binary.MaxVarintLen64 + len(f)
	}
	e.kinds.close()
	for c := range e.col {
		switch c {
		case colOpKind, colInsText, colSetValue:
		case colInsLeft, colInsRight, colDelTarget:
			// In idCols, with their lengths.
		default:
			e.col[c].close()
			size += binary.MaxVarintLen64 + len(e.col[c].out)
		}
	}
	size += 3*binary.MaxVarintLen64 + len(e.kinds.out) + len(e.text) + len(e.values)
	out := make([]byte, 0, size)
	out = append(out, ChangesFormat)
	out = binary.AppendUvarint(out, uint64(nRep))
	for _, r := range e.reps.list {
		out = append(out, r[:]...)
	}
	out = binary.AppendUvarint(out, uint64(len(e.fields.list)))
	for _, f := range e.fields.list {
		out = binary.AppendUvarint(out, uint64(len(f)))
		out = append(out, f...)
	}
	out = binary.AppendUvarint(out, uint64(nCh))
	out = binary.AppendUvarint(out, uint64(e.nOps))
	for c := 0; c < numColumns; c++ {
		var b []byte
		switch c {
		case colOpKind:
			b = e.kinds.out
		case colInsText:
			b = e.text
		case colSetValue:
			b = e.values
		case colInsLeft:
			out = append(out, idCols[idAt[idLeft]:idAt[idLeft+1]]...)
			continue
		case colInsRight:
			out = append(out, idCols[idAt[idRight]:idAt[idRight+1]]...)
			continue
		case colDelTarget:
			out = append(out, idCols[idAt[idTarget]:idAt[idTarget+1]]...)
			continue
		default:
			b = e.col[c].out
		}
		out = binary.AppendUvarint(out, uint64(len(b)))
		out = append(out, b...)
	}
	return maybeCompress(out, len(e.text)+len(e.values))
}

// encoder is EncodeChanges' state. Columns are written change by change
// (change), in one pass: replicas and fields are numbered as they are
// first seen, and the origin columns, whose codes need the replica count,
// are kept as idVals until finish. (A first pass for the tables cost a
// delta read from a document's log a second reading.)
type encoder struct {
	reps   repTable
	fields fieldTable
	ids    [numIDCols]idCoder
	idVals [numIDCols][]byte // the ins.left, ins.right, del.target values (appendIDVal)
	pred   *predictor
	sc     *encodeScratch // where the buffers below came from (see release)
	col    [numColumns]rleWriter
	kinds  kindWriter
	text   []byte
	values []byte
	nOps   int

	expected    []uint64 // per replica: the seq after its last change
	prevWall    int64
	prevLogical uint16
}

func (e *encoder) change(ch *crdt.Change) {
	col := &e.col
	r := e.addReplica(ch.Replica)
	checkSeq(ch.Seq)
	col[colChReplica].add(uint64(r))
	if e.expected[r] == 0 {
		e.expected[r] = 1
	}
	col[colChSeq].add(zigzag(int64(ch.Seq) - int64(e.expected[r])))
	startChange(&e.ids, r, ch.Seq)
	wall, logical := ch.Time.WallMillis(), ch.Time.Logical()
	// One column says how the time moved; the logical counter, usually 0
	// after the wall moved, goes in a column of its own then.
	if wall == e.prevWall {
		col[colChTime].add(zigzag(int64(logical)-int64(e.prevLogical)) << 1)
	} else {
		col[colChTime].add(zigzag(wall-e.prevWall)<<1 | 1)
		col[colChLogical].add(uint64(logical))
	}
	e.prevWall, e.prevLogical = wall, logical
	col[colChOps].add(uint64(len(ch.Ops)))
	e.nOps += len(ch.Ops)
	seq := ch.Seq
	for j := range ch.Ops {
		op := &ch.Ops[j]
		if op.Kind < crdt.OpCounterAdd || op.Kind > crdt.OpTextDelete {
			panic(fmt.Sprintf("codec: unknown op kind %d: not a change crdt produces", op.Kind))
		}
		e.kinds.add(byte(op.Kind - 1))
		col[colOpField].add(uint64(e.fields.add(op.Field)))
		switch op.Kind {
		case crdt.OpTextInsert:
			seq += e.insert(op, ch.Replica, r, seq)
		case crdt.OpTextDelete:
			var v idVal
			if s := op.Target.Seq; s != 0 {
				checkSeq(s)
				ti := r
				if op.Target.Replica != ch.Replica {
					ti = e.addReplica(op.Target.Replica)
				}
				v = e.ids[idTarget].encode(ti, s)
			}
			e.idVals[idTarget] = appendIDVal(e.idVals[idTarget], v)
			col[colDelCount].add(op.Count)
			b := uint64(0)
			if op.Backward {
				b = 1
			}
			col[colDelBackward].add(b)
			seq += op.Count
		case crdt.OpCounterAdd:
			col[colAddDelta].add(zigzag(op.Delta))
			seq++
		case crdt.OpRegisterSet:
			col[colSetLen].add(uint64(len(op.Value)))
			e.values = append(room(e.values, len(op.Value)), op.Value...)
			seq++
		}
	}
	e.expected[r] = seq
}

// insert encodes an insert op of the change by replica rep (index r) that
// takes ids from seq on, and returns how many it takes.
func (e *encoder) insert(op *crdt.Op, rep crdt.ReplicaID, r int, seq uint64) uint64 {
	col := &e.col
	n := uint64(utf8.RuneCountInString(op.Text))
	col[colInsLen].add(n)
	var left, right pid
	var code idVal
	if s := op.Left.Seq; s != 0 {
		checkSeq(s)
		li := r
		if op.Left.Replica != rep {
			li = e.addReplica(op.Left.Replica)
		}
		code, left = e.ids[idLeft].encode(li, s), packID(li, s)
	}
	e.idVals[idLeft] = appendIDVal(e.idVals[idLeft], code)
	checkSeq(op.Right.Seq)
	ri := 0
	if s := op.Right.Seq; s != 0 {
		ri = r
		if op.Right.Replica != rep {
			ri = e.addReplica(op.Right.Replica)
		}
		right = packID(ri, s)
	}
	var rv idVal // 0: predicted
	switch guess, ok := e.pred.right(left); {
	case ok && guess == right:
		if right != 0 {
			e.ids[idRight].cursor[ri] = op.Right.Seq
		}
	case right == 0:
		rv.v = 1
	default:
		rv = e.ids[idRight].encode(ri, op.Right.Seq)
		rv.plusOne = true
	}
	e.idVals[idRight] = appendIDVal(e.idVals[idRight], rv)
	e.pred.inserted(packID(r, seq), n, left, right)
	e.ids[idLeft].cursor[r] = seq + n - 1
	e.text = append(room(e.text, len(op.Text)), op.Text...)
	return n
}

func checkSeq(s uint64) {
	if s > MaxSeq {
		panic(fmt.Sprintf("codec: seq %d above MaxSeq: not a change crdt produces", s))
	}
}

// repTable numbers the replicas of a batch in the order first seen. A batch
// rarely names more than a few replicas, and comparing a few 16-byte ids
// beats hashing them; the map takes over past linearReps.
type repTable struct {
	list []crdt.ReplicaID
	idx  map[crdt.ReplicaID]int // nil until list outgrows linearReps
}

const linearReps = 8

func (t *repTable) find(r crdt.ReplicaID) (int, bool) {
	if t.idx != nil {
		i, ok := t.idx[r]
		return i, ok
	}
	for i := range t.list {
		if t.list[i] == r {
			return i, true
		}
	}
	return 0, false
}

// insert adds r, which must not be there yet.
func (t *repTable) insert(r crdt.ReplicaID) {
	if t.idx == nil && len(t.list) == linearReps {
		t.idx = make(map[crdt.ReplicaID]int, 2*linearReps)
		for i, x := range t.list {
			t.idx[x] = i
		}
	}
	if t.idx != nil {
		t.idx[r] = len(t.list)
	}
	t.list = append(t.list, r)
}

// fieldTable numbers the fields of a batch in the order first seen. Ops
// usually repeat the previous op's field, so that is checked first.
type fieldTable struct {
	list  []string
	idx   map[string]int
	last  string
	lastI int
}

// add returns the index of field f, adding it when it is new.
func (t *fieldTable) add(f string) int {
	if f == t.last && t.list != nil {
		return t.lastI
	}
	i, ok := t.idx[f]
	if !ok {
		if t.idx == nil {
			t.idx = map[string]int{}
		}
		i = len(t.list)
		t.idx[f] = i
		t.list = append(t.list, f)
	}
	t.last, t.lastI = f, i
	return i
}

// Counts returns the number of changes and ops a batch declares, reading
// only its header (the replica and field tables are skipped, not decoded).
// A server uses it to apply rate limits before paying for DecodeChanges.
// The counts are checked against MaxChanges and MaxOps; the rest of the
// batch is not validated.
func Counts(data []byte) (changes, ops int, err error) {
	fail := func(format string, args ...any) (int, int, error) {
		return 0, 0, fmt.Errorf("%w: %s", ErrCorrupt, fmt.Sprintf(format, args...))
	}
	r, err := headerReader(data)
	if err != nil {
		return fail("%v", err)
	}
	skip := func(n uint64) error {
		_, err := r.Discard(int(min(n, MaxRawBatch+1)))
		if err == nil && n > MaxRawBatch {
			err = errors.New("too long")
		}
		return err
	}
	nRep, err := binary.ReadUvarint(r)
	if err != nil || nRep > MaxRawBatch/16 || skip(16*nRep) != nil {
		return fail("bad replica table")
	}
	nField, err := binary.ReadUvarint(r)
	if err != nil || nField > MaxRawBatch {
		return fail("bad field table")
	}
	for i := uint64(0); i < nField; i++ {
		n, err := binary.ReadUvarint(r)
		if err != nil || n > MaxFieldName || skip(n) != nil {
			return fail("bad field table")
		}
	}
	nCh, err1 := binary.ReadUvarint(r)
	nOps, err2 := binary.ReadUvarint(r)
	switch {
	case err1 != nil || err2 != nil:
		return fail("truncated counts")
	case nCh > uint64(changesLimit) || nOps > uint64(opsLimit):
		return fail("%d changes, %d ops exceed the limits %d, %d", nCh, nOps, changesLimit, opsLimit)
	}
	return int(nCh), int(nOps), nil
}

// DecodeChanges decodes a batch encoded by EncodeChanges. It treats data as
// hostile: every length is checked against the bytes left before anything is
// allocated, counts are capped (MaxChanges, MaxOps), every column must be
// consumed exactly, and ids, kinds, counts, texts (valid UTF-8) and seqs
// (1..MaxSeq, no overflow) are checked. Errors wrap ErrCorrupt and say what
// was wrong. Semantic checks (does the id exist, does the field have that
// type) are crdt.Doc.Apply's job.
//
// The result does not alias data.
func DecodeChanges(data []byte) ([]crdt.Change, error) {
	chs, err := decodeChanges(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return chs, nil
}

func decodeChanges(data []byte) ([]crdt.Change, error) {
	// The header and the decoder (2 KB together, mostly column readers)
	// are scratch: nothing returned points into them. Every subscriber
	// decodes every batch a room sends, so they come from a pool rather
	// than the heap (allocating and zeroing them was a third of the time
	// to decode a fan-out batch of 12 keystrokes).
	// (Released by calls, not defers: the defers' bookkeeping was 1.5 %
	// of decoding one edit.)
	sc := decodeScratch.Get().(*decodeBufs)
	chs, err := sc.decode(data)
	sc.release(data)
	return chs, err
}

// decode is decodeChanges with sc, which the caller releases.
func (sc *decodeBufs) decode(data []byte) ([]crdt.Change, error) {
	h, dec := &sc.h, &sc.dec
	h.names = &sc.names
	if err := h.parse(data); err != nil {
		return nil, err
	}
	dec.start(h)
	var changes []crdt.Change
	var ops []crdt.Op
	if h.nCh == 1 && h.nOps == 1 {
		// A keystroke, or one edit: its change and op in one
		// allocation, and a short inserted text with them (a text of
		// one byte is a string of the runtime's, not allocated).
		if b := h.cols[colInsText].b; len(b) > 1 && len(b) <= smallText {
			one := new(changeOpText)
			copy(one.text[:], b)
			h.text = unsafe.String(&one.text[0], len(b))
			changes, ops = one.ch[:], one.op[:]
		} else {
			h.setText()
			one := new(changeAndOp)
			changes, ops = one.ch[:], one.op[:]
		}
	} else {
		h.setText()
		changes, ops = make([]crdt.Change, h.nCh), make([]crdt.Op, h.nOps)
	}
	err := dec.run(changes, ops, nil)
	dec.releasePredictor()
	if err != nil {
		return nil, err
	}
	return changes, nil
}

// changeAndOp is what DecodeChanges returns for a batch of one change of
// one op (a keystroke), allocated together.
type changeAndOp struct {
	ch [1]crdt.Change
	op [1]crdt.Op
}

// changeOpText is changeAndOp with room for the inserted text of an
// edit (an insert of up to smallText bytes): its op's Text points into
// text. (A string of its own was a second allocation for 70 % of the
// converge mix's edits; Doc.Apply keeps the change and its text alike.)
type changeOpText struct {
	ch   [1]crdt.Change
	op   [1]crdt.Op
	text [smallText]byte
}

// smallText is the most inserted text a changeOpText holds: 208 -> 224
// bytes, the next size class.
const smallText = 16

// decodeBufs is decodeChanges' scratch.
type decodeBufs struct {
	h   batchHeader
	dec changeDecoder
	// names are the field names of the batches decoded before, kept
	// across uses so that a batch naming the same field (every
	// keystroke into a document's text) does not allocate its name.
	names nameCache
}

// nameCache holds the field names of the batches decoded before, looked
// up by content: a document's edits alternate between a few fields (the
// converge mix: a text, a counter and a register), and a cache by
// position (a batch's first field in slot 0) allocated the name of every
// batch whose field differed from the previous batch's, a third of them.
type nameCache struct {
	s    [nameSlots]string
	next uint8 // the slot the next new name replaces
}

// nameSlots is the size of a nameCache; a batch's first nameSlots fields
// are looked up in it.
const nameSlots = 4

// lookup returns the cached name equal to b, if there is one.
func (c *nameCache) lookup(b []byte) (string, bool) {
	for k := range c.s {
		if c.s[k] == string(b) {
			return c.s[k], true
		}
	}
	return "", false
}

// lookupFirst is lookup for a batch's field i, which is looked up only
// among its first nameSlots fields and when c is set.
func (c *nameCache) lookupFirst(i int, b []byte) (string, bool) {
	if c == nil || i >= nameSlots {
		return "", false
	}
	return c.lookup(b)
}

// add caches name, replacing the oldest cached one.
func (c *nameCache) add(name string) {
	c.s[c.next%nameSlots] = name
	c.next = (c.next + 1) % nameSlots
}

// release returns sc to the pool, first dropping what it holds of the
// batch just decoded (the caller's bytes, the batch's strings, tables too
// large for sc) unless that is small: parse and start overwrite all of it
// before it is read again, and clearing sc (2 KB) was a twentieth of
// decoding a keystroke. NB: so a pooled decodeBufs may keep up to
// keepBytes of a caller's buffer (and the strings of a batch that size)
// until it is used again or the pool is emptied.
func (sc *decodeBufs) release(data []byte) {
	if cap(data) <= keepBytes && sc.h.raw <= keepBytes {
		decodeScratch.Put(sc)
		return
	}
	h, dc := &sc.h, &sc.dec
	for c := range h.cols {
		h.cols[c].b = nil
		if h.cols[c].err != nil {
			h.cols[c].err = nil
		}
	}
	h.reps, h.fields, h.text, h.fieldBuf = nil, nil, "", [smallFields]string{}
	dc.kinds.b, dc.kinds.err = nil, nil
	for k := range dc.ids {
		dc.ids[k].cursor = nil
	}
	dc.expected = nil
	decodeScratch.Put(sc)
}

var decodeScratch = sync.Pool{New: func() any { return new(decodeBufs) }}

// keepBytes is the most of a caller's buffer a pooled decodeBufs may keep
// referring to (see release).
const keepBytes = 4 << 10

// ChangeSeq returns the changes of a batch encoded by EncodeChanges, for
// crdt.Doc.ApplySeq: All decodes one change at a time into a Change and
// ops it reuses, so a batch of any size takes memory for its largest
// change only, and yields the same changes each time it is called, checked
// as DecodeChanges checks them; a yielded Change is valid until the next
// is yielded. An error (wrapping ErrCorrupt) is yielded with a nil Change
// and ends the sequence; it may come after changes were yielded, when the
// batch's end does not match what it declared. Ops is the op count the
// batch declares and Text the bytes of its inserted text (0 if its header
// is corrupt).
//
// data must not change while the sequence is used.
func ChangeSeq(data []byte) crdt.ChangeSeq {
	sb := &seqBatch{}
	sb.hErr = sb.h.parse(data)
	ops, text := 0, 0
	if sb.hErr == nil {
		sb.h.setText()
		ops, text = int(sb.h.nOps), len(sb.h.text)
	}
	return crdt.ChangeSeq{All: sb.all, Ops: ops, Text: text}
}

// seqBatch is a ChangeSeq: the parsed header and a decoder in one
// allocation, as a remote keystroke is a batch of its own (the header's
// columns were copied into a decoder of their own, twice per batch, and
// were a fifth of receiving one).
type seqBatch struct {
	h    batchHeader
	hErr error
	dec  changeDecoder
	busy bool // dec is reading h's columns (see all)
}

func (sb *seqBatch) all(yield func(*crdt.Change, error) bool) {
	if sb.hErr != nil {
		yield(nil, fmt.Errorf("%w: %v", ErrCorrupt, sb.hErr))
		return
	}
	// The decoder reads the header's columns in place; a second
	// iteration while one is under way (a caller's choice) reads a copy.
	h, dec := &sb.h, &sb.dec
	if sb.busy {
		hc := sb.h
		h, dec = &hc, new(changeDecoder)
	} else {
		sb.busy = true
		defer func() { sb.busy = false }()
	}
	dec.start(h)
	defer dec.releasePredictor()
	err := dec.run(nil, nil, func(c *crdt.Change) bool { return yield(c, nil) })
	if err != nil { // never after yield returned false
		yield(nil, fmt.Errorf("%w: %v", ErrCorrupt, err))
	}
}

// batchHeader is what an encoded batch declares before its changes: the
// replica and field tables, the counts, and the columns.
type batchHeader struct {
	reps      []crdt.ReplicaID
	fields    []string
	nRep      uint64
	nField    uint64
	nCh, nOps uint64
	cols      [numColumns]rleReader
	nIns      uint64 // inserts (op.kind symbols of OpTextInsert)
	text      string // all inserted text; op texts are substrings
	raw       int    // the batch's size inflated
	read      bool   // start has moved the column readers since parse
	// names, if set, are field names to use rather than allocate when
	// the batch names them (parse adds those it allocates).
	names *nameCache
	// Room for the tables of a small batch (reps and fields then point
	// here): a keystroke's header allocates nothing for them.
	repBuf   [smallTable]crdt.ReplicaID
	fieldBuf [smallFields]string
}

// smallTable and smallFields are the sizes of the tables a header holds
// itself.
const (
	smallTable  = 4
	smallFields = 2
)

// scanTable is the size up to which a batch's tables are checked for
// duplicates by a scan rather than a map: up to 120 comparisons of 16
// bytes cost less than hashing each id twice, let alone making the map
// (a room's fan-out batch of queued keystrokes names about one replica
// per writer).
const scanTable = 16

// parse reads the header of data (inflated first if it is deflated) into
// h, which must be zero or a header parse filled before (nothing returned
// points into it), and checks it: tables, counts against the limits
// and the bytes left, column lengths, and that the inserted text is UTF-8.
func (h *batchHeader) parse(data []byte) error {
	in := byteReader{b: data}
	if len(data) == 0 {
		return errors.New("empty input")
	}
	if data[0] == ChangesFormatDeflate {
		plain, err := inflate(data)
		if err != nil {
			return err
		}
		data, in = plain, byteReader{b: plain}
	}
	h.raw = len(data) // first: release goes by it, whether parse fails or not
	if data[0] != ChangesFormat {
		return fmt.Errorf("unknown format %d (want %d or %d)", data[0], ChangesFormat, ChangesFormatDeflate)
	}
	in.pos = 1

	nRep, ok := in.small() // the header's counts and lengths: small first, inlined
	var err error
	if !ok {
		nRep, err = in.uvarint()
	}
	if err != nil {
		return fmt.Errorf("replica count: %w", err)
	}
	if nRep > uint64(in.left()/16) {
		return fmt.Errorf("%d replicas but only %d bytes left", nRep, in.left())
	}
	// A small table (a keystroke names two or three replicas) goes in
	// the header itself and is checked for duplicates without a map.
	if nRep <= uint64(len(h.repBuf)) {
		h.reps = h.repBuf[:nRep]
	} else {
		h.reps = make([]crdt.ReplicaID, nRep)
	}
	reps := h.reps
	var seen map[crdt.ReplicaID]struct{}
	if nRep > scanTable {
		seen = make(map[crdt.ReplicaID]struct{}, nRep)
	}
	for i := range reps {
		// In range: nRep was checked against the bytes left. An array
		// conversion, not take and copy: two moves, no calls.
		reps[i] = crdt.ReplicaID(in.b[in.pos : in.pos+16])
		in.pos += 16
		if reps[i].IsZero() {
			return fmt.Errorf("replica %d is the zero id", i)
		}
		dup := false
		if seen != nil {
			_, dup = seen[reps[i]]
			seen[reps[i]] = struct{}{}
		} else {
			dup = slices.Contains(reps[:i], reps[i])
		}
		if dup {
			return fmt.Errorf("replica %s listed twice", reps[i])
		}
	}

	nField, ok := in.small()
	if !ok {
		nField, err = in.uvarint()
	}
	if err != nil {
		return fmt.Errorf("field count: %w", err)
	}
	if nField > uint64(in.left()) {
		return fmt.Errorf("%d fields but only %d bytes left", nField, in.left())
	}
	if nField <= uint64(len(h.fieldBuf)) {
		h.fields = h.fieldBuf[:nField]
	} else {
		h.fields = make([]string, nField)
	}
	fields := h.fields
	var seenField map[string]struct{}
	if nField > scanTable {
		seenField = make(map[string]struct{}, nField)
	}
	for i := range fields {
		n, ok := in.small()
		if !ok {
			n, err = in.uvarint()
		}
		if err != nil {
			return fmt.Errorf("field %d: %w", i, err)
		}
		if n > MaxFieldName {
			return fmt.Errorf("field %d: name of %d bytes exceeds %d", i, n, MaxFieldName)
		}
		b, err := in.take(n)
		if err != nil {
			return fmt.Errorf("field %d: %w", i, err)
		}
		// A cached name equal to b was checked (UTF-8) when cached.
		if name, ok := h.names.lookupFirst(i, b); ok {
			fields[i] = name
		} else {
			if !utf8.Valid(b) {
				return fmt.Errorf("field %d: name is not UTF-8", i)
			}
			fields[i] = string(b)
			if h.names != nil && i < nameSlots {
				h.names.add(fields[i])
			}
		}
		dup := false
		if seenField != nil {
			_, dup = seenField[fields[i]]
			seenField[fields[i]] = struct{}{}
		} else {
			dup = slices.Contains(fields[:i], fields[i])
		}
		if dup {
			return fmt.Errorf("field %q listed twice", fields[i])
		}
	}

	nCh, ok := in.small()
	if !ok {
		nCh, err = in.uvarint()
	}
	if err != nil {
		return fmt.Errorf("change count: %w", err)
	}
	nOps, ok := in.small()
	if !ok {
		nOps, err = in.uvarint()
	}
	if err != nil {
		return fmt.Errorf("op count: %w", err)
	}
	switch {
	case nCh > uint64(changesLimit):
		return fmt.Errorf("%d changes exceed the limit %d", nCh, changesLimit)
	case nOps > uint64(opsLimit):
		return fmt.Errorf("%d ops exceed the limit %d", nOps, opsLimit)
	case nOps < nCh:
		return fmt.Errorf("%d ops for %d changes (every change has one)", nOps, nCh)
	case nCh > 0 && nRep == 0:
		return errors.New("changes but no replicas")
	}

	cols := &h.cols // in place: a copy of the readers costs write barriers
	// The position is kept in a local (in, whose address the slow paths
	// take, lives in memory): in.pos is only current around them.
	body, pos := in.b, in.pos
	for c := range cols {
		var n uint64
		if pos < len(body) && body[pos] < 0x80 {
			n = uint64(body[pos])
			pos++
		} else {
			in.pos = pos
			var err error
			if n, err = in.uvarint(); err != nil {
				return fmt.Errorf("column %s length: %w", columnNames[c], err)
			}
			pos = in.pos
		}
		if n > uint64(len(body)-pos) {
			in.pos = pos
			_, err := in.take(n)
			return fmt.Errorf("column %s: %w", columnNames[c], err)
		}
		// Field by field: a struct literal stored here was copied with
		// write barriers.
		end := pos + int(n)
		r := &cols[c]
		r.b, r.col = body[pos:end:end], uint8(c)
		r.pos, r.run, r.lit, r.val = 0, 0, 0, 0
		if r.err != nil {
			r.err = nil
		}
		pos = end
	}
	in.pos = pos
	h.read = false
	if in.left() != 0 {
		return fmt.Errorf("%d trailing bytes", in.left())
	}
	// The counts must be the ones the columns carry, checked before a
	// decoder allocates by them: a few header bytes can declare 2^18
	// changes that no column holds.
	nIns, err := checkCounts(cols, nCh, nOps)
	if err != nil {
		return err
	}
	h.nRep, h.nField, h.nCh, h.nOps, h.nIns = nRep, nField, nCh, nOps, nIns
	// The text is checked here and made a string by the caller (see
	// setText): a delivery of one edit copies it into its change's
	// allocation.
	h.text = ""
	if textCol := cols[colInsText].b; len(textCol) != 0 && !utf8.Valid(textCol) {
		return errors.New("inserted text is not UTF-8")
	}
	return nil
}

// setText makes h.text, which op texts are substrings of, from the
// inserted text parse checked: one allocation.
func (h *batchHeader) setText() {
	if b := h.cols[colInsText].b; len(b) != 0 {
		h.text = string(b)
	}
}

// changeDecoder decodes the changes of a parsed batch one at a time, with
// the state that carries from one change to the next. It reads (and
// consumes) the header's column readers in place.
type changeDecoder struct {
	h        *batchHeader
	cols     *[numColumns]rleReader
	kinds    kindReader
	values   *byteReader
	ids      [numIDCols]idCoder
	pred     *predictor // nil when tiny predicts
	tiny     tinyPredictor
	expected []uint64
	textPos  int // for finish: the inserted text used
	opAt     int // for finish: the ops decoded
	// Room for the cursors and expected seqs of a batch of few replicas,
	// and for a one-op change decoded for yield: a keystroke then
	// allocates nothing here.
	small [(numIDCols + 1) * 4]uint64
	opBuf [1]crdt.Op
	one   crdt.Change // the change decoded for yield
}

// start readies dc to decode h's changes from the first, rewinding h's
// column readers if they were read before; call releasePredictor when
// done.
func (dc *changeDecoder) start(h *batchHeader) {
	if h.read {
		for c := range h.cols {
			// Only the pointer-free fields, and err when set:
			// rewinding copies nothing and so takes no write
			// barriers.
			r := &h.cols[c]
			r.pos, r.run, r.lit, r.val = 0, 0, 0, 0
			if r.err != nil {
				r.err = nil
			}
		}
	}
	h.read = true
	dc.h, dc.cols = h, &h.cols
	dc.kinds = kindReader{byteReader: h.cols[colOpKind].byteReader}
	dc.values = &h.cols[colSetValue].byteReader
	// The kinds and the text are read through copies: for finish, their
	// columns are used up.
	h.cols[colOpKind].pos = len(h.cols[colOpKind].b)
	h.cols[colInsText].pos = len(h.cols[colInsText].b)
	n := int(h.nRep)
	var cur []uint64
	if k := (numIDCols + 1) * n; k <= len(dc.small) {
		cur = dc.small[:k]
		clear(cur)
	} else {
		cur = make([]uint64, k)
	}
	for k := range dc.ids {
		dc.ids[k] = idCoder{cursor: cur[k*n : (k+1)*n : (k+1)*n], nRep: max(h.nRep, 1)}
	}
	dc.expected = cur[numIDCols*n:]
	dc.textPos, dc.opAt = 0, 0
	if h.nIns <= tinyInserts {
		dc.pred, dc.tiny.nAfter, dc.tiny.nEnd = nil, 0, 0
	} else {
		dc.pred = newPredictor(int(h.nIns))
	}
}

// releasePredictor returns dc's pooled predictor, if it took one.
func (dc *changeDecoder) releasePredictor() {
	if dc.pred != nil {
		dc.pred.release()
		dc.pred = nil
	}
}

// run decodes the batch's changes in order. Given cs and ops (as many as
// the header declares) it decodes into them; given nil, it decodes into one
// Change and ops it reuses, handing each change to yield, and stops early
// (returning nil) when yield returns false. After the last change it
// checks that every column was used up exactly.
func (dc *changeDecoder) run(cs []crdt.Change, ops []crdt.Op, yield func(*crdt.Change) bool) error {
	h := dc.h
	nRep, nOps, nField, reps, fields, text := h.nRep, h.nOps, h.nField, h.reps, h.fields, h.text
	ids, pred, expected := &dc.ids, dc.pred, dc.expected
	kinds, values := &dc.kinds, dc.values
	cols := dc.cols
	chRep, chSeq, chTime, chLogical, chOps := &cols[colChReplica], &cols[colChSeq], &cols[colChTime], &cols[colChLogical], &cols[colChOps]
	opField := &cols[colOpField]
	insLen, insLeft, insRight := &cols[colInsLen], &cols[colInsLeft], &cols[colInsRight]
	delTarget, delCount, delBackward := &cols[colDelTarget], &cols[colDelCount], &cols[colDelBackward]
	addDelta, setLen := &cols[colAddDelta], &cols[colSetLen]
	textPos, opAt := 0, 0
	var prevWall int64
	var prevLog uint16
	reuse := cs == nil
	for i := 0; uint64(i) < h.nCh; i++ {
		ch := &dc.one
		if !reuse {
			ch = &cs[i]
		}
		r := chRep.next()
		if chRep.err != nil {
			return chRep.err
		}
		if r >= nRep {
			return fmt.Errorf("change %d: replica index %d of %d", i, r, nRep)
		}
		ch.Replica = reps[r]
		dz := chSeq.next()
		if chSeq.err != nil {
			return chSeq.err
		}
		if expected[r] == 0 {
			expected[r] = 1
		}
		d := unzigzag(dz)
		if d > MaxSeq || d < -MaxSeq || int64(expected[r])+d < 1 || int64(expected[r])+d > MaxSeq {
			return fmt.Errorf("change %d: seq out of range [1, 2^40]", i)
		}
		ch.Seq = uint64(int64(expected[r]) + d)
		startChange(ids, int(r), ch.Seq)

		tc := chTime.next()
		if chTime.err != nil {
			return chTime.err
		}
		const maxWall = 1<<(64-hlc.LogicalBits) - 1
		wall, logical := prevWall, int64(prevLog)
		if d := unzigzag(tc >> 1); tc&1 == 0 {
			if d >= 1<<hlc.LogicalBits || d <= -1<<hlc.LogicalBits {
				return fmt.Errorf("change %d: logical clock out of range", i)
			}
			logical += d
		} else {
			wall += d
			if d == 0 || d > maxWall || d < -maxWall || wall < 0 || wall > maxWall {
				return fmt.Errorf("change %d: wall time out of range", i)
			}
			lv := chLogical.next()
			if chLogical.err != nil {
				return chLogical.err
			}
			if lv >= 1<<hlc.LogicalBits {
				return fmt.Errorf("change %d: logical clock out of range", i)
			}
			logical = int64(lv)
		}
		if logical < 0 || logical >= 1<<hlc.LogicalBits {
			return fmt.Errorf("change %d: logical clock out of range", i)
		}
		ch.Time = hlc.New(wall, uint16(logical))
		prevWall, prevLog = wall, uint16(logical)

		n := chOps.next()
		if chOps.err != nil {
			return chOps.err
		}
		if n == 0 {
			return fmt.Errorf("change %d has no ops", i)
		}
		if n > nOps-uint64(opAt) {
			return fmt.Errorf("change %d: %d ops but only %d left of %d", i, n, nOps-uint64(opAt), nOps)
		}
		if reuse {
			if ops == nil {
				ops = dc.opBuf[:]
			}
			if uint64(cap(ops)) < n {
				ops = make([]crdt.Op, n)
			}
			// NB: reused ops and change are the decoder's, in the
			// heap, and a pointer stored there is a write barrier
			// while the collector marks (which a merge of 10,000
			// keystrokes runs into): store only what changed.
			if uint64(len(ch.Ops)) != n || &ch.Ops[0] != &ops[0] {
				ch.Ops = ops[:n:n]
			}
		} else {
			ch.Ops = ops[opAt : opAt+int(n) : opAt+int(n)]
		}
		opAt += int(n)
		seq := ch.Seq
		for j := range ch.Ops {
			op := &ch.Ops[j]
			if reuse {
				// Every field but the pointers, which are set or
				// cleared below (see clearOp).
				op.Backward, op.Delta, op.Count = false, 0, 0
				op.Left = crdt.ID{}
				op.Right = crdt.ID{}
				op.Target = crdt.ID{}
			}
			k := kinds.next()
			if kinds.err != nil {
				return kinds.err
			}
			op.Kind = crdt.OpKind(k + 1)
			fi := opField.next()
			if opField.err != nil {
				return opField.err
			}
			if fi >= nField {
				return fmt.Errorf("change %d op %d: field index %d of %d", i, j, fi, nField)
			}
			if f := fields[fi]; unsafe.StringData(op.Field) != unsafe.StringData(f) || len(op.Field) != len(f) {
				op.Field = f // not the same string: store (see above)
			}
			size := uint64(1) // seqs the op takes
			switch op.Kind {
			case crdt.OpTextInsert:
				nr := insLen.next()
				if insLen.err != nil {
					return insLen.err
				}
				if nr == 0 || nr > uint64(len(text)-textPos) {
					return fmt.Errorf("change %d op %d: insert of %d runes, %d bytes of text left", i, j, nr, len(text)-textPos)
				}
				size = nr
				start := textPos
				if nr == 1 && text[textPos] < utf8.RuneSelf {
					textPos++
				} else {
					for ; nr > 0; nr-- {
						_, size := utf8.DecodeRuneInString(text[textPos:])
						textPos += size
						if textPos >= len(text) && nr > 1 {
							return fmt.Errorf("change %d op %d: inserted text runs out", i, j)
						}
					}
				}
				op.Text = text[start:textPos]
				var left, right pid
				code := insLeft.next()
				if insLeft.err != nil {
					return insLeft.err
				}
				if code != 0 {
					ri, s, err := ids[idLeft].decode(code)
					if err != nil {
						return fmt.Errorf("column %s: %w", insLeft.name(), err)
					}
					op.Left, left = crdt.ID{Replica: reps[ri], Seq: s}, packID(ri, s)
				}
				rc := insRight.next()
				if insRight.err != nil {
					return insRight.err
				}
				switch rc {
				case 0:
					var guess pid
					var ok bool
					if pred != nil {
						guess, ok = pred.right(left)
					} else {
						guess, ok = dc.tiny.right(left)
					}
					if !ok {
						return fmt.Errorf("change %d op %d: right origin predicted where there is no prediction", i, j)
					}
					if guess.seq() > MaxSeq {
						return fmt.Errorf("change %d op %d: predicted right origin past MaxSeq", i, j)
					}
					if right = guess; right != 0 {
						op.Right = crdt.ID{Replica: reps[guess.index()], Seq: guess.seq()}
						ids[idRight].cursor[guess.index()] = guess.seq()
					}
				case 1:
					op.Right = crdt.ID{}
				default:
					ri, s, err := ids[idRight].decode(rc - 1)
					if err != nil {
						return fmt.Errorf("change %d op %d: right origin: %w", i, j, err)
					}
					op.Right, right = crdt.ID{Replica: reps[ri], Seq: s}, packID(ri, s)
				}
				if pred != nil {
					pred.inserted(packID(int(r), seq), size, left, right)
				} else {
					dc.tiny.inserted(packID(int(r), seq), size, left, right)
				}
				ids[idLeft].cursor[r] = seq + size - 1
			case crdt.OpTextDelete:
				code := delTarget.next()
				if delTarget.err != nil {
					return delTarget.err
				}
				if code == 0 {
					return fmt.Errorf("change %d op %d: delete without target", i, j)
				}
				ti, s, err := ids[idTarget].decode(code)
				if err != nil {
					return fmt.Errorf("change %d op %d: delete target: %w", i, j, err)
				}
				op.Target = crdt.ID{Replica: reps[ti], Seq: s}
				if op.Count = delCount.next(); delCount.err != nil {
					return delCount.err
				}
				b := delBackward.next()
				if delBackward.err != nil {
					return delBackward.err
				}
				if b > 1 {
					return fmt.Errorf("change %d op %d: backward flag %d", i, j, b)
				}
				op.Backward = b == 1
				switch {
				case op.Count == 0:
					return fmt.Errorf("change %d op %d: delete of 0 characters", i, j)
				case op.Count > MaxSeq:
					return fmt.Errorf("change %d op %d: delete of %d characters", i, j, op.Count)
				case op.Backward && op.Count > s:
					return fmt.Errorf("change %d op %d: backward delete runs below seq 1", i, j)
				case !op.Backward && s+op.Count-1 > MaxSeq:
					return fmt.Errorf("change %d op %d: delete runs past MaxSeq", i, j)
				}
				size = op.Count
			case crdt.OpCounterAdd:
				dz := addDelta.next()
				if addDelta.err != nil {
					return addDelta.err
				}
				op.Delta = unzigzag(dz)
			case crdt.OpRegisterSet:
				n := setLen.next()
				if setLen.err != nil {
					return setLen.err
				}
				b, err := values.take(n)
				if err != nil {
					return fmt.Errorf("change %d op %d: register value: %w", i, j, err)
				}
				op.Value = append([]byte(nil), b...)
			}
			if reuse {
				clearOp(op)
			}
			seq += size
			if seq-1 > MaxSeq {
				return fmt.Errorf("change %d: seqs run past MaxSeq", i)
			}
		}
		expected[r] = seq
		if reuse && !yield(ch) {
			return nil
		}
	}
	dc.textPos, dc.opAt = textPos, opAt
	return dc.finish()
}

// clearOp clears the pointers a reused op kept from an earlier op that
// its kind does not set, storing only those that are set (see run).
func clearOp(op *crdt.Op) {
	if op.Kind != crdt.OpTextInsert && op.Text != "" {
		op.Text = ""
	}
	if op.Kind != crdt.OpRegisterSet && op.Value != nil {
		op.Value = nil
	}
}

// finish checks, after the last change, that every column was consumed
// exactly.
func (dc *changeDecoder) finish() error {
	// What is left over anywhere, in one pass (start marked the
	// columns read otherwise as used up); the checks below find where
	// and say so.
	left := uint64(dc.kinds.run) | uint64(dc.kinds.left())
	for c := range dc.cols {
		r := &dc.cols[c]
		left |= r.run | r.lit | uint64(r.left())
	}
	if left == 0 && uint64(dc.opAt) == dc.h.nOps && dc.textPos == len(dc.h.text) && dc.values.left() == 0 {
		return nil
	}
	if uint64(dc.opAt) != dc.h.nOps {
		return fmt.Errorf("%d ops declared, %d used", dc.h.nOps, dc.opAt)
	}
	if dc.textPos != len(dc.h.text) {
		return fmt.Errorf("%d bytes of inserted text left over", len(dc.h.text)-dc.textPos)
	}
	if dc.values.left() != 0 {
		return fmt.Errorf("%d bytes of register values left over", dc.values.left())
	}
	for c := range dc.cols {
		if c == colInsText || c == colSetValue || c == colOpKind {
			continue
		}
		if err := dc.cols[c].done(); err != nil {
			return err
		}
	}
	if err := dc.kinds.done(); err != nil {
		return err
	}
	return nil
}

// pid packs an id as replica table index << 41 | seq (seqs are at most
// MaxSeq = 2^40, and a predicted successor at most 2^40 + 1). 0 is the zero
// id. Packed ids make the predictor's maps cheap: 8-byte keys instead of
// 24-byte ones.
type pid uint64

const pidSeqBits = 41

func packID(index int, seq uint64) pid { return pid(uint64(index)<<pidSeqBits | seq) }
func (p pid) index() int               { return int(p >> pidSeqBits) }
func (p pid) seq() uint64              { return uint64(p) & (1<<pidSeqBits - 1) }

// predictor guesses an insert's Right origin from its Left, using the
// inserts seen earlier in the same batch, so that the common case costs one
// RLE-friendly 0 instead of a second id. For an insert after L:
//  1. if an earlier insert of the batch also had Left = L, it sits right
//     after L now (sequential inserts at one place push older ones right):
//     Right is that insert's first id;
//  2. else if L is the zero id (the start), there is no guess;
//  3. else if L is the last character of a run inserted in this batch, the
//     new character goes between L and what L's run had on its right:
//     Right is that run's Right;
//  4. else Right is L's successor in L's own run (L.Seq+1): typing runs and
//     text loaded in one piece are contiguous.
//
// A wrong guess costs nothing beyond the explicit code. Encoder and decoder
// run the same predictor over the same ops, so the guess is the same on both
// sides.
type predictor struct {
	lastAfter pidTable // Left origin → first id of the latest insert with it
	runEnd    pidTable // last id of an inserted run → the run's Right origin
}

// predictors recycles predictors and their tables: decoding a keystroke
// would otherwise allocate two tables per message, the largest part of a
// client's allocations under load. One is kept across collections (see
// keptPool): each merge of two offline sessions of 10,000 keystrokes
// allocated 224 KB of tables afresh, 7 % of what it allocated, enough to
// start a collection in it. Kept, they cost at most 2 * maxKeptTable
// words (see release) for the life of the process.
var predictors keptPool[predictor]

// keptPool is a sync.Pool with one value kept ahead of it, across
// collections, which the pool does not do: it is emptied by the second
// collection after a put, and a large batch comes rarely enough (a peer's
// catch-up, a stored log loaded, a merge of offline sessions) that the
// pooled buffers were nearly always gone by the next one.
type keptPool[T any] struct {
	kept atomic.Pointer[T]
	pool sync.Pool
}

// get returns the kept value, else a pooled one, else a new one.
func (k *keptPool[T]) get() *T {
	if x := k.kept.Swap(nil); x != nil {
		return x
	}
	if x, ok := k.pool.Get().(*T); ok {
		return x
	}
	return new(T)
}

// put keeps x if keep and nothing is kept, else pools it if pool, else
// drops it.
func (k *keptPool[T]) put(x *T, keep, pool bool) {
	if keep && k.kept.CompareAndSwap(nil, x) {
		return
	}
	if pool {
		k.pool.Put(x)
	}
}

// newPredictor returns an empty predictor for about size inserts (-1:
// unknown, when the tables a pooled predictor has are kept whole, as the
// batches that do not know their size are large ones); release it when
// done.
func newPredictor(size int) *predictor {
	p := predictors.get()
	p.lastAfter.init(size)
	p.runEnd.init(size)
	return p
}

// release keeps p (see predictors) if nothing is kept and its tables
// have at most maxKeptTable words each, else returns it to the pool
// unless its tables are larger than maxPooledTable wide slots.
func (p *predictor) release() {
	n := max(cap(p.lastAfter.w), cap(p.runEnd.w))
	predictors.put(p, n <= maxKeptTable, n <= 2*maxPooledTable)
}

// maxKeptTable bounds the words of a kept predictor's tables: 256 KB
// each, room for a batch of about 16k inserts (a delta of 10,000
// keystrokes takes 14,000 words).
const maxKeptTable = 1 << 15

// maxPooledTable bounds the slots of a pooled table. Tables hold at most
// half their slots, so pooled tables serve batches of up to 32k inserts
// (a merge of offline sessions, a large paste) without allocating and
// faulting in fresh pages per batch; at 8 or 16 bytes a slot, a pooled
// predictor keeps at most 2 MiB, and the pool lets idle ones go at GC.
// Larger batches allocate their tables and drop them.
const maxPooledTable = 1 << 16

func (p *predictor) right(left pid) (pid, bool) {
	if id, ok := p.lastAfter.get(left); ok {
		return id, true
	}
	if left == 0 {
		return 0, false
	}
	if r, ok := p.runEnd.get(left); ok {
		return r, true
	}
	return left + 1, true
}

func (p *predictor) inserted(first pid, n uint64, left, right pid) {
	p.lastAfter.put(left, first)
	p.runEnd.put(first+pid(n)-1, right)
}

// pidTable is a hash map from pid to pid with open addressing and linear
// probing: the predictor does two puts and up to two gets per insert, and
// this is several times cheaper than a Go map for 8-byte keys. A key and its
// value share a slot, so a probe touches one cache line. The zero key (the
// zero id, a legitimate Left) is kept aside, as 0 marks empty slots.
//
// A slot is one word, the key's and the value's narrow forms (see
// narrowPid), while every pid put fits them: the ids of a batch of fewer
// than 64 replicas and seqs below 2^26, which is nearly every batch. The
// first that does not turns the table wide, two words a slot. (At 16 bytes
// a slot, the tables of a merge of 10,000 keystrokes were an eighth of
// what it allocated.) The table has any number of slots, not only a power
// of two, so that it is sized for its keys rather than up to twice that.
type pidTable struct {
	w       []uint64 // narrow: key<<32 | val a slot; wide: key, val
	size    int      // slots
	wide    bool
	n       int
	zero    pid
	hasZero bool
}

// narrowPid returns p in 32 bits, replica index << 26 | seq, if it fits.
// Only the zero pid has the narrow form 0.
func narrowPid(p pid) (uint32, bool) {
	if p.index() >= 1<<6 || p.seq() >= 1<<26 {
		return 0, false
	}
	return uint32(p.index())<<26 | uint32(p.seq()), true
}

func widePid(x uint32) pid { return packID(int(x>>26), uint64(x&(1<<26-1))) }

// init empties the table and sizes it for about hint keys (-1: unknown),
// reusing its array when it is big enough for them.
func (t *pidTable) init(hint int) {
	// Made with two slots a key, a table grows at two keys in three
	// slots. NB: so a pooled array serves a hint up to a third larger
	// than the one it was made for: an encoder and then the decoders
	// of a merge share one predictor from the pool, and their hints,
	// counted differently, differ by a little.
	want, need := max(2*hint, 16), max(hint+hint/2+1, 16)
	if hint < 0 {
		want, need = max(1024, cap(t.w)), 1024 // keep what the pool has
	}
	if cap(t.w) >= need {
		t.size = min(want, cap(t.w))
		t.w = t.w[:t.size]
		clear(t.w)
	} else {
		t.size = want
		t.w = make([]uint64, want)
	}
	t.wide = false
	t.n, t.zero, t.hasZero = 0, 0, false
}

// full reports whether one more key would fill more than two slots in
// three.
func (t *pidTable) full() bool { return 3*(t.n+1) > 2*t.size }

// slot returns the first slot to probe for k: its hash's high bits scaled
// to the table's size (a multiply, not a modulo).
func (t *pidTable) slot(k pid) int {
	hi, _ := bits.Mul64(uint64(k)*0x9e3779b97f4a7c15, uint64(t.size))
	return int(hi)
}

func (t *pidTable) get(k pid) (pid, bool) {
	if k == 0 {
		return t.zero, t.hasZero
	}
	if t.wide {
		for i := t.slot(k); ; i++ {
			if i == t.size {
				i = 0
			}
			switch t.w[2*i] {
			case uint64(k):
				return pid(t.w[2*i+1]), true
			case 0:
				return 0, false
			}
		}
	}
	nk, ok := narrowPid(k)
	if !ok {
		return 0, false // every key put so far is narrow
	}
	w := t.w[:t.size]
	for i := t.slot(k); ; i++ {
		if i == len(w) {
			i = 0
		}
		switch e := w[i]; e >> 32 {
		case uint64(nk):
			return widePid(uint32(e)), true
		case 0:
			return 0, false
		}
	}
}

func (t *pidTable) put(k, v pid) {
	if k == 0 {
		t.zero, t.hasZero = v, true
		return
	}
	if t.full() {
		t.grow(4)
	}
	if !t.wide {
		nk, ok1 := narrowPid(k)
		nv, ok2 := narrowPid(v)
		if ok1 && ok2 {
			w := t.w[:t.size]
			for i := t.slot(k); ; i++ {
				if i == len(w) {
					i = 0
				}
				switch w[i] >> 32 {
				case uint64(nk), 0:
					if w[i] == 0 {
						t.n++
					}
					w[i] = uint64(nk)<<32 | uint64(nv)
					return
				}
			}
		}
		t.grow(1) // the same slots, wide
	}
	for i := t.slot(k); ; i++ {
		if i == t.size {
			i = 0
		}
		switch t.w[2*i] {
		case uint64(k), 0:
			if t.w[2*i] == 0 {
				t.n++
			}
			t.w[2*i], t.w[2*i+1] = uint64(k), uint64(v)
			return
		}
	}
}

// grow multiplies the table's slots by f, or with f = 1 only makes it
// wide, and puts its keys again. Only a batch whose size was unknown
// grows the slots; they quadruple, as doubling from the first size left
// as much garbage as the table.
func (t *pidTable) grow(f int) {
	old, oldSize, oldWide := t.w, t.size, t.wide
	// f = 1 turns the table wide; more slots keep it as it was.
	t.size, t.wide = f*oldSize, oldWide || f == 1
	words := t.size
	if t.wide {
		words *= 2
	}
	t.w, t.n = make([]uint64, words), 0
	for i := range oldSize {
		var k, v pid
		if oldWide {
			k, v = pid(old[2*i]), pid(old[2*i+1])
		} else if e := old[i]; e != 0 {
			k, v = widePid(uint32(e>>32)), widePid(uint32(e))
		}
		if k != 0 {
			t.put(k, v)
		}
	}
}

// checkCounts checks a batch's declared change and op counts against its
// columns without decoding them: change.replica must hold nCh values and
// op.kind nOps, and change.ops must add up to nOps.
// It returns the number of inserts op.kind holds.
func checkCounts(cols *[numColumns]rleReader, nCh, nOps uint64) (inserts uint64, err error) {
	// One change of one op (a delivery of one edit), its columns a
	// group of one one-byte value each, as rleCount and kindCount would
	// find them without their loops.
	if nCh == 1 && nOps == 1 {
		rep, ops, kind := cols[colChReplica].b, cols[colChOps].b, cols[colOpKind].b
		if len(rep) == 2 && rep[0] < 2 && rep[1] < 0x80 &&
			len(ops) == 2 && ops[0] < 2 && ops[1] == 1 &&
			len(kind) == 1 && kind[0] < 4 {
			if kind[0] == byte(crdt.OpTextInsert-1) {
				return 1, nil
			}
			return 0, nil
		}
	}
	limit := uint64(max(changesLimit, opsLimit)) + 1
	if n, _, ok := rleCount(cols[colChReplica].b, limit, nil); !ok || n != nCh {
		return 0, fmt.Errorf("%d changes declared, column %s holds %s", nCh, columnNames[colChReplica], countWord(n, ok))
	}
	n, sum, ok := rleCount(cols[colChOps].b, limit, func(v uint64) uint64 { return v })
	if !ok || n != nCh || sum != nOps {
		return 0, fmt.Errorf("%d changes of %d ops declared, column %s holds %s", nCh, nOps, columnNames[colChOps], countWord(n, ok))
	}
	n, inserts, ok = kindCount(cols[colOpKind].b, limit, byte(crdt.OpTextInsert-1))
	if !ok || n != nOps {
		return 0, fmt.Errorf("%d ops declared, column %s holds %s", nOps, columnNames[colOpKind], countWord(n, ok))
	}
	return inserts, nil
}

func countWord(n uint64, ok bool) string {
	if !ok {
		return "a malformed or oversized list"
	}
	return fmt.Sprintf("%d values", n)
}

// Info is what a batch holds, read from its header and columns without
// decoding its changes: enough for a server to charge rate, document and
// register limits before paying for DecodeChanges or ChangeSeq, and to
// charge them on decoded sizes rather than on the bytes received (a
// compressed or run-length coded batch can be far larger decoded).
type Info struct {
	Changes int // changes in the batch
	Ops     int // ops in the batch
	// Replicas is the size of the batch's replica table.
	Replicas int
	// Inserts and Sets count the insert and register-set ops.
	Inserts, Sets int
	// TextBytes is the UTF-8 text all inserts add, in bytes (what the
	// document's content grows by, at most, if the batch is applied).
	TextBytes int
	// ValueBytes is the total size of the register values written, and
	// MaxValue the largest one.
	ValueBytes, MaxValue int
	// RawBytes is the batch's size decoded from DEFLATE (its own size
	// when it is not compressed).
	RawBytes int
}

// Inspect returns what a batch holds (see Info), checking its header and
// that its declared counts match its columns, as DecodeChanges does before
// it allocates anything; the changes themselves are not decoded or
// validated, so DecodeChanges may still refuse the batch. A compressed
// batch is inflated (at most MaxRawBatch bytes, allocated as inflated).
// Errors wrap ErrCorrupt.
func Inspect(data []byte) (Info, error) {
	// The header is decodeChanges' pooled scratch: allocated and zeroed
	// (it escapes) it made the check a server runs on every update
	// before decoding it cost 1.2-2.0 µs and 1,796 B for a keystroke;
	// pooled, 0.20-0.38 µs and nothing (BenchmarkInspectKeystroke, 3 runs
	// each, load 9-12).
	sc := decodeScratch.Get().(*decodeBufs)
	defer sc.release(data)
	h := &sc.h
	h.names = &sc.names
	if err := h.parse(data); err != nil {
		return Info{}, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	info := Info{
		Changes: int(h.nCh), Ops: int(h.nOps), Replicas: int(h.nRep),
		TextBytes: len(h.cols[colInsText].b), ValueBytes: len(h.cols[colSetValue].b), RawBytes: h.raw,
	}
	limit := uint64(max(changesLimit, opsLimit)) + 1
	_, nIns, _ := kindCount(h.cols[colOpKind].b, limit, byte(crdt.OpTextInsert-1))
	_, nSets, _ := kindCount(h.cols[colOpKind].b, limit, byte(crdt.OpRegisterSet-1))
	info.Inserts, info.Sets = int(nIns), int(nSets)
	// The largest value: a pass over set.len (which decoding checks
	// against set.value).
	largest := uint64(0)
	if _, _, ok := rleCount(h.cols[colSetLen].b, limit, func(v uint64) uint64 {
		largest = max(largest, v)
		return 0
	}); !ok {
		return Info{}, fmt.Errorf("%w: column %s is malformed", ErrCorrupt, columnNames[colSetLen])
	}
	info.MaxValue = int(min(largest, uint64(info.ValueBytes)))
	return info, nil
}
