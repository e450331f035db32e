package codec

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
)

// textBatch is a batch large and repetitive enough to be compressed.
func textBatch() []crdt.Change {
	var chs []crdt.Change
	for i := 0; i < 200; i++ {
		chs = append(chs, crdt.Change{Replica: rep(1), Seq: uint64(1 + 40*i), Time: 1 << 16, Ops: []crdt.Op{
			{Kind: crdt.OpTextInsert, Field: "body", Text: strings.Repeat("lorem ipsum dolor sit amet, consectetur ", 1)[:40]},
		}})
	}
	return chs
}

func TestDeflateRoundTrip(t *testing.T) {
	chs := textBatch()
	b := EncodeChanges(chs)
	if b[0] != ChangesFormatDeflate {
		t.Fatalf("format %d, want compressed", b[0])
	}
	got, err := DecodeChanges(b)
	if err != nil || !reflect.DeepEqual(got, chs) {
		t.Fatalf("round trip: %v", err)
	}
	if nc, no, err := Counts(b); err != nil || nc != 200 || no != 200 {
		t.Fatalf("Counts = %d, %d, %v", nc, no, err)
	}
	// Small batches stay plain.
	if small := EncodeChanges(chs[:1]); small[0] != ChangesFormat {
		t.Fatalf("a one-change batch was compressed")
	}
}

func TestDeflateHostile(t *testing.T) {
	deflated := func(raw []byte, claim uint64) []byte {
		var z bytes.Buffer
		z.WriteByte(ChangesFormatDeflate)
		z.Write(binary.AppendUvarint(nil, claim))
		fw, _ := flate.NewWriter(&z, flate.BestSpeed)
		fw.Write(raw)
		fw.Close()
		return z.Bytes()
	}
	plain := EncodeChanges(textBatch()[:1])[1:]
	zeros := make([]byte, 8<<20) // a bomb: 8 MiB of zeros deflate to a few KiB
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"no length", []byte{ChangesFormatDeflate}, "bad length"},
		{"too long", deflated(plain, MaxRawBatch+1), "exceed"},
		{"short claim", deflated(plain, uint64(len(plain))-1), "header says"},
		{"long claim", deflated(plain, uint64(len(plain))+1), "header says"},
		{"not deflate", append([]byte{ChangesFormatDeflate, 4}, 0xff, 0xff, 0xff, 0xff), "compressed batch"},
		{"bomb of zeros", deflated(zeros, uint64(len(zeros))), "trailing"},
	}
	for _, c := range cases {
		_, err := DecodeChanges(c.in)
		if err == nil || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrCorrupt mentioning %q", c.name, err, c.want)
		}
	}
	if _, _, err := Counts([]byte{ChangesFormatDeflate, 0x80}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Counts of a bad header: %v", err)
	}
}

// TestFlateReadsNoFurther checks what inflate's trailing-byte check relies
// on: given an io.ByteReader (a bytes.Reader), flate reads exactly the
// stream, up to the byte holding the end of its final block, whatever the
// level, block kinds and flushes, and whatever follows.
func TestFlateReadsNoFurther(t *testing.T) {
	rnd := func(n int, seed byte) []byte {
		b := make([]byte, n)
		x := uint32(seed) + 1
		for i := range b {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			b[i] = byte(x)
			if seed&1 == 0 {
				b[i] = "abcab "[x%6] // compressible
			}
		}
		return b
	}
	junks := [][]byte{{0}, {0xff}, {0x03, 0x00}, {1, 2, 3, 4, 5, 6, 7, 8, 9}, rnd(1000, 9)}
	for _, level := range []int{flate.NoCompression, flate.BestSpeed, flate.DefaultCompression, flate.BestCompression, flate.HuffmanOnly} {
		for _, size := range []int{0, 1, 7, 100, 5000, 70000} {
			for _, flush := range []bool{false, true} {
				raw := rnd(size, byte(size+level))
				var z bytes.Buffer
				fw, _ := flate.NewWriter(&z, level)
				fw.Write(raw[:size/2])
				if flush {
					fw.Flush()
				}
				fw.Write(raw[size/2:])
				fw.Close()
				for _, junk := range junks {
					zr := bytes.NewReader(append(z.Bytes()[:z.Len():z.Len()], junk...))
					got, err := io.ReadAll(flate.NewReader(zr))
					if err != nil || !bytes.Equal(got, raw) || zr.Len() != len(junk) {
						t.Fatalf("level %d, %d bytes, flush %v, %d junk bytes: err %v, equal %v, %d bytes left",
							level, size, flush, len(junk), err, bytes.Equal(got, raw), zr.Len())
					}
				}
			}
		}
	}
}

// TestDeflateTrailingBytes: bytes after the end of the DEFLATE stream make
// a batch corrupt (docs/PROTOCOL.md, "Compressed form"), in DecodeChanges
// and in every decode that inflates; the exact stream still decodes.
func TestDeflateTrailingBytes(t *testing.T) {
	chs := textBatch()
	b := EncodeChanges(chs)
	if b[0] != ChangesFormatDeflate {
		t.Fatalf("format %d, want compressed", b[0])
	}
	if got, err := DecodeChanges(b); err != nil || !reflect.DeepEqual(got, chs) {
		t.Fatalf("the exact stream: %v", err)
	}
	for _, junk := range [][]byte{{0}, {0x5a}, {0x03, 0x00}, {1, 2, 3, 4, 5, 6, 7}, make([]byte, 4096)} {
		in := append(b[:len(b):len(b)], junk...)
		want := fmt.Sprintf("compressed batch: %d bytes after the end of the DEFLATE stream", len(junk))
		if _, err := DecodeChanges(in); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), want) {
			t.Errorf("%d junk bytes: DecodeChanges gave %v, want ErrCorrupt saying %q", len(junk), err, want)
		}
		if _, err := inflate(in); err == nil || err.Error() != want {
			t.Errorf("%d junk bytes: inflate gave %v, want %q", len(junk), err, want)
		}
	}
}
