package crdt

import (
	"fmt"
	"math/bits"
)

// checkInvariants panics if the document's structures disagree with each
// other. It is called after every local edit and every Apply when built
// with -tags invariants.
func (d *Doc) checkInvariants() {
	for r := range d.logs {
		lg := &d.logs[r]
		seq := uint32(1)
		for _, s := range lg.spans {
			if s.seq != seq || s.n == 0 {
				panic(fmt.Sprintf("crdt invariant: replica %d span at %d, want %d", r, s.seq, seq))
			}
			seq += s.n
		}
		tseq := uint32(1)
		for _, tr := range lg.times {
			if tr.seq != tseq || tr.n() == 0 {
				panic(fmt.Sprintf("crdt invariant: replica %d time run at %d, want %d", r, tr.seq, tseq))
			}
			tseq += tr.n()
		}
		if seq != lg.next || tseq != lg.next {
			panic(fmt.Sprintf("crdt invariant: replica %d log ends %d, times %d, next %d", r, seq, tseq, lg.next))
		}
		// Block b names the span holding seq b·16 (seq 1 for block 0),
		// for every block the log reaches.
		if want := (uint64(lg.next) + 1<<spanBlockBits - 1) >> spanBlockBits; len(lg.spans) > 0 && uint64(len(lg.blocks)) != want {
			panic(fmt.Sprintf("crdt invariant: replica %d has %d span blocks, want %d", r, len(lg.blocks), want))
		}
		for b, k := range lg.blocks {
			first := max(uint32(b)<<spanBlockBits, 1)
			if s := lg.spans[k]; first < s.seq || first >= s.seq+s.n {
				panic(fmt.Sprintf("crdt invariant: replica %d block %d names span %d (%d+%d)", r, b, k, s.seq, s.n))
			}
		}
		// The same for the time runs.
		if want := (uint64(lg.next) + 1<<spanBlockBits - 1) >> spanBlockBits; len(lg.times) > 0 && uint64(len(lg.tblocks)) != want {
			panic(fmt.Sprintf("crdt invariant: replica %d has %d time blocks, want %d", r, len(lg.tblocks), want))
		}
		for b, k := range lg.tblocks {
			first := max(uint32(b)<<spanBlockBits, 1)
			if tr := lg.times[k]; first < tr.seq || first >= tr.seq+tr.n() {
				panic(fmt.Sprintf("crdt invariant: replica %d time block %d names run %d (%d+%d)", r, b, k, tr.seq, tr.n()))
			}
		}
	}
	for _, f := range d.fields {
		if f.text != nil {
			f.text.checkInvariants()
		}
	}
}

func (t *text) checkInvariants() {
	vis, raw := 0, 0
	if len(t.leaves) == 0 || t.leaves[0] == nil {
		panic("crdt invariant: no first leaf in slot 0")
	}
	var last *leaf
	for l := range t.all {
		last = l
	}
	if t.last != last {
		panic("crdt invariant: the cached last leaf is not the last")
	}
	for i, l := range t.leaves {
		if l == nil {
			if t.lens.prefix(i+1) != t.lens.prefix(i) {
				panic("crdt invariant: a free leaf slot has a length")
			}
			continue
		}
		if l.idx != i {
			panic("crdt invariant: leaf index out of date")
		}
		if len(l.items) > leafCap {
			panic(fmt.Sprintf("crdt invariant: leaf of %d items", len(l.items)))
		}
		lv, lr := 0, 0
		for j := range l.items {
			it := &l.items[j]
			if it.n == 0 {
				panic("crdt invariant: empty item")
			}
			lv += it.vis()
			lr += int(it.n)
			if got := t.findLeaf(ref{it.r, it.seq}); got != l {
				panic(fmt.Sprintf("crdt invariant: id index sends %d:%d to the wrong leaf", it.r, it.seq))
			}
			if got := t.findLeaf(ref{it.r, it.seq + it.n - 1}); got != l {
				panic(fmt.Sprintf("crdt invariant: id index sends %d:%d to the wrong leaf", it.r, it.seq+it.n-1))
			}
			// A hint that checks out names the entry the index holds.
			if e := t.hinted(it, l); e != nil && t.entryAt(it.r, it.seq) != e {
				panic(fmt.Sprintf("crdt invariant: item %d:%d+%d hints at an entry out of the index", it.r, it.seq, it.n))
			}
		}
		if lv != l.vis || lr != l.raw {
			panic("crdt invariant: leaf lengths out of date")
		}
		if t.lens.prefix(i) != (lens{vis, raw}) {
			panic("crdt invariant: Fenwick prefix sums out of date")
		}
		vis += lv
		raw += lr
	}
	if vis != t.vis || raw != t.raw {
		panic("crdt invariant: text lengths out of date")
	}
	// chars marks exactly the items' ids.
	marked := make([]int, len(t.chars))
	for l := range t.all {
		for _, it := range l.items {
			if !t.covered(ref{it.r, it.seq}, it.n, false) {
				panic(fmt.Sprintf("crdt invariant: characters %d:%d+%d not marked", it.r, it.seq, it.n))
			}
			marked[it.r] += int(it.n)
		}
	}
	for r, b := range t.chars {
		n := 0
		for _, w := range b {
			n += bits.OnesCount64(w)
		}
		if n != marked[r] {
			panic(fmt.Sprintf("crdt invariant: replica %d has %d characters marked, %d in items", r, n, marked[r]))
		}
	}
	// Every index entry covers ids that are in its leaf, and entries are
	// disjoint.
	for r, tr := range t.ids {
		if tr == nil {
			continue
		}
		if last, ok := tr.max(); t.tail[r] != 0 && (!ok || t.tail[r] != last+1) {
			panic("crdt invariant: cached tail entry is not the last")
		}
		var prevEnd uint32
		tr.ascend(0, 1<<32-1, func(k uint32) bool {
			e := t.entry(k)
			if int(e.leaf) >= len(t.byNum) || t.byNum[e.leaf].num != e.leaf {
				panic(fmt.Sprintf("crdt invariant: index entry %d:%d names leaf %d, not numbered so", r, e.start, e.leaf))
			}
			if e.start >= e.end || e.start < prevEnd {
				panic(fmt.Sprintf("crdt invariant: index entries overlap for replica %d", r))
			}
			prevEnd = e.end
			for _, seq := range [2]uint32{e.start, e.end - 1} {
				found := false
				for _, it := range t.leafOf(e).items {
					if it.r == uint32(r) && seq >= it.seq && seq < it.seq+it.n {
						found = true
						break
					}
				}
				if !found {
					panic(fmt.Sprintf("crdt invariant: index entry %d:%d names a leaf without it", r, seq))
				}
			}
			return true
		})
	}
}
