package crdt

// idIndex maps one replica's character ids to leaves: disjoint entries
// sorted by start, kept in chunks of at most idChunk so that lookups are two
// binary searches over contiguous memory and an insert moves at most a
// chunk. (A general B-tree with callbacks cost a third of remote
// integration in profiles.)
//
// The searches read packed starts — firsts for the chunks, starts within a
// chunk — rather than following a pointer to an entry per step: those cache
// misses were a third of all misses when applying a merge. An entry's start
// never changes once it is in the index (its end and leaf do), so the
// copies stay true.
//
// The index holds entry numbers (see text.entry), not pointers, and an
// entry names its leaf by number: nothing in it or in the entries is a
// pointer, so the collector neither scans them nor runs a write barrier
// for them (with pointers they were half of what it scanned of a
// document's heap).
type idIndex struct {
	chunks []idChunkT // non-empty, sorted; every entry of chunk i precedes chunk i+1
	firsts []uint32   // firsts[i] == chunks[i].starts[0]
}

type idChunkT struct {
	starts []uint32
	ents   []uint32 // entry numbers; ents[j] starts at starts[j]
}

// idChunk is 71 so that a chunk's one allocation, two columns of
// idChunk+1 (room for the insert before a split), is 576 bytes, a size
// class exactly: at 64 it was 520 bytes in a 576-byte slot, a tenth of
// what a merge allocated for its index chunks.
const idChunk = 71

// chunkFor returns the index of the last chunk whose first start ≤ seq (0
// if none).
func (x *idIndex) chunkFor(seq uint32) int {
	lo := upper(x.firsts, seq)
	if lo > 0 {
		lo--
	}
	return lo
}

// upper returns the index of the first element of s greater than seq.
// (Hand-rolled searches: sort.Search's closure call was the single
// largest flat cost of remote integration in profiles.)
//
// It guesses the place by interpolation and walks a few steps from it
// before it falls back to a binary search: the ids of a replica are
// dense, so its entries (and chunks) spread evenly over them, and a merge
// looks ids up at random places, where every step of a binary search was
// a mispredicted branch or a cache line of its own.
func upper(s []uint32, seq uint32) int {
	n := len(s)
	if n == 0 || seq < s[0] {
		return 0
	}
	if seq >= s[n-1] {
		return n
	}
	// s[0] ≤ seq < s[n-1], so the answer u is in [1, n-1] and g in
	// [0, n-2].
	g := int(uint64(seq-s[0]) * uint64(n-1) / uint64(s[n-1]-s[0]))
	lo, hi := 1, n-1 // bounds of u
	if s[g] <= seq {
		for k := 0; k < 4; k++ {
			g++
			if s[g] > seq {
				return g
			}
		}
		lo = g + 1
	} else {
		for k := 0; k < 4; k++ {
			if s[g-1] <= seq {
				return g
			}
			g--
		}
		hi = g // s[g] > seq
	}
	for lo < hi { // the first index in [lo, hi] whose element is > seq
		m := int(uint(lo+hi) >> 1)
		if s[m] > seq {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// lower returns the index of the first element of s not less than seq.
func lower(s []uint32, seq uint32) int {
	if seq == 0 {
		return 0
	}
	return upper(s, seq-1) // the elements are integers
}

// floor returns the number of the entry with the greatest start ≤ seq;
// ok is false if there is none.
func (x *idIndex) floor(seq uint32) (k uint32, ok bool) {
	if len(x.chunks) == 0 {
		return 0, false
	}
	ch := &x.chunks[x.chunkFor(seq)]
	j := upper(ch.starts, seq)
	if j == 0 {
		return 0, false
	}
	return ch.ents[j-1], true
}

// max returns the number of the entry with the greatest start; ok is
// false if the index is empty.
func (x *idIndex) max() (k uint32, ok bool) {
	if len(x.chunks) == 0 {
		return 0, false
	}
	ch := &x.chunks[len(x.chunks)-1]
	return ch.ents[len(ch.ents)-1], true
}

func newChunk(n int) idChunkT {
	// One allocation for both columns (no pointers: the collector does
	// not scan it).
	buf := make([]uint32, 2*(idChunk+1))
	return idChunkT{starts: buf[: n : idChunk+1], ents: buf[idChunk+1 : idChunk+1+n : 2*(idChunk+1)]}
}

// put inserts entry k, which starts at start, replacing an entry with the
// same start; it returns the replaced entry's number and whether there
// was one (the caller drops it: see dropEntry).
func (x *idIndex) put(start, k uint32) (old uint32, replaced bool) {
	if len(x.chunks) == 0 {
		ch := newChunk(1)
		ch.starts[0], ch.ents[0] = start, k
		x.chunks = append(x.chunks, ch)
		x.firsts = append(x.firsts, start)
		return 0, false
	}
	ci := len(x.chunks) - 1
	ch := &x.chunks[ci]
	var j int
	if last := ch.starts[len(ch.starts)-1]; start > last {
		// Ids arrive in order: append, no search; a full last chunk
		// gets a new one rather than a split, so chunks stay full.
		if len(ch.starts) == idChunk {
			nc := newChunk(1)
			nc.starts[0], nc.ents[0] = start, k
			x.chunks = append(x.chunks, nc)
			x.firsts = append(x.firsts, start)
			return 0, false
		}
		j = len(ch.starts)
	} else {
		ci = x.chunkFor(start)
		ch = &x.chunks[ci]
		j = lower(ch.starts, start)
	}
	if j < len(ch.starts) && ch.starts[j] == start {
		old, ch.ents[j] = ch.ents[j], k
		return old, old != k
	}
	if j == len(ch.starts) {
		ch.starts = append(ch.starts, start)
		ch.ents = append(ch.ents, k)
	} else {
		ch.starts = append(ch.starts, 0)
		copy(ch.starts[j+1:], ch.starts[j:])
		ch.starts[j] = start
		ch.ents = append(ch.ents, 0)
		copy(ch.ents[j+1:], ch.ents[j:])
		ch.ents[j] = k
		x.firsts[ci] = ch.starts[0]
	}
	if len(ch.ents) > idChunk {
		half := len(ch.ents) / 2
		right := newChunk(len(ch.ents) - half)
		copy(right.starts, ch.starts[half:])
		copy(right.ents, ch.ents[half:])
		ch.starts, ch.ents = ch.starts[:half], ch.ents[:half]
		x.chunks = append(x.chunks, idChunkT{})
		copy(x.chunks[ci+2:], x.chunks[ci+1:])
		x.chunks[ci+1] = right
		x.firsts = append(x.firsts, 0)
		copy(x.firsts[ci+2:], x.firsts[ci+1:])
		x.firsts[ci+1] = right.starts[0]
	}
	return 0, false
}

// remove deletes the entry that starts at start, if any.
func (x *idIndex) remove(start uint32) {
	if len(x.chunks) == 0 {
		return
	}
	ci := x.chunkFor(start)
	ch := &x.chunks[ci]
	j := lower(ch.starts, start)
	if j == len(ch.starts) || ch.starts[j] != start {
		return
	}
	copy(ch.starts[j:], ch.starts[j+1:])
	ch.starts = ch.starts[:len(ch.starts)-1]
	copy(ch.ents[j:], ch.ents[j+1:])
	ch.ents = ch.ents[:len(ch.ents)-1]
	if len(ch.ents) == 0 {
		x.chunks = append(x.chunks[:ci], x.chunks[ci+1:]...)
		x.firsts = append(x.firsts[:ci], x.firsts[ci+1:]...)
		return
	}
	x.firsts[ci] = ch.starts[0]
}

// ascend calls fn for the numbers of the entries with lo ≤ start < hi, in
// order, until fn returns false. fn must not change the index.
func (x *idIndex) ascend(lo, hi uint32, fn func(k uint32) bool) {
	if len(x.chunks) == 0 {
		return
	}
	ci := x.chunkFor(lo)
	j := lower(x.chunks[ci].starts, lo)
	for ; ci < len(x.chunks); ci, j = ci+1, 0 {
		ch := &x.chunks[ci]
		for ; j < len(ch.ents); j++ {
			if ch.starts[j] >= hi || !fn(ch.ents[j]) {
				return
			}
		}
	}
}
