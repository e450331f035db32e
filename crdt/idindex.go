package crdt

import "sort"

// idIndex maps one replica's character ids to leaves: disjoint entries
// sorted by start, kept in chunks of at most idChunk so that lookups are two
// binary searches over contiguous memory and an insert moves at most a
// chunk. (A general B-tree with callbacks cost a third of remote
// integration in profiles.)
type idIndex struct {
	chunks [][]*idEntry // non-empty, sorted; every entry of chunk i precedes chunk i+1
}

const idChunk = 64

// chunkFor returns the index of the last chunk whose first start ≤ seq (0
// if none).
func (x *idIndex) chunkFor(seq uint32) int {
	// Hand-rolled binary searches: sort.Search's closure call was the
	// single largest flat cost of remote integration in profiles.
	c := x.chunks
	lo, hi := 0, len(c)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if c[m][0].start > seq {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo > 0 {
		lo--
	}
	return lo
}

// upper returns the index of the first entry of ch that starts after seq.
func upper(ch []*idEntry, seq uint32) int {
	lo, hi := 0, len(ch)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if ch[m].start > seq {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}

// floor returns the entry with the greatest start ≤ seq, or nil.
func (x *idIndex) floor(seq uint32) *idEntry {
	if len(x.chunks) == 0 {
		return nil
	}
	ch := x.chunks[x.chunkFor(seq)]
	j := upper(ch, seq)
	if j == 0 {
		return nil
	}
	return ch[j-1]
}

// max returns the entry with the greatest start, or nil.
func (x *idIndex) max() *idEntry {
	if len(x.chunks) == 0 {
		return nil
	}
	ch := x.chunks[len(x.chunks)-1]
	return ch[len(ch)-1]
}

// put inserts e, replacing an entry with the same start; it returns the
// replaced entry.
func (x *idIndex) put(e *idEntry) (old *idEntry) {
	if len(x.chunks) == 0 {
		x.chunks = append(x.chunks, make([]*idEntry, 0, idChunk))
		x.chunks[0] = append(x.chunks[0], e)
		return nil
	}
	ci := x.chunkFor(e.start)
	ch := x.chunks[ci]
	j := sort.Search(len(ch), func(j int) bool { return ch[j].start >= e.start })
	if j < len(ch) && ch[j].start == e.start {
		old, ch[j] = ch[j], e
		return old
	}
	ch = append(ch, nil)
	copy(ch[j+1:], ch[j:])
	ch[j] = e
	x.chunks[ci] = ch
	if len(ch) > idChunk {
		half := len(ch) / 2
		right := make([]*idEntry, len(ch)-half, idChunk+1)
		copy(right, ch[half:])
		clear(ch[half:])
		x.chunks[ci] = ch[:half]
		x.chunks = append(x.chunks, nil)
		copy(x.chunks[ci+2:], x.chunks[ci+1:])
		x.chunks[ci+1] = right
	}
	return nil
}

// remove deletes the entry that starts at start, if any.
func (x *idIndex) remove(start uint32) {
	if len(x.chunks) == 0 {
		return
	}
	ci := x.chunkFor(start)
	ch := x.chunks[ci]
	j := sort.Search(len(ch), func(j int) bool { return ch[j].start >= start })
	if j == len(ch) || ch[j].start != start {
		return
	}
	copy(ch[j:], ch[j+1:])
	ch[len(ch)-1] = nil
	ch = ch[:len(ch)-1]
	if len(ch) == 0 {
		x.chunks = append(x.chunks[:ci], x.chunks[ci+1:]...)
		return
	}
	x.chunks[ci] = ch
}

// ascend calls fn for the entries with lo ≤ start < hi, in order, until fn
// returns false. fn must not change the index.
func (x *idIndex) ascend(lo, hi uint32, fn func(*idEntry) bool) {
	if len(x.chunks) == 0 {
		return
	}
	ci := x.chunkFor(lo)
	ch := x.chunks[ci]
	j := sort.Search(len(ch), func(j int) bool { return ch[j].start >= lo })
	for ; ci < len(x.chunks); ci, j = ci+1, 0 {
		for ch = x.chunks[ci]; j < len(ch); j++ {
			if ch[j].start >= hi || !fn(ch[j]) {
				return
			}
		}
	}
}
