package crdt

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/weftsync/weft/hlc"
)

// Apply merges remote changes into the document.
//
// The batch is atomic: if any change is invalid (errors.Is ErrInvalidChange),
// stamped too far in the future (errors.Is hlc.ErrClockOffset), or the
// pending buffer would overflow (ErrPendingFull), Apply returns the error and
// the document is exactly as it was. Otherwise every change is applied,
// skipped as a duplicate, or — when it depends on operations the document
// does not have yet — held in the pending buffer until they arrive. Changes
// may come in any order; applying one twice is a no-op.
//
// Apply commits an open local transaction first. The changes are not
// retained; their memory stays the caller's.
func (d *Doc) Apply(changes ...Change) error { return d.apply(changes, false) }

// apply is Apply; trusted skips the max-offset check (see ApplyTrusted).
func (d *Doc) apply(changes []Change, trusted bool) error {
	if d.readOnly {
		return ErrReadOnly
	}
	if d.tx.open {
		d.tx.Commit()
	}
	for i := range changes {
		if err := checkShape(&changes[i]); err != nil {
			return fmt.Errorf("change %d (%s@%d): %w", i, changes[i].Replica.String()[:8], changes[i].Seq, err)
		}
	}
	// The Doc's own plan: a plan is some 380 bytes, and allocating one
	// per remote keystroke was a tenth of applying it. Nothing in here
	// applies a batch while this one is planned (retryPending makes its
	// own), and release leaves no reference to the batch behind.
	p := &d.plan
	p.init(d)
	defer p.release()
	p.trusted = trusted
	p.presize(len(changes))
	if err := p.run(changes, false); err != nil {
		return err
	}
	if len(p.waiting)+len(d.pending) > d.opts.MaxPending {
		return fmt.Errorf("%w: %d changes would wait for missing dependencies (max %d)", ErrPendingFull, len(p.waiting)+len(d.pending), d.opts.MaxPending)
	}
	// Every ready time passed the max-offset check when it was planned;
	// checking again would read the wall clock again, and a clock stepped
	// back in between would refuse what was accepted.
	grown := d.reserve(p.ready)
	if i, err := d.applyAll(p.ready, !trusted); err != nil {
		// Origins that contradict the text show only against the text
		// the batch's earlier changes made: take the batch back.
		d.rollback(func(r int) uint32 {
			if a := p.advanced(d.replicas[r]); a != nil {
				return uint32(a.base - 1)
			}
			return d.logs[r].next - 1
		})
		c := &p.ready[i]
		return fmt.Errorf("change %s@%d: %w", c.Replica.String()[:8], c.Seq, err)
	}
	for i := range p.ready {
		d.clock.Witness(p.ready[i].Time) // checked when planned
	}
	d.trimLogs(grown)
	d.addPending(p.waiting)
	if len(p.ready) > 0 && len(d.pending) > 0 {
		d.retryPending(trusted)
	}
	if invariants {
		d.checkInvariants()
	}
	return nil
}

// nextSeqOf returns the next seq the document expects from replica r.
func (d *Doc) nextSeqOf(r ReplicaID) uint64 {
	if i, ok := d.lookupReplica(r); ok {
		return uint64(d.logs[i].next)
	}
	return 1
}

func (d *Doc) addPending(cs []Change) {
	if len(cs) == 0 {
		return
	}
	// A set, not a scan per change: a peer can fill the buffer in one
	// batch, and MaxPending² comparisons would be its to spend.
	type key struct {
		r   ReplicaID
		seq uint64
	}
	have := make(map[key]struct{}, len(d.pending)+len(cs))
	for _, p := range d.pending {
		have[key{p.Replica, p.Seq}] = struct{}{}
	}
	for _, c := range cs {
		k := key{c.Replica, c.Seq}
		if _, dup := have[k]; !dup {
			have[k] = struct{}{}
			d.pending = append(d.pending, cloneChange(c))
		}
	}
}

func (d *Doc) retryPending(trusted bool) {
	for {
		p := d.newPlan()
		p.trusted = trusted
		cands := d.pending
		d.pending = nil
		p.run(cands, true)
		d.rejected += p.dropped
		i, err := d.applyAll(p.ready, !trusted)
		for _, c := range p.ready[:i] {
			d.clock.Witness(c.Time) // checked when planned
		}
		d.pending = p.waiting
		if err != nil {
			// Ready change i contradicts the text: take it back and drop
			// it; the ready changes after it may depend on it, so they
			// are planned again.
			c := &p.ready[i]
			d.rollback(func(r int) uint32 {
				if d.replicas[r] == c.Replica {
					return uint32(c.Seq - 1)
				}
				return d.logs[r].next - 1
			})
			d.rejected++
			d.pending = append(slices.Clone(p.ready[i+1:]), d.pending...)
			continue
		}
		if len(p.ready) == 0 || len(d.pending) == 0 {
			return
		}
	}
}

func cloneChange(c Change) Change {
	ops := make([]Op, len(c.Ops))
	copy(ops, c.Ops)
	for i := range ops {
		if ops[i].Value != nil {
			ops[i].Value = append([]byte(nil), ops[i].Value...)
		}
	}
	c.Ops = ops
	return c
}

// validUTF8 is utf8.ValidString with a fast path for short ASCII strings:
// a remote keystroke is one byte, and the call overhead was most of its
// cost.
func validUTF8(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return utf8.ValidString(s[i:])
		}
	}
	return true
}

// checkShape validates what can be checked of a change without the document.
func checkShape(c *Change) error {
	if c.Replica.IsZero() {
		return fmt.Errorf("%w: zero replica id", ErrInvalidChange)
	}
	if c.Seq == 0 {
		return fmt.Errorf("%w: seq 0", ErrInvalidChange)
	}
	if len(c.Ops) == 0 {
		return fmt.Errorf("%w: no ops", ErrInvalidChange)
	}
	var n uint64
	for i := range c.Ops {
		op := &c.Ops[i]
		if err := checkName(op.Field); err != nil {
			return fmt.Errorf("%w: op %d: %v", ErrInvalidChange, i, err)
		}
		switch op.Kind {
		case OpCounterAdd:
			if op.Delta == 0 {
				return fmt.Errorf("%w: op %d: counter delta 0", ErrInvalidChange, i)
			}
		case OpRegisterSet:
			if err := CheckMsgpack(op.Value); err != nil {
				return fmt.Errorf("%w: op %d: register value: %v", ErrInvalidChange, i, err)
			}
		case OpTextInsert:
			if op.Text == "" || !validUTF8(op.Text) {
				return fmt.Errorf("%w: op %d: inserted text must be non-empty UTF-8", ErrInvalidChange, i)
			}
			if op.Left.Seq > maxSeq || op.Right.Seq > maxSeq {
				return fmt.Errorf("%w: op %d: origin seq out of range", ErrInvalidChange, i)
			}
		case OpTextDelete:
			if op.Count == 0 || op.Target.Seq == 0 || op.Target.Seq > maxSeq || op.Count > maxSeq {
				return fmt.Errorf("%w: op %d: bad delete target or count", ErrInvalidChange, i)
			}
			if op.Backward && op.Count > op.Target.Seq {
				return fmt.Errorf("%w: op %d: backward delete runs below seq 1", ErrInvalidChange, i)
			}
			if !op.Backward && op.Target.Seq+op.Count-1 > maxSeq {
				return fmt.Errorf("%w: op %d: delete runs past the largest seq", ErrInvalidChange, i)
			}
		default:
			return fmt.Errorf("%w: op %d: unknown kind %d", ErrInvalidChange, i, op.Kind)
		}
		n += op.Len()
		if n > maxSeq {
			return fmt.Errorf("%w: change too long", ErrInvalidChange)
		}
	}
	if c.Seq+n-1 > maxSeq {
		return fmt.Errorf("%w: seq %d+%d past the largest seq", ErrInvalidChange, c.Seq, n)
	}
	return nil
}

// plan decides, without touching the document, what happens to each change
// of a batch: ready (in an applicable order, trimmed of ops the document
// already has), duplicate, waiting for dependencies, or invalid.
type plan struct {
	d *Doc
	// adv holds, for each replica the batch advanced, its next expected
	// seq and the text characters the batch inserted. Batches name few
	// replicas, so a slice beats two maps (and allocates nothing for a
	// keystroke until it is accepted).
	adv     []planReplica
	advIdx  map[ReplicaID]int // adv's indexes, once it is long (linearAdv)
	ready   []Change
	waiting []Change
	dropped int
	// trusted: the batch is the document's own stored history, whose
	// times are not checked against the wall clock or the times of what
	// they follow (ApplyTrusted).
	trusted bool
	maxT    hlc.Timestamp // the latest time of a ready change
	bits    bool          // mark the batch's characters in bitsets (see bitsFrom)
	size    int           // the batch's length, for sizing ready
	// ops is the batch's ops, if known (ApplySeq): the bitset of the
	// first replica it advances is made for them at once.
	ops int
	// While direct, the ready changes are the first prefix changes of the
	// batch, unchanged and in order (a catch-up usually is all of it), and
	// ready is not filled: copying each change there was a tenth of
	// planning a large batch.
	direct bool
	prefix int
	steps  int // changes looked at, over all passes (tests: one pass)

	// Room for a one-change batch (a remote keystroke), so that planning
	// it allocates nothing.
	advBuf   [1]planReplica
	readyBuf [1]Change
}

// planRange: ids lo..hi-1 of a replica are characters of text field name,
// inserted by a ready change of this batch.
type planRange struct {
	lo, hi uint64
	name   string
}

type planReplica struct {
	r    ReplicaID
	next uint64
	// lastT is the time of the replica's last change the batch made
	// ready, and lastStart its first seq: ready changes are in time order
	// (see plan.run), so the characters the batch gave the replica are
	// stamped lastT from lastStart on, and earlier than lastT below it.
	lastT     hlc.Timestamp
	lastStart uint64
	inserts   []planRange
	insBuf    [1]planRange // room for a keystroke's one range
	// chars marks (as offsets from base, the first seq the batch gave
	// this replica) the characters a large batch inserted, while they all
	// belong to one field (name): references into the batch are then a
	// bit test, not a search of inserts. With ranges set (a small batch,
	// or characters in several fields) inserts holds them instead; only
	// one of the two is kept.
	base   uint64
	chars  bitset
	name   string
	ranges bool
}

// batchChars reports whether [lo, hi) are characters of text field name
// inserted by ready changes of the batch.
func (a *planReplica) batchChars(lo, hi uint64, name string) bool {
	if a.ranges {
		return coveredBy(a.inserts, lo, hi, name)
	}
	if a.name != name {
		return false // every character the batch inserted is in field a.name
	}
	return lo >= a.base && a.chars.allSet(uint32(lo-a.base), uint32(hi-a.base))
}

func (d *Doc) newPlan() *plan {
	p := new(plan)
	p.init(d)
	return p
}

// init readies a zero plan for d.
func (p *plan) init(d *Doc) {
	p.d = d
	p.adv, p.ready = p.advBuf[:0], p.readyBuf[:0]
}

// release zeroes a plan that is kept for reuse (Doc.plan), so that it holds
// nothing of the batch it planned.
func (p *plan) release() { *p = plan{} }

// bitsFrom is the batch size from which plans mark the batch's characters
// in bitsets: below it, searching the few ranges costs less than the
// bitset's allocation.
var bitsFrom = 16 // a variable so that tests can compare both paths

// presize readies the plan for a batch of n changes: ready, if the plan
// has to fill it (see direct), is made for all n at once, and a large
// batch marks its characters in bitsets.
func (p *plan) presize(n int) {
	p.size = n
	p.bits = n >= bitsFrom
}

func (p *plan) advanced(r ReplicaID) *planReplica {
	if p.advIdx != nil {
		if i, ok := p.advIdx[r]; ok {
			return &p.adv[i]
		}
		return nil
	}
	for i := range p.adv {
		if p.adv[i].r == r {
			return &p.adv[i]
		}
	}
	return nil
}

// linearAdv is how many replicas plan.advanced scans before it indexes
// them: a batch naming thousands of replicas (each its own change) made
// the scan quadratic.
const linearAdv = 16

func (p *plan) nextSeq(r ReplicaID) uint64 {
	if a := p.advanced(r); a != nil {
		return a.next
	}
	return p.d.nextSeqOf(r)
}

var errWait = errors.New("wait")

// run sorts changes into ready / waiting. With drop, invalid changes are
// counted and dropped; without, the first one fails the run.
//
// The changes are planned in time order (a stable sort, when they are not
// in it already: a batch ChangesSince made always is). Every change is
// stamped after what it depends on (see checkTimes), so in time order a
// change's dependencies in the batch come before it and one pass plans
// every change that can be applied; a second pass can only find changes
// that wait for one stamped no earlier than themselves, which are
// invalid. Any order of the same changes, however hostile, thus costs
// O(n log n) (20,000 one-op changes of one replica, sent in descending seq
// order, took 43 s to plan one pass at a time).
func (p *plan) run(changes []Change, drop bool) error {
	changes = inTimeOrder(changes)
	todo := changes
	p.direct, p.prefix = true, 0
	for pass := 0; ; pass++ {
		var later []Change
		progress := false
		p.steps += len(todo)
		for i := range todo {
			c := todo[i]
			next := p.nextSeq(c.Replica)
			n := c.Len()
			asIs := pass == 0 && i == p.prefix
			if c.Seq+n <= next {
				continue // duplicate
			}
			if c.Seq > next {
				later = append(later, c)
				continue
			}
			from := c.Seq // where the change starts as sent
			if c.Seq < next {
				c = trimChange(c, next-c.Seq)
				asIs = false
			}
			err := p.validate(&c, from)
			if err == errWait {
				later = append(later, c)
				continue
			}
			if err != nil {
				if drop {
					p.dropped++
					continue
				}
				return err
			}
			if p.direct && !asIs {
				// ready stops being a prefix of the batch: fill it.
				p.direct = false
				if p.size > 1 {
					p.ready = make([]Change, 0, p.size)
				}
				p.ready = append(p.ready, changes[:p.prefix]...)
			}
			p.accept(c)
			progress = true
		}
		todo = later
		if !progress || len(todo) == 0 {
			break
		}
	}
	if p.direct {
		p.ready = changes[:p.prefix]
	}
	p.waiting = todo
	return nil
}

// validate checks c, the next change of its replica, against the document
// and the batch's ready changes: nil if it can be applied, errWait if it
// refers to operations not known yet, else why it is invalid.
//
// from is the first seq of c as it was sent: below c.Seq when c is what is
// left of a change the document holds in part (its first seqs, which carry
// c's time).
func (p *plan) validate(c *Change, from uint64) error {
	err := p.check(c)
	if err == errWait {
		return err
	}
	if err == nil && !p.trusted {
		err = p.checkTimes(c, from)
	}
	if err == nil && !p.trusted {
		err = p.d.clock.Check(c.Time)
	}
	if err != nil {
		return fmt.Errorf("change %s@%d: %w", c.Replica.String()[:8], c.Seq, err)
	}
	return nil
}

// ErrBackdated is wrapped (with ErrInvalidChange) by the error for a change
// stamped no later than something it follows.
var ErrBackdated = errors.New("crdt: change stamped before what it follows")

// checkTimes checks that c, whose references check has accepted and which
// was sent starting at seq from, is stamped after its replica's previous
// change and after every character it references (insert origins, delete
// targets) outside itself. HLC times of honest replicas always are; this
// is what keeps "the changes stamped ≤ T" causally closed (At) and lets
// plan.run plan in one pass.
func (p *plan) checkTimes(c *Change, from uint64) error {
	if c.Time > p.d.latest && c.Time > p.maxT {
		// Stamped after every time the document and the batch's ready
		// changes hold (d.latest counts what ApplySeq has recorded),
		// so after whatever it follows: the common case, a keystroke
		// sent after what its sender had seen, looks nothing up.
		return nil
	}
	// The time of c's replica's seq before from: typing names it as a
	// left origin too, so it is looked up once.
	prev := prevTime{r: c.Replica, seq: from - 1}
	if from > 1 {
		if t, ok := prev.get(p); ok && c.Time <= t {
			return fmt.Errorf("%w: %w: stamped %v, its replica's previous change %v", ErrInvalidChange, ErrBackdated, c.Time, t)
		}
	}
	for i := range c.Ops {
		op := &c.Ops[i]
		switch op.Kind {
		case OpTextInsert:
			if err := p.refTime(c, from, &prev, op.Left, 1, false); err != nil {
				return fmt.Errorf("op %d origin %v: %w", i, op.Left, err)
			}
			if err := p.refTime(c, from, &prev, op.Right, 1, false); err != nil {
				return fmt.Errorf("op %d origin %v: %w", i, op.Right, err)
			}
		case OpTextDelete:
			if err := p.refTime(c, from, &prev, op.Target, op.Count, op.Backward); err != nil {
				return fmt.Errorf("op %d target %v+%d: %w", i, op.Target, op.Count, err)
			}
		}
	}
	return nil
}

// prevTime is timeOf(r, seq), looked up the first time it is asked for.
type prevTime struct {
	r      ReplicaID
	seq    uint64
	looked bool
	ok     bool
	t      hlc.Timestamp
}

func (m *prevTime) get(p *plan) (hlc.Timestamp, bool) {
	if !m.looked {
		m.t, m.ok = p.timeOf(m.r, m.seq)
		m.looked = true
	}
	return m.t, m.ok
}

// refTime checks that c, sent starting at seq from, is stamped after the n
// characters from id (downwards when back) that lie outside it; prev is
// the time of seq from-1 of c's replica.
func (p *plan) refTime(c *Change, from uint64, prev *prevTime, id ID, n uint64, back bool) error {
	if id.IsZero() {
		return nil
	}
	top := id.Seq + n - 1 // the latest: a replica's times rise with its seqs
	if back {
		top = id.Seq
	}
	var t hlc.Timestamp
	var ok bool
	if id.Replica == c.Replica && top >= from-1 {
		if top >= from && (back || id.Seq >= from) {
			return nil // c's own characters (check made sure of that)
		}
		t, ok = prev.get(p) // the rest: c's replica's previous change
	} else {
		t, ok = p.timeOf(id.Replica, top)
	}
	if ok && c.Time <= t {
		return fmt.Errorf("%w: %w: stamped %v, the character it names %v", ErrInvalidChange, ErrBackdated, c.Time, t)
	}
	return nil
}

// timeOf returns the time of seq of replica r, which the document or a
// ready change of the batch holds, or an upper bound no later than the
// time of the change being checked (which plan.run takes in time order).
func (p *plan) timeOf(r ReplicaID, seq uint64) (hlc.Timestamp, bool) {
	if a := p.advanced(r); a != nil && seq >= a.base {
		if seq >= a.lastStart {
			return a.lastT, true
		}
		// Ready before the replica's last ready change, so stamped
		// earlier than it, and no later than the change being checked.
		return 0, true
	}
	i, ok := p.d.lookupReplica(r)
	if !ok {
		return 0, false
	}
	lg := &p.d.logs[i]
	if seq >= uint64(lg.next) || len(lg.times) == 0 {
		return 0, false
	}
	if tr := &lg.times[len(lg.times)-1]; uint64(tr.seq) <= seq {
		return tr.at(uint32(seq)), true // typing refers to the latest
	}
	return p.d.timeAt(i, uint32(seq)), true
}

// inTimeOrder returns cs sorted by time (stable), or cs itself when it is
// sorted already; cs is not changed.
func inTimeOrder(cs []Change) []Change {
	if slices.IsSortedFunc(cs, cmpTime) {
		return cs
	}
	sorted := slices.Clone(cs)
	slices.SortStableFunc(sorted, cmpTime)
	return sorted
}

func cmpTime(a, b Change) int { return cmp.Compare(a.Time, b.Time) }

func (p *plan) accept(c Change) {
	a := p.advanced(c.Replica)
	if a == nil {
		if k := len(p.adv); k < cap(p.adv) {
			// In place: a planReplica is 168 bytes, and append built
			// one to copy it.
			p.adv = p.adv[:k+1]
			a = &p.adv[k]
			*a = planReplica{r: c.Replica, base: c.Seq, ranges: !p.bits}
		} else {
			p.adv = append(p.adv, planReplica{r: c.Replica, base: c.Seq, ranges: !p.bits})
			a = &p.adv[len(p.adv)-1]
		}
		a.inserts = a.insBuf[:0]
		if p.advIdx != nil {
			p.advIdx[c.Replica] = len(p.adv) - 1
		} else if len(p.adv) > linearAdv {
			p.advIdx = make(map[ReplicaID]int, 2*len(p.adv))
			for i := range p.adv {
				p.advIdx[p.adv[i].r] = i
			}
		}
	}
	a.lastT, a.lastStart = c.Time, c.Seq
	p.maxT = max(p.maxT, c.Time)
	seq := c.Seq
	for i := range c.Ops {
		op := &c.Ops[i]
		n := op.Len()
		if op.Kind == OpTextInsert {
			if a.name == "" {
				a.name = op.Field
			}
			if !a.ranges && a.name != op.Field {
				// Characters in a second field: back to ranges.
				a.inserts = a.chars.appendRanges(a.inserts, a.base, a.name)
				a.ranges, a.chars = true, nil
			}
			if a.ranges {
				if k := len(a.inserts) - 1; k >= 0 && a.inserts[k].hi == seq && a.inserts[k].name == op.Field {
					a.inserts[k].hi = seq + n // typing: one range per run
				} else {
					a.inserts = append(a.inserts, planRange{seq, seq + n, op.Field})
				}
			} else {
				if end := seq + n - a.base; uint64(len(a.chars))*64 < end {
					// NB: only when it grows; storing the slice back
					// is a write barrier while the collector marks.
					if a.chars == nil && len(p.adv) == 1 {
						end = max(end, uint64(p.ops)) // typing: its only replica
					}
					a.chars = a.chars.grow(end)
				}
				a.chars.setRange(uint32(seq-a.base), uint32(seq+n-a.base))
			}
		}
		seq += n
	}
	a.next = seq
	if p.direct {
		p.prefix++
	} else {
		p.ready = append(p.ready, c)
	}
}

// check validates c's references against the document plus the ready part
// of the batch (and c's own earlier ops).
func (p *plan) check(c *Change) error {
	seq := c.Seq
	var own []planRange
	for i := range c.Ops {
		op := &c.Ops[i]
		n := op.Len() // once: an insert's counts its runes
		switch op.Kind {
		case OpTextInsert:
			for _, id := range [2]ID{op.Left, op.Right} {
				if id.IsZero() {
					continue
				}
				if err := p.isChar(id, 1, false, op.Field, c, own, seq); err != nil {
					if err == errWait {
						return err
					}
					return fmt.Errorf("op %d origin %v: %w", i, id, err)
				}
			}
			if i+1 < len(c.Ops) {
				// For the change's later ops. (Not for a keystroke's
				// one: storing the field's name was a write barrier
				// per remote insert while the collector marks.)
				own = append(own, planRange{seq, seq + n, op.Field})
			}
		case OpTextDelete:
			if err := p.isChar(op.Target, op.Count, op.Backward, op.Field, c, own, seq); err != nil {
				if err == errWait {
					return err
				}
				return fmt.Errorf("op %d target %v+%d: %w", i, op.Target, op.Count, err)
			}
		}
		seq += n
	}
	return nil
}

// isChar checks that the n ids from id (downwards when back) are characters
// of text field name: errWait if some are not known yet, an
// ErrInvalidChange error if they are known but are not such characters.
func (p *plan) isChar(id ID, n uint64, back bool, name string, c *Change, own []planRange, opSeq uint64) error {
	lo, hi := id.Seq, id.Seq+n
	if back {
		lo, hi = id.Seq-n+1, id.Seq+1
	}
	if id.Replica == c.Replica && hi > c.Seq {
		// The part from c.Seq must be characters this change inserted in
		// its earlier ops.
		if hi > opSeq {
			return fmt.Errorf("%w: refers to the change's own later ops", ErrInvalidChange)
		}
		if !coveredBy(own, max(lo, c.Seq), hi, name) {
			return fmt.Errorf("%w: not a character of text %q", ErrInvalidChange, name)
		}
		hi = max(lo, c.Seq)
	}
	if lo >= hi {
		return nil
	}
	r, inDoc := p.d.lookupReplica(id.Replica)
	docNext := uint64(1)
	if inDoc {
		docNext = uint64(p.d.logs[r].next)
	}
	a := p.advanced(id.Replica)
	next := docNext
	if a != nil {
		next = a.next
	}
	if hi > next {
		return errWait
	}
	// [lo, hi) is known: it must be characters of the field, in the
	// document or inserted by ready changes of this batch (whose ranges
	// sit above everything the document has).
	fromDoc := hi
	if hi > docNext {
		from := max(lo, docNext)
		if a == nil || !a.batchChars(from, hi, name) {
			return fmt.Errorf("%w: not a character of text %q", ErrInvalidChange, name)
		}
		fromDoc = from
	}
	if lo >= fromDoc {
		return nil
	}
	f := p.d.field(Field{name, FieldText}, false)
	if f == nil || !inDoc || !f.text.covered(ref{r, uint32(lo)}, uint32(fromDoc-lo), false) {
		return fmt.Errorf("%w: not a character of text %q", ErrInvalidChange, name)
	}
	return nil
}

// coveredBy reports whether ranges (sorted, disjoint) cover [lo, hi) with
// characters of field name.
func coveredBy(rs []planRange, lo, hi uint64, name string) bool {
	// The first range ending after lo (a hand-rolled sort.Search: this
	// runs for every reference to a character of the same batch).
	i, j := 0, len(rs)
	for i < j {
		m := int(uint(i+j) >> 1)
		if rs[m].hi > lo {
			j = m
		} else {
			i = m + 1
		}
	}
	for lo < hi {
		if i >= len(rs) || rs[i].lo > lo || rs[i].name != name {
			return false
		}
		lo = rs[i].hi
		i++
	}
	return true
}

// trimChange drops the first k seqs of c (which the document already has).
func trimChange(c Change, k uint64) Change {
	ops := c.Ops
	cut := c.Seq + k // the first seq kept
	for k > 0 {
		op := ops[0]
		n := op.Len()
		if n <= k {
			ops = ops[1:]
			k -= n
			continue
		}
		switch op.Kind {
		case OpTextInsert:
			bo := 0
			for j := uint64(0); j < k; j++ {
				_, sz := utf8.DecodeRuneInString(op.Text[bo:])
				bo += sz
			}
			op.Left = ID{Replica: c.Replica, Seq: cut - 1} // the character before the cut
			op.Text = op.Text[bo:]
		case OpTextDelete:
			if op.Backward {
				op.Target.Seq -= k
			} else {
				op.Target.Seq += k
			}
			op.Count -= k
		}
		ops = append([]Op{op}, ops[1:]...)
		k = 0
	}
	c.Seq += c.Len() - lenOps(ops)
	c.Ops = ops
	return c
}

func lenOps(ops []Op) uint64 {
	var n uint64
	for i := range ops {
		n += ops[i].Len()
	}
	return n
}

// reserve grows the logs of the replicas in cs once for all of them: a
// large batch would otherwise regrow (and copy) each log many times, as
// large slices grow by a quarter at a time. It returns the replicas whose
// logs it grew, for trimLogs. Batches under 64 changes skip this.
func (d *Doc) reserve(cs []Change) []uint32 {
	if len(cs) < 64 {
		return nil
	}
	type need struct {
		r   ReplicaID
		ops int
	}
	var needs []need // batches usually name few replicas
	var idx map[ReplicaID]int
	for i := range cs {
		var j int
		if idx != nil {
			var ok bool
			if j, ok = idx[cs[i].Replica]; !ok {
				j = -1
			}
		} else {
			j = slices.IndexFunc(needs, func(x need) bool { return x.r == cs[i].Replica })
		}
		if j < 0 {
			j = len(needs)
			needs = append(needs, need{r: cs[i].Replica})
			switch {
			case idx != nil:
				idx[cs[i].Replica] = j
			case len(needs) > 16:
				// NB: one change per replica (a document of many
				// short-lived tabs) made the scan quadratic.
				idx = make(map[ReplicaID]int, len(needs))
				for k, x := range needs {
					idx[x.r] = k
				}
			}
		}
		needs[j].ops += len(cs[i].Ops)
	}
	grown := make([]uint32, 0, len(needs))
	for _, x := range needs {
		r := d.replicaIndex(x.r)
		lg := &d.logs[r]
		lg.spans = slices.Grow(lg.spans, x.ops)
		lg.times = slices.Grow(lg.times, x.ops)
		grown = append(grown, r)
	}
	return grown
}

// trimLogs gives back what reserve over-estimated: ops merge into runs
// (a typed paragraph is one span), so a large catch-up could otherwise
// leave a document holding capacity for every op it was sent.
func (d *Doc) trimLogs(grown []uint32) {
	for _, r := range grown {
		lg := &d.logs[r]
		if cap(lg.spans)-len(lg.spans) > len(lg.spans)/2+64 {
			lg.spans = slices.Clone(lg.spans)
		}
		if cap(lg.times)-len(lg.times) > len(lg.times)/2+64 {
			lg.times = slices.Clone(lg.times)
		}
	}
}

// applyAll applies validated, ordered changes.
// applyAll applies validated, ordered changes. With check, an insert
// whose origins contradict the text (see text.consistent) stops it: it
// returns the index of its change, which is then applied in part, and an
// ErrInvalidChange error.
func (d *Doc) applyAll(cs []Change, check bool) (int, error) {
	for i := range cs {
		if err := d.applyChange(&cs[i], check); err != nil {
			return i, err
		}
	}
	return len(cs), nil
}

// ErrOrigins is wrapped (with ErrInvalidChange) by the error for an insert
// whose origins contradict the text: its right origin is not the first
// character after its left one that its sender must have known.
var ErrOrigins = errors.New("crdt: insert origins contradict the text")

func (d *Doc) applyChange(c *Change, check bool) error {
	r := d.replicaIndex(c.Replica)
	d.applying = c.Time
	seq := uint32(c.Seq)
	for i := range c.Ops {
		op := &c.Ops[i]
		n := uint32(op.Len())
		switch op.Kind {
		case OpCounterAdd:
			d.applyCounter(d.field(Field{op.Field, FieldCounter}, true), r, seq, op.Delta)
		case OpRegisterSet:
			d.applyRegister(d.field(Field{op.Field, FieldRegister}, true), r, seq, c.Time, op.Value)
		case OpTextInsert:
			f := d.field(Field{op.Field, FieldText}, true)
			left, _ := d.refOf(op.Left)
			right, _ := d.refOf(op.Right)
			if check && !f.text.consistent(left, right, r, seq) {
				return fmt.Errorf("%w: %w: op %d: right origin %v is not the first character after left origin %v its sender knew", ErrInvalidChange, ErrOrigins, i, op.Right, op.Left)
			}
			d.applyRemoteInsert(f, r, seq, n, op.Text, left, right)
		case OpTextDelete:
			f := d.field(Field{op.Field, FieldText}, true)
			tg, _ := d.refOf(op.Target)
			d.applyRemoteDelete(f, r, seq, tg, n, op.Backward)
		}
		d.appendTime(r, seq, n, c.Time)
		seq += n
	}
	d.passed += uint64(seq - uint32(c.Seq))
	d.logs[r].next = seq
	return nil
}
