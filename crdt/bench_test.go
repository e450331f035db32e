package crdt_test

import (
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

func BenchmarkReplayAutomergePaper(b *testing.B) {
	tr, err := traces.Load("automerge-paper.json.gz")
	if err != nil {
		b.Skip(err)
	}
	walls := wallsOf(tr)
	b.ReportAllocs()
	for b.Loop() {
		replayWalls(b, tr, walls)
	}
}

// Typing at the end of a text: the hot path of a keystroke.
func BenchmarkLocalInsertChar(b *testing.B) {
	d := newDoc(1, &hlc.ManualWall{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tx := d.Begin()
		tx.Insert("body", i, "x")
		tx.Commit()
		i++
	}
}

func BenchmarkLocalDeleteChar(b *testing.B) {
	s := make([]byte, 1<<20)
	for i := range s {
		s[i] = 'a'
	}
	var d *crdt.Doc
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		if i == 0 { // a fresh megabyte to backspace through
			b.StopTimer()
			d = newDoc(1, &hlc.ManualWall{})
			tx := d.Begin()
			tx.Insert("body", 0, string(s))
			tx.Commit()
			i = len(s)
			b.StartTimer()
		}
		i--
		tx := d.Begin()
		tx.Delete("body", i, 1) // backspace
		tx.Commit()
	}
}

func BenchmarkRemoteInsertChar(b *testing.B) {
	src := newDoc(1, &hlc.ManualWall{})
	var cs []crdt.Change
	for i := 0; i < 200000; i++ {
		tx := src.Begin()
		tx.Insert("body", i, "x")
		tx.Commit()
	}
	cs = src.ChangesSince(nil)
	applyEach(b, cs)
}

// applyEach applies cs one change per iteration to a fresh document,
// starting over (untimed) when they run out.
func applyEach(b *testing.B, cs []crdt.Change) {
	dst := newDoc(99, &hlc.ManualWall{})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(cs) {
			b.StopTimer()
			dst = newDoc(99, &hlc.ManualWall{})
			i = 0
			b.StartTimer()
		}
		if err := dst.Apply(cs[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// Nothing new to send: what peers ask after every message they receive.
func BenchmarkChangesSinceNothingNew(b *testing.B) {
	d := newDoc(1, &hlc.ManualWall{})
	for r := byte(2); r < 22; r++ { // a document 20 writers edited
		o := newDoc(r, &hlc.ManualWall{})
		tx := o.Begin()
		tx.Insert("body", 0, "x")
		tx.Commit()
		d.Apply(o.ChangesSince(nil)...)
	}
	v := d.Version()
	b.ReportAllocs()
	for b.Loop() {
		if len(d.ChangesSince(v)) != 0 {
			b.Fatal("changes for a covering version")
		}
	}
}

// A remote keystroke into a document 20 writers share (a busy room): each
// change comes from another writer and its origins from others again, so
// replica lookups miss any one-entry memo.
func BenchmarkRemoteInsertManyWriters(b *testing.B) {
	const writers = 20
	src := make([]*crdt.Doc, writers)
	for w := range src {
		src[w] = crdt.NewDoc(crdt.ReplicaID{byte(w + 1), 7: byte(w * 37), 15: byte(w)}, hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
	}
	// The writers take turns typing one character each after everything
	// so far, each seeing all earlier changes: 20,000 changes.
	var all []crdt.Change
	for i := 0; i < 20000; i++ {
		w := src[i%writers]
		if err := w.Apply(all[len(all)-min(len(all), writers):]...); err != nil {
			b.Fatal(err)
		}
		before := w.Version()
		tx := w.Begin()
		tx.Insert("body", w.TextLen("body")/2, "x")
		tx.Commit()
		all = append(all, w.ChangesSince(before)...)
	}
	applyEach(b, all)
}

// BenchmarkAdversarialOrder plans batches in orders the encoder never
// produces (issue 11 §3): one replica's 20,000 one-op changes in
// descending seq order (43 s when planned one pass per change), and
// 5,000 replicas' one-change chain (each inserts after the previous
// replica's character) sent back to front. Both now cost a sort.
func BenchmarkAdversarialOrder(b *testing.B) {
	b.Run("descending-20000", func(b *testing.B) {
		cs := descending(20000)
		b.ReportAllocs()
		for b.Loop() {
			d := newDoc(1, &hlc.ManualWall{Millis: 1_000_000})
			if err := d.Apply(cs...); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("replica-chain-5000", func(b *testing.B) {
		cs := backToFront(5000)
		b.ReportAllocs()
		for b.Loop() {
			d := newDoc(1, &hlc.ManualWall{Millis: 1_000_000})
			if err := d.Apply(cs...); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// backToFront is n replicas' one-change chain (each inserts after the
// previous replica's character), back to front: every change but the
// last waits for the one after it in the batch.
func backToFront(n int) []crdt.Change {
	var cs []crdt.Change
	left := crdt.ID{}
	for i := range n {
		var r crdt.ReplicaID
		r[0], r[1], r[15] = byte(i>>8), byte(i), 1
		cs = append(cs, crdt.Change{Replica: r, Seq: 1, Time: hlc.New(int64(1000+i), 0), Ops: []crdt.Op{{
			Kind: crdt.OpTextInsert, Field: "body", Text: "c", Left: left}}})
		left = crdt.ID{Replica: r, Seq: 1}
	}
	slices.Reverse(cs)
	return cs
}
