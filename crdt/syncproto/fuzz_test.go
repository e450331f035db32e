package syncproto

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// FuzzDecode: hostile frames never panic; whatever decodes re-encodes and
// decodes to an equal message.
func FuzzDecode(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x91, 0x0b})
	f.Add([]byte{0xdd, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Decode(data)
		if err != nil {
			return
		}
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("decoded %#v does not encode: %v", m, err)
		}
		again, err := Decode(b)
		if err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, again) {
			t.Fatalf("re-encoded message differs:\n%#v\n%#v", m, again)
		}
	})
}

// FuzzPeerReceive: whatever a hostile peer sends, a server's and a client's
// Peer never panic, and a message they refuse leaves the document exactly
// as it was.
func FuzzPeerReceive(f *testing.F) {
	for _, g := range goldenMessages() {
		b, err := Encode(g.msg)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
		f.Add(b, false)
	}
	f.Fuzz(func(t *testing.T, frame []byte, server bool) {
		m, err := Decode(frame)
		if err != nil {
			return
		}
		wall := hlc.ManualWall{Millis: 1_763_900_000_000}
		doc := crdt.NewDoc(rid(3), hlc.NewClock(wall.Read, time.Minute), crdt.Options{MaxPending: 8})
		tx := doc.Begin()
		if err := tx.Insert("body", 0, "seed"); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		role := RoleClient
		if server {
			role = RoleServer
		}
		p, err := NewPeer(doc, "notes/42", Options{Role: role})
		if err != nil {
			t.Fatal(err)
		}
		if role == RoleClient {
			p.Subscribe()
		}
		before, text := doc.Version(), doc.Text("body")
		out, err := p.Receive(m)
		if err != nil {
			if !doc.Version().Equal(before) || doc.Text("body") != text {
				t.Fatalf("refused %s changed the document", m.Type())
			}
			return
		}
		for _, r := range out {
			if _, err := Encode(r); err != nil {
				t.Fatalf("reply %s does not encode: %v", r.Type(), err)
			}
			if a, ok := r.(*Ack); ok && a.Status != StatusOK && !doc.Version().Equal(before) {
				t.Fatalf("refused update (%s) changed the document", a.Status)
			}
		}
	})
}

// FuzzDecodeChangesFrame: Decode's fast path for changes frames accepts
// only frames the general decoder accepts, and decodes them to the same
// message (the general decoder decides every frame it passes on).
func FuzzDecodeChangesFrame(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, doc := range []string{"d", strings.Repeat("é", 16), strings.Repeat("x", 300), strings.Repeat("y", MaxDocIDLen)} {
		for _, n := range []int{0, 1, 255, 256, 70000} {
			b, err := Encode(&Changes{Doc: doc, Changes: make([]byte, n)})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte{0x93, 0x08, 0xa1, 'd', 0xc4, 0x01, 0x00})
	f.Add([]byte{0x93, 0x08, 0xa0, 0xc4, 0x00})
	f.Add([]byte{0x93, 0x08, 0xa1, 0xff, 0xc4, 0x00})
	f.Add([]byte{0x93, 0x08, 0xa1, 'd', 0xc4, 0x01, 0x00, 0x00})
	f.Add([]byte{0x93, 0x08, 0xa1, 'd', 0xc4, 0x02, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		fast := decodeChangesFrame(data)
		m, err := decode(data)
		if fast == nil {
			return
		}
		if err != nil {
			t.Fatalf("fast path decoded a frame the decoder refuses (%v): %#v", err, fast)
		}
		if !reflect.DeepEqual(Message(fast), m) {
			t.Fatalf("fast path decoded\n%#v\nthe decoder\n%#v", fast, m)
		}
	})
}
