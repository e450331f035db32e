package codec

import (
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// BenchmarkApplyRemoteKeystroke decodes and applies (ApplySeq) one remote
// keystroke, as every client and the server do for each edit of a room:
// a one-change batch, appended after its replica's previous change, into
// a document of 10,000 characters that 10 replicas typed. Its fixed costs
// (header, decoder, plan, the integrity checks) are what shows here.
func BenchmarkApplyRemoteKeystroke(b *testing.B) {
	const writers, chars = 10, 10000
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	docs := make([]*crdt.Doc, writers)
	for w := range docs {
		docs[w] = crdt.NewDoc(crdt.ReplicaID{byte(w + 1), 9: byte(w * 41), 15: 3}, hlc.NewClock(wall.Read, 0), crdt.Options{})
	}
	// The writers take turns typing runs of 10 characters at random
	// places, each seeing everything typed before its turn.
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < chars/10; i++ {
		w := docs[i%writers]
		if err := w.Apply(docs[(i+writers-1)%writers].ChangesSince(w.Version())...); err != nil {
			b.Fatal(err)
		}
		at := rng.IntN(w.TextLen("body") + 1)
		for k := 0; k < 10; k++ {
			wall.Millis += int64(1 + rng.IntN(150))
			tx := w.Begin()
			tx.Insert("body", at+k, string(rune('a'+rng.IntN(26))))
			tx.Commit()
		}
	}
	src := docs[0]
	dst := docs[writers-1]
	for _, d := range []*crdt.Doc{src, dst} {
		for _, o := range docs {
			if err := d.Apply(o.ChangesSince(d.Version())...); err != nil {
				b.Fatal(err)
			}
		}
	}
	if src.Text("body") != dst.Text("body") || dst.TextLen("body") != chars {
		b.Fatalf("documents differ or hold %d characters", dst.TextLen("body"))
	}
	base := dst.ChangesSince(nil)
	// Keystrokes of src typed in the middle, one batch each, encoded
	// before the timer starts.
	const batches = 4096
	msgs := make([][]byte, batches)
	at := chars / 2
	for i := range msgs {
		wall.Millis += int64(1 + rng.IntN(150))
		before := src.Version()
		tx := src.Begin()
		tx.Insert("body", at, "x")
		tx.Commit()
		at++
		msgs[i] = EncodeChanges(src.ChangesSince(before))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(msgs) {
			// Start again from a document without the keystrokes.
			b.StopTimer()
			dst = crdt.NewDoc(dst.Replica(), hlc.NewClock(wall.Read, 0), crdt.Options{})
			if err := dst.Apply(base...); err != nil {
				b.Fatal(err)
			}
			i = 0
			b.StartTimer()
		}
		if err := applyBatch(dst, msgs[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// applyBatch is what a receiver does with a batch of changes; a function
// of its own so that a profiler can count it apart from the setup.
//
//go:noinline
func applyBatch(d *crdt.Doc, data []byte) error { return d.ApplySeq(ChangeSeq(data)) }

// BenchmarkDecodeFanoutBatch decodes the batch a busy room sends each
// subscriber: the keystrokes of 12 writers that queued up while the room
// was busy, each inserted after another writer's character, so the
// batch's replica table names 12 replicas. Every subscriber decodes one
// such batch per flush.
func BenchmarkDecodeFanoutBatch(b *testing.B) {
	const writers = 12
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	docs := make([]*crdt.Doc, writers)
	for w := range docs {
		docs[w] = crdt.NewDoc(crdt.ReplicaID{byte(w + 1), 9: byte(w * 41), 15: 3}, hlc.NewClock(wall.Read, 0), crdt.Options{})
	}
	// Each writer types a character after the previous writer's, having
	// seen everything before its turn.
	var batch []crdt.Change
	for i := range 3 * writers {
		w := docs[i%writers]
		for _, o := range docs {
			if err := w.Apply(o.ChangesSince(w.Version())...); err != nil {
				b.Fatal(err)
			}
		}
		wall.Millis++
		before := w.Version()
		tx := w.Begin()
		tx.Insert("body", w.TextLen("body")/2, "k")
		tx.Commit()
		if i >= 2*writers {
			batch = append(batch, w.ChangesSince(before)...)
		}
	}
	data := EncodeChanges(batch)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeChanges(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeKeystroke decodes (DecodeChanges) what one delivery of a
// room carries: one change of one single-character insert, typed at a
// random place into a document of 2,000 characters that eight replicas
// share, so its origins name another replica. Every subscriber and the
// server decode one such batch per keystroke; the fixed costs of a batch
// (header, column readers, result) are all that shows here.
func BenchmarkDecodeKeystroke(b *testing.B) {
	msgs := keystrokeBatches(b, 64)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := decodeBatch(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// decodeBatch is DecodeChanges in a function of its own, for profilers.
//
//go:noinline
func decodeBatch(data []byte) ([]crdt.Change, error) { return DecodeChanges(data) }

// keystrokeBatches returns n batches of one remote keystroke each, typed
// by eight replicas in turn at random places of a shared text.
func keystrokeBatches(tb testing.TB, n int) [][]byte {
	const writers = 8
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	rng := rand.New(rand.NewPCG(3, 4))
	seed := crdt.NewDoc(crdt.ReplicaID{0xee, 15: 1}, hlc.NewClock(wall.Read, 0), crdt.Options{})
	for range 40 {
		wall.Millis += 1000
		tx := seed.Begin()
		tx.Insert("body", rng.IntN(seed.TextLen("body")+1), "fifty characters of text, fifty characters of text")
		if err := tx.Commit(); err != nil {
			tb.Fatal(err)
		}
	}
	base := seed.ChangesSince(nil)
	ws := make([]*crdt.Doc, writers)
	for w := range ws {
		ws[w] = crdt.NewDoc(crdt.ReplicaID{byte(w + 1), 9: byte(w * 41), 15: 3}, hlc.NewClock(wall.Read, 0), crdt.Options{})
		if err := ws[w].Apply(base...); err != nil {
			tb.Fatal(err)
		}
	}
	msgs := make([][]byte, n)
	for i := range msgs {
		w := ws[i%writers]
		wall.Millis += int64(1 + rng.IntN(150))
		before := w.Version()
		tx := w.Begin()
		tx.Insert("body", rng.IntN(w.TextLen("body")+1), "k")
		if err := tx.Commit(); err != nil {
			tb.Fatal(err)
		}
		chs := w.ChangesSince(before)
		if len(chs) != 1 || len(chs[0].Ops) != 1 {
			tb.Fatalf("keystroke %d is %d changes", i, len(chs))
		}
		msgs[i] = EncodeChanges(chs)
	}
	return msgs
}

// BenchmarkInspectKeystroke is the check a server makes of every update
// before decoding it (Inspect, in syncserver's admitBatch), on the
// keystroke batches of BenchmarkDecodeKeystroke.
func BenchmarkInspectKeystroke(b *testing.B) {
	msgs := keystrokeBatches(b, 64)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := Inspect(msgs[i%len(msgs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
