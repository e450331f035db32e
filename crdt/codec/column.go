package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Column primitives. All integers are unsigned LEB128 varints
// (encoding/binary.Uvarint); signed values are zigzag-mapped first.
//
// An RLE column is a sequence of groups. Each group opens with a varint
// header h; n = h>>1 + 1 values belong to the group:
//   - h&1 == 0: a run: one varint value, repeated n times;
//   - h&1 == 1: a literal: n varint values follow.
// The encoder emits a run for every value repeated at least twice, so the
// output is deterministic.

func zigzag(v int64) uint64   { return uint64(v<<1) ^ uint64(v>>63) }
func unzigzag(u uint64) int64 { return int64(u>>1) ^ -int64(u&1) }

// rleWriter encodes a column as its values arrive. A run is open until a
// different value comes; a value that turns out not to repeat joins the
// pending literal group, which is closed when a run ends it. This groups
// values exactly as a pass over the finished column would, without keeping
// the column's values.
//
// A literal group's values go straight into out, after room for the
// longest header; closing the group writes its header there and moves the
// values up to it. (A buffer of its own per column doubled the encoder's
// garbage.)
type rleWriter struct {
	out   []byte // groups written so far, then the pending literal group
	litAt int    // where the pending literal group's header goes
	nLit  uint64 // values in the pending literal group
	cur   uint64 // the open run's value
	n     uint64 // the open run's length; 0 before the first value
}

func (w *rleWriter) add(v uint64) {
	if v == w.cur && w.n != 0 {
		w.n++
		return
	}
	w.push(v)
}

// push closes the open run and opens one of v. (Kept apart from add so that
// add, the common case, inlines.)
func (w *rleWriter) push(v uint64) {
	w.out = room(w.out, 2*binary.MaxVarintLen64)
	switch {
	case w.n == 1:
		if w.nLit == 0 {
			w.litAt = len(w.out)
			w.out = append(w.out, make([]byte, binary.MaxVarintLen64)...)
		}
		w.out = binary.AppendUvarint(w.out, w.cur)
		w.nLit++
	case w.n >= 2:
		w.closeLiteral()
		w.out = binary.AppendUvarint(w.out, (w.n-1)<<1)
		w.out = binary.AppendUvarint(w.out, w.cur)
	}
	w.cur, w.n = v, 1
}

func (w *rleWriter) closeLiteral() {
	if w.nLit > 0 {
		var h [binary.MaxVarintLen64]byte
		hdr := binary.AppendUvarint(h[:0], (w.nLit-1)<<1|1)
		at := w.litAt + copy(w.out[w.litAt:], hdr)
		n := copy(w.out[at:], w.out[w.litAt+binary.MaxVarintLen64:])
		w.out, w.nLit = w.out[:at+n], 0
	}
}

// close ends the column; out is then its encoding.
func (w *rleWriter) close() {
	w.push(0) // closes the open run; the one it opens is dropped
	w.n = 0
	w.closeLiteral()
}

// room returns b with room for n more bytes, doubling its capacity when it
// must grow: append grows large slices by a quarter, which made a column's
// garbage several times its size.
func room[S ~[]E, E any](b S, n int) S {
	if cap(b)-len(b) >= n {
		return b
	}
	return slices.Grow(b, max(n, cap(b)))
}

// kindWriter encodes a column of small symbols (0..3) as runs: each varint
// is (runLength-1)<<2 | symbol. Used for op kinds, which alternate too often
// for the general RLE column to pay.
type kindWriter struct {
	out []byte
	sym byte
	n   uint64 // length of the open run of sym; 0 before the first symbol
}

func (w *kindWriter) add(s byte) {
	if s == w.sym && w.n != 0 {
		w.n++
		return
	}
	w.next(s)
}

func (w *kindWriter) next(s byte) {
	w.closeRun()
	w.sym, w.n = s, 1
}

func (w *kindWriter) closeRun() {
	if w.n != 0 {
		w.out = binary.AppendUvarint(w.out, (w.n-1)<<2|uint64(w.sym))
		w.n = 0
	}
}

// close ends the column; out is then its encoding.
func (w *kindWriter) close() { w.closeRun() }

var (
	errColumnEnd      = errors.New("column ended early")
	errVarintOverflow = errors.New("varint overflows 64 bits")
)

// byteReader reads varints from a byte slice.
type byteReader struct {
	b   []byte
	pos int
}

func (r *byteReader) left() int { return len(r.b) - r.pos }

// uvarint is binary.Uvarint on r.b[r.pos:]. Values of one and two bytes,
// most of a column, are read without a loop; NB: so is a one-byte value
// that ends its column, as most values of a keystroke's columns do (such
// a column holds a group header and one value).
func (r *byteReader) uvarint() (uint64, error) {
	if b, i := r.b, r.pos; i < len(b) {
		if b0 := b[i]; b0 < 0x80 {
			r.pos = i + 1
			return uint64(b0), nil
		} else if i+1 < len(b) {
			if b1 := b[i+1]; b1 < 0x80 {
				r.pos = i + 2
				return uint64(b0&0x7f) | uint64(b1)<<7, nil
			}
		}
	}
	return r.longUvarint()
}

// small returns the next value if it takes one byte, as most do, and
// inlines (uvarint does not): the hot loops try it first.
func (r *byteReader) small() (uint64, bool) {
	// The byte is loaded once, before r.pos is stored (loaded after,
	// it was loaded and bounds-checked again).
	if b, i := r.b, r.pos; i < len(b) {
		if c := b[i]; c < 0x80 {
			r.pos = i + 1
			return uint64(c), true
		}
	}
	return 0, false
}

func (r *byteReader) longUvarint() (uint64, error) {
	var x uint64
	var s uint
	for i := r.pos; i < len(r.b); i++ {
		b, n := r.b[i], i-r.pos
		if n == binary.MaxVarintLen64 {
			return 0, errVarintOverflow
		}
		if b < 0x80 {
			if n == binary.MaxVarintLen64-1 && b > 1 {
				return 0, errVarintOverflow
			}
			r.pos = i + 1
			return x | uint64(b)<<(s&63), nil
		}
		x |= uint64(b&0x7f) << (s & 63)
		s += 7
	}
	return 0, errColumnEnd
}

// take returns the next n bytes, without copying.
func (r *byteReader) take(n uint64) ([]byte, error) {
	if n > uint64(r.left()) {
		return nil, fmt.Errorf("length %d but only %d bytes left", n, r.left())
	}
	b := r.b[r.pos : r.pos+int(n)]
	r.pos += int(n)
	return b, nil
}

// rleReader yields the values of an RLE column one at a time. Counts are
// never used to allocate, so a claimed run of 2^63 values costs nothing.
//
// next returns a single result so that it inlines (a second result puts it
// over the inlining budget): on a malformed column it returns 0 and sets
// err, which the caller checks after each value.
type rleReader struct {
	byteReader
	run uint64 // values left in the current run group
	lit uint64 // values left in the current literal group
	val uint64 // the run's value
	err error  // why the column could not yield the last value asked for
	col uint8  // the column's index in columnNames (a string here cost write barriers)
}

// name returns the column's name, for errors.
func (r *rleReader) name() string { return columnNames[r.col] }

func (r *rleReader) next() uint64 {
	if r.run == 0 {
		return r.nextGroup()
	}
	r.run--
	return r.val
}

// nextGroup is next outside a run: a literal value, or a new group.
func (r *rleReader) nextGroup() uint64 {
	if r.lit == 0 {
		h, ok := r.small()
		if !ok {
			var err error
			if h, err = r.uvarint(); err != nil {
				return r.fail(err)
			}
		}
		if h&1 == 0 {
			v, ok := r.small()
			if !ok {
				var err error
				if v, err = r.uvarint(); err != nil {
					return r.fail(err)
				}
			}
			r.val = v
			r.run = h >> 1 // the value returned now is the first of h>>1 + 1
			return v
		}
		r.lit = h>>1 + 1
	}
	r.lit--
	if v, ok := r.small(); ok {
		return v
	}
	v, err := r.uvarint()
	if err != nil {
		return r.fail(err)
	}
	return v
}

func (r *rleReader) fail(err error) uint64 {
	r.err = fmt.Errorf("column %s: %w", r.name(), err)
	return 0
}

// done reports an error unless every value of the column was consumed.
func (r *rleReader) done() error {
	if r.run != 0 || r.lit != 0 || r.left() != 0 {
		return fmt.Errorf("column %s has values left over", r.name())
	}
	return nil
}

// kindReader yields the symbols of a kind column; errors as rleReader.
type kindReader struct {
	byteReader
	run uint64
	sym byte
	err error
}

func (r *kindReader) next() byte {
	if r.run == 0 {
		return r.nextRun()
	}
	r.run--
	return r.sym
}

func (r *kindReader) nextRun() byte {
	h, ok := r.small()
	if !ok {
		var err error
		if h, err = r.uvarint(); err != nil {
			r.err = fmt.Errorf("column kinds: %w", err)
			return 0
		}
	}
	r.run = h >> 2 // the symbol returned now is the first of h>>2 + 1
	r.sym = byte(h & 3)
	return r.sym
}

func (r *kindReader) done() error {
	if r.run != 0 || r.left() != 0 {
		return errors.New("column kinds has values left over")
	}
	return nil
}

// rleCount returns the number of values an RLE column holds and, of each
// value v, the sum of weight(v)·(its repeats): a pass over the group
// headers and values that allocates nothing. A count past limit stops the
// pass (ok false), so that no sum can overflow.
func rleCount(b []byte, limit uint64, weight func(uint64) uint64) (n, sum uint64, ok bool) {
	r := byteReader{b: b}
	for r.left() > 0 {
		h, ok := r.small()
		if !ok {
			var err error
			if h, err = r.uvarint(); err != nil {
				return n, sum, false
			}
		}
		k := h>>1 + 1
		if h>>1 >= limit || n+k > limit {
			return n, sum, false
		}
		n += k
		if h&1 == 0 {
			k, h = 1, k // a run: one value, weighed k times
		} else {
			h = 1
		}
		for ; k > 0; k-- {
			v, ok := r.small()
			if !ok {
				var err error
				if v, err = r.uvarint(); err != nil {
					return n, sum, false
				}
			}
			if weight != nil {
				w := weight(v)
				if w > limit || w*h > limit || sum+w*h > limit {
					return n, sum, false
				}
				sum += w * h
			}
		}
	}
	return n, sum, true
}

// kindCount returns the number of symbols a kind column holds, counting
// those of kind k apart; ok is false past limit.
func kindCount(b []byte, limit uint64, k byte) (n, nk uint64, ok bool) {
	r := byteReader{b: b}
	for r.left() > 0 {
		h, ok := r.small()
		if !ok {
			var err error
			if h, err = r.uvarint(); err != nil {
				return n, nk, false
			}
		}
		if h>>2 >= limit || n+h>>2+1 > limit {
			return n, nk, false
		}
		n += h>>2 + 1
		if byte(h&3) == k {
			nk += h>>2 + 1
		}
	}
	return n, nk, true
}
