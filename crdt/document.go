package crdt

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"iter"
	"slices"
	"sort"
	"strings"
	"unsafe"

	"github.com/weftsync/weft/hlc"
)

// Options configure a Doc.
type Options struct {
	// MaxPending bounds the changes held while their dependencies are
	// missing. Default: 4096.
	MaxPending int
}

// DefaultOptions returns the options NewDoc uses for zero fields.
func DefaultOptions() Options { return Options{MaxPending: 4096} }

func (o Options) withDefaults() Options {
	def := DefaultOptions()
	if o.MaxPending <= 0 {
		o.MaxPending = def.MaxPending
	}
	return o
}

// maxSeq bounds sequence numbers (they are 32-bit inside a Doc).
const maxSeq = 1<<32 - 2

// MaxFieldName is the longest field name, in bytes.
const MaxFieldName = 1024

// Field names a field and its type.
type Field struct {
	Name string
	Type FieldType
}

type field struct {
	Field
	idx     uint32 // in Doc.fields
	text    *text
	counter sum128
	reg     regState
}

// regState is the winning write of a register: the greatest (time, replica,
// seq).
type regState struct {
	set     bool
	t       hlc.Timestamp
	r       uint32
	seq     uint32
	off, nb uint32
}

// span is a run of ops of one replica in its log: n consecutive seqs of one
// kind on one field, stored once. For inserts a is the left origin of the
// first char (each later char's left origin is its predecessor) and b the
// right origin of all; for deletes a is the first target and back says the
// targets run downwards; for counters delta() is the amount of each op.
//
// NB: a counter span keeps its delta in a, which a counter op has no use
// for: a field of its own made every span 48 bytes instead of 40 for the
// rare counter's sake, and a document's logs are most of its memory (a
// span per keystroke of a merge).
type span struct {
	seq, n  uint32
	field   uint32
	kind    OpKind
	back    bool
	off, nb uint32 // content bytes: inserted text, register value
	a, b    ref
}

// counterSpan returns the span of n counter adds of delta each.
func counterSpan(seq, n, field uint32, delta int64) span {
	return span{seq: seq, n: n, field: field, kind: OpCounterAdd, a: ref{uint32(uint64(delta) >> 32), uint32(delta)}}
}

// delta returns the amount each op of a counter span adds.
func (s *span) delta() int64 { return int64(uint64(s.a.r)<<32 | uint64(s.a.seq)) }

// timeRun gives the HLC time of n() seqs from seq: t for all of them, or
// t+k for the k-th when stepped() (a run of one-op transactions). A change
// is a maximal run of seqs of one replica with equal times: one run, or
// (past maxRun seqs) several in a row with the same t.
//
// NB: the stepped flag is nf's top bit: 16 bytes a run rather than 24,
// and a merge of one-op changes (offline typing) holds a run per change.
type timeRun struct {
	seq uint32
	nf  uint32 // n, | steppedBit when stepped
	t   hlc.Timestamp
}

const (
	steppedBit = 1 << 31
	// maxRun bounds the seqs of one run; a change of more takes several.
	maxRun = steppedBit - 1
)

// n returns the number of seqs the run covers.
func (tr *timeRun) n() uint32 { return tr.nf &^ steppedBit }

// stepped reports whether the run's seqs are stamped t, t+1, ...
func (tr *timeRun) stepped() bool { return tr.nf&steppedBit != 0 }

func (tr *timeRun) at(seq uint32) hlc.Timestamp {
	if tr.stepped() {
		return tr.t + hlc.Timestamp(seq-tr.seq)
	}
	return tr.t
}

func (tr *timeRun) last() hlc.Timestamp { return tr.at(tr.seq + tr.n() - 1) }

// end returns the first seq past the run.
func (tr *timeRun) end() uint32 { return tr.seq + tr.n() }

// rlog is everything one replica did to the document.
type rlog struct {
	spans []span
	times []timeRun
	next  uint32 // next expected seq: version vector entry + 1
	hint  int    // index of the span spanAt found last
	thint int    // index of the time run timeRunAt found last
	// blocks[b] is the index of the span holding seq b·16 (seq 1 for
	// b = 0): spanAt searches only the spans of one block, not the whole
	// log, whose upper levels missed the cache on every random lookup.
	blocks []int32
	// tblocks[b] is the index of the time run holding seq b·16 (seq 1
	// for b = 0), as blocks is for spans: the origin and time checks
	// look up the times of characters all over a log, and a search of
	// the whole of a merged log's runs (one per change) was a cache
	// miss a step.
	tblocks []int32
}

const spanBlockBits = 4

// blockStart returns the first seq of block b of rlog.blocks and
// rlog.tblocks (seqs start at 1).
func blockStart(b int) uint32 { return max(uint32(b)<<spanBlockBits, 1) }

// indexTail extends blocks over the seqs the last span covers: call it
// after appending or growing the last span.
func (lg *rlog) indexTail() {
	k := len(lg.spans) - 1
	end := uint64(lg.spans[k].seq) + uint64(lg.spans[k].n) // first seq past the span
	for uint64(len(lg.blocks))<<spanBlockBits < end {
		lg.blocks = append(lg.blocks, int32(k))
	}
}

// indexTimes extends tblocks over the seqs the last time run covers: call
// it after appending or growing the last run.
func (lg *rlog) indexTimes() {
	k := len(lg.times) - 1
	end := uint64(lg.times[k].seq) + uint64(lg.times[k].n()) // first seq past the run
	for uint64(len(lg.tblocks))<<spanBlockBits < end {
		lg.tblocks = append(lg.tblocks, int32(k))
	}
}

// Doc is one replica of a document. See the package documentation.
type Doc struct {
	replica  ReplicaID
	clock    *hlc.Clock
	opts     Options
	readOnly bool

	replicas []ReplicaID
	rindex   map[ReplicaID]uint32
	// repCache remembers recent replica lookups, direct-mapped by a
	// hash of the id: in a room many writers share, a change and its
	// origins name several replicas, and hashing a 16-byte id for the
	// map each time cost a fifth of applying a remote keystroke. A slot
	// holds an index into replicas plus one (0: empty), checked against
	// the id, so a stale slot only misses: 64 of them are 256 bytes,
	// where 8 slots of whole ids missed for most changes of a room of 20
	// writers.
	repCache [repSlots]uint32
	logs     []rlog
	content  []byte

	fields    []*field
	fieldIdx  map[Field]uint32
	lastField *field // the field field() returned last

	pending  []Change
	rejected int
	// latest is no earlier than every time in the logs (an upper bound: a
	// batch taken back may leave it above them). A change stamped after
	// it is stamped after everything it can follow (see checkTimes).
	latest hlc.Timestamp
	// closures[r] is what replica r's history depends on, as far as
	// inserts of r among concurrent ones needed it (see knowsAny).
	closures map[uint32]*closure
	// passed counts the ops the logs' next seqs have moved past (applied
	// or made here), ever: how much a closure grown at passed p may have
	// to read is about passed - p (see knowsAny).
	passed uint64
	// applying is the time of the change applyChange is applying, whose
	// ops are logged with it only once applied.
	applying hlc.Timestamp
	// win is knowsAny's closure of one insert, grown over the ops
	// stamped after its gap (see fewAfter), kept for its memory.
	win closure

	tx Tx
	// plan is Apply's plan, zero between calls (see apply).
	plan plan
}

// NewDoc returns an empty document replica. replica must be non-zero and
// unique to this editor/device; clock stamps local changes and absorbs
// remote ones.
func NewDoc(replica ReplicaID, clock *hlc.Clock, opts Options) *Doc {
	if replica.IsZero() {
		panic("crdt: NewDoc with zero replica id")
	}
	if clock == nil {
		panic("crdt: NewDoc with nil clock")
	}
	d := &Doc{
		replica:  replica,
		clock:    clock,
		opts:     opts.withDefaults(),
		rindex:   map[ReplicaID]uint32{},
		fieldIdx: map[Field]uint32{},
	}
	d.replicaIndex(replica)
	d.tx.d = d
	return d
}

// Replica returns the id of this replica.
func (d *Doc) Replica() ReplicaID { return d.replica }

// Clock returns the clock the document stamps changes with.
func (d *Doc) Clock() *hlc.Clock { return d.clock }

// ReadOnly reports whether the document is a read-only view (see At).
func (d *Doc) ReadOnly() bool { return d.readOnly }

// lookupReplica returns the index of a known replica. Batches name few
// replicas, so the last answer is remembered (16-byte keys cost a hash).
func (d *Doc) lookupReplica(id ReplicaID) (uint32, bool) {
	slot := &d.repCache[repSlotOf(id)]
	if j := *slot - 1; int(j) < len(d.replicas) && d.replicas[j] == id {
		return j, true
	}
	i, ok := d.rindex[id]
	if ok {
		*slot = i + 1
	}
	return i, ok
}

// repSlots is the size of Doc.repCache.
const (
	repSlotBits = 6
	repSlots    = 1 << repSlotBits
)

// repSlotOf picks id's slot in Doc.repCache: replica ids are random
// (UUIDs), but mix all bytes anyway so patterned ids spread too.
func repSlotOf(id ReplicaID) int {
	h := binary.LittleEndian.Uint64(id[:8]) ^ binary.LittleEndian.Uint64(id[8:])
	return int((h * 0x9e3779b97f4a7c15) >> (64 - repSlotBits))
}

func (d *Doc) replicaIndex(id ReplicaID) uint32 {
	if i, ok := d.lookupReplica(id); ok {
		return i
	}
	i := uint32(len(d.replicas))
	d.replicas = append(d.replicas, id)
	d.rindex[id] = i
	d.logs = append(d.logs, rlog{next: 1})
	return i
}

// Version returns a copy of the document's version vector.
func (d *Doc) Version() VersionVector {
	v := make(VersionVector, len(d.replicas))
	for i, r := range d.replicas {
		if n := d.logs[i].next - 1; n > 0 {
			v[r] = uint64(n)
		}
	}
	return v
}

// Pending returns the number of changes waiting for missing dependencies.
func (d *Doc) Pending() int { return len(d.pending) }

// Rejected returns how many pending changes were dropped because, once their
// dependencies arrived, they turned out to be invalid.
func (d *Doc) Rejected() int { return d.rejected }

// scanFields is how many fields Doc.field scans before it hashes.
const scanFields = 8

func (d *Doc) field(f Field, create bool) *field {
	// Edits come in bursts on one field: skip hashing its name.
	if lf := d.lastField; lf != nil && lf.Type == f.Type && lf.Name == f.Name {
		return lf
	}
	// A document of a few fields (a text, a counter, a register) is
	// scanned rather than hashed: remote changes alternate between them.
	if len(d.fields) <= scanFields {
		for _, fl := range d.fields {
			if fl.Type == f.Type && fl.Name == f.Name {
				d.lastField = fl
				return fl
			}
		}
	} else if i, ok := d.fieldIdx[f]; ok {
		d.lastField = d.fields[i]
		return d.fields[i]
	}
	if !create {
		return nil
	}
	fl := &field{Field: f, idx: uint32(len(d.fields))}
	if f.Type == FieldText {
		fl.text = newText(d)
	}
	d.fieldIdx[f] = uint32(len(d.fields))
	d.fields = append(d.fields, fl)
	return fl
}

// Fields lists the document's fields, sorted by name and type.
func (d *Doc) Fields() []Field {
	out := make([]Field, len(d.fields))
	for i, f := range d.fields {
		out[i] = f.Field
	}
	slices.SortFunc(out, func(a, b Field) int {
		if c := cmp.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		return cmp.Compare(a.Type, b.Type)
	})
	return out
}

// Describe renders the value of every field, one line each in Fields
// order: equal for replicas that show the same document, whatever their
// histories. Tests and benchmarks compare replicas with it.
func (d *Doc) Describe() string {
	var b strings.Builder
	for _, f := range d.Fields() {
		switch f.Type {
		case FieldText:
			fmt.Fprintf(&b, "text %s=%q\n", f.Name, d.Text(f.Name))
		case FieldCounter:
			fmt.Fprintf(&b, "counter %s=%d\n", f.Name, d.Counter(f.Name))
		case FieldRegister:
			v, ok := d.Register(f.Name)
			fmt.Fprintf(&b, "register %s=%x set=%v\n", f.Name, v, ok)
		}
	}
	return b.String()
}

// Text returns the visible content of a text field ("" if there is none).
func (d *Doc) Text(name string) string {
	if f := d.field(Field{name, FieldText}, false); f != nil {
		return f.text.String()
	}
	return ""
}

// TextLen returns the length of a text field in runes.
func (d *Doc) TextLen(name string) int {
	if f := d.field(Field{name, FieldText}, false); f != nil {
		return f.text.vis
	}
	return 0
}

// Counter returns the value of a counter field (0 if there is none): the
// sum of its deltas, which the document keeps exactly, saturated to the
// int64 range (math.MaxInt64 or math.MinInt64 when the sum lies beyond).
// An exact sum does not depend on the order in which deltas arrive, so
// every replica holding the same ops shows the same value, however far
// past the range their partial sums went.
func (d *Doc) Counter(name string) int64 {
	if f := d.field(Field{name, FieldCounter}, false); f != nil {
		return f.counter.saturated()
	}
	return 0
}

// Register returns the msgpack value of a register field. The slice is a
// copy.
func (d *Doc) Register(name string) ([]byte, bool) {
	f := d.field(Field{name, FieldRegister}, false)
	if f == nil || !f.reg.set {
		return nil, false
	}
	return slices.Clone(d.content[f.reg.off : f.reg.off+f.reg.nb]), true
}

// RegisterTime returns the HLC time of the winning write of a register.
func (d *Doc) RegisterTime(name string) (hlc.Timestamp, bool) {
	f := d.field(Field{name, FieldRegister}, false)
	if f == nil || !f.reg.set {
		return 0, false
	}
	return f.reg.t, true
}

// ---- the log ----

func (d *Doc) idOf(r ref) ID {
	if r.none() {
		return ID{}
	}
	return ID{Replica: d.replicas[r.r], Seq: uint64(r.seq)}
}

// refOf converts id to a ref without creating replicas; ok is false for an
// unknown replica.
func (d *Doc) refOf(id ID) (ref, bool) {
	if id.IsZero() {
		return ref{}, true
	}
	i, ok := d.lookupReplica(id.Replica)
	return ref{i, uint32(id.Seq)}, ok
}

// refIn is refOf for an id that check has accepted, in a change of
// replica id cr (index r): typing names its own replica's characters,
// whose index is known without a lookup.
func (d *Doc) refIn(id ID, cr ReplicaID, r uint32) ref {
	if id.Replica == cr {
		return ref{r, uint32(id.Seq)}
	}
	x, _ := d.refOf(id)
	return x
}

// appendSpan adds one op to replica r's log, growing the last span when the
// op continues it.
func (d *Doc) appendSpan(r uint32, s span) {
	lg := &d.logs[r]
	if n := len(lg.spans); n > 0 {
		p := &lg.spans[n-1]
		if p.kind == s.kind && p.field == s.field && p.seq+p.n == s.seq {
			switch s.kind {
			case OpTextInsert:
				if s.a == (ref{r, s.seq - 1}) && s.b == p.b && p.off+p.nb == s.off {
					p.n += s.n
					p.nb += s.nb
					lg.indexTail()
					return
				}
			case OpTextDelete:
				if s.a.r == p.a.r {
					if !p.back && !s.back && s.a.seq == p.a.seq+p.n {
						p.n += s.n
						lg.indexTail()
						return
					}
					if (p.back || p.n == 1) && s.n == 1 && s.a.seq+p.n == p.a.seq && p.a.seq >= p.n {
						p.back = true
						p.n++
						lg.indexTail()
						return
					}
				}
			case OpCounterAdd:
				if s.delta() == p.delta() {
					p.n += s.n
					lg.indexTail()
					return
				}
			}
		}
	}
	lg.spans = append(lg.spans, s)
	lg.indexTail()
}

// appendTime records that seqs seq..seq+n-1 of r were stamped t.
func (d *Doc) appendTime(r uint32, seq, n uint32, t hlc.Timestamp) {
	d.latest = max(d.latest, t)
	lg := &d.logs[r]
	if k := len(lg.times); k > 0 {
		p := &lg.times[k-1]
		if p.end() == seq && p.n() < maxRun {
			if !p.stepped() && p.t == t && n <= maxRun-p.n() {
				p.nf += n
				lg.indexTimes()
				return
			}
			if n == 1 && (p.stepped() || p.n() == 1) && p.last()+1 == t {
				p.nf = (p.n() + 1) | steppedBit
				lg.indexTimes()
				return
			}
		}
	}
	if n <= maxRun { // always, but for a change of 2^31 seqs
		lg.times = append(lg.times, timeRun{seq: seq, nf: n, t: t})
		lg.indexTimes()
		return
	}
	lg.appendRuns(seq, n, t, false)
}

// appendRuns appends the time runs of n seqs from seq stamped t (t, t+1,
// ... when stepped), as many as maxRun takes.
func (lg *rlog) appendRuns(seq, n uint32, t hlc.Timestamp, stepped bool) {
	for {
		k := min(n, maxRun)
		tr := timeRun{seq: seq, nf: k, t: t}
		if stepped {
			tr.nf |= steppedBit
			t += hlc.Timestamp(k)
		}
		lg.times = append(lg.times, tr)
		lg.indexTimes()
		if n -= k; n == 0 {
			return
		}
		seq += k
	}
}

// spanAt returns the index of the span of r holding seq.
func (d *Doc) spanAt(r uint32, seq uint32) int {
	lg := &d.logs[r]
	sp := lg.spans
	// Edits cluster: try the span found last time, and its successor.
	if h := lg.hint; h < len(sp) && sp[h].seq <= seq {
		if seq < sp[h].seq+sp[h].n {
			return h
		}
		if h+1 < len(sp) && seq < sp[h+1].seq+sp[h+1].n {
			lg.hint = h + 1
			return h + 1
		}
	}
	lo, hi := 0, len(sp)
	if b := int(seq >> spanBlockBits); b < len(lg.blocks) {
		lo = int(lg.blocks[b])
		if b+1 < len(lg.blocks) {
			hi = int(lg.blocks[b+1]) + 1
		}
		// A span holds at least one seq, so seq's is at most seq -
		// sp[lo].seq spans on from lo, and exactly there in a log of
		// one-op changes (a merge's): look there first. In such a log
		// sp[lo] starts the block, so the place is known without
		// reading sp[lo] (a lookup at a random place missed the cache
		// there and then again at the place it computed).
		if g := lo + int(seq-blockStart(b)); g < hi {
			if s := &sp[g]; s.seq <= seq && seq-s.seq < s.n {
				lg.hint = g
				return g
			}
		}
		if g := lo + int(seq-sp[lo].seq); g < hi {
			if s := &sp[g]; s.seq <= seq && seq-s.seq < s.n {
				lg.hint = g
				return g
			}
			hi = g
		}
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if sp[m].seq+sp[m].n > seq {
			hi = m
		} else {
			lo = m + 1
		}
	}
	i := lo
	if i == len(sp) || sp[i].seq > seq {
		panic(fmt.Sprintf("crdt: no span for %d:%d", r, seq))
	}
	lg.hint = i
	return i
}

// timeAt returns the time of seq of r.
func (d *Doc) timeAt(r uint32, seq uint32) hlc.Timestamp {
	tr := d.logs[r].times
	return tr[d.timeRunAt(r, seq)].at(seq)
}

// timeRunAt returns the index of the time run of r holding seq, or
// len(times) when seq is past them. The origin checks look up the times
// of the characters an insert names, which for typing are the ones just
// before it: try the run found last, its successor and the latest before
// searching (a merge of 10,000 keystrokes spent 5 % of its instructions
// in this search).
func (d *Doc) timeRunAt(r uint32, seq uint32) int {
	lg := &d.logs[r]
	tr := lg.times
	if h := lg.thint; h < len(tr) && tr[h].seq <= seq {
		if seq-tr[h].seq < tr[h].n() {
			return h
		}
		if h+1 < len(tr) && seq-tr[h+1].seq < tr[h+1].n() && tr[h+1].seq <= seq {
			lg.thint = h + 1
			return h + 1
		}
	}
	if k := len(tr) - 1; k >= 0 && tr[k].seq <= seq {
		if seq-tr[k].seq >= tr[k].n() {
			return len(tr)
		}
		lg.thint = k
		return k
	}
	lo, hi := 0, len(tr)
	if b := int(seq >> spanBlockBits); b < len(lg.tblocks) {
		lo = int(lg.tblocks[b])
		if b+1 < len(lg.tblocks) {
			hi = int(lg.tblocks[b+1]) + 1
		}
		// As in spanAt: one run per one-op change puts seq's run
		// exactly seq - tr[lo].seq runs on, and never further; and
		// tr[lo] then starts the block.
		if g := lo + int(seq-blockStart(b)); g < hi {
			if t := &tr[g]; t.seq <= seq && seq-t.seq < t.n() {
				lg.thint = g
				return g
			}
		}
		if g := lo + int(seq-tr[lo].seq); g < hi {
			if t := &tr[g]; t.seq <= seq && seq-t.seq < t.n() {
				lg.thint = g
				return g
			}
			hi = g
		}
	}
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if tr[m].seq+tr[m].n() > seq {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo < len(tr) {
		lg.thint = lo
	}
	return lo
}

// knowsAny reports whether an insert of ids r:seq.. with origins left
// and right depends, directly or through what it depends on, on the first
// character of one of the runs in gap. What a change depends on: its
// replica's earlier changes, and the changes of the characters its ops
// name (origins, delete targets), whole. A closure is a version vector
// (depending on seq s of a replica means depending on all before it),
// grown replica by replica over the ops it newly covers.
//
// The closure of replica r's history is kept (Doc.closures) and grown as
// r goes on, so that a replica's inserts among concurrent ones (a merge)
// cost the ops they add, not the history; the closures of left's and
// right's changes are grown over it, reading only ops stamped after the
// earliest gap character: times rise along dependencies (a change
// stamped no later than its replica's previous change or than a
// character it names is refused, ErrBackdated), so every op on a path
// from the insert to a gap character is stamped after that character.
//
// When r's closure may have much to read (many ops were applied since it
// last grew: r has not inserted among concurrent ones for a while, as in
// a room where that is rare for each writer), the same rule gives
// shortcuts: a gap character stamped no earlier than the insert is not
// one it can depend on, so when all are, nothing is grown; and when few
// ops are stamped after the earliest of the others, the gap is looked for
// in those alone, from the insert's own dependencies, leaving r's closure
// for later. gap is reordered.
//
// NB: all of this takes the time rule to hold for the document's history,
// as At does: history stored before Apply enforced it, replayed with
// ApplyTrusted, may break it, and an insert that depends on a gap
// character only through such a backdated change is then let through.
func (d *Doc) knowsAny(left, right ref, r, seq uint32, gap []idRun) bool {
	if d.closures == nil || len(d.closures) >= maxClosures {
		// A closure holds an entry per replica its writer depends on:
		// keep a few (those of the replicas inserting among concurrent
		// inserts now), not one per writer a document ever had.
		d.closures = map[uint32]*closure{}
	}
	pc := d.closures[r]
	if pc == nil {
		pc = &closure{}
		d.closures[r] = pc
	}
	// A closure only grows: what it held before is depended on still.
	for _, g := range gap {
		if g.seq <= pc.known.get(g.r) {
			return true
		}
	}
	tmin := hlc.Timestamp(0) // 0: not computed yet
	if lag := d.passed - pc.at; lag > windowLag && len(d.logs) <= windowReplicas {
		at := d.applying // the insert's change, not logged yet (Apply)
		if i := d.timeRunAt(r, seq); i < len(d.logs[r].times) {
			at = d.logs[r].times[i].at(seq) // recorded first (ApplySeq)
		}
		tmin = 1<<64 - 1
		k := 0
		for _, g := range gap {
			if tg := d.timeAt(g.r, g.seq); tg < at {
				gap[k] = g
				k++
				tmin = min(tmin, tg)
			}
		}
		if k == 0 {
			return false
		}
		gap = gap[:k]
		if d.fewAfter(tmin, uint32(min(lag, windowOps+1))) {
			c := &d.win
			c.reset()
			if seq > 1 {
				d.grow(c, nil, []ref{{r, seq - 1}}, false, tmin)
			}
			d.grow(c, nil, []ref{left, right}, true, tmin)
			for _, g := range gap {
				if g.seq <= c.known.get(g.r) {
					return true
				}
			}
			return false
		}
	}
	if seq > 1 {
		d.grow(pc, nil, []ref{{r, seq - 1}}, false, 0)
	}
	pc.at = d.passed
	// The origins' changes are usually in r's closure already (r's own
	// characters, ones it had before): then there is nothing to add.
	for _, g := range gap {
		if g.seq <= pc.known.get(g.r) {
			return true
		}
	}
	for _, x := range [2]ref{left, right} {
		if !x.none() && d.changeEnd(x.r, x.seq) > pc.known.get(x.r) {
			if tmin == 0 {
				tmin = 1<<64 - 1
				for _, g := range gap {
					tmin = min(tmin, d.timeAt(g.r, g.seq))
				}
			}
			ov := &closure{}
			d.grow(ov, pc, []ref{left, right}, true, tmin)
			for _, g := range gap {
				if g.seq <= ov.known.get(g.r) {
					return true
				}
			}
			return false
		}
	}
	return false
}

// maxClosures bounds the closures a Doc keeps (see knowsAny).
const maxClosures = 32

// When more than windowLag ops have been applied since a replica's closure
// last grew, knowsAny counts the ops stamped after the gap (at most
// windowOps, and in a document of at most windowReplicas replicas:
// counting is a walk per replica) to look for the gap in those instead.
const (
	windowLag      = 32
	windowOps      = 256
	windowReplicas = 64
)

// fewAfter reports whether fewer than limit logged ops are stamped after
// tmin. It reads the logs' time runs back from their ends, so it costs
// about as many steps as the smaller count.
func (d *Doc) fewAfter(tmin hlc.Timestamp, limit uint32) bool {
	var n uint32
	for x := range d.logs {
		tr := d.logs[x].times
		for i := len(tr) - 1; i >= 0 && tr[i].last() > tmin; i-- {
			k := tr[i].n()
			if tr[i].stepped() && tr[i].t <= tmin {
				k -= uint32(tmin-tr[i].t) + 1
			}
			if n += k; n >= limit {
				return false
			}
		}
	}
	return true
}

// firstAfter returns the first seq of replica x stamped after tmin, or 0
// when none is.
func (d *Doc) firstAfter(x uint32, tmin hlc.Timestamp) uint32 {
	tr := d.logs[x].times
	k := sort.Search(len(tr), func(i int) bool { return tr[i].last() > tmin })
	if k == len(tr) {
		return 0
	}
	first := tr[k].seq
	if tr[k].stepped() && tr[k].t <= tmin {
		first += uint32(tmin-tr[k].t) + 1
	}
	return first
}

// closure is what a set of changes depends on: known[r] is the highest
// seq of replica r depended on, done[r] how far r's ops have had their
// own dependencies added.
//
// known[r] is the last seq of a change (grow raises whole changes),
// except when a ref that is not whole set it to a seq inside a change:
// that one is kept in partR:partSeq (knowsAny raises one, the inserting
// replica's seq before the insert, which ends a change unless the insert
// is not its change's first op). NB: while Apply applies a change, its
// ops not applied yet have no time, and changeEnd ends the change at the
// last one that has: every lookup during that change agrees, and the
// replica's next insert raises its closure past the change. A whole ref at or below a change's last seq lies in that
// change or an earlier one, so it adds nothing: raise skips the lookup of
// its change's end, most of a merge's check.
type closure struct {
	known, done    seqMap
	partR, partSeq uint32 // partSeq 0: none
	mixed          bool   // more than one entry was set by a ref not whole
	at             uint64 // Doc.passed when it was last grown (knowsAny)
}

// reset empties c, keeping its memory.
func (c *closure) reset() {
	clear(c.known.dense)
	clear(c.done.dense)
	c.known.m, c.done.m = nil, nil
	c.partR, c.partSeq, c.mixed, c.at = 0, 0, false, 0
}

// seqMap maps replica indexes to seqs (0 when absent): a slice for the
// first denseReplicas indexes, where a merge's lookups were map hashes
// costing a third of the origin check's closure growth, and a map past
// them (a document of many replicas keeps closures small).
type seqMap struct {
	dense []uint32
	m     map[uint32]uint32
}

const denseReplicas = 256

func (s *seqMap) get(r uint32) uint32 {
	if int(r) < len(s.dense) {
		return s.dense[r]
	}
	if r < denseReplicas {
		return 0
	}
	return s.m[r]
}

func (s *seqMap) set(r, v uint32) {
	if r < denseReplicas {
		if int(r) >= len(s.dense) {
			s.dense = append(s.dense, make([]uint32, int(r)+1-len(s.dense))...)
		}
		s.dense[r] = v
		return
	}
	if s.m == nil {
		s.m = map[uint32]uint32{}
	}
	s.m[r] = v
}

// ends reports whether known seq k of replica x (c's or base's) is
// the last seq of a change, so that every whole ref of x at or below k
// is in the closure.
func (c *closure) ends(base *closure, x, k uint32) bool {
	if c.mixed || c.partSeq == k && c.partR == x {
		return false
	}
	return base == nil || !base.mixed && (base.partSeq != k || base.partR != x)
}

// grow adds to c what the refs depend on (their whole changes when
// whole), over base (whose entries count as c's, and which is not
// changed), reading only ops stamped after tmin.
func (d *Doc) grow(c, base *closure, refs []ref, whole bool, tmin hlc.Timestamp) {
	// NB: plain lookups rather than helper closures taking the map to
	// read: those were indirect calls, a tenth of a merge's check.
	var workBuf [8]uint32
	work := workBuf[:0]
	for _, x := range refs {
		work = c.raise(d, base, work, x, whole)
	}
	for len(work) > 0 {
		x := work[len(work)-1]
		work = work[:len(work)-1]
		from, to := c.done.get(x)+1, c.known.get(x)
		if base != nil {
			from, to = max(from, base.done.get(x)+1), max(to, base.known.get(x))
		}
		if from > to {
			continue
		}
		c.done.set(x, to)
		if tmin > 0 {
			// Skip what is stamped no later than tmin.
			first := d.firstAfter(x, tmin)
			if first == 0 {
				continue
			}
			from = max(from, first)
			if from > to {
				continue
			}
		}
		sp := d.logs[x].spans
		for i := d.spanAt(x, from); i < len(sp) && sp[i].seq <= to; i++ {
			s := &sp[i]
			switch s.kind {
			case OpTextInsert:
				if s.seq >= from {
					work = c.raise(d, base, work, s.a, true)
				}
				work = c.raise(d, base, work, s.b, true)
			case OpTextDelete:
				a := max(from, s.seq) - s.seq
				b := min(to, s.seq+s.n-1) - s.seq
				top := s.a.seq + b
				if s.back {
					top = s.a.seq - a
				}
				work = c.raise(d, base, work, ref{s.a.r, top}, true)
			}
		}
	}
}

// raise makes c depend on x (its whole change when whole), over base,
// and returns work with x's replica added when that grew c.
func (c *closure) raise(d *Doc, base *closure, work []uint32, x ref, whole bool) []uint32 {
	if x.none() {
		return work
	}
	k := c.known.get(x.r)
	if base != nil {
		k = max(k, base.known.get(x.r))
	}
	end := x.seq
	if whole {
		if x.seq <= k && c.ends(base, x.r, k) {
			return work
		}
		end = d.changeEnd(x.r, x.seq)
	}
	if end > k {
		c.known.set(x.r, end)
		if !whole && d.changeEnd(x.r, end) != end {
			if c.partSeq != 0 && c.partR != x.r && c.known.get(c.partR) == c.partSeq {
				c.mixed = true // two partial entries: never skip
			}
			c.partR, c.partSeq = x.r, end
		}
		work = append(work, x.r)
	}
	return work
}

// changeEnd returns the last seq of the change of r holding seq, which the
// logs hold: a change is the maximal run of seqs with one time.
func (d *Doc) changeEnd(r, seq uint32) uint32 {
	tr := d.logs[r].times
	i := d.timeRunAt(r, seq)
	if i == len(tr) {
		if i == 0 {
			return seq
		}
		i-- // the change being applied, whose later ops have no time yet
	}
	if tr[i].stepped() {
		if seq < tr[i].seq+tr[i].n()-1 {
			return seq // one seq per change inside a stepped run
		}
	}
	t := tr[i].at(seq)
	end := tr[i].seq + tr[i].n() - 1
	for i+1 < len(tr) && tr[i+1].t == t {
		i++
		end = tr[i].seq
		if !tr[i].stepped() {
			end = tr[i].seq + tr[i].n() - 1
		}
	}
	return end
}

// origins returns the left and right origin of character r:seq.
func (d *Doc) origins(r uint32, seq uint32) (ref, ref) {
	s := &d.logs[r].spans[d.spanAt(r, seq)]
	if seq == s.seq {
		return s.a, s.b
	}
	return ref{r, seq - 1}, s.b
}

// ---- applying ops (local and remote share these) ----

// Applying an op is two steps: recording it in its replica's log (the
// log* functions, which ApplySeq also calls alone, to apply later from the
// log) and changing the field's state.

func (d *Doc) applyCounter(f *field, r uint32, seq uint32, delta int64) {
	d.logCounter(f, r, seq, delta)
	f.counter.add(delta, 1)
}

func (d *Doc) logCounter(f *field, r uint32, seq uint32, delta int64) {
	d.appendSpan(r, counterSpan(seq, 1, f.idx, delta))
}

func (d *Doc) applyRegister(f *field, r uint32, seq uint32, t hlc.Timestamp, value []byte) {
	off, nb := d.logRegister(f, r, seq, value)
	d.writeRegister(f, regState{set: true, t: t, r: r, seq: seq, off: off, nb: nb})
}

// logRegister records a register write and returns where its value went
// in the content.
func (d *Doc) logRegister(f *field, r uint32, seq uint32, value []byte) (off, nb uint32) {
	off, nb = uint32(len(d.content)), uint32(len(value))
	d.content = append(d.content, value...)
	d.appendSpan(r, span{seq: seq, n: 1, field: f.idx, kind: OpRegisterSet, off: off, nb: nb})
	return off, nb
}

// writeRegister makes w the register's value if it wins over the current
// one.
func (d *Doc) writeRegister(f *field, w regState) {
	if !f.reg.set || d.regLess(f.reg, w) {
		f.reg = w
	}
}

func (d *Doc) regLess(a, b regState) bool {
	if a.t != b.t {
		return a.t < b.t
	}
	if c := d.replicas[a.r].Compare(d.replicas[b.r]); c != 0 {
		return c < 0
	}
	return a.seq < b.seq
}

// applyRemoteInsert integrates a validated insert of n runes (ids r:seq..).
func (d *Doc) applyRemoteInsert(f *field, r, seq, n uint32, text string, left, right ref) {
	off, nb := d.logInsert(f, r, seq, n, text, left, right)
	f.text.integrate(item{r: r, seq: seq, n: n, off: off, nb: nb}, left, right)
}

// logInsert records an insert of n runes (ids r:seq..) between left and
// right, and returns where its text went in the content.
func (d *Doc) logInsert(f *field, r, seq, n uint32, text string, left, right ref) (off, nb uint32) {
	off, nb = d.appendContent(text)
	d.appendSpan(r, span{seq: seq, n: n, field: f.idx, kind: OpTextInsert, off: off, nb: nb, a: left, b: right})
	return off, nb
}

// appendContent adds inserted text to the content and returns where it
// went. NB: while there is room it only lengthens the slice: append
// stores the slice's pointer back on every call, and a pointer store is a
// write barrier while the collector marks (a merge of 10,000 keystrokes
// runs into a collection).
func (d *Doc) appendContent(text string) (off, nb uint32) {
	n := len(d.content)
	if cap(d.content)-n >= len(text) {
		d.content = d.content[:n+len(text)] // the length only
		copy(d.content[n:], text)
	} else {
		d.content = append(d.content, text...)
	}
	return uint32(n), uint32(len(text))
}

func (d *Doc) applyRemoteDelete(f *field, r, seq uint32, target ref, n uint32, back bool) {
	if back {
		f.text.deleteIDs(target.r, target.seq-n+1, n)
	} else {
		f.text.deleteIDs(target.r, target.seq, n)
	}
	d.logDelete(f, r, seq, target, n, back)
}

// logDelete records a delete of n characters from target (downwards when
// back), one op per seq so that backward runs merge as local ones do.
func (d *Doc) logDelete(f *field, r, seq uint32, target ref, n uint32, back bool) {
	for k := uint32(0); k < n; k++ {
		t := target.seq + k
		if back {
			t = target.seq - k
		}
		d.appendSpan(r, span{seq: seq + k, n: 1, field: f.idx, kind: OpTextDelete, a: ref{target.r, t}})
	}
}

// integrate places a remote item using its origins (YjsMod / FugueMax).
//
// It walks the items from just after left towards right, by item rather
// than by raw position: no position lookups unless an item's origins cannot
// be placed by id (see below). In the common case nothing was inserted
// concurrently between the origins and the walk stops at its first item.
func (t *text) integrate(it item, left, right ref) {
	l, i := t.afterLeft(left)
	leftLeaf := l
	var splitLeaf *leaf         // the leaf where right had to be cut from its item
	leftIdx, rightIdx := -2, -2 // raw positions, looked up only if needed
	rid := t.d.replicas[it.r]
	dl, di := l, i // where the item goes
	scanning := false
	seen := t.seen[:0]
	for {
		for i >= len(l.items) {
			nl := t.nextLeaf(l)
			if nl == nil {
				break
			}
			l, i = nl, 0
		}
		if !scanning {
			dl, di = l, i
		}
		if i >= len(l.items) {
			break // the end of the text
		}
		o := &l.items[i]
		if o.r == right.r && right.seq >= o.seq && right.seq-o.seq < o.n {
			if right.seq == o.seq {
				break
			}
			// right inside an item: cut it so that right starts one.
			t.split(l, i, right.seq-o.seq)
			splitLeaf = l
			o = &l.items[i]
		}
		ol, or := t.d.origins(o.r, o.seq)
		// Where o's left origin sits relative to left, without a position
		// lookup when it can be told from ids: it is left itself, or one
		// of the items scanned since left (so after left), or — being
		// left of o — before left.
		var cmpLeft int
		switch {
		case ol == left:
			cmpLeft = 0
		case ol.none():
			cmpLeft = -1 // the start, before left (which is not the start)
		case len(seen) < maxSeen:
			cmpLeft = -1
			for _, s := range seen {
				if s.r == ol.r && ol.seq-s.seq < s.n {
					cmpLeft = 1
					break
				}
			}
		default:
			if leftIdx == -2 {
				leftIdx = t.rawIndexOrStart(left)
			}
			cmpLeft = cmpInt(t.rawIndex(ol), leftIdx)
		}
		if cmpLeft < 0 {
			break
		}
		if cmpLeft == 0 {
			// Siblings of the new item: only now does o's right origin
			// matter.
			cmpRight := 0
			switch {
			case or == right:
			case or.none():
				cmpRight = 1 // the end, after right (which is not the end)
			case right.none():
				cmpRight = -1 // or is a character, before the end
			default:
				// Both lie after o: usually a few items on, so look
				// there before counting positions.
				if c, ok := t.firstOf(l, i, or, right); ok {
					cmpRight = c
					break
				}
				if rightIdx == -2 {
					rightIdx = t.raw
					if !right.none() {
						rightIdx = t.rawIndex(right)
					}
				}
				cmpRight = cmpInt(t.rawIndex(or), rightIdx)
			}
			if cmpRight < 0 {
				scanning = true
			} else if cmpRight == 0 {
				if rid.Compare(t.d.replicas[o.r]) < 0 {
					break
				}
				scanning = false
			} else {
				scanning = false
			}
		}
		if len(seen) < maxSeen {
			seen = append(seen, idRun{o.r, o.seq, o.n})
		}
		i++
	}
	if cap(seen) > cap(t.seen) {
		// Kept for the next scan; stored only when append moved it (a
		// pointer store is a write barrier while the collector marks).
		t.seen = seen[:0]
	}
	t.insertItem(dl, di, it)
	// The cuts after left and before right may have grown leaves the
	// insert did not touch past leafCap. (Leaves are never removed, so
	// the pointers are still leaves of the text.)
	t.fixLeaf(leftLeaf)
	if splitLeaf != nil {
		t.fixLeaf(splitLeaf)
	}
}

// firstOf reports which of x and y, two distinct characters after item i
// of l, comes first: -1 for x, 1 for y. It looks at the next maxAhead
// items only; ok is false if neither is among them. (Siblings of an
// inserted item that name other right origins made integrate count the
// raw positions of both, two id lookups each, when they sat a few items
// apart.)
func (t *text) firstOf(l *leaf, i int, x, y ref) (c int, ok bool) {
	for k := 0; k < maxAhead; k++ {
		i++
		for i >= len(l.items) {
			if l = t.nextLeaf(l); l == nil {
				return 0, false
			}
			i = 0
		}
		o := &l.items[i]
		hasX := o.r == x.r && x.seq >= o.seq && x.seq-o.seq < o.n
		hasY := o.r == y.r && y.seq >= o.seq && y.seq-o.seq < o.n
		switch {
		case hasX && hasY: // one item: ids rise along it
			return cmpInt(int(x.seq), int(y.seq)), true
		case hasX:
			return -1, true
		case hasY:
			return 1, true
		}
	}
	return 0, false
}

// maxAhead bounds firstOf's scan.
const maxAhead = 16

// maxSeen bounds the items integrate's scan remembers to place origins
// without position lookups; longer scans (many concurrent inserts at one
// place) look positions up.
const maxSeen = 32

// idRun is the ids r:seq .. r:seq+n-1.
type idRun struct{ r, seq, n uint32 }

func cmpInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// afterLeft returns the item boundary just after left (the start of the
// text when left is none), cutting left's item after it if needed. The
// leaf may then exceed leafCap until the caller fixes it.
func (t *text) afterLeft(left ref) (*leaf, int) {
	at := t.leftAt
	t.leftAt = 0
	if left.none() {
		return t.leaves[0], 0
	}
	var l *leaf
	var i int
	var k uint32
	if at != 0 && t.leftID == left {
		// consistent has just located it; nothing changed the text since.
		l, i, k = t.byNum[at-1], t.leftI, t.leftK
		if invariants {
			if l2, i2, k2, _ := t.locate(left); l2 != l || i2 != i || k2 != k {
				panic("crdt: integrate: left origin moved since consistent located it")
			}
		}
	} else {
		var ok bool
		l, i, k, ok = t.locate(left)
		if !ok {
			panic("crdt: integrate with unknown left origin")
		}
	}
	if k+1 < l.items[i].n {
		t.split(l, i, k+1)
	}
	return l, i + 1
}

// ---- reading the log back as changes ----

// ChangesSince returns the changes the document holds that v does not
// include, in an order that respects causality (by HLC time). A change that
// v includes in part is returned whole. The result may be kept and changed
// freely: inserted text shares the document's content bytes, which are never
// rewritten, and nothing else is shared.
func (d *Doc) ChangesSince(v VersionVector) []Change {
	var headBuf [8]changeHead // "anything new?" usually finds a change or two
	hs, nops := d.headsSince(v, headBuf[:0])
	if len(hs) == 0 {
		return nil
	}
	return d.changes(hs, nops)
}

// changes builds the changes hs name, their ops in one array sized for
// about nops.
func (d *Doc) changes(hs []changeHead, nops int) []Change {
	out := make([]Change, len(hs))
	buf := make([]Op, 0, nops)
	for i, h := range hs {
		// Changes already built keep their slices when append moves buf.
		start := len(buf)
		buf = d.ops(buf, h.r, h.seq, h.end)
		out[i] = d.change(h, buf[start:len(buf):len(buf)])
	}
	return out
}

// change is the change h names, with its ops.
func (d *Doc) change(h changeHead, ops []Op) Change {
	return Change{Replica: d.replicas[h.r], Seq: uint64(h.seq), Time: h.t, Ops: ops}
}

// EachChangeSince yields the changes ChangesSince(v) returns, in the same
// order, without holding them all: each change and its ops are valid only
// until the next one is yielded (the ops' memory is reused). Encoding a
// large delta this way needs a few bytes per change instead of a Change
// and its Ops (over 200 bytes) per change.
//
// The sequence may be ranged over more than once, and the document must
// not change in between. Changes of one replica (a client's offline edits) are read
// straight from its log on every pass; changes of several are ordered by
// time on the first pass, which keeps 24 bytes per change for the next.
func (d *Doc) EachChangeSince(v VersionVector) iter.Seq[*Change] {
	var hs []changeHead
	found, one := false, -1
	var from, to uint32
	return func(yield func(*Change) bool) {
		if !found {
			found = true
			n := 0
			for r := range d.replicas {
				if f, t, ok := d.missing(v, r); ok {
					one, from, to = r, f, t
					n++
				}
			}
			if n > 1 {
				one = -1
				hs, _ = d.headsSince(v, nil)
			}
		}
		var buf []Op
		var c Change
		if one >= 0 {
			for h := range d.headsOf(uint32(one), from, to) {
				buf = d.ops(buf[:0], h.r, h.seq, h.end)
				c = d.change(h, buf)
				if !yield(&c) {
					return
				}
			}
			return
		}
		for _, h := range hs {
			buf = d.ops(buf[:0], h.r, h.seq, h.end)
			c = d.change(h, buf)
			if !yield(&c) {
				return
			}
		}
	}
}

// SizeSince sizes the delta EachChangeSince(v) yields, from the version
// and the texts' character sets, without reading the log: ops is the
// number of seqs the document holds that v does not include (one per
// character inserted or deleted, counter add and register set, so at
// least the ops past v), inserts the number of those that are characters
// of a text (at least the insert ops past v). An encoder sizes its
// tables by them before reading the delta. (A change v includes in part
// is yielded whole, but only its seqs past v are counted.)
func (d *Doc) SizeSince(v VersionVector) (ops, inserts int) {
	for r := range d.replicas {
		from, to, ok := d.missing(v, r)
		if !ok {
			continue
		}
		ops += int(to - from + 1)
		for _, f := range d.fields {
			if f.text != nil && r < len(f.text.chars) {
				inserts += f.text.chars[r].count(from, to+1)
			}
		}
	}
	return ops, inserts
}

// changeHead is a change as the log holds it: seqs seq..end of replica r,
// stamped t. (No pointers: a catch-up's heads cost the collector nothing.)
type changeHead struct {
	t        hlc.Timestamp
	r        uint32
	seq, end uint32
}

// headsSince appends to hs the changes the document holds that v does not
// include, in ChangesSince's order, and returns them with an estimate of
// their ops (at least the lower bound).
func (d *Doc) headsSince(v VersionVector, hs []changeHead) ([]changeHead, int) {
	nops, nrep := 0, 0
	for r := range d.replicas {
		from, to, ok := d.missing(v, r)
		if !ok {
			continue
		}
		lg := &d.logs[r]
		hs = slices.Grow(hs, d.countChanges(uint32(r), from))
		n := len(hs)
		hs = d.heads(hs, uint32(r), from, to, nil)
		// Ops number at least max(changes, spans) and at most their sum
		// (one per span, plus one per change a span is cut at); the sum
		// doubled the largest allocation of a catch-up, so take the lower
		// bound plus a little and let append grow the rare rest.
		c, spans := len(hs)-n, len(lg.spans)-d.spanAt(uint32(r), from)
		nops += max(c, spans) + min(c, spans)/16
		nrep++
	}
	if nrep > 1 {
		slices.SortStableFunc(hs, func(a, b changeHead) int { return cmp.Compare(a.t, b.t) })
	}
	return hs, nops
}

// missing returns the seqs from..to of replica index r that the document
// holds and v does not include; ok is false if there are none.
func (d *Doc) missing(v VersionVector, r int) (from, to uint32, ok bool) {
	lg := &d.logs[r]
	from = 1
	if v != nil {
		s := v[d.replicas[r]]
		if s >= uint64(lg.next-1) {
			return 0, 0, false
		}
		from = uint32(s) + 1
	}
	if from >= lg.next {
		return 0, 0, false
	}
	return from, lg.next - 1, true
}

// countChanges bounds the number of changes of r from seq on.
func (d *Doc) countChanges(r, seq uint32) int {
	runs := d.logs[r].times
	i := sort.Search(len(runs), func(i int) bool { return runs[i].seq+runs[i].n() > seq })
	n := 1 // the change containing seq may start earlier
	for ; i < len(runs); i++ {
		if runs[i].stepped() {
			n += int(runs[i].n())
		} else {
			n++
		}
	}
	return n
}

// heads appends the changes of r covering seqs from..to (widened to whole
// changes) whose time passes keep (nil keeps all).
func (d *Doc) heads(out []changeHead, r uint32, from, to uint32, keep func(hlc.Timestamp) bool) []changeHead {
	for h := range d.headsOf(r, from, to) {
		if keep == nil || keep(h.t) {
			out = append(out, h)
		}
	}
	return out
}

// headsOf yields the changes of r covering seqs from..to (widened to whole
// changes), in order.
func (d *Doc) headsOf(r uint32, from, to uint32) iter.Seq[changeHead] {
	return func(yield func(changeHead) bool) {
		lg := &d.logs[r]
		if from > to || len(lg.times) == 0 {
			return
		}
		// Widen from back to the start of its change.
		for from > 1 && d.timeAt(r, from-1) == d.timeAt(r, from) {
			from--
		}
		runs := lg.times
		ri := sort.Search(len(runs), func(i int) bool { return runs[i].seq+runs[i].n() > from })
		seq := from
		for seq <= to {
			// A change is the maximal run of seqs with one time: within
			// a stepped run that is one seq, and it may continue into
			// the next runs when they start with the same time.
			t := runs[ri].at(seq)
			end := seq
			if !runs[ri].stepped() {
				end = runs[ri].seq + runs[ri].n() - 1
			}
			for end == runs[ri].seq+runs[ri].n()-1 && ri+1 < len(runs) && runs[ri+1].t == t {
				ri++
				end = runs[ri].seq
				if !runs[ri].stepped() {
					end = runs[ri].seq + runs[ri].n() - 1
				}
			}
			if !yield(changeHead{t: t, r: r, seq: seq, end: end}) {
				return
			}
			seq = end + 1
			if ri < len(runs) && seq >= runs[ri].seq+runs[ri].n() {
				ri++
			}
		}
	}
}

// ops appends the ops of r for seqs from..to to ops.
func (d *Doc) ops(ops []Op, r uint32, from, to uint32) []Op {
	sp := d.logs[r].spans
	for i := d.spanAt(r, from); i < len(sp) && sp[i].seq <= to; i++ {
		s := &sp[i]
		a := max(from, s.seq)
		b := min(to, s.seq+s.n-1)
		name := d.fields[s.field].Name
		switch s.kind {
		case OpTextInsert:
			content := d.content[s.off : s.off+s.nb]
			bo := byteOffset(content, int(s.n), int(a-s.seq))
			be := bo + byteOffset(content[bo:], int(s.n-(a-s.seq)), int(b-a+1))
			left := s.a
			if a > s.seq {
				left = ref{r, a - 1}
			}
			// Built in place: a literal appended is built on the stack
			// and copied, a third of exporting a keystroke.
			ops = append(ops, Op{})
			op := &ops[len(ops)-1]
			op.Kind, op.Field = OpTextInsert, name
			// Content is append-only and never rewritten, so the text can
			// share its bytes instead of copying them per op.
			op.Text = unsafe.String(&content[bo], be-bo)
			op.Left, op.Right = d.idOf(left), d.idOf(s.b)
		case OpTextDelete:
			k := a - s.seq
			tg := s.a
			if s.back {
				tg.seq -= k
			} else {
				tg.seq += k
			}
			ops = append(ops, Op{})
			op := &ops[len(ops)-1]
			op.Kind, op.Field, op.Backward = OpTextDelete, name, s.back && b > a
			op.Target, op.Count = d.idOf(tg), uint64(b-a+1)
		case OpCounterAdd:
			for k := a; k <= b; k++ {
				ops = append(ops, Op{Kind: OpCounterAdd, Field: name, Delta: s.delta()})
			}
		case OpRegisterSet:
			ops = append(ops, Op{Kind: OpRegisterSet, Field: name, Value: slices.Clone(d.content[s.off : s.off+s.nb])})
		}
	}
	return ops
}

// At returns a read-only copy of the document as it was at HLC time t: every
// change stamped at or before t, nothing after. Because HLC times respect
// causality, that set is causally closed.
//
// It cuts the document's state down to that set rather than replaying
// history (automerge-paper: milliseconds instead of a third of a second).
// NB: a replica's times are taken to increase with its seqs, as every
// honest replica's do and Apply makes every replica's (a backdated change
// is refused); the cut for a replica ends before its first change
// stamped after t. History stored before that rule (ApplyTrusted does not
// apply it) may break the cut; At then replays, which cannot fail: it
// never panics and always returns a document.
func (d *Doc) At(t hlc.Timestamp) *Doc {
	clock := hlc.NewClock(func() int64 { return t.WallMillis() }, 0)
	if v, err := FromState(d.stateAt(t), d.replica, clock, d.opts); err == nil {
		v.readOnly = true
		return v
	}
	// Only a replica whose times went backwards can make the cut state
	// inconsistent; replaying the kept changes is always right.
	return d.atByReplay(t)
}

// atByReplay builds At(t) by applying every change stamped ≤ t to a new
// document, as trusted history. A change that does not apply (a
// dependency stamped after t, in history a backdating replica wrote before
// such changes were refused) is left out, with what depends on it: the
// changes go through the pending buffer, whose retry drops what is
// invalid and keeps what waits, and never fails. (Re-applying with Apply
// and panicking on an error took a whole server down.)
func (d *Doc) atByReplay(t hlc.Timestamp) *Doc {
	v := NewDoc(d.replica, hlc.NewClock(func() int64 { return t.WallMillis() }, 0), d.opts)
	var hs []changeHead
	for r := range d.replicas {
		hs = d.heads(hs, uint32(r), 1, d.logs[r].next-1, func(ct hlc.Timestamp) bool { return ct <= t })
	}
	slices.SortStableFunc(hs, func(a, b changeHead) int { return cmp.Compare(a.t, b.t) })
	v.pending = d.changes(hs, len(hs))
	v.retryPending(true)
	v.pending = nil // what still waits is not part of the view
	v.readOnly = true
	return v
}

// stateAt returns the document's state cut to each replica's changes up to
// its first one stamped after t.
func (d *Doc) stateAt(t hlc.Timestamp) *State {
	cut := make([]uint32, len(d.replicas)) // last kept seq per replica
	for r := range d.logs {
		for _, tr := range d.logs[r].times {
			if tr.t > t {
				break
			}
			if tr.last() <= t {
				cut[r] = tr.seq + tr.n() - 1
				continue
			}
			// A stepped run crosses t: seq k has time tr.t+k.
			cut[r] = tr.seq + uint32(t-tr.t)
			break
		}
	}
	return d.stateCut(cut)
}

// rollback takes the document back to the ops of each replica up to
// keep(r) (a version the document held before: what a refused batch
// found), by cutting its state and loading the cut: a refused batch whose
// fault showed only while it was being applied leaves no trace. It costs
// a pass over the document, and only bad input pays it. The pending
// buffer and the clock are kept; replicas the batch added are dropped.
func (d *Doc) rollback(keep func(r int) uint32) {
	cut := make([]uint32, len(d.replicas))
	for r := range cut {
		cut[r] = keep(r)
	}
	st := d.stateCut(cut)
	for n := len(st.Replicas); n > 1 && cut[n-1] == 0; n-- {
		st.Replicas, st.Logs = st.Replicas[:n-1], st.Logs[:n-1]
	}
	nd, err := FromState(st, d.replica, d.clock, d.opts)
	if err != nil {
		// Only history a replica with backward times wrote before they
		// were refused can make a cut inconsistent (as for At): replay
		// the kept changes instead.
		nd = NewDoc(d.replica, d.clock, d.opts)
		var hs []changeHead
		for r := range d.replicas {
			hs = d.heads(hs, uint32(r), 1, cut[r], nil)
		}
		slices.SortStableFunc(hs, func(a, b changeHead) int { return cmp.Compare(a.t, b.t) })
		nd.pending = d.changes(hs, len(hs))
		nd.retryPending(true)
		nd.pending = nil
	}
	pending, rejected := d.pending, d.rejected
	pl := d.plan // Apply's plan, in use: Apply rolls back mid-batch
	*d = *nd
	d.tx.d = d
	d.plan = pl // back where it was, so its slices of its own arrays hold
	for _, f := range d.fields {
		if f.text != nil {
			f.text.d = d
		}
	}
	d.pending, d.rejected = pending, rejected
}

// stateCut returns the document's state cut to seqs 1..cut[r] of each
// replica r.
func (d *Doc) stateCut(cut []uint32) *State {
	full := d.ExportState()
	s := &State{Replicas: full.Replicas, Logs: make([]LogState, len(full.Logs))}
	// Logs and content, truncated to the cut.
	off := 0
	for r, lg := range full.Logs {
		seq := uint32(1)
		for _, sp := range lg.Spans {
			if seq > cut[r] {
				break
			}
			n := min(sp.N, cut[r]-seq+1)
			b := int(sp.Bytes)
			if n < sp.N {
				if sp.Kind == OpTextInsert {
					c := full.Content[off : off+b]
					b = byteOffset(c, int(sp.N), int(n))
				}
				sp.N = n
				sp.Bytes = uint32(b)
			}
			s.Logs[r].Spans = append(s.Logs[r].Spans, sp)
			s.Content = append(s.Content, full.Content[off:off+b]...)
			off += int(full.Logs[r].Spans[len(s.Logs[r].Spans)-1].Bytes)
			seq += n
		}
		tseq := uint32(1)
		for _, tr := range lg.Times {
			if tseq > cut[r] {
				break
			}
			tr.N = min(tr.N, cut[r]-tseq+1)
			s.Logs[r].Times = append(s.Logs[r].Times, tr)
			tseq += tr.N
		}
		// Skip the content of the spans past the cut.
		for _, sp := range lg.Spans[len(s.Logs[r].Spans):] {
			off += int(sp.Bytes)
		}
	}
	// Fields nothing kept touches did not exist yet: drop them and renumber.
	used := make([]int, len(full.Fields))
	for i := range used {
		used[i] = -1
	}
	for r := range s.Logs {
		for _, sp := range s.Logs[r].Spans {
			used[sp.Field] = 0
		}
	}
	s.Fields = nil
	for fi, f := range full.Fields {
		if used[fi] == 0 {
			used[fi] = len(s.Fields)
			s.Fields = append(s.Fields, f)
		}
	}
	for r := range s.Logs {
		for i := range s.Logs[r].Spans {
			s.Logs[r].Spans[i].Field = uint32(used[s.Logs[r].Spans[i].Field])
		}
	}
	s.Texts = make([][]StateItem, len(s.Fields))
	// Texts: keep characters inside the cut; a kept character is deleted
	// only if a kept delete names it.
	for ofi, items := range full.Texts {
		fi := used[ofi]
		if items == nil || fi < 0 {
			continue
		}
		dels := make([][][2]uint32, len(s.Replicas)) // per replica: deleted [lo, hi)
		for r := range s.Logs {
			for _, sp := range s.Logs[r].Spans {
				if sp.Kind != OpTextDelete || sp.Field != uint32(fi) {
					continue
				}
				lo, hi := sp.A.Seq, sp.A.Seq+sp.N
				if sp.Back {
					lo, hi = sp.A.Seq-sp.N+1, sp.A.Seq+1
				}
				dels[sp.A.R] = append(dels[sp.A.R], [2]uint32{lo, hi})
			}
		}
		for r := range dels {
			dels[r] = mergeRanges(dels[r])
		}
		out := make([]StateItem, 0, len(items))
		for _, it := range items {
			end := min(it.Seq+it.N, cut[it.R]+1)
			for seq := it.Seq; seq < end; {
				// Split at the edges of deleted ranges.
				del, next := inRanges(dels[it.R], seq, end)
				if k := len(out) - 1; k >= 0 && out[k].R == it.R && out[k].Seq+out[k].N == seq && out[k].Deleted == del {
					out[k].N += next - seq
				} else {
					out = append(out, StateItem{R: it.R, Seq: seq, N: next - seq, Deleted: del})
				}
				seq = next
			}
		}
		s.Texts[fi] = out
	}
	return s
}

// mergeRanges sorts and merges [lo, hi) ranges.
func mergeRanges(rs [][2]uint32) [][2]uint32 {
	if len(rs) < 2 {
		return rs
	}
	slices.SortFunc(rs, func(a, b [2]uint32) int { return cmp.Compare(a[0], b[0]) })
	out := rs[:1]
	for _, x := range rs[1:] {
		p := &out[len(out)-1]
		if x[0] <= p[1] {
			p[1] = max(p[1], x[1])
			continue
		}
		out = append(out, x)
	}
	return out
}

// inRanges reports whether seq is inside one of the merged ranges rs, and
// where that answer changes next (at most end).
func inRanges(rs [][2]uint32, seq, end uint32) (bool, uint32) {
	i := sort.Search(len(rs), func(i int) bool { return rs[i][1] > seq })
	if i < len(rs) && rs[i][0] <= seq {
		return true, min(rs[i][1], end)
	}
	if i < len(rs) {
		return false, min(rs[i][0], end)
	}
	return false, end
}
