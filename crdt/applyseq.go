package crdt

import (
	"fmt"
	"iter"
	"slices"

	"github.com/weftsync/weft/hlc"
)

// ChangeSeq is a batch of changes read from a source, such as a decoder
// over received bytes (codec.ChangeSeq), for Doc.ApplySeq.
type ChangeSeq struct {
	// All yields the batch's changes. It may be called again (a batch
	// ApplySeq hands to Apply is read a second time) and must then yield
	// the same changes in the same order; a yielded Change (with its Ops)
	// need only stay valid until the next one is yielded. A non-nil error
	// ends the sequence.
	All iter.Seq2[*Change, error]
	// Ops is the number of ops in the batch, if known (else 0): the
	// document then grows its logs once instead of step by step.
	Ops int
	// Text is the bytes of text the batch's inserts carry, if known
	// (else 0): the document then grows its content once (a delta of
	// 10,000 keystrokes grew it twice, 28 KB of garbage).
	Text int
}

// ApplySeq is Apply for a batch read from a source, so that a large batch
// never has to exist as a []Change: decoded, a one-keystroke change takes
// 208 bytes (a Change and an Op), some forty times its encoded size, and a
// catch-up of many thousands of them is garbage for the collector the
// moment it has been applied.
//
// The batch is as atomic as Apply's. ApplySeq reads it once, checking each
// change as Apply does and recording its ops in the document's logs, but
// not yet in the document's state, which the logs do not show until the
// end; then it applies the recorded ops. If a change is invalid, or the
// source fails, the recorded ops are taken back and the document is as it
// was. A batch that is not simply the next changes of each replica in
// order (it repeats changes the document has, or holds changes that must
// wait for others) is read again into a slice and given to Apply.
func (d *Doc) ApplySeq(cs ChangeSeq) error { return d.applySeq(cs, false) }

// ApplyTrusted is ApplySeq for the document's own history read back from
// trusted storage (a server loading a document): the same checks, except
// that times are not held against the wall clock's max offset. They
// passed it when they arrived; the wall clock may since have been stepped
// back past the offset, and that must not make a document unloadable.
// The clock witnesses the times, so later local changes follow them.
func (d *Doc) ApplyTrusted(cs ChangeSeq) error { return d.applySeq(cs, true) }

func (d *Doc) applySeq(cs ChangeSeq, trusted bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if d.tx.open {
		d.tx.Commit()
	}
	// One allocation for the plan, the stage and the loop's state, and a
	// callback rather than a range loop, whose state (and every variable
	// the loop body set) went to the heap apart: a keystroke made eight.
	s := &seqApply{inOrder: true}
	p, st := &s.p, &s.st
	p.init(d)
	p.trusted = trusted
	p.bits = true // the size may be unknown; a batch worth streaming is large
	p.direct = true
	p.ops = cs.Ops
	st.init(d, cs.Ops, cs.Text)
	cs.All(func(c *Change, err error) bool {
		if s.stopped {
			return false // a source that goes on after being told to stop
		}
		s.stopped = true
		if err != nil {
			s.err = err
			return false
		}
		if err := checkShape(c); err != nil {
			s.err = fmt.Errorf("change %d (%s@%d): %w", s.n, c.Replica.String()[:8], c.Seq, err)
			return false
		}
		if c.Seq != p.nextSeq(c.Replica) || c.Time < p.maxT {
			// Out of seq or time order: Apply sorts and plans it.
			s.inOrder = false
			return false
		}
		err = p.validate(c, c.Seq) // exactly the next seq: never trimmed
		if err == errWait {
			s.inOrder = false
			return false
		}
		if err != nil {
			s.err = err
			return false
		}
		p.accept(*c)
		st.record(c)
		s.n++
		s.stopped = false
		return true
	})
	if s.err != nil {
		st.undo()
		return s.err
	}
	n, inOrder := s.n, s.inOrder
	if !inOrder {
		st.undo()
		all, err := collect(cs.All)
		if err != nil {
			return err
		}
		return d.apply(all, trusted)
	}
	if err := st.apply(!trusted); err != nil {
		// The logs were not advanced: every replica keeps what it had.
		d.rollback(func(r int) uint32 { return d.logs[r].next - 1 })
		return err
	}
	if n > 0 && len(d.pending) > 0 {
		d.retryPending(trusted)
	}
	if invariants {
		d.checkInvariants()
	}
	return nil
}

// seqApply is what applySeq keeps while it reads a batch.
type seqApply struct {
	p       plan
	st      stage
	n       int   // changes recorded
	inOrder bool  // every change so far is its replica's next, in time order
	err     error // why the batch is refused
	stopped bool  // the source was told to stop
}

// collect copies the changes of a source into one slice, their ops into
// one array.
func collect(changes iter.Seq2[*Change, error]) ([]Change, error) {
	var cs []Change
	var ops []Op
	for c, err := range changes {
		if err != nil {
			return nil, err
		}
		cs = append(cs, *c)
		for _, op := range c.Ops {
			if op.Value != nil { // the source may reuse its bytes
				op.Value = append([]byte(nil), op.Value...)
			}
			ops = append(ops, op)
		}
	}
	at := 0
	for i := range cs {
		k := len(cs[i].Ops)
		cs[i].Ops = ops[at : at+k : at+k]
		at += k
	}
	return cs, nil
}

// stage is ApplySeq's record of what it wrote to the document while reading
// a batch: enough to take it all back, and the order in which to apply it.
type stage struct {
	d       *Doc
	left    int // ops the batch may still hold (its Ops, less those recorded)
	nRep    int // the document's replicas, fields and content before
	nField  int
	content []byte
	logs    []logMark
	// idx finds a replica's mark once a batch touches many replicas (a
	// scan of logs would make such a batch quadratic).
	idx     map[uint32]int
	runs    []stageRun
	maxTime hlc.Timestamp
	// Room for a batch of one replica's changes (typing): logs and runs
	// start here.
	logsBuf [1]logMark
	runsBuf [1]stageRun
}

// logMark is a replica log as it was before the batch, and how far the
// batch took it.
type logMark struct {
	r      uint32
	old    rlog // the slices as they were (appends do not touch what they hold)
	last   span // their last elements, which recording may have grown
	lastT  timeRun
	end    uint32 // the seq after the batch's last op of r
	cursor uint32 // the first seq not applied yet
	// roomy: r's characters have room in a text for the rest of the
	// batch (see record).
	roomy bool
}

// stageRun: the batch's next changes, in order, are replica r's up to end.
type stageRun struct{ r, end uint32 }

// init readies st for a batch of about ops ops carrying about text bytes
// of inserted text.
func (st *stage) init(d *Doc, ops, text int) {
	st.d, st.left, st.nRep, st.nField, st.content = d, ops, len(d.replicas), len(d.fields), d.content
	st.logs, st.runs = st.logsBuf[:0], st.runsBuf[:0]
	if text > 0 {
		d.content = slices.Grow(d.content, text) // undo drops it with the rest
	}
}

// mark returns r's mark, making one (and growing its logs for the rest of
// the batch) the first time.
func (st *stage) mark(r uint32) *logMark {
	if m := st.markOf(r); m != nil {
		return m
	}
	lg := &st.d.logs[r]
	m := logMark{r: r, old: *lg, end: lg.next, cursor: lg.next}
	if k := len(lg.spans); k > 0 {
		m.last = lg.spans[k-1]
	}
	if k := len(lg.times); k > 0 {
		m.lastT = lg.times[k-1]
	}
	if st.left > 0 && len(st.logs) == 0 {
		// NB: only the batch's first replica (typing: the only one) gets
		// room for the whole rest of the batch; growing every replica's
		// logs so made a batch of one change per replica quadratic.
		lg.spans = slices.Grow(lg.spans, st.left)
		lg.times = slices.Grow(lg.times, st.left)
		// The ops cover at least as many seqs: their blocks too.
		lg.blocks = growRoomy(lg.blocks, st.left>>spanBlockBits+1)
		lg.tblocks = growRoomy(lg.tblocks, st.left>>spanBlockBits+1)
	}
	st.logs = append(st.logs, m)
	switch n := len(st.logs); {
	case st.idx != nil:
		st.idx[r] = n - 1
	case n > 16:
		st.idx = make(map[uint32]int, n)
		for i := range st.logs {
			st.idx[st.logs[i].r] = i
		}
	}
	return &st.logs[len(st.logs)-1]
}

// record writes c's ops to its replica's log (not its next seq, and not
// the fields: apply does that).
func (st *stage) record(c *Change) {
	d := st.d
	r := d.replicaIndex(c.Replica)
	m := st.mark(r)
	seq := uint32(c.Seq)
	for i := range c.Ops {
		op := &c.Ops[i]
		n := uint32(op.Len())
		switch op.Kind {
		case OpCounterAdd:
			d.logCounter(d.field(Field{op.Field, FieldCounter}, true), r, seq, op.Delta)
		case OpRegisterSet:
			d.logRegister(d.field(Field{op.Field, FieldRegister}, true), r, seq, op.Value)
		case OpTextInsert:
			left := d.refIn(op.Left, c.Replica, r)
			right := d.refIn(op.Right, c.Replica, r)
			f := d.field(Field{op.Field, FieldText}, true)
			if !m.roomy && st.left > 0 && m == &st.logs[0] {
				// The batch's first replica, whose logs mark grew for
				// the rest of the batch, gets the room in its text's
				// id index and characters too: grown step by step they
				// went through every doubling.
				f.text.reserve(r, uint32(min(uint64(seq)+uint64(st.left), 1<<32-1)), st.left)
				m.roomy = true
			}
			d.logInsert(f, r, seq, n, op.Text, left, right)
		case OpTextDelete:
			tg := d.refIn(op.Target, c.Replica, r)
			d.logDelete(d.field(Field{op.Field, FieldText}, true), r, seq, tg, n, op.Backward)
		}
		d.appendTime(r, seq, n, c.Time)
		seq += n
		st.left = max(st.left-1, 0)
	}
	m.end = seq
	if k := len(st.runs) - 1; k >= 0 && st.runs[k].r == r {
		st.runs[k].end = seq
	} else {
		st.runs = append(st.runs, stageRun{r, seq})
	}
	st.maxTime = max(st.maxTime, c.Time)
}

// undo takes back everything record wrote.
func (st *stage) undo() {
	d := st.d
	for i := len(st.logs) - 1; i >= 0; i-- {
		m := &st.logs[i]
		if int(m.r) >= st.nRep {
			continue // a new replica, dropped below
		}
		lg := &d.logs[m.r]
		*lg = m.old
		if k := len(lg.spans); k > 0 {
			lg.spans[k-1] = m.last
		}
		if k := len(lg.times); k > 0 {
			lg.times[k-1] = m.lastT
		}
	}
	for _, id := range d.replicas[st.nRep:] {
		delete(d.rindex, id)
	}
	d.replicas, d.logs = d.replicas[:st.nRep], d.logs[:st.nRep]
	d.repCache = [repSlots]uint32{}
	for _, f := range d.fields[st.nField:] {
		delete(d.fieldIdx, f.Field)
	}
	d.fields = d.fields[:st.nField]
	d.lastField = nil
	d.content = st.content
	st.logs, st.runs = nil, nil
}

// apply applies the recorded ops to the document's state, in the batch's
// order, and moves each log's next seq past them. With check, an insert
// whose origins contradict the text stops it with an error (ErrOrigins),
// the logs not advanced and the state applied in part: the caller rolls
// back.
func (st *stage) apply(check bool) error {
	d := st.d
	for _, run := range st.runs {
		m := st.markOf(run.r) // record made it
		if m.cursor == run.end {
			continue
		}
		// The run's ops are in consecutive spans: find the first, then
		// walk.
		sp := d.logs[run.r].spans
		for i, seq := d.spanAt(run.r, m.cursor), m.cursor; seq < run.end; i++ {
			s := &sp[i]
			if check && s.kind == OpTextInsert {
				left := s.a
				if seq > s.seq {
					left = ref{run.r, seq - 1}
				}
				if !d.fields[s.field].text.consistent(left, s.b, run.r, seq) {
					return fmt.Errorf("change %s@%d: %w: %w: right origin %v is not the first character after left origin %v its sender knew",
						d.replicas[run.r].String()[:8], seq, ErrInvalidChange, ErrOrigins, d.idOf(s.b), d.idOf(left))
				}
			}
			seq = d.applySpan(run.r, s, seq, run.end)
		}
		m.cursor = run.end
	}
	var grown []uint32
	for i := range st.logs {
		m := &st.logs[i]
		d.passed += uint64(m.end - d.logs[m.r].next)
		d.logs[m.r].next = m.end
		grown = append(grown, m.r)
	}
	d.clock.Witness(st.maxTime) // every time passed Check
	d.trimLogs(grown)
	st.logs, st.runs = nil, nil
	return nil
}

// markOf returns r's mark, or nil if the batch has not touched r.
func (st *stage) markOf(r uint32) *logMark {
	if n := len(st.logs); n > 0 && st.logs[n-1].r == r {
		return &st.logs[n-1]
	}
	if st.idx != nil {
		if i, ok := st.idx[r]; ok {
			return &st.logs[i]
		}
		return nil
	}
	for i := range st.logs {
		if st.logs[i].r == r {
			return &st.logs[i]
		}
	}
	return nil
}

// applySpan applies the ops of replica r in span s from seq on, but not
// from end on, and returns the seq after them.
func (d *Doc) applySpan(r uint32, s *span, seq, end uint32) uint32 {
	last := min(end-1, s.seq+s.n-1)
	n := last - seq + 1
	f := d.fields[s.field]
	switch s.kind {
	case OpCounterAdd:
		f.counter.add(s.delta(), n)
	case OpRegisterSet:
		d.writeRegister(f, regState{set: true, t: d.timeAt(r, seq), r: r, seq: seq, off: s.off, nb: s.nb})
	case OpTextInsert:
		content := d.content[s.off : s.off+s.nb]
		bo := byteOffset(content, int(s.n), int(seq-s.seq))
		be := bo + byteOffset(content[bo:], int(s.n-(seq-s.seq)), int(n))
		left := s.a
		if seq > s.seq {
			left = ref{r, seq - 1}
		}
		f.text.integrate(item{r: r, seq: seq, n: n, off: s.off + uint32(bo), nb: uint32(be - bo)}, left, s.b)
	case OpTextDelete:
		k := seq - s.seq
		if s.back {
			// Targets run down from s.a: seq's is s.a.seq-k, last's lower.
			f.text.deleteIDs(s.a.r, s.a.seq-k-(n-1), n)
		} else {
			f.text.deleteIDs(s.a.r, s.a.seq+k, n)
		}
	}
	return last + 1
}
