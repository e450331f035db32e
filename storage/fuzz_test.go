package storage

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzDocIDEscape checks that escaping round-trips, preserves order and is
// prefix-free for any pair of ids.
func FuzzDocIDEscape(f *testing.F) {
	f.Add("a", "a/b")
	f.Add("a\x00", "a")
	f.Add("\x00\xff", "\x00\x01")
	f.Fuzz(func(t *testing.T, a, b string) {
		ea, eb := appendDocID(nil, a), appendDocID(nil, b)
		for _, c := range []struct {
			id  string
			enc []byte
		}{{a, ea}, {b, eb}} {
			got, rest, err := decodeDocID(c.enc)
			if err != nil || got != c.id || len(rest) != 0 {
				t.Fatalf("decode(escape(%q)) = %q, %x, %v", c.id, got, rest, err)
			}
		}
		if got, want := bytes.Compare(ea, eb), strings.Compare(a, b); got != want {
			t.Fatalf("order %q vs %q: escaped %d, raw %d", a, b, got, want)
		}
		if a != b && (bytes.HasPrefix(ea, eb) || bytes.HasPrefix(eb, ea)) {
			t.Fatalf("escapes of %q and %q are prefixes", a, b)
		}
	})
}

// FuzzDecodeStored feeds arbitrary bytes to the decoders of stored keys and
// metadata: they may refuse, never panic; an accepted id re-encodes to the
// same bytes, accepted metadata survives a re-encode unchanged.
func FuzzDecodeStored(f *testing.F) {
	m := DocMeta{ID: "x", SnapshotBytes: 3, LogBytes: 4, Batches: 5, nextSeq: 6}
	f.Add(encodeMeta(&m))
	f.Add(appendDocID(nil, "notes/1"))
	f.Add([]byte{0, 0xff, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if id, rest, err := decodeDocID(b); err == nil {
			if enc := appendDocID(nil, id); !bytes.Equal(append(enc, rest...), b) {
				t.Fatalf("decodeDocID(%x) = %q + %x, which re-encodes differently", b, id, rest)
			}
		}
		if m, err := decodeMeta("x", b); err == nil {
			m2, err := decodeMeta("x", encodeMeta(&m))
			if err != nil || m2 != m {
				t.Fatalf("decodeMeta(%x) = %+v; re-encoded it decodes to %+v, %v", b, m, m2, err)
			}
		}
	})
}
