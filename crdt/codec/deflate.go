package codec

import (
	"bufio"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ChangesFormatDeflate marks a batch whose body (everything after the format
// byte of a ChangesFormat batch) is DEFLATE-compressed (RFC 1951, raw):
//
//	0x02, uvarint rawLen, deflate(body)
//
// EncodeChanges tries it when the body is at least compressMin bytes and
// at least half of it is inserted text and register values, and uses it
// when compression saves at least an eighth: whole histories and large
// catch-ups, never keystrokes. The other columns are already run-length and
// varint coded and rarely shrink by an eighth; trying anyway cost more than
// the rest of encoding a 10,000-edit catch-up.
const ChangesFormatDeflate = 2

const (
	compressMin = 4 << 10
	// MaxRawBatch bounds the decompressed body of a batch; larger batches
	// are sent uncompressed (EncodeChunks keeps batches far smaller).
	MaxRawBatch = 16 << 20
)

// flateWriters reuses compressors: a new flate.Writer allocates about
// 1.3 MB of tables, more than the work of compressing a large batch.
var flateWriters = sync.Pool{New: func() any {
	fw, err := flate.NewWriter(nil, flate.BestSpeed)
	if err != nil {
		panic("codec: flate.NewWriter with a valid level: " + err.Error())
	}
	return fw
}}

// maybeCompress returns plain (a ChangesFormat batch, content bytes of it
// text and values) or, when it pays, its compressed form.
func maybeCompress(plain []byte, content int) []byte {
	body := plain[1:]
	if len(body) < compressMin || len(body) > MaxRawBatch || 2*content < len(body) {
		return plain
	}
	var z bytes.Buffer
	z.WriteByte(ChangesFormatDeflate)
	var n [binary.MaxVarintLen64]byte
	z.Write(n[:binary.PutUvarint(n[:], uint64(len(body)))])
	fw := flateWriters.Get().(*flate.Writer)
	fw.Reset(&z)
	// Writes to a bytes.Buffer cannot fail.
	_, _ = fw.Write(body)
	_ = fw.Close()
	fw.Reset(nil) // do not keep z alive from the pool
	flateWriters.Put(fw)
	if z.Len() > len(plain)-len(plain)/8 {
		return plain
	}
	return z.Bytes()
}

// inflate returns the plain (ChangesFormat) form of a ChangesFormatDeflate
// batch. Memory grows with the bytes actually inflated, never with the
// claimed length, and stops at MaxRawBatch. The stream must yield exactly
// rawLen bytes and be the last thing in data.
func inflate(data []byte) ([]byte, error) {
	rawLen, n := binary.Uvarint(data[1:])
	if n <= 0 {
		return nil, errors.New("compressed batch: bad length")
	}
	if rawLen > MaxRawBatch {
		return nil, fmt.Errorf("compressed batch: %d bytes exceed %d", rawLen, MaxRawBatch)
	}
	// A bytes.Reader is an io.ByteReader, so flate reads it byte by byte
	// and takes nothing past the end of the stream's final block: what the
	// reader still holds afterwards followed the stream.
	zr := bytes.NewReader(data[1+n:])
	fr := flate.NewReader(zr)
	defer fr.Close()
	var out bytes.Buffer
	out.WriteByte(ChangesFormat)
	got, err := io.Copy(&out, io.LimitReader(fr, int64(rawLen)+1))
	if err != nil {
		return nil, fmt.Errorf("compressed batch: %v", err)
	}
	if uint64(got) != rawLen {
		return nil, fmt.Errorf("compressed batch: %d bytes, header says %d", got, rawLen)
	}
	// got == rawLen < the limit, so io.Copy saw the stream end. Bytes after
	// it make the batch corrupt, as bytes after the plain form's last column
	// do: some inflaters (browsers' DecompressionStream) refuse them, others
	// ignore them, and replicas must not disagree about a batch.
	if zr.Len() != 0 {
		return nil, fmt.Errorf("compressed batch: %d bytes after the end of the DEFLATE stream", zr.Len())
	}
	return out.Bytes(), nil
}

// headerReader gives Counts the start of a batch's body, inflating only as
// much as it reads. Like the rest of Counts it does not validate the batch
// (neither its length nor what follows the stream): DecodeChanges does.
func headerReader(data []byte) (*bufio.Reader, error) {
	switch {
	case len(data) == 0:
		return nil, errors.New("empty input")
	case data[0] == ChangesFormat:
		return bufio.NewReader(bytes.NewReader(data[1:])), nil
	case data[0] == ChangesFormatDeflate:
		rawLen, n := binary.Uvarint(data[1:])
		if n <= 0 || rawLen > MaxRawBatch {
			return nil, errors.New("compressed batch: bad length")
		}
		return bufio.NewReader(io.LimitReader(flate.NewReader(bytes.NewReader(data[1+n:])), int64(rawLen))), nil
	}
	return nil, fmt.Errorf("unknown format %d", data[0])
}
