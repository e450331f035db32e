package codec

import (
	"bytes"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// TestZstdFrameEnd: the frame walk finds the end of every frame the zstd
// encoder writes (raw, RLE and compressed blocks, one block or many, with
// and without a checksum or a declared size), whatever follows it.
func TestZstdFrameEnd(t *testing.T) {
	inputs := map[string][]byte{
		"empty":          nil,
		"short":          []byte("hello"),
		"zeros":          make([]byte, 300<<10), // RLE blocks
		"text":           bytes.Repeat([]byte("all work and no play makes Jack a dull boy "), 9000),
		"incompressible": make([]byte, 200<<10), // raw blocks
	}
	x := uint32(1)
	for i := range inputs["incompressible"] {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		inputs["incompressible"][i] = byte(x)
	}
	for _, opts := range [][]zstd.EOption{
		{zstd.WithEncoderConcurrency(1)},
		{zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(false)},
		{zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(true)},
		{zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(false), zstd.WithEncoderLevel(zstd.SpeedFastest)},
		{zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression)},
	} {
		enc, err := zstd.NewWriter(nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		for name, in := range inputs {
			z := enc.EncodeAll(in, nil)
			for _, extra := range [][]byte{nil, {0}, z, enc.EncodeAll(nil, nil)} {
				got, err := zstdFrameEnd(append(z[:len(z):len(z)], extra...))
				if err != nil || got != len(z) {
					t.Errorf("%s (%d bytes), %d bytes after: frame end %d, %v; want %d", name, len(in), len(extra), got, err, len(z))
				}
			}
			for n := 0; n < len(z); n += 1 + n/8 {
				if _, err := zstdFrameEnd(z[:n]); err == nil {
					t.Errorf("%s: the frame's first %d of %d bytes have an end", name, n, len(z))
				}
			}
		}
	}
}
