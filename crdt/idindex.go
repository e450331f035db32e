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
type idIndex struct {
	chunks []idChunkT // non-empty, sorted; every entry of chunk i precedes chunk i+1
	firsts []uint32   // firsts[i] == chunks[i].starts[0]
}

type idChunkT struct {
	starts []uint32
	ents   []*idEntry
}

const idChunk = 64

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

// floor returns the entry with the greatest start ≤ seq, or nil.
func (x *idIndex) floor(seq uint32) *idEntry {
	if len(x.chunks) == 0 {
		return nil
	}
	ch := &x.chunks[x.chunkFor(seq)]
	j := upper(ch.starts, seq)
	if j == 0 {
		return nil
	}
	return ch.ents[j-1]
}

// max returns the entry with the greatest start, or nil.
func (x *idIndex) max() *idEntry {
	if len(x.chunks) == 0 {
		return nil
	}
	ch := &x.chunks[len(x.chunks)-1]
	return ch.ents[len(ch.ents)-1]
}

func newChunk(n int) idChunkT {
	return idChunkT{starts: make([]uint32, n, idChunk+1), ents: make([]*idEntry, n, idChunk+1)}
}

// put inserts e, replacing an entry with the same start; it returns the
// replaced entry.
func (x *idIndex) put(e *idEntry) (old *idEntry) {
	if len(x.chunks) == 0 {
		ch := newChunk(1)
		ch.starts[0], ch.ents[0] = e.start, e
		x.chunks = append(x.chunks, ch)
		x.firsts = append(x.firsts, e.start)
		return nil
	}
	ci := len(x.chunks) - 1
	ch := &x.chunks[ci]
	var j int
	if last := ch.starts[len(ch.starts)-1]; e.start > last {
		// Ids arrive in order: append, no search; a full last chunk
		// gets a new one rather than a split, so chunks stay full.
		if len(ch.starts) == idChunk {
			nc := newChunk(1)
			nc.starts[0], nc.ents[0] = e.start, e
			x.chunks = append(x.chunks, nc)
			x.firsts = append(x.firsts, e.start)
			return nil
		}
		j = len(ch.starts)
	} else {
		ci = x.chunkFor(e.start)
		ch = &x.chunks[ci]
		j = lower(ch.starts, e.start)
	}
	if j < len(ch.starts) && ch.starts[j] == e.start {
		old, ch.ents[j] = ch.ents[j], e
		if old != e {
			dropEntry(old)
		}
		return old
	}
	if j == len(ch.starts) {
		ch.starts = append(ch.starts, e.start)
		ch.ents = append(ch.ents, e)
	} else {
		ch.starts = append(ch.starts, 0)
		copy(ch.starts[j+1:], ch.starts[j:])
		ch.starts[j] = e.start
		ch.ents = append(ch.ents, nil)
		copy(ch.ents[j+1:], ch.ents[j:])
		ch.ents[j] = e
		x.firsts[ci] = ch.starts[0]
	}
	if len(ch.ents) > idChunk {
		half := len(ch.ents) / 2
		right := newChunk(len(ch.ents) - half)
		copy(right.starts, ch.starts[half:])
		copy(right.ents, ch.ents[half:])
		clear(ch.ents[half:])
		ch.starts, ch.ents = ch.starts[:half], ch.ents[:half]
		x.chunks = append(x.chunks, idChunkT{})
		copy(x.chunks[ci+2:], x.chunks[ci+1:])
		x.chunks[ci+1] = right
		x.firsts = append(x.firsts, 0)
		copy(x.firsts[ci+2:], x.firsts[ci+1:])
		x.firsts[ci+1] = right.starts[0]
	}
	return nil
}

// load fills an empty index with entries sorted by start and disjoint:
// the bulk form of put, for loading a snapshot, with full chunks.
func (x *idIndex) load(entries []idEntry) {
	for i := 0; i < len(entries); i += idChunk {
		n := min(idChunk, len(entries)-i)
		ch := newChunk(n)
		for k := range n {
			e := &entries[i+k]
			ch.starts[k], ch.ents[k] = e.start, e
		}
		x.chunks = append(x.chunks, ch)
		x.firsts = append(x.firsts, ch.starts[0])
	}
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
	ch.ents[len(ch.ents)-1] = nil
	ch.ents = ch.ents[:len(ch.ents)-1]
	if len(ch.ents) == 0 {
		x.chunks = append(x.chunks[:ci], x.chunks[ci+1:]...)
		x.firsts = append(x.firsts[:ci], x.firsts[ci+1:]...)
		return
	}
	x.firsts[ci] = ch.starts[0]
}

// ascend calls fn for the entries with lo ≤ start < hi, in order, until fn
// returns false. fn must not change the index.
func (x *idIndex) ascend(lo, hi uint32, fn func(*idEntry) bool) {
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
