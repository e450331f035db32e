package crdt

import "math/bits"

// bitset is a set of seqs (or offsets from a base seq): loading a
// snapshot marks which characters a text holds, and a batch plan which
// characters the batch inserts, so that checking a reference is a bit test.
type bitset []uint64

func newBitset(n uint32) bitset { return make(bitset, (uint64(n)+63)/64) }

// setRange and allSet walk words the same way but stay two loops: a shared
// walker taking a closure cost 1% of applying a large merge.

// setRange adds [lo, hi); it reports false (and may have added some) if
// any was already there or the range does not fit.
func (b bitset) setRange(lo, hi uint32) bool {
	if lo > hi || uint64(hi) > uint64(len(b))*64 {
		return false
	}
	for i := lo; i < hi; {
		w, bit := i/64, i%64
		k := min(hi-i, 64-bit)
		mask := ^uint64(0) >> (64 - k) << bit
		if b[w]&mask != 0 {
			return false
		}
		b[w] |= mask
		i += k
	}
	return true
}

// allSet reports whether every seq of [lo, hi) is in the set (false if the
// range does not fit).
func (b bitset) allSet(lo, hi uint32) bool {
	if lo > hi || uint64(hi) > uint64(len(b))*64 {
		return false
	}
	for i := lo; i < hi; {
		w, bit := i/64, i%64
		k := min(hi-i, 64-bit)
		mask := ^uint64(0) >> (64 - k) << bit
		if b[w]&mask != mask {
			return false
		}
		i += k
	}
	return true
}

// count returns how many seqs of [lo, hi) are in the set (those past its
// end are not).
func (b bitset) count(lo, hi uint32) int {
	hi = uint32(min(uint64(hi), uint64(len(b))*64))
	n := 0
	for i := lo; i < hi; {
		w, bit := i/64, i%64
		k := min(hi-i, 64-bit)
		mask := ^uint64(0) >> (64 - k) << bit
		n += bits.OnesCount64(b[w] & mask)
		i += k
	}
	return n
}

// grow makes room for [0, n). Growing a word at a time (typing) is
// amortized: a new array has room for twice the words. (Appending a word
// at a time did that too, but a set made for a whole batch at once went
// through every doubling on the way.)
func (b bitset) grow(n uint64) bitset {
	w := int((n + 63) / 64)
	if w <= len(b) {
		return b
	}
	b = growRoomy(b, w-len(b))
	k := len(b)
	b = b[:w]
	clear(b[k:])
	return b
}

// appendRanges appends to rs the runs of the set as ranges of seqs (base
// plus offset), all in field name.
func (b bitset) appendRanges(rs []planRange, base uint64, name string) []planRange {
	lo := -1
	for i := 0; i <= len(b)*64; i++ {
		in := i < len(b)*64 && b[i/64]&(1<<(i%64)) != 0
		switch {
		case in && lo < 0:
			lo = i
		case !in && lo >= 0:
			rs = append(rs, planRange{base + uint64(lo), base + uint64(i), name})
			lo = -1
		}
	}
	return rs
}
