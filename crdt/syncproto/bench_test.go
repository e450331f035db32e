package syncproto

import (
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

func keystrokeUpdate() *Update {
	ch := []crdt.Change{{Replica: rid(1), Seq: 1234, Time: hlc.New(1_763_900_000_000, 0), Ops: []crdt.Op{
		{Kind: crdt.OpTextInsert, Field: "body", Text: "a", Left: crdt.ID{Replica: rid(1), Seq: 1233}},
	}}}
	return &Update{Doc: "notes/42", Batch: 99, Changes: codec.EncodeChanges(ch)}
}

func BenchmarkEncodeUpdate(b *testing.B) {
	m := keystrokeUpdate()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Encode(m); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeUpdate(b *testing.B) {
	frame, err := Encode(keystrokeUpdate())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePresence(b *testing.B) {
	var frame []byte
	for _, g := range goldenMessages() {
		if g.name == "presence" {
			frame, _ = Encode(g.msg)
		}
	}
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(frame); err != nil {
			b.Fatal(err)
		}
	}
}
