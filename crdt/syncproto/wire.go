package syncproto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// reader drives a msgpack.Decoder over an in-memory frame and checks every
// length it reads against the bytes that remain before allocating anything.
// NB: the decoder reads straight from the bytes.Reader (it implements
// io.ByteScanner, so msgpack adds no buffering), which is what makes
// r.Len() the exact count of bytes not yet consumed.
type reader struct {
	buf []byte
	r   bytes.Reader
	d   *msgpack.Decoder
	msg string // message name, for error context
}

// readers recycles readers with their msgpack.Decoder: a client or server
// decodes a frame per message received, and the pair was a tenth of what a
// 200-client load generator allocated.
var readers = sync.Pool{New: func() any {
	rd := &reader{}
	rd.d = msgpack.NewDecoder(&rd.r)
	return rd
}}

// newReader returns a reader over buf; release it when done with it and
// with everything it returned (spans alias buf, not the reader).
func newReader(buf []byte) *reader {
	rd := readers.Get().(*reader)
	rd.buf, rd.msg = buf, ""
	rd.r.Reset(buf)
	rd.d.ResetReader(&rd.r)
	return rd
}

func (rd *reader) release() {
	rd.buf = nil
	rd.r.Reset(nil)
	readers.Put(rd)
}

func (rd *reader) remaining() int { return rd.r.Len() }

func (rd *reader) errf(field, format string, args ...any) error {
	prefix := rd.msg
	if field != "" {
		prefix += "." + field
	}
	return fmt.Errorf("%w: %s: %s", ErrMalformed, prefix, fmt.Sprintf(format, args...))
}

// wrap turns a decoder error into an ErrMalformed with context.
func (rd *reader) wrap(field string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return rd.errf(field, "truncated")
	}
	return rd.errf(field, "%v", err)
}

func (rd *reader) peek(field string) (byte, error) {
	c, err := rd.d.PeekCode()
	if err != nil {
		return 0, rd.wrap(field, err)
	}
	return c, nil
}

// arrayLen reads an array header; each element takes at least one byte, so
// a count above the bytes left is a lie.
func (rd *reader) arrayLen(field string) (int, error) {
	c, err := rd.peek(field)
	if err != nil {
		return 0, err
	}
	if !msgpcode.IsFixedArray(c) && c != msgpcode.Array16 && c != msgpcode.Array32 {
		return 0, rd.errf(field, "expected array, got code 0x%02x", c)
	}
	n, err := rd.d.DecodeArrayLen()
	if err != nil {
		return 0, rd.wrap(field, err)
	}
	if n < 0 || n > rd.remaining() {
		return 0, rd.errf(field, "array of %d elements but only %d bytes left", n, rd.remaining())
	}
	return n, nil
}

func (rd *reader) isNil() (bool, error) {
	c, err := rd.peek("")
	if err != nil {
		return false, err
	}
	if c == msgpcode.Nil {
		_, _ = rd.r.ReadByte()
		return true, nil
	}
	return false, nil
}

// uint reads a non-negative integer of any msgpack integer width.
func (rd *reader) uint(field string) (uint64, error) {
	c, err := rd.peek(field)
	if err != nil {
		return 0, err
	}
	switch {
	case msgpcode.IsFixedNum(c) && c <= msgpcode.PosFixedNumHigh,
		c == msgpcode.Uint8, c == msgpcode.Uint16, c == msgpcode.Uint32, c == msgpcode.Uint64:
		v, err := rd.d.DecodeUint64()
		if err != nil {
			return 0, rd.wrap(field, err)
		}
		return v, nil
	case msgpcode.IsFixedNum(c), c == msgpcode.Int8, c == msgpcode.Int16, c == msgpcode.Int32, c == msgpcode.Int64:
		v, err := rd.d.DecodeInt64()
		if err != nil {
			return 0, rd.wrap(field, err)
		}
		if v < 0 {
			return 0, rd.errf(field, "negative value %d", v)
		}
		return uint64(v), nil
	}
	return 0, rd.errf(field, "expected unsigned integer, got code 0x%02x", c)
}

func (rd *reader) uintMax(field string, max uint64) (uint64, error) {
	v, err := rd.uint(field)
	if err != nil {
		return 0, err
	}
	if v > max {
		return 0, rd.errf(field, "value %d exceeds %d", v, max)
	}
	return v, nil
}

func (rd *reader) bool(field string) (bool, error) {
	c, err := rd.peek(field)
	if err != nil {
		return false, err
	}
	if c != msgpcode.True && c != msgpcode.False {
		return false, rd.errf(field, "expected bool, got code 0x%02x", c)
	}
	_, _ = rd.r.ReadByte()
	return c == msgpcode.True, nil
}

// span reads a str (wantStr) or bin header and returns the payload as a
// sub-slice of the frame, without copying.
func (rd *reader) span(field string, wantStr bool, max int) ([]byte, error) {
	c, err := rd.peek(field)
	if err != nil {
		return nil, err
	}
	isStr := msgpcode.IsFixedString(c) || c == msgpcode.Str8 || c == msgpcode.Str16 || c == msgpcode.Str32
	isBin := c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32
	if wantStr && !isStr {
		return nil, rd.errf(field, "expected string, got code 0x%02x", c)
	}
	if !wantStr && !isBin {
		return nil, rd.errf(field, "expected binary, got code 0x%02x", c)
	}
	n, err := rd.d.DecodeBytesLen()
	if err != nil {
		return nil, rd.wrap(field, err)
	}
	if n < 0 || n > rd.remaining() {
		return nil, rd.errf(field, "length %d but only %d bytes left", n, rd.remaining())
	}
	if n > max {
		return nil, rd.errf(field, "length %d exceeds limit %d", n, max)
	}
	off := len(rd.buf) - rd.remaining()
	b := rd.buf[off : off+n : off+n]
	if _, err := rd.r.Seek(int64(n), io.SeekCurrent); err != nil {
		return nil, rd.wrap(field, err)
	}
	return b, nil
}

func (rd *reader) string(field string, max int) (string, error) {
	b, err := rd.span(field, true, max)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", rd.errf(field, "invalid UTF-8")
	}
	return string(b), nil
}

// bytes reads a bin and returns a copy (nil for an empty bin).
func (rd *reader) bytes(field string, max int) ([]byte, error) {
	b, err := rd.span(field, false, max)
	if err != nil || len(b) == 0 {
		return nil, err
	}
	return bytes.Clone(b), nil
}

// raw reads one complete msgpack value of any type found at nesting depth
// (1 for an element of the frame's array), so that with the frame it is at
// most MaxDepth levels deep, and returns a copy of its bytes.
func (rd *reader) raw(field string, depth, max int) ([]byte, error) {
	start := len(rd.buf) - rd.remaining()
	if err := rd.skip(field, depth); err != nil {
		return nil, err
	}
	end := len(rd.buf) - rd.remaining()
	if end-start > max {
		return nil, rd.errf(field, "value of %d bytes exceeds limit %d", end-start, max)
	}
	return bytes.Clone(rd.buf[start:end]), nil
}

// skip consumes one msgpack value. Unlike msgpack.Decoder.Skip it bounds
// nesting, so a frame of nested array headers cannot exhaust the stack.
func (rd *reader) skip(field string, depth int) error {
	if depth >= MaxDepth {
		return rd.errf(field, "nesting deeper than %d", MaxDepth)
	}
	c, err := rd.peek(field)
	if err != nil {
		return err
	}
	switch {
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := rd.arrayLen(field)
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := rd.skip(field, depth+1); err != nil {
				return err
			}
		}
		return nil
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := rd.d.DecodeMapLen()
		if err != nil {
			return rd.wrap(field, err)
		}
		if n < 0 || n > rd.remaining()/2 {
			return rd.errf(field, "map of %d entries but only %d bytes left", n, rd.remaining())
		}
		for i := 0; i < 2*n; i++ {
			if err := rd.skip(field, depth+1); err != nil {
				return err
			}
		}
		return nil
	case msgpcode.IsFixedString(c) || c == msgpcode.Str8 || c == msgpcode.Str16 || c == msgpcode.Str32:
		_, err := rd.span(field, true, rd.remaining())
		return err
	case c == msgpcode.Bin8 || c == msgpcode.Bin16 || c == msgpcode.Bin32:
		_, err := rd.span(field, false, rd.remaining())
		return err
	case c >= msgpcode.FixExt1 && c <= msgpcode.FixExt16 || c == msgpcode.Ext8 || c == msgpcode.Ext16 || c == msgpcode.Ext32:
		return rd.skipExt(field, c)
	}
	// Fixed-size scalars. NB: msgpack's own Skip must not see strings,
	// binaries or extensions: it allocates a buffer for their claimed length.
	if err := rd.d.Skip(); err != nil {
		return rd.wrap(field, err)
	}
	return nil
}

// skipExt consumes an extension value (code, length, type byte, payload).
func (rd *reader) skipExt(field string, c byte) error {
	_, _ = rd.r.ReadByte() // the code, already peeked
	var n int
	switch c {
	case msgpcode.FixExt1:
		n = 1
	case msgpcode.FixExt2:
		n = 2
	case msgpcode.FixExt4:
		n = 4
	case msgpcode.FixExt8:
		n = 8
	case msgpcode.FixExt16:
		n = 16
	default:
		width := map[byte]int{msgpcode.Ext8: 1, msgpcode.Ext16: 2, msgpcode.Ext32: 4}[c]
		if rd.remaining() < width {
			return rd.errf(field, "truncated")
		}
		for i := 0; i < width; i++ {
			b, _ := rd.r.ReadByte()
			n = n<<8 | int(b)
		}
	}
	n++ // the extension type byte
	if n > rd.remaining() {
		return rd.errf(field, "extension of %d bytes but only %d bytes left", n, rd.remaining())
	}
	_, err := rd.r.Seek(int64(n), io.SeekCurrent)
	return err
}

// writer wraps a msgpack.Encoder writing to a bytes.Buffer. Writes to a
// bytes.Buffer cannot fail, so the encoder's errors are checked once, at the
// end (the first one is kept).
type writer struct {
	buf bytes.Buffer
	e   *msgpack.Encoder
	err error
}

func newWriter() *writer {
	w := &writer{}
	w.e = msgpack.NewEncoder(&w.buf)
	return w
}

func (w *writer) keep(err error) {
	if err != nil && w.err == nil {
		w.err = err
	}
}

func (w *writer) array(n int)       { w.keep(w.e.EncodeArrayLen(n)) }
func (w *writer) uint(v uint64)     { w.keep(w.e.EncodeUint(v)) }
func (w *writer) str(s string)      { w.keep(w.e.EncodeString(s)) }
func (w *writer) bool(b bool)       { w.keep(w.e.EncodeBool(b)) }
func (w *writer) nil()              { w.keep(w.e.EncodeNil()) }
func (w *writer) rawValue(b []byte) { _, err := w.buf.Write(b); w.keep(err) }
func (w *writer) bin(b []byte) {
	// NB: EncodeBytes writes nil for a nil slice; the wire always has a bin.
	w.keep(w.e.EncodeBytesLen(len(b)))
	_, err := w.buf.Write(b)
	w.keep(err)
}
