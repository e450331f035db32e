package codec

import (
	"encoding/binary"
	"errors"
	"fmt"
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

// rleWriter collects the values of one column.
type rleWriter struct{ vals []uint64 }

func (w *rleWriter) add(v uint64) { w.vals = append(w.vals, v) }

// appendTo writes the column's groups to dst.
func (w *rleWriter) appendTo(dst []byte) []byte {
	v := w.vals
	for i := 0; i < len(v); {
		j := i + 1
		for j < len(v) && v[j] == v[i] {
			j++
		}
		if j-i >= 2 {
			dst = binary.AppendUvarint(dst, uint64(j-i-1)<<1)
			dst = binary.AppendUvarint(dst, v[i])
			i = j
			continue
		}
		// Literal: extend until a value repeats.
		j = i + 1
		for j < len(v) && !(j+1 < len(v) && v[j+1] == v[j]) {
			j++
		}
		dst = binary.AppendUvarint(dst, uint64(j-i-1)<<1|1)
		for _, x := range v[i:j] {
			dst = binary.AppendUvarint(dst, x)
		}
		i = j
	}
	return dst
}

// kindWriter collects a column of small symbols (0..3) as runs: each varint
// is (runLength-1)<<2 | symbol. Used for op kinds, which alternate too often
// for the general RLE column to pay.
type kindWriter struct {
	sym []byte
}

func (w *kindWriter) add(s byte) { w.sym = append(w.sym, s) }

func (w *kindWriter) appendTo(dst []byte) []byte {
	for i := 0; i < len(w.sym); {
		j := i + 1
		for j < len(w.sym) && w.sym[j] == w.sym[i] {
			j++
		}
		dst = binary.AppendUvarint(dst, uint64(j-i-1)<<2|uint64(w.sym[i]))
		i = j
	}
	return dst
}

var errColumnEnd = errors.New("column ended early")

// byteReader reads varints from a byte slice.
type byteReader struct {
	b   []byte
	pos int
}

func (r *byteReader) left() int { return len(r.b) - r.pos }

func (r *byteReader) uvarint() (uint64, error) {
	v, n := binary.Uvarint(r.b[r.pos:])
	if n == 0 {
		return 0, errColumnEnd
	}
	if n < 0 {
		return 0, errors.New("varint overflows 64 bits")
	}
	r.pos += n
	return v, nil
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
type rleReader struct {
	byteReader
	run  uint64 // values left in the current group
	lit  bool   // current group is a literal
	val  uint64 // the run's value
	name string
}

func (r *rleReader) next() (uint64, error) {
	if r.run == 0 {
		h, err := r.uvarint()
		if err != nil {
			return 0, fmt.Errorf("column %s: %w", r.name, err)
		}
		r.run = h>>1 + 1
		r.lit = h&1 == 1
		if !r.lit {
			if r.val, err = r.uvarint(); err != nil {
				return 0, fmt.Errorf("column %s: %w", r.name, err)
			}
		}
	}
	r.run--
	if !r.lit {
		return r.val, nil
	}
	v, err := r.uvarint()
	if err != nil {
		return 0, fmt.Errorf("column %s: %w", r.name, err)
	}
	return v, nil
}

// done reports an error unless every value of the column was consumed.
func (r *rleReader) done() error {
	if r.run != 0 || r.left() != 0 {
		return fmt.Errorf("column %s has values left over", r.name)
	}
	return nil
}

// kindReader yields the symbols of a kind column.
type kindReader struct {
	byteReader
	run uint64
	sym byte
}

func (r *kindReader) next() (byte, error) {
	if r.run == 0 {
		h, err := r.uvarint()
		if err != nil {
			return 0, fmt.Errorf("column kinds: %w", err)
		}
		r.run = h>>2 + 1
		r.sym = byte(h & 3)
	}
	r.run--
	return r.sym, nil
}

func (r *kindReader) done() error {
	if r.run != 0 || r.left() != 0 {
		return errors.New("column kinds has values left over")
	}
	return nil
}
