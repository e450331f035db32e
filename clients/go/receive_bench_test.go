package client

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// BenchmarkReceiveKeystroke measures what one delivery costs a client
// (the load generator of `weft bench converge` pays it for every change
// its room sends): a changes frame holding one remote single-character
// insert, decoded and handled as the reader goroutine does (handleFrame:
// Decode, the document lookup, Peer.Receive, the version bookkeeping and
// OnChanges), into a synced document of a few thousand characters that
// eight other replicas type into concurrently at random places.
//
// The frames are made before the timer starts, one per iteration, so run
// it with a fixed count: -benchtime 20000x.
func BenchmarkReceiveKeystroke(b *testing.B) {
	o := LocalOptions("ws://127.0.0.1:1/v1/ws") // no server: driven by hand
	o.Backoff = Backoff{Base: time.Hour, Max: time.Hour}
	c, err := New(o)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var arrived int
	d, err := c.Open("bench/doc", DocOptions{OnChanges: func(_ *Document, chs []crdt.Change) { arrived += len(chs) }})
	if err != nil {
		b.Fatal(err)
	}
	const gen = 1
	d.mu.Lock()
	if err := d.resetLocked(gen); err != nil {
		b.Fatal(err)
	}
	d.mu.Unlock()
	s := &session{gen: gen, readErr: make(chan error, 1)}
	var fr frameReader
	fr.cache.gen--
	deliver := func(frame []byte) {
		if err := c.handleFrame(s, &fr, frame); err != nil {
			b.Fatal(err)
		}
	}
	frame := func(m syncproto.Message) []byte {
		f, err := syncproto.Encode(m)
		if err != nil {
			b.Fatal(err)
		}
		return f
	}

	// A 2,000-character text that every replica holds, then the sync that
	// ends the catch-up.
	const writers = 8
	rng := rand.New(rand.NewPCG(1, 2))
	seed := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	for range 40 {
		tx := seed.Begin()
		if err := tx.Insert("body", rng.IntN(seed.TextLen("body")+1), "fifty characters of text, fifty characters of text"); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
	}
	base := seed.ChangesSince(nil)
	enc := codec.EncodeChanges(base)
	deliver(frame(&syncproto.Sync{Doc: d.id, Version: seed.Version(), Changes: enc}))
	var ws [writers]*crdt.Doc
	for i := range ws {
		ws[i] = crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		if err := ws[i].Apply(base...); err != nil {
			b.Fatal(err)
		}
	}

	frames := make([][]byte, b.N)
	for i := range frames {
		w := ws[i%writers]
		before := w.Version()
		tx := w.Begin()
		if err := tx.Insert("body", rng.IntN(w.TextLen("body")+1), "k"); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		frames[i] = frame(&syncproto.Changes{Doc: d.id, Changes: codec.EncodeChanges(w.ChangesSince(before))})
	}
	arrived = 0
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// As the reader does: every frame lands in the same buffer.
		buf = append(buf[:0], frames[i]...)
		deliver(buf)
	}
	b.StopTimer()
	if arrived != b.N {
		b.Fatalf("OnChanges saw %d changes, want %d", arrived, b.N)
	}
	if got, want := d.Text("body"), len(seed.Text("body"))+b.N; len(got) != want {
		b.Fatalf("text of %d bytes, want %d", len(got), want)
	}
}
