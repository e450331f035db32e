package codec

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

var writeFuzzSeeds = flag.Bool("write-fuzz-seeds", false, "write the hostile seeds of FuzzApplyChanges and FuzzDecodeChanges to testdata/fuzz")

// fuzzBase is the document FuzzApplyChanges applies batches to: "abcdefgh"
// typed by replica 1 at wall 10 s, a counter and a register, on a clock
// without a max offset (the fuzzed times are arbitrary).
func fuzzBase(t testing.TB) *crdt.Doc {
	src := crdt.NewDoc(rep(1), hlc.NewClock((&hlc.ManualWall{Millis: 10_000}).Read, 0), crdt.Options{})
	tx := src.Begin()
	must(t, tx.Insert("body", 0, "abcdefgh"))
	must(t, tx.Add("n", 3))
	must(t, tx.Set("r", []byte{0xa1, 'x'}))
	must(t, tx.Commit())
	d := crdt.NewDoc(rep(9), hlc.NewClock((&hlc.ManualWall{Millis: 20_000}).Read, 0), crdt.Options{})
	must(t, d.Apply(src.ChangesSince(nil)...))
	return d
}

func fuzzState(d *crdt.Doc) string {
	return fmt.Sprintf("%s%v pending %d", d.Describe(), d.Version(), d.Pending())
}

// hostileSeeds are batches of the shapes issue 11 found, on top of
// fuzzBase: a declared-count bomb, one replica's changes in descending seq
// order, inserts whose origins contradict the text, changes stamped before
// what they name, and an honest concurrent batch to mutate from.
func hostileSeeds() map[string][]byte {
	at := func(ms int64) hlc.Timestamp { return hlc.New(ms, 0) }
	x := func(seq uint64) crdt.ID { return crdt.ID{Replica: rep(1), Seq: seq} }
	ins := func(r byte, seq uint64, t hlc.Timestamp, text string, l, rt crdt.ID) crdt.Change {
		return crdt.Change{Replica: rep(r), Seq: seq, Time: t, Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "body", Text: text, Left: l, Right: rt}}}
	}
	var desc []crdt.Change
	left := x(8)
	for i := range 40 {
		c := ins(2, uint64(i+1), at(30_000+int64(i)), "d", left, crdt.ID{})
		if i%3 == 1 {
			c.Ops = []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}
		} else {
			left = crdt.ID{Replica: rep(2), Seq: uint64(i + 1)}
		}
		desc = append(desc, c)
	}
	slices.Reverse(desc)
	return map[string][]byte{
		"count-bomb":    countBomb(),
		"descending":    EncodeChanges(desc),
		"origins":       EncodeChanges([]crdt.Change{ins(3, 1, at(30_000), "P", crdt.ID{}, x(3)), ins(4, 1, at(30_001), "Q", crdt.ID{}, x(2))}),
		"origins-mid":   EncodeChanges([]crdt.Change{ins(3, 1, at(30_000), "P", x(2), x(5)), ins(3, 2, at(30_001), "Q", x(6), x(4))}),
		"backdated":     EncodeChanges([]crdt.Change{ins(5, 1, at(1_000), "y", x(8), crdt.ID{}), ins(5, 2, at(1_001), "y", crdt.ID{Replica: rep(5), Seq: 1}, crdt.ID{})}),
		"backdated-seq": EncodeChanges([]crdt.Change{{Replica: rep(6), Seq: 1, Time: at(40_000), Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}}, {Replica: rep(6), Seq: 2, Time: at(39_000), Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}}}),
		"honest":        EncodeChanges([]crdt.Change{ins(3, 1, at(30_000), "P", x(2), x(3)), ins(4, 1, at(30_001), "Q", x(2), x(3)), ins(3, 2, at(30_002), "R", crdt.ID{Replica: rep(3), Seq: 1}, x(3))}),
	}
}

// FuzzApplyChanges: whatever a batch holds, applying it never panics;
// Apply and ApplySeq agree; a refused batch leaves the document exactly
// as it was; an accepted one, delivered change by change in reverse order,
// makes the same document.
func FuzzApplyChanges(f *testing.F) {
	for _, b := range hostileSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		chs, err := DecodeChanges(data)
		if err != nil || len(chs) > 1000 {
			return
		}
		a, b := fuzzBase(t), fuzzBase(t)
		before := fuzzState(a)
		errA := a.Apply(chs...)
		errB := b.ApplySeq(ChangeSeq(data))
		if (errA == nil) != (errB == nil) {
			t.Fatalf("Apply: %v; ApplySeq: %v", errA, errB)
		}
		if errA != nil {
			if !errors.Is(errA, crdt.ErrInvalidChange) {
				t.Fatalf("refused, but not as invalid: %v", errA)
			}
			if fuzzState(a) != before || fuzzState(b) != before {
				t.Fatalf("refused batch left a trace:\n%s\n%s\n%s", fuzzState(a), fuzzState(b), before)
			}
			return
		}
		if fuzzState(a) != fuzzState(b) {
			t.Fatalf("Apply and ApplySeq differ:\n%s\n%s", fuzzState(a), fuzzState(b))
		}
		c := fuzzBase(t)
		for i := len(chs) - 1; i >= 0; i-- {
			if err := c.Apply(chs[i]); err != nil {
				t.Fatalf("change %d alone: %v", i, err)
			}
		}
		if fuzzState(c) != fuzzState(a) {
			t.Fatalf("reverse delivery differs:\n%s\n%s", fuzzState(c), fuzzState(a))
		}
	})
}

// TestWriteFuzzSeeds writes the hostile seeds into the fuzz corpora
// (go test ./crdt/codec -run TestWriteFuzzSeeds -write-fuzz-seeds).
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeFuzzSeeds {
		t.Skip("-write-fuzz-seeds not set")
	}
	for _, target := range []string{"FuzzApplyChanges", "FuzzDecodeChanges"} {
		dir := filepath.Join("testdata", "fuzz", target)
		must(t, os.MkdirAll(dir, 0o755))
		for name, b := range hostileSeeds() {
			must(t, os.WriteFile(filepath.Join(dir, "hostile-"+name), []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)), 0o644))
		}
	}
}

// TestHostileSeeds: each seed of FuzzApplyChanges is the shape it says.
func TestHostileSeeds(t *testing.T) {
	want := map[string]error{
		"count-bomb": ErrCorrupt, "descending": nil, "origins": crdt.ErrOrigins, "origins-mid": crdt.ErrOrigins,
		"backdated": crdt.ErrBackdated, "backdated-seq": crdt.ErrBackdated, "honest": nil,
	}
	for name, b := range hostileSeeds() {
		err := fuzzBase(t).ApplySeq(ChangeSeq(b))
		if w := want[name]; (w == nil) != (err == nil) || (w != nil && !errors.Is(err, w)) {
			t.Errorf("%s: %v, want %v", name, err, w)
		}
	}
}
