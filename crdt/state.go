package crdt

import (
	"fmt"
	"unicode/utf8"

	"github.com/weftsync/weft/hlc"
)

// State is the complete state of a Doc as plain data, for snapshot codecs
// (crdt/codec): the history of every replica plus the order of every text's
// characters, so that loading a snapshot rebuilds the structure directly
// instead of replaying history op by op.
type State struct {
	Replicas []ReplicaID // index 0 is the replica that exported
	Fields   []Field
	Logs     []LogState // per replica
	// Texts[f] lists the items of text field f in document order (nil for
	// fields of other types).
	Texts [][]StateItem
	// Content is the inserted text and register values, in log order:
	// replica 0's spans first, then replica 1's, ...
	Content []byte
}

// LogState is one replica's history.
type LogState struct {
	Spans []StateSpan // contiguous from seq 1
	Times []StateTime // cover exactly the same seqs
}

// StateSpan is a run of N ops of one kind on one field. For inserts A is
// the left origin of the first character and B the right origin of all; for
// deletes A is the first target; Bytes is the length of its content
// (inserted text, register value) in State.Content. A counter span has
// only its Delta: no content and no references.
type StateSpan struct {
	N     uint32
	Field uint32
	Kind  OpKind
	Back  bool
	Bytes uint32
	A, B  StateRef
	Delta int64
}

// StateRef is a replica index and a seq (0 = none).
type StateRef struct{ R, Seq uint32 }

// StateTime is a run of N seqs stamped T (or T, T+1, ... when Stepped).
type StateTime struct {
	N       uint32
	Stepped bool
	T       hlc.Timestamp
}

// StateItem is a run of characters with consecutive ids.
type StateItem struct {
	R, Seq, N uint32
	Deleted   bool
}

// ExportState returns the document's state. It shares no memory with the
// document. An open local transaction is committed first.
func (d *Doc) ExportState() *State {
	if d.tx.open {
		d.tx.Commit()
	}
	s := &State{Replicas: append([]ReplicaID(nil), d.replicas...)}
	for _, f := range d.fields {
		s.Fields = append(s.Fields, f.Field)
	}
	s.Logs = make([]LogState, len(d.logs))
	n := 0
	for r := range d.logs {
		lg := &d.logs[r]
		ls := &s.Logs[r]
		ls.Spans = make([]StateSpan, len(lg.spans))
		for i, sp := range lg.spans {
			x := StateSpan{N: sp.n, Field: sp.field, Kind: sp.kind, Back: sp.back, Bytes: sp.nb}
			if sp.kind == OpCounterAdd {
				x.Delta = sp.delta() // kept where the references are
			} else {
				x.A, x.B = StateRef{sp.a.r, sp.a.seq}, StateRef{sp.b.r, sp.b.seq}
			}
			ls.Spans[i] = x
			n += int(sp.nb)
		}
		ls.Times = make([]StateTime, len(lg.times))
		for i, tr := range lg.times {
			ls.Times[i] = StateTime{N: tr.n(), Stepped: tr.stepped(), T: tr.t}
		}
	}
	s.Content = make([]byte, 0, n)
	for r := range d.logs {
		for _, sp := range d.logs[r].spans {
			s.Content = append(s.Content, d.content[sp.off:sp.off+sp.nb]...)
		}
	}
	s.Texts = make([][]StateItem, len(d.fields))
	for fi, f := range d.fields {
		if f.text == nil {
			continue
		}
		var items []StateItem
		for l := range f.text.all {
			for _, it := range l.items {
				if k := len(items) - 1; k >= 0 {
					p := &items[k]
					// Re-join runs that splits cut apart.
					if p.R == it.r && p.Seq+p.N == it.seq && p.Deleted == it.del && d.sameSpan(it.r, p.Seq, it.seq) {
						p.N += it.n
						continue
					}
				}
				items = append(items, StateItem{R: it.r, Seq: it.seq, N: it.n, Deleted: it.del})
			}
		}
		s.Texts[fi] = items
	}
	return s
}

func (d *Doc) sameSpan(r, a, b uint32) bool { return d.spanAt(r, a) == d.spanAt(r, b) }

// FromState builds a document from a State, as replica (which need not be
// State.Replicas[0]) with clock. Every index, length and reference is
// checked, so a corrupt or hostile State gives an error wrapping
// ErrInvalidChange, never a panic.
func FromState(s *State, replica ReplicaID, clock *hlc.Clock, opts Options) (*Doc, error) {
	bad := func(format string, args ...any) (*Doc, error) {
		return nil, fmt.Errorf("%w: snapshot: %s", ErrInvalidChange, fmt.Sprintf(format, args...))
	}
	if len(s.Logs) != len(s.Replicas) || len(s.Texts) != len(s.Fields) {
		return bad("table sizes disagree")
	}
	d := NewDoc(replica, clock, opts)
	// Replica indexes of the state map to ours through rmap.
	rmap := make([]uint32, len(s.Replicas))
	for i, r := range s.Replicas {
		if r.IsZero() {
			return bad("zero replica id")
		}
		if _, dup := d.rindex[r]; dup && r != replica {
			return bad("replica %s listed twice", r)
		}
		rmap[i] = d.replicaIndex(r)
	}
	for _, f := range s.Fields {
		if err := checkName(f.Name); err != nil || f.Type < FieldCounter || f.Type > FieldText {
			return bad("bad field %q type %d", f.Name, f.Type)
		}
		if _, dup := d.fieldIdx[f]; dup {
			return bad("field %q listed twice", f.Name)
		}
		d.field(f, true)
	}
	mapRef := func(x StateRef) (ref, bool) {
		if x.Seq == 0 {
			return ref{}, x.R == 0
		}
		if int(x.R) >= len(rmap) {
			return ref{}, false
		}
		return ref{rmap[x.R], x.Seq}, true
	}
	d.content = append(make([]byte, 0, len(s.Content)), s.Content...)
	off := uint32(0)
	for si, ls := range s.Logs {
		r := rmap[si]
		lg := &d.logs[r]
		lg.spans = make([]span, 0, len(ls.Spans))
		lg.times = make([]timeRun, 0, len(ls.Times))
		seq := uint32(1)
		for _, sp := range ls.Spans {
			if sp.N == 0 || uint64(seq)+uint64(sp.N) > maxSeq || int(sp.Field) >= len(s.Fields) || sp.Kind.FieldType() != s.Fields[sp.Field].Type {
				return bad("bad span")
			}
			if uint64(off)+uint64(sp.Bytes) > uint64(len(d.content)) {
				return bad("span content past the end")
			}
			a, okA := mapRef(sp.A)
			b, okB := mapRef(sp.B)
			if !okA || !okB {
				return bad("bad reference")
			}
			if sp.Delta != 0 && sp.Kind != OpCounterAdd {
				return bad("delta on a span that is not a counter's")
			}
			x := span{seq: seq, n: sp.N, field: sp.Field, kind: sp.Kind, back: sp.Back, off: off, nb: sp.Bytes, a: a, b: b}
			content := d.content[off : off+sp.Bytes]
			switch sp.Kind {
			case OpTextInsert:
				if !utf8.Valid(content) || utf8.RuneCount(content) != int(sp.N) {
					return bad("insert content does not match its length")
				}
			case OpRegisterSet:
				if sp.N != 1 || CheckMsgpack(content) != nil {
					return bad("bad register value")
				}
			case OpCounterAdd:
				// The span keeps its delta where references go.
				if sp.Delta == 0 || sp.Bytes != 0 || sp.A != (StateRef{}) || sp.B != (StateRef{}) {
					return bad("bad counter span")
				}
				x = counterSpan(seq, sp.N, sp.Field, sp.Delta)
				x.off, x.back = off, sp.Back
			case OpTextDelete:
				if sp.Bytes != 0 || a.none() || (sp.Back && a.seq < sp.N) || uint64(a.seq)+uint64(sp.N) > maxSeq {
					return bad("bad delete span")
				}
			}
			lg.spans = append(lg.spans, x)
			lg.indexTail()
			off += sp.Bytes
			seq += sp.N
		}
		lg.next = seq
		tseq := uint32(1)
		for _, tr := range ls.Times {
			if tr.N == 0 || uint64(tseq)+uint64(tr.N) > uint64(seq) {
				return bad("time runs do not match the log")
			}
			lg.appendRuns(tseq, tr.N, tr.T, tr.Stepped)
			d.latest = max(d.latest, lg.times[len(lg.times)-1].last())
			tseq += tr.N
		}
		if tseq != seq {
			return bad("time runs do not cover the log")
		}
	}
	if off != uint32(len(d.content)) {
		return bad("content length disagrees with the log")
	}
	// Texts: items in order; each must be exactly the chars the log inserted.
	// present[fi][r] marks the seqs of replica r that are characters of
	// text field fi: reference checks below are then a bit test each
	// instead of a search (they were a third of loading a snapshot).
	present := make([][]bitset, len(s.Texts))
	for fi, items := range s.Texts {
		f := d.fields[fi]
		if f.Type != FieldText {
			if len(items) != 0 {
				return bad("items for a non-text field")
			}
			continue
		}
		t := f.text
		t.leaves, t.byNum = t.leaves[:0], t.byNum[:0]
		present[fi] = make([]bitset, len(d.replicas)) // made on first use: many fields, few writers each
		spanOf := make([]int32, 0, len(items))
		var l *leaf
		for _, si := range items {
			if int(si.R) >= len(rmap) || si.N == 0 {
				return bad("bad item")
			}
			r := rmap[si.R]
			// Cut the item where spans change so content stays contiguous.
			seq, n := si.Seq, si.N
			for n > 0 {
				if seq == 0 || seq >= d.logs[r].next {
					return bad("item names unknown ids")
				}
				spi := d.spanAt(r, seq)
				sp := &d.logs[r].spans[spi]
				if sp.kind != OpTextInsert || sp.field != uint32(fi) {
					return bad("item is not an insert of its field")
				}
				m := min(n, sp.seq+sp.n-seq)
				content := d.content[sp.off : sp.off+sp.nb]
				bo := byteOffset(content, int(sp.n), int(seq-sp.seq))
				be := bo + byteOffset(content[bo:], int(sp.n-(seq-sp.seq)), int(m))
				if l == nil || len(l.items) >= leafCap*3/4 {
					l = t.newLeaf(0)
					l.idx = len(t.leaves)
					t.leaves = append(t.leaves, l)
				}
				if present[fi][r] == nil {
					present[fi][r] = newBitset(d.logs[r].next)
				}
				if !present[fi][r].setRange(seq, seq+m) {
					return bad("characters listed twice")
				}
				it := item{r: r, seq: seq, n: m, off: sp.off + uint32(bo), nb: uint32(be - bo), del: si.Deleted}
				l.items = append(l.items, it)
				spanOf = append(spanOf, int32(spi))
				l.raw += int(m)
				l.vis += it.vis()
				seq += m
				n -= m
			}
		}
		if len(t.leaves) == 0 {
			l := &leaf{items: make([]item, 0, 8)}
			t.number(l)
			t.leaves = []*leaf{l}
		}
		// Build the id index from runs sorted by id. No comparison sort is
		// needed: the characters of one op span appear in document order
		// in seq order (each is placed after its left origin, its
		// predecessor), so bucketing the items by span — spans are in seq
		// order — sorts them. A corrupt order shows up below as overlap.
		buckets := make([][]int32, len(d.replicas))
		for r := range buckets {
			buckets[r] = make([]int32, len(d.logs[r].spans)+1)
		}
		k := 0
		for _, l := range t.leaves {
			t.raw += l.raw
			t.vis += l.vis
			for _, it := range l.items {
				buckets[it.r][spanOf[k]+1]++
				k++
			}
		}
		ranges := make([][]idEntry, len(d.replicas))
		for r, b := range buckets {
			for i := 1; i < len(b); i++ {
				b[i] += b[i-1]
			}
			ranges[r] = make([]idEntry, b[len(b)-1])
		}
		k = 0
		for _, l := range t.leaves {
			for i, it := range l.items {
				b := buckets[it.r]
				ranges[it.r][b[spanOf[k]]] = idEntry{start: it.seq, end: it.seq + it.n, leaf: l.num, ra: packRA(it.r, i)}
				b[spanOf[k]]++
				k++
			}
		}
		for r, rs := range ranges {
			if len(rs) == 0 {
				continue
			}
			merged := rs[:1]
			for _, e := range rs[1:] {
				p := &merged[len(merged)-1]
				if e.start < p.end {
					return bad("characters listed twice or out of order")
				}
				if e.start == p.end && e.leaf == p.leaf {
					p.end = e.end
					continue
				}
				merged = append(merged, e)
			}
			// In order of start, so that each put appends (full chunks).
			t.index(uint32(r))
			for _, e := range merged {
				_, k := t.newEntry(uint32(r), e.start, e.end, t.byNum[e.leaf], e.at())
				t.put(uint32(r), k)
			}
		}
		t.chars = present[fi]
		t.rebuild()
	}
	// covered reports whether the n ids from x (downwards when back) are
	// characters of text field fi (whose bitsets were filled above).
	covered := func(fi uint32, x ref, n uint32, back bool) bool {
		t := d.fields[fi].text
		return t != nil && t.covered(x, n, back)
	}
	// Every insert must have its characters in the text, every reference
	// must name characters of the right field; recompute counters and
	// registers.
	for r := range d.logs {
		for _, sp := range d.logs[r].spans {
			f := d.fields[sp.field]
			switch sp.kind {
			case OpTextInsert:
				if !covered(sp.field, ref{uint32(r), sp.seq}, sp.n, false) {
					return bad("inserted characters missing from the text")
				}
				for _, x := range [2]ref{sp.a, sp.b} {
					if !x.none() && !covered(sp.field, x, 1, false) {
						return bad("origin is not a character of its text")
					}
				}
			case OpTextDelete:
				if !covered(sp.field, sp.a, sp.n, sp.back) {
					return bad("delete target is not a character of its text")
				}
			case OpCounterAdd:
				f.counter.add(sp.delta(), sp.n)
			case OpRegisterSet:
				d.writeRegister(f, regState{set: true, t: d.timeAt(uint32(r), sp.seq), r: uint32(r), seq: sp.seq, off: sp.off, nb: sp.nb})
			}
		}
	}
	for r := range d.logs {
		if n := len(d.logs[r].times); n > 0 {
			// Stored history is not a remote claim: a document may be ahead
			// of this clock's wall time, and local changes must still be
			// ordered after it.
			clock.Witness(d.logs[r].times[n-1].at(d.logs[r].next - 1))
		}
	}
	return d, nil
}
