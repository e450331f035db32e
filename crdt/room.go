package crdt

import "unsafe"

// The pacer counts a span as allocated when the allocator takes it for a
// size class, not object by object, until the next collection. Most
// size classes between 1 and 32 KB share spans of two to seven pages
// among several objects, so one buffer of such a size, made once in a
// merge (a replica's seq index, its id index's chunk list, a bitset),
// counted up to 40 KB against the merge where it used 7. A size of 2,
// 4 or 8 KB, or a multiple of 8 KB, is a span of one page to itself, or
// of its own pages, and counts as what it is.

// roomFor returns a capacity of at least n elements of size bytes: n
// itself if they fit 1 KB, else as many as fill the power of two or
// the multiple of 8 KB that holds n (at most twice n's bytes, or 8 KB
// more), less 8 bytes: an object with pointers of more than 512 bytes
// carries an 8-byte header, and 4,096 bytes of pointers took a
// 4,864-byte slot in spans of three pages.
func roomFor(n, size int) int {
	const header = 8
	b := n*size + header
	switch {
	case b <= 1024 || size > 8192:
		return n
	case b <= 8192:
		p := 2048
		for p < b {
			p *= 2
		}
		return (p - header) / size
	default:
		return ((b+8191)/8192*8192 - header) / size
	}
}

// growRoomy is slices.Grow with the new capacity from roomFor: room for
// n more elements of s, and at least twice its old capacity (a list
// reserved for a batch of one op at a time would otherwise grow by one
// each time it is full).
func growRoomy[S ~[]E, E any](s S, n int) S {
	if n <= cap(s)-len(s) {
		return s
	}
	var e E
	ns := make(S, len(s), roomFor(max(len(s)+n, 2*cap(s)), int(unsafe.Sizeof(e))))
	copy(ns, s)
	return ns
}
