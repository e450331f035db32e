package codec

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
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
