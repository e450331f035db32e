package crdt_test

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/editmix"
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

// deliveryMix is a document's changes in the order a replica receives
// them: newDeliveryMix's are the edit mix of `weft bench converge` on one
// document of 20 writers (editmix.Deliveries), newGapMix's concurrent
// inserts at one place. The first warm changes are the state a replica
// holds before the timed deliveries; the rest are delivered one at a time.
type deliveryMix struct {
	warm, timed []crdt.Change
	wall        *hlc.ManualWall // at the last change's time
}

var deliveryMixes = map[[2]int]*deliveryMix{}

func newDeliveryMix(tb testing.TB, warm, timed int) *deliveryMix {
	if m := deliveryMixes[[2]int{warm, timed}]; m != nil {
		return m
	}
	all, wall, err := editmix.Deliveries(warm + timed)
	if err != nil {
		tb.Fatal(err)
	}
	m := &deliveryMix{warm: all[:warm], timed: all[warm:], wall: wall}
	deliveryMixes[[2]int{warm, timed}] = m
	return m
}

// replica returns a document that holds m's warm-up, as a client that has
// synced before the timed deliveries.
func (m *deliveryMix) replica(tb testing.TB) *crdt.Doc {
	d := crdt.NewDoc(rid(99), hlc.NewClock(m.wall.Read, 500*time.Millisecond), crdt.Options{})
	if err := d.Apply(m.warm...); err != nil {
		tb.Fatal(err)
	}
	return d
}

// BenchmarkApplyDelivery is one delivery of `weft bench converge`: a
// replica that holds 4,000 changes of a 20-writer document applies the
// next change alone, as every client does for every other client's edit
// (Doc.Apply of each decoded one-change batch). The 8,000 timed changes
// start over (untimed, on a fresh replica) when they run out.
func BenchmarkApplyDelivery(b *testing.B) {
	newDeliveryMix(b, 4000, 8000).deliverEach(b)
}

// deliverEach times the delivery of each of m's timed changes alone to a
// replica that holds the warm-up, starting over (untimed, on a fresh
// replica) when they run out.
func (m *deliveryMix) deliverEach(b *testing.B) {
	var d *crdt.Doc
	i := len(m.timed)
	b.ReportAllocs()
	for b.Loop() {
		if i == len(m.timed) {
			b.StopTimer()
			d, i = m.replica(b), 0
			b.StartTimer()
		}
		if err := applyOne(d, m.timed[i:i+1]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkApplyDeliveryManyReplicas is BenchmarkApplyDelivery with the
// load generator's memory: 50 replicas of the document (30-90 MB, past
// the caches, as a load generator's 200 clients are) each apply every
// change, one replica after another, so that a delivery finds little of
// its replica's state in the cache.
func BenchmarkApplyDeliveryManyReplicas(b *testing.B) {
	const replicas = 50
	m := newDeliveryMix(b, 4000, 8000)
	ds := make([]*crdt.Doc, replicas)
	i, k := len(m.timed), 0
	b.ReportAllocs()
	for b.Loop() {
		if k == replicas {
			i, k = i+1, 0
		}
		if i == len(m.timed) {
			b.StopTimer()
			clear(ds)
			for r := range ds {
				ds[r] = m.replica(b)
			}
			i, k = 0, 0
			b.StartTimer()
		}
		if err := applyOne(ds[k], m.timed[i:i+1]); err != nil {
			b.Fatal(err)
		}
		k++
	}
}

// applyOne is Doc.Apply of a batch of one change (callers hold it in a
// slice: the decoded batch), not inlined so that callgrind can count it
// alone (--toggle-collect='*applyOne').
//
//go:noinline
func applyOne(d *crdt.Doc, c []crdt.Change) error { return d.Apply(c...) }

// BenchmarkReceiveDelivery is the same delivery through what the Go client
// does with it (clients/go, handleFrame; BenchmarkReceiveKeystroke there
// drives the client itself): decode the changes frame of one change,
// syncproto.Peer.Receive it (decode the batch, Apply, the version
// bookkeeping), and syncproto.Fresh for what it added. The frames are
// encoded before the timer starts.
func BenchmarkReceiveDelivery(b *testing.B) {
	m := newDeliveryMix(b, 4000, 8000)
	const docID = "bench/doc"
	frames := make([][]byte, len(m.timed))
	for i := range m.timed {
		f, err := syncproto.Encode(&syncproto.Changes{Doc: docID, Changes: codec.EncodeChanges(m.timed[i : i+1])})
		if err != nil {
			b.Fatal(err)
		}
		frames[i] = f
	}
	var (
		d     *crdt.Doc
		peer  *syncproto.Peer
		known crdt.VersionVector
	)
	start := func() {
		d = crdt.NewDoc(rid(99), hlc.NewClock(m.wall.Read, 500*time.Millisecond), crdt.Options{})
		var err error
		if peer, err = syncproto.NewPeer(d, docID, syncproto.Options{}); err != nil {
			b.Fatal(err)
		}
		peer.Subscribe()
		warm := crdt.VersionVector{}
		for _, c := range m.warm {
			warm[c.Replica] = max(warm[c.Replica], c.End())
		}
		if _, err := peer.Receive(&syncproto.Sync{Doc: docID, Version: warm, Changes: codec.EncodeChanges(m.warm)}); err != nil {
			b.Fatal(err)
		}
		known = d.Version()
	}
	i := len(frames)
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		if i == len(frames) {
			b.StopTimer()
			start()
			i = 0
			b.StartTimer()
		}
		buf = append(buf[:0], frames[i]...) // as the reader: one buffer
		if err := receiveOne(d, peer, known, buf); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// receiveOne is what a client does with one changes frame (see
// BenchmarkReceiveDelivery), not inlined so that callgrind can count it
// alone (--toggle-collect='*receiveOne').
//
//go:noinline
func receiveOne(d *crdt.Doc, peer *syncproto.Peer, known crdt.VersionVector, frame []byte) error {
	msg, err := syncproto.Decode(frame)
	if err != nil {
		return err
	}
	pending, rejected := d.Pending(), d.Rejected()
	if _, err := peer.Receive(msg); err != nil {
		return err
	}
	if n := len(syncproto.Fresh(d, known, peer.Received(), pending, rejected)); n != 1 {
		return fmt.Errorf("delivery added %d changes, want 1", n)
	}
	return nil
}

var gapMixes = map[[2]int]*deliveryMix{}

// newGapMix returns warm+timed one-keystroke changes of 15 writers typing
// into one document: in each round 2-4 writers, up to date with every
// earlier round, each type a run of 1-4 characters (one change each) at
// the same random place, without seeing each other's, 5 ms apart; one
// round in ten deletes instead. A replica receiving them finds, for
// most inserts of a round, characters between the insert's origins that
// its sender did not know (the gap the origin check walks, Doc.knowsAny).
func newGapMix(tb testing.TB, warm, timed int) *deliveryMix {
	if m := gapMixes[[2]int{warm, timed}]; m != nil {
		return m
	}
	const writers = 15
	wall := &hlc.ManualWall{Millis: 1_763_900_000_000}
	rng := rand.New(rand.NewPCG(31, 7))
	ws := make([]*crdt.Doc, writers)
	for w := range ws {
		var id crdt.ReplicaID
		binary.LittleEndian.PutUint64(id[:8], rng.Uint64())
		binary.LittleEndian.PutUint64(id[8:], rng.Uint64())
		ws[w] = crdt.NewDoc(id, hlc.NewClock(wall.Read, 0), crdt.Options{})
	}
	tx := ws[0].Begin()
	base := make([]byte, 500)
	for i := range base {
		base[i] = byte('a' + rng.IntN(26))
	}
	if err := tx.Insert("body", 0, string(base)); err != nil {
		tb.Fatal(err)
	}
	tx.Commit()
	all := ws[0].ChangesSince(nil)
	seen := make([]int, writers)
	seen[0] = len(all)
	for len(all) < warm+timed {
		round := len(all)
		who := rng.Perm(writers)[:2+rng.IntN(3)]
		for _, w := range who {
			if err := ws[w].Apply(all[seen[w]:round]...); err != nil {
				tb.Fatal(err)
			}
			seen[w] = round
		}
		n := ws[who[0]].TextLen("body")
		if rng.IntN(10) == 0 {
			wall.Millis += 5
			d := ws[who[0]]
			before := d.Version()
			tx := d.Begin()
			if err := tx.Delete("body", rng.IntN(n-2), 1+rng.IntN(2)); err != nil {
				tb.Fatal(err)
			}
			tx.Commit()
			all = append(all, d.ChangesSince(before)...)
			continue
		}
		at := rng.IntN(n + 1)
		runs := make([]int, len(who))
		for i := range runs {
			runs[i] = 1 + rng.IntN(4)
		}
		for k := 0; k < 4; k++ {
			for i, w := range who {
				if k >= runs[i] {
					continue
				}
				wall.Millis += 5
				d := ws[w]
				before := d.Version()
				tx := d.Begin()
				if err := tx.Insert("body", at+k, string(rune('a'+rng.IntN(26)))); err != nil {
					tb.Fatal(err)
				}
				tx.Commit()
				all = append(all, d.ChangesSince(before)...)
			}
		}
	}
	all = all[:warm+timed]
	m := &deliveryMix{warm: all[:warm], timed: all[warm:], wall: wall}
	gapMixes[[2]int{warm, timed}] = m
	return m
}

// BenchmarkApplyConcurrentInserts is one delivery of newGapMix: a replica
// that holds its first 4,000 changes applies the next alone, most of them
// inserts among concurrent ones (the origin check's gap walk and
// closures). The 8,000 timed changes start over (untimed, on a fresh
// replica) when they run out.
func BenchmarkApplyConcurrentInserts(b *testing.B) {
	newGapMix(b, 4000, 8000).deliverEach(b)
}
