package crdt

import "unicode/utf8"

// This file holds the sequence CRDT: the order of the characters of one text
// field, as run-length encoded items in a two-level blocked list (leaves of
// at most leafCap items, with Fenwick trees over the leaves' visible and raw
// lengths) plus an id → leaf index. The leaves sit in slots with free ones
// between them, so that a leaf split usually takes a free slot next to it
// (or shifts a few leaves to one) instead of renumbering every leaf and
// rebuilding the trees. Integration follows the "YjsMod" rule
// (left and right origins, equivalent to FugueMax for maximal
// non-interleaving; Weidner & Kleppmann, "The Art of the Fugue", 2023).

const leafCap = 32

// ref is an id inside a Doc: a replica index and a sequence number. seq 0
// means none.
type ref struct {
	r   uint32
	seq uint32
}

func (a ref) none() bool { return a.seq == 0 }

// item is a run of characters with consecutive ids r:seq .. r:seq+n-1,
// inserted by one op span (so char k>0 has left origin = char k-1 and the
// span's right origin), all deleted or all visible.
type item struct {
	r, seq uint32
	n      uint32 // runes
	off    uint32 // content bytes in Doc.content
	nb     uint32
	del    bool
	// ent is a hint (in bytes that were padding): the handle of the
	// index entry made for the item (see text.newEntry), 0 if none. A
	// leaf split moves half its items to a new leaf, and their entries
	// must then name it: looked up by id, that was a tenth of a merge.
	// The hint is checked before it is used (see text.hinted), so a
	// stale one (after the item or its entry was cut) costs only the
	// lookup it would have saved.
	ent [3]byte
}

// hint returns the item's entry handle hint, 0 if none.
func (it *item) hint() uint32 {
	return uint32(it.ent[0]) | uint32(it.ent[1])<<8 | uint32(it.ent[2])<<16
}

// setHint records entry handle h, or none if it does not fit.
func (it *item) setHint(h uint32) {
	if h >= 1<<24 {
		h = 0
	}
	it.ent = [3]byte{byte(h), byte(h >> 8), byte(h >> 16)}
}

func (it *item) vis() int {
	if it.del {
		return 0
	}
	return int(it.n)
}

type leaf struct {
	items []item
	idx   int // slot in text.leaves
	vis   int
	raw   int
	num   uint32 // its number: text.byNum[num] is this leaf
}

// newLeaf returns a new leaf of the text, numbered, of n zero items,
// with room for leafCap+2.
//
// A text of slabFrom leaves or more takes its new leaves' items
// leafSlab leaves at a time: one leaf's 816 bytes took an 896-byte
// slot, 8 % of a merge's allocation for leaves, where 10 of them are
// 8,160 bytes of an 8,192-byte size class whose span is that one
// object. (Eight, 6,528 bytes, were a size class exactly, but its spans
// are four pages of five: the pacer counts a span as allocated when the
// allocator takes it, so a merge's last one, mostly unused, counted
// 16 KB on average against the merge.) A smaller text does not: its
// spare leaves, up to 7.3 KB, would be a large part of it. Leaves are
// never removed, so a slab is never held by a leaf alone long after the
// others. The leaves themselves come ten at a time too (560 bytes in a
// 576-byte slot, the size class of the id index's chunks, where one
// took a 64-byte slot for 56).
//
// NB: the items are an allocation of their own, without pointers, which
// the collector does not scan. A leaf and its items were one object (one
// allocation, the items next to the leaf), but then the collector
// counted the whole object, 896 bytes, as heap to scan for the one
// pointer in it: leaves were half of a document's scannable heap, and
// the pacer starts a cycle earlier the more there is.
func (t *text) newLeaf(n int) *leaf {
	var l *leaf
	if len(t.byNum) < slabFrom {
		l = &leaf{items: new([leafCap + 2]item)[:n]}
	} else {
		if len(t.spare) == 0 {
			t.spare = new([leafSlab][leafCap + 2]item)[:]
			t.spareLeaves = new([leafSlab]leaf)[:]
		}
		l = &t.spareLeaves[0]
		l.items = t.spare[0][:n]
		t.spare, t.spareLeaves = t.spare[1:], t.spareLeaves[1:]
	}
	t.number(l)
	return l
}

const (
	leafSlab = 10
	slabFrom = 64
)

// number gives l, a new leaf of the text, its number. (Leaves are never
// removed, so numbers are never reused.)
func (t *text) number(l *leaf) {
	l.num = uint32(len(t.byNum))
	t.byNum = append(t.byNum, l)
}

// idEntry says that the characters r:start .. r:end-1 of a text are all in
// leaf number leaf, starting at about item at: items inserted before them
// move them right, so locate looks there first and scans on from it (a
// scan of the whole leaf missed the cache on most of its dozen lines).
// It holds no pointer (see idIndex).
//
// It is 16 bytes: at (below leafCap+2, a byte) shares a word with the
// replica, which is there only to check an item's hint (see hinted).
// As 20 bytes, entries were a tenth of what a merge allocated.
type idEntry struct {
	start, end uint32
	leaf       uint32 // text.byNum[leaf] is its leaf
	// ra is the replica index in its top 24 bits (noRA if it does not
	// fit) and at in its low 8.
	ra uint32
}

// noRA is the replica bits of an entry whose replica index does not fit
// them: no item's hint matches such an entry (its items are looked up).
const noRA = 1<<24 - 1

func packRA(r uint32, at int) uint32 {
	return min(r, noRA)<<8 | uint32(min(at, 0xff))
}

// at returns the item of its leaf at which e's characters start, about.
func (e *idEntry) at() int { return int(e.ra & 0xff) }

// setAt records that e's characters start at about item at of its leaf.
func (e *idEntry) setAt(at int) { e.ra = e.ra&^0xff | uint32(min(at, 0xff)) }

// of reports whether e is an entry of replica r.
func (e *idEntry) of(r uint32) bool { return r < noRA && e.ra>>8 == r }

type text struct {
	d *Doc
	// leaves holds the leaves in order, in slots with nil (free) slots
	// between them; slot 0 always holds the first leaf.
	leaves []*leaf
	last   *leaf   // the last leaf (free slots follow it)
	lens   fenwick // visible and raw lengths of the leaf slots
	vis    int
	raw    int
	ids    []*idIndex // per replica
	// byNum holds every leaf by its number (leaf.num), for index
	// entries, which name their leaf by number.
	byNum []*leaf
	// ver counts structural changes; cur is valid while its ver matches.
	ver uint64
	cur cursor
	// tail[r] is the number plus one of the entry of ids[r] with the
	// greatest start, or 0 when unknown: typing grows it in place without
	// touching the index. NB: a number, not a pointer: a merge sets it for
	// every remote insert, and a pointer store is a write barrier while
	// the collector marks (which a merge of 10,000 keystrokes runs into).
	tail []uint32
	// seen is integrate's scratch list of the items its scan passed, gap
	// consistent's.
	seen, gap []idRun
	// leftAt is where consistent found an insert's left origin, which
	// integrate, called right after it, takes instead of locating it
	// again (a second lookup per remote insert): the leaf's number plus
	// one, 0 when not set (a number, as tail: no write barrier).
	leftAt uint32
	leftI  int
	leftK  uint32
	leftID ref
	// slabs are where newEntry takes index entries from; the last has
	// slabUsed entries in use. Entry k is slabs[k/entrySlab][k%entrySlab].
	slabs    []*[entrySlab]idEntry
	slabUsed int
	// spare and spareLeaves are the rest of the slabs newLeaf takes
	// leaves' items and leaves from.
	spare       [][leafCap + 2]item
	spareLeaves []leaf
	// chars[r] marks the seqs of replica r that are characters of this
	// text, so that checking a reference to them (a remote insert names
	// two, a delete one) is a bit test, not a search of the id index.
	chars []bitset
}

// cursor remembers where visAt found a position: item i of l starts at
// visible index start.
type cursor struct {
	l     *leaf
	i     int
	start int
	ver   uint64
}

func newText(d *Doc) *text {
	t := &text{d: d}
	l := &leaf{items: make([]item, 0, 8)}
	t.number(l)
	t.leaves = []*leaf{l}
	t.rebuild()
	return t
}

// rebuild lays the leaves out again with free slots between them and
// after the last (typing at the end splits the last leaf over and over:
// without them every other such split would lay everything out again),
// renumbers them and rebuilds both Fenwick trees.
func (t *text) rebuild() { t.rebuildWith(nil, nil) }

// rebuildWith is rebuild with leaf nl, not yet in a slot, laid out after
// leaf after. (Inserting it into the old slots first copied them, the
// array being full, only to lay them out again: four times in a merge of
// 10,000 keystrokes each way, 39 KB of garbage.)
//
// A layout wants a free slot after each leaf and a quarter as many
// again after the last, 2.5 slots a leaf; a new array has room for twice
// that, so that later layouts of a growing text reuse it. Once the array
// is too small for that, the leaves are spread over all of it while it
// still has a free slot for every four leaves (the free slots are fewer,
// so splits shift a few more leaves to reach one and layouts come more
// often, each a pass over the slots), and only then is it replaced. (A
// merge doubles each side's leaves, and laying them out in a new array
// of twice the slots was 120 KB of the 2.5 MB a merge of 10,000
// keystrokes each way allocated; spread out, the leaves mostly fit the
// array they have.)
//
// The leaves are moved in place: first packed to the front (each moves
// left or stays), then spread from the back (each moves right or
// stays), so that none lands on one not yet moved.
func (t *text) rebuildWith(after, nl *leaf) {
	old := t.leaves
	n := 0
	for p, l := range old {
		if l == nil {
			continue
		}
		old[p] = nil
		old[n] = l
		n++
	}
	total := n
	if nl != nil {
		total++
	}
	slots := 2*total + total/2 + 8
	next := old[:n]
	switch {
	case cap(old) >= slots:
	case cap(old) >= total+total/4+8:
		slots = cap(old)
	default:
		next = make([]*leaf, n, 2*slots)
		copy(next, old[:n])
	}
	next = next[:slots]
	clear(next[n:])
	// Leaf i goes to slot i + i·gaps/(total-1): gaps free slots between
	// the leaves, at most one after each, and the rest after the last.
	gaps := min(total-1, (slots-total)*2/3)
	fl := t.lens.reset(slots)
	i := total - 1
	put := func(l *leaf) {
		k := i
		if i > 0 {
			k += i * gaps / (total - 1)
		}
		if i == total-1 {
			t.last = l
		}
		l.idx = k
		next[k] = l
		fl[k+1] = lens{l.vis, l.raw}
		i--
	}
	for p := n - 1; p >= 0; p-- {
		l := next[p]
		next[p] = nil
		if l == after {
			put(nl)
		}
		put(l)
	}
	t.lens.build()
	t.leaves = next
}

// maxShift bounds how many leaves a split shifts right to reach a free
// slot before it lays all leaves out again instead.
const maxShift = 8

// placeAfter puts nl, which l has just given its last items (l's lengths
// already exclude them), in the slot after l.
func (t *text) placeAfter(l, nl *leaf) {
	s := l.idx
	free := -1
	for j := s + 1; j < len(t.leaves) && j <= s+1+maxShift; j++ {
		if t.leaves[j] == nil {
			free = j
			break
		}
	}
	if free < 0 {
		t.rebuildWith(l, nl) // the trees are made anew from the leaves
		return
	}
	for j := free; j > s+1; j-- {
		m := t.leaves[j-1]
		t.leaves[j], m.idx = m, j
		t.lens.add(j-1, -m.vis, -m.raw)
		t.lens.add(j, m.vis, m.raw)
	}
	t.leaves[s+1], nl.idx = nl, s+1
	if t.last == l {
		t.last = nl
	}
	t.lens.add(s, -nl.vis, -nl.raw)
	t.lens.add(s+1, nl.vis, nl.raw)
}

// nextLeaf returns the leaf after l, or nil if l is the last.
func (t *text) nextLeaf(l *leaf) *leaf {
	if l == t.last {
		return nil
	}
	for j := l.idx + 1; j < len(t.leaves); j++ {
		if t.leaves[j] != nil {
			return t.leaves[j]
		}
	}
	return nil
}

// all yields the leaves in order.
func (t *text) all(yield func(*leaf) bool) {
	for _, l := range t.leaves {
		if l != nil && !yield(l) {
			return
		}
	}
}

func (t *text) index(r uint32) *idIndex {
	for int(r) >= len(t.ids) {
		t.ids = append(t.ids, nil)
		t.tail = append(t.tail, 0)
	}
	if t.ids[r] == nil {
		t.ids[r] = &idIndex{}
	}
	return t.ids[r]
}

// entryAt returns the entry of replica r that covers seq, or nil.
func (t *text) entryAt(r, seq uint32) *idEntry {
	if int(r) >= len(t.ids) || t.ids[r] == nil {
		return nil
	}
	if e := t.tailEntry(r); e != nil && seq >= e.start {
		if seq < e.end {
			return e
		}
		return nil
	}
	if k, ok := t.ids[r].floor(seq); ok {
		if e := t.entry(k); seq < e.end {
			return e
		}
	}
	return nil
}

// entry returns entry number k.
func (t *text) entry(k uint32) *idEntry {
	return &t.slabs[k/entrySlab][k%entrySlab]
}

// leafOf returns e's leaf.
func (t *text) leafOf(e *idEntry) *leaf { return t.byNum[e.leaf] }

// findLeaf returns the leaf holding id r:seq, or nil if the text has no such
// character.
func (t *text) findLeaf(id ref) *leaf {
	if e := t.entryAt(id.r, id.seq); e != nil {
		return t.leafOf(e)
	}
	return nil
}

// covered reports whether every id r:seq .. r:seq+n-1 (or downwards from seq
// when back) is a character of this text.
func (t *text) covered(id ref, n uint32, back bool) bool {
	lo, hi := id.seq, id.seq+n // [lo, hi)
	if back {
		if n > id.seq {
			return false
		}
		lo, hi = id.seq-n+1, id.seq+1
	}
	return int(id.r) < len(t.chars) && t.chars[id.r].allSet(lo, hi)
}

// reserve makes room for characters of replica r up to seq end (not
// included), in at most n index entries, that a batch is about to give
// the text, and for a large batch its scans' scratch.
func (t *text) reserve(r, end uint32, n int) {
	x := t.index(r)
	k := n/idChunk + 1
	x.chunks = growRoomy(x.chunks, k)
	x.firsts = growRoomy(x.firsts, k)
	t.slabs = growRoomy(t.slabs, n/entrySlab+1)
	for int(r) >= len(t.chars) {
		t.chars = append(t.chars, nil)
	}
	t.chars[r] = t.chars[r].grow(uint64(end))
	if n >= largeBatch {
		// The scans' scratch too, at the size a large merge grows it
		// to: doubled from one run it went through six size classes,
		// each a span the pacer counts whole when first taken.
		if cap(t.seen) < maxSeen {
			t.seen = make([]idRun, 0, maxSeen)
		}
		if cap(t.gap) < largeGap {
			t.gap = make([]idRun, 0, largeGap)
		}
	}
}

// largeBatch is the batch size (in ops) from which reserve sizes the
// text's scratch, and largeGap the gap list it gives it (1.5 KB: a merge
// of 10,000 keystrokes each way grows it to that).
const (
	largeBatch = 256
	largeGap   = 128
)

// markChars records that r:lo .. r:hi-1 are characters of the text.
func (t *text) markChars(r, lo, hi uint32) {
	for int(r) >= len(t.chars) {
		t.chars = append(t.chars, nil)
	}
	b := t.chars[r]
	if uint64(hi) > uint64(len(b))*64 {
		b = b.grow(uint64(hi))
		t.chars[r] = b
	}
	if hi == lo+1 { // a keystroke
		w, m := lo/64, uint64(1)<<(lo%64)
		if b[w]&m != 0 {
			panic("crdt: a character inserted twice")
		}
		b[w] |= m
		return
	}
	if !b.setRange(lo, hi) {
		panic("crdt: a character inserted twice")
	}
}

// lastEntry returns the entry of r with the greatest start (cached).
func (t *text) lastEntry(r uint32) *idEntry {
	if k := t.tail[r]; k != 0 {
		return t.entry(k - 1)
	}
	return t.findTail(r)
}

// findTail is lastEntry when tail[r] is unknown: it finds and caches it.
func (t *text) findTail(r uint32) *idEntry {
	k, ok := t.ids[r].max()
	if !ok {
		return nil
	}
	t.tail[r] = k + 1
	return t.entry(k)
}

// tailEntry returns the cached entry of r with the greatest start, nil if
// none is cached.
func (t *text) tailEntry(r uint32) *idEntry {
	if k := t.tail[r]; k != 0 {
		return t.entry(k - 1)
	}
	return nil
}

// newEntry allocates an index entry of replica r from a slab: a merge
// adds one per remote insert, and one allocation per 64 entries is far
// cheaper. (Entries live as long as the text, so the slabs waste little.)
// It returns the entry and its number, k: the index holds k, an item's
// hint k+1.
func (t *text) newEntry(r, start, end uint32, l *leaf, at int) (*idEntry, uint32) {
	if len(t.slabs) == 0 || t.slabUsed == entrySlab {
		t.slabs = append(t.slabs, new([entrySlab]idEntry))
		t.slabUsed = 0
	}
	k := t.slabUsed
	t.slabUsed++
	e := &t.slabs[len(t.slabs)-1][k]
	*e = idEntry{start: start, end: end, leaf: l.num, ra: packRA(r, at)}
	return e, uint32((len(t.slabs)-1)*entrySlab + k)
}

const entrySlab = 64

// put adds entry k of replica r to the index, dropping an entry it
// replaces (see dropEntry).
func (t *text) put(r, k uint32) {
	if old, ok := t.ids[r].put(t.entry(k).start, k); ok {
		dropEntry(t.entry(old))
	}
}

// hinted returns the entry of the ids of it, which the leaf from holds,
// if it's hint names it; else nil. An entry taken out of the index is
// emptied (end = start), so a hint never names one of those.
func (t *text) hinted(it *item, from *leaf) *idEntry {
	h := it.hint()
	if h == 0 || int(h-1)/entrySlab >= len(t.slabs) {
		return nil
	}
	e := t.entry(h - 1)
	if !e.of(it.r) || e.start != it.seq || e.end != it.seq+it.n || e.leaf != from.num {
		return nil
	}
	return e
}

// dropEntry marks e, just taken out of the index, as no entry (see
// hinted).
func dropEntry(e *idEntry) { e.end = e.start }

// assign records that ids r:start..r:end-1 are in leaf l, from item at,
// and returns the hint of the entry it made for them (0: it grew one).
func (t *text) assign(r, start, end uint32, l *leaf, at int) uint32 {
	tr := t.index(r)
	// Fast path, typing: grow the last entry when the new ids follow it.
	if last := t.lastEntry(r); last != nil && last.end == start && last.leaf == l.num {
		last.end = end
		return 0
	} else if last == nil || last.end <= start {
		_, k := t.newEntry(r, start, end, l, at)
		t.put(r, k)
		t.tail[r] = k + 1
		return k + 1
	}
	// General case: cut [start,end) out of the entries that overlap it.
	t.tail[r] = 0
	var cutBuf [4]*idEntry // usually one or two entries
	cut := cutBuf[:0]
	if prev := t.entryAt(r, start); prev != nil && prev.start < start {
		cut = append(cut, prev)
	}
	tr.ascend(start, end, func(k uint32) bool {
		cut = append(cut, t.entry(k))
		return true
	})
	for _, e := range cut {
		tr.remove(e.start)
		if e.start < start {
			_, k := t.newEntry(r, e.start, start, t.leafOf(e), e.at())
			t.put(r, k)
		}
		if e.end > end {
			_, k := t.newEntry(r, end, e.end, t.leafOf(e), e.at())
			t.put(r, k)
		}
		dropEntry(e)
	}
	_, k := t.newEntry(r, start, end, l, at)
	t.put(r, k)
	return k + 1
}

// reassign records that ids r:start..r:end-1, which the index already
// holds, moved to leaf l. Items usually line up with index entries, so this
// rarely changes the index's shape.
func (t *text) reassign(r, start, end uint32, l *leaf, at int) {
	t.index(r)
	if e := t.entryAt(r, start); e != nil && e.start == start {
		if e.end == end {
			e.leaf = l.num
			e.setAt(at)
			return
		}
		if e.end > end {
			_, k := t.newEntry(r, end, e.end, t.leafOf(e), e.at())
			e.end, e.leaf = end, l.num
			e.setAt(at)
			t.put(r, k)
			if t.tailEntry(r) == e {
				t.tail[r] = k + 1
			}
			return
		}
	}
	t.assign(r, start, end, l, at)
}

// locate returns the position of id r:seq: its leaf, the item index in it,
// and the offset in the item. ok is false if the text has no such char.
func (t *text) locate(id ref) (l *leaf, i int, k uint32, ok bool) {
	e := t.entryAt(id.r, id.seq)
	if e == nil {
		return nil, 0, 0, false
	}
	l = t.byNum[e.leaf]
	items := l.items
	// From the entry's item on (inserts before it push it right), then
	// back from it (joined items pull it left).
	h := min(e.at(), len(items))
	for i := h; i < len(items); i++ {
		if it := &items[i]; it.r == id.r && id.seq >= it.seq && id.seq < it.seq+it.n {
			if it.seq == e.start {
				e.setAt(i)
			}
			return l, i, id.seq - it.seq, true
		}
	}
	for i := h - 1; i >= 0; i-- {
		if it := &items[i]; it.r == id.r && id.seq >= it.seq && id.seq < it.seq+it.n {
			if it.seq == e.start {
				e.setAt(i)
			}
			return l, i, id.seq - it.seq, true
		}
	}
	panic("crdt: id index points at a leaf without the id")
}

// consistent reports whether an insert of ids r:seq.. may name left and
// right as its origins (PROTOCOL.md §8 "Origins"): right must be the first
// character after left, counting tombstones, among right itself and the
// characters its sender must have known — those of left's replica up to
// the end of left's change, of right's replica up to the end of right's
// change, and of replica r before seq. (Its
// sender had those, in the order every replica has them, and placed the
// insert between two neighbours; characters it did not know may lie
// between them by now.) The end stands for right none. Whether it holds
// is the same on every replica, as those characters are present and in
// one order everywhere; integrating inserts that break it depended on
// arrival order ("aQbPcdefgh" or "aPQbcdefgh").
//
// The walk stops at the first such character, which for an honest insert
// is the first item after left, or one after the concurrent inserts in
// between.
func (t *text) consistent(left, right ref, r, seq uint32) bool {
	var l *leaf
	var i int
	var from uint32 // the first seq of item i to look at (0: all)
	if left.none() {
		l, i = t.leaves[0], 0
	} else {
		var k uint32
		var ok bool
		l, i, k, ok = t.locate(left)
		if !ok {
			panic("crdt: consistent with unknown left origin")
		}
		t.leftAt, t.leftI, t.leftK, t.leftID = l.num+1, i, k, left
		if k+1 < l.items[i].n {
			from = l.items[i].seq + k + 1
		} else {
			i++
		}
	}
	// Changes are atomic: naming a character, the sender knew its whole
	// change. (Its end is looked up only when a character past it turns
	// up: usually the walk stops at right first.)
	var knownL, knownR uint32
	gap := t.gap[:0] // the items passed: their first seq and replica
	for {
		for i >= len(l.items) {
			nl := t.nextLeaf(l)
			if nl == nil {
				if !right.none() {
					return false
				}
				return len(gap) == 0 || !t.d.knowsAny(left, right, r, seq, gap)
			}
			l, i = nl, 0
		}
		o := &l.items[i]
		s0 := o.seq
		if from != 0 {
			s0, from = from, 0
		}
		// The greatest seq of o's replica the sender must have known.
		var known uint32
		if !left.none() && o.r == left.r {
			known = left.seq
			if s0 > known {
				if knownL == 0 {
					knownL = t.d.changeEnd(left.r, left.seq)
				}
				known = knownL
			}
		}
		if !right.none() && o.r == right.r {
			known = max(known, right.seq)
			if s0 > known {
				if knownR == 0 {
					knownR = t.d.changeEnd(right.r, right.seq)
				}
				known = max(known, knownR)
			}
		}
		if o.r == r {
			known = max(known, seq-1)
		}
		if s0 <= known {
			if o.r != right.r || s0 != right.seq {
				return false
			}
			break
		}
		gap = append(gap, idRun{o.r, s0, 0})
		if cap(gap) > cap(t.gap) {
			t.gap = gap[:0] // kept for the next walk (a defer cost a tenth of the check)
		}
		i++
	}
	// The sender may not have known the characters in between (inserted
	// concurrently), or may have, through what it knew: check them
	// against everything the insert depends on.
	return len(gap) == 0 || !t.d.knowsAny(left, right, r, seq, gap)
}

// rawIndex returns the raw position (counting tombstones) of id.
func (t *text) rawIndex(id ref) int {
	l, i, k, ok := t.locate(id)
	if !ok {
		panic("crdt: rawIndex of unknown id")
	}
	pos := t.lens.prefix(l.idx).raw
	for j := 0; j < i; j++ {
		pos += int(l.items[j].n)
	}
	return pos + int(k)
}

// rawIndexOrStart is rawIndex, with -1 for none (the start of the text).
func (t *text) rawIndexOrStart(id ref) int {
	if id.none() {
		return -1
	}
	return t.rawIndex(id)
}

// visIndex returns the number of visible characters before id and whether
// id itself is visible.
func (t *text) visIndex(id ref) (int, bool) {
	l, i, _, ok := t.locate(id)
	if !ok {
		panic("crdt: visIndex of unknown id")
	}
	pos := t.lens.prefix(l.idx).vis
	for j := 0; j < i; j++ {
		pos += l.items[j].vis()
	}
	it := &l.items[i]
	if it.del {
		return pos, false
	}
	return pos + int(id.seq-it.seq), true
}

// visAt returns the leaf, item and offset of the visible character at
// index pos (0 ≤ pos < t.vis).
func (t *text) visAt(pos int) (*leaf, int, uint32) {
	// Edits cluster: start from the item the last lookup found, if nothing
	// changed since, and scan forwards within its leaf.
	if c := &t.cur; c.l != nil && c.ver == t.ver && pos >= c.start {
		items := c.l.items
		start := c.start
		for i := c.i; i < len(items) && i < c.i+8; i++ {
			it := &items[i]
			if it.del {
				continue
			}
			if pos < start+int(it.n) {
				c.i, c.start = i, start
				return c.l, i, uint32(pos - start)
			}
			start += int(it.n)
		}
	}
	li, before := t.lens.searchVis(pos)
	l := t.leaves[li]
	rel := pos - before
	for i := range l.items {
		it := &l.items[i]
		if it.del {
			continue
		}
		if rel < int(it.n) {
			t.cur = cursor{l: l, i: i, start: pos - rel, ver: t.ver}
			return l, i, uint32(rel)
		}
		rel -= int(it.n)
	}
	panic("crdt: visible index outside leaf")
}

// visRuns returns how many items hold the n visible runes from pos (the
// runs a delete of them removes, each one operation at most), counting no
// further than limit.
func (t *text) visRuns(pos, n, limit int) int {
	if n <= 0 {
		return 0
	}
	l, i, k := t.visAt(pos)
	runs := 0
	for n > 0 && runs < limit {
		for i >= len(l.items) {
			if l = t.nextLeaf(l); l == nil {
				return runs
			}
			i = 0
		}
		if it := &l.items[i]; !it.del {
			n -= min(n, int(it.n-k))
			k = 0
			runs++
		}
		i++
	}
	return runs
}

// split cuts item i of l after k runes (0 < k < n); both parts stay in l at
// i and i+1.
func (t *text) split(l *leaf, i int, k uint32) {
	t.ver++
	it := l.items[i]
	bo := uint32(byteOffset(t.d.content[it.off:it.off+it.nb], int(it.n), int(k)))
	a := it
	a.n, a.nb = k, bo
	b := it
	b.seq += k
	b.n -= k
	b.off += bo
	b.nb -= bo
	l.items[i] = a
	l.items = append(l.items, item{})
	copy(l.items[i+2:], l.items[i+1:])
	l.items[i+1] = b
	// Lengths of l are unchanged; l may now exceed leafCap until its
	// caller calls fixLeaf (directly or through insertItem), which it must
	// do once it no longer needs the indexes.
}

// insertItem puts it at item position i of l and updates all indexes.
func (t *text) insertItem(l *leaf, i int, it item) {
	t.ver++
	l.items = append(l.items, item{})
	copy(l.items[i+1:], l.items[i:])
	l.items[i] = it
	d := int(it.n)
	dv := it.vis()
	l.raw += d
	t.raw += d
	l.vis += dv
	t.vis += dv
	t.lens.add(l.idx, dv, d)
	l.items[i].setHint(t.assign(it.r, it.seq, it.seq+it.n, l, i))
	t.markChars(it.r, it.seq, it.seq+it.n)
	t.fixLeaf(l)
}

// fixLeaf splits l while it holds more than leafCap items.
func (t *text) fixLeaf(l *leaf) {
	for len(l.items) > leafCap {
		t.ver++
		half := len(l.items) / 2
		nl := t.newLeaf(len(l.items) - half)
		copy(nl.items, l.items[half:])
		l.items = l.items[:half]
		for j := range nl.items {
			it := &nl.items[j]
			nl.raw += int(it.n)
			nl.vis += it.vis()
		}
		l.raw -= nl.raw
		l.vis -= nl.vis
		t.placeAfter(l, nl)
		for j := range nl.items {
			it := &nl.items[j]
			if e := t.hinted(it, l); e != nil {
				e.leaf = nl.num
				e.setAt(j)
				continue
			}
			t.reassign(it.r, it.seq, it.seq+it.n, nl, j)
		}
		// The moved half may itself be too big; loop on both.
		t.fixLeaf(nl)
	}
}

// deleteRange marks n characters starting at offset k of item i in l as
// deleted (a no-op on an already deleted item), splitting as needed.
func (t *text) deleteRange(l *leaf, i int, k, n uint32) {
	t.ver++
	it := &l.items[i]
	if it.del {
		return
	}
	if k > 0 {
		t.split(l, i, k)
		i++
	}
	if n < l.items[i].n {
		t.split(l, i, n)
	}
	l.items[i].del = true
	d := int(l.items[i].n)
	l.vis -= d
	t.vis -= d
	t.lens.add(l.idx, -d, 0)
	// Re-join tombstones that a run of deletes (backspacing, say) cut
	// apart, so deleting does not leave one item per character.
	if i+1 < len(l.items) && t.joinable(&l.items[i], &l.items[i+1]) {
		t.join(l, i)
	}
	if i > 0 && t.joinable(&l.items[i-1], &l.items[i]) {
		t.join(l, i-1)
	}
	t.fixLeaf(l)
}

// joinable reports whether b continues a as one item: both deleted (or both
// visible), consecutive ids and content of one op span.
func (t *text) joinable(a, b *item) bool {
	return a.del == b.del && a.r == b.r && a.seq+a.n == b.seq && a.off+a.nb == b.off &&
		t.d.spanAt(a.r, a.seq) == t.d.spanAt(b.r, b.seq)
}

// join merges item i+1 of l into item i. Lengths and the id index (both
// are in l) are unchanged.
func (t *text) join(l *leaf, i int) {
	a, b := &l.items[i], l.items[i+1]
	a.n += b.n
	a.nb += b.nb
	l.items = append(l.items[:i+1], l.items[i+2:]...)
}

// deleteIDs deletes the characters r:seq .. r:seq+n-1 (each must exist).
func (t *text) deleteIDs(r, seq, n uint32) {
	for n > 0 {
		l, i, k, ok := t.locate(ref{r, seq})
		if !ok {
			panic("crdt: delete of unknown id passed validation")
		}
		m := l.items[i].n - k
		if m > n {
			m = n
		}
		t.deleteRange(l, i, k, m)
		seq += m
		n -= m
	}
}

// nextID returns the id of the first character after item i of l in raw
// order, or none at the end.
func (t *text) nextID(l *leaf, i int) ref {
	if i+1 < len(l.items) {
		return ref{l.items[i+1].r, l.items[i+1].seq}
	}
	for nl := t.nextLeaf(l); nl != nil; nl = t.nextLeaf(nl) {
		if len(nl.items) > 0 {
			return ref{nl.items[0].r, nl.items[0].seq}
		}
	}
	return ref{}
}

// String returns the visible text.
func (t *text) String() string {
	b := make([]byte, 0, t.vis)
	for l := range t.all {
		for i := range l.items {
			it := &l.items[i]
			if !it.del {
				b = append(b, t.d.content[it.off:it.off+it.nb]...)
			}
		}
	}
	return string(b)
}

// byteOffset returns the byte offset of rune index runes in s, which holds
// n runes. An all-ASCII run (n == len(s)) takes O(1).
func byteOffset(s []byte, n, runes int) int {
	if n == len(s) {
		return runes
	}
	if runes <= len(s) {
		ascii := true
		for _, c := range s[:runes] {
			if c >= utf8.RuneSelf {
				ascii = false
				break
			}
		}
		if ascii {
			return runes
		}
	}
	off := 0
	for ; runes > 0; runes-- {
		_, sz := utf8.DecodeRune(s[off:])
		off += sz
	}
	return off
}

// lens is the visible and raw length of a leaf, or of a range of leaves.
type lens struct{ vis, raw int }

// fenwick is a binary indexed tree of lens over the leaf slots: both
// lengths in one array, so that an update or a lookup walks one path (an
// insert changes both).
type fenwick struct{ t []lens }

// reset sizes the tree for n values, reusing its memory, and returns its
// array, zeroed: the caller stores value i at index i+1, then calls build.
func (f *fenwick) reset(n int) []lens {
	if cap(f.t) < n+1 {
		f.t = make([]lens, n+1, 2*(n+1))
	}
	f.t = f.t[:n+1]
	clear(f.t)
	return f.t
}

// build turns the values stored after reset into the tree, in O(n).
func (f *fenwick) build() {
	n := len(f.t) - 1
	for i := 1; i <= n; i++ {
		if j := i + i&-i; j <= n {
			f.t[j].vis += f.t[i].vis
			f.t[j].raw += f.t[i].raw
		}
	}
}

// add adds dvis and draw to value i.
func (f *fenwick) add(i, dvis, draw int) {
	for i++; i < len(f.t); i += i & -i {
		f.t[i].vis += dvis
		f.t[i].raw += draw
	}
}

// prefix returns the sums of values [0, i).
func (f *fenwick) prefix(i int) lens {
	var s lens
	for ; i > 0; i -= i & -i {
		s.vis += f.t[i].vis
		s.raw += f.t[i].raw
	}
	return s
}

// searchVis returns the smallest index i whose visible prefix through i
// exceeds pos, and the visible prefix before i. pos must be less than the
// visible total.
func (f *fenwick) searchVis(pos int) (int, int) {
	n := len(f.t) - 1
	step := 1
	for step*2 <= n {
		step *= 2
	}
	i, sum := 0, 0
	for ; step > 0; step /= 2 {
		if j := i + step; j <= n && sum+f.t[j].vis <= pos {
			i = j
			sum += f.t[j].vis
		}
	}
	if i >= n {
		i = n - 1
	}
	return i, sum
}
