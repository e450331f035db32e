package syncproto

import (
	"fmt"
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// Fresh returns what each Apply added and keeps the mirror equal to the
// document's version: all new, a duplicate first, a duplicate half-way, a
// change held for a missing dependency, and its release.
func TestFreshMatchesChangesSince(t *testing.T) {
	wall := &hlc.ManualWall{Millis: 1_763_000_000_000}
	src := crdt.NewDoc(rid(1), hlc.NewClock(wall.Read, 0), crdt.Options{})
	var edits [][]crdt.Change
	for _, s := range []string{"ab", "c", "d", "e", "f"} {
		v := src.Version()
		tx := src.Begin()
		if err := tx.Insert("t", 0, s); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		edits = append(edits, src.ChangesSince(v))
	}
	dst := crdt.NewDoc(rid(2), hlc.NewClock(wall.Read, 0), crdt.Options{})
	mirror := crdt.VersionVector{}
	for i, step := range [][][]crdt.Change{
		{edits[0]},
		{edits[0], edits[1]},
		{edits[2], edits[1]},
		{edits[4]},
		{edits[3]},
		{edits[4]},
	} {
		chs := slices.Concat(step...)
		want := dst.Version()
		p, r := dst.Pending(), dst.Rejected()
		if err := dst.Apply(chs...); err != nil {
			t.Fatal(err)
		}
		wantFresh := dst.ChangesSince(want)
		got := Fresh(dst, mirror, chs, p, r)
		if seqs(got) != seqs(wantFresh) {
			t.Errorf("step %d: Fresh gave %s, ChangesSince %s", i, seqs(got), seqs(wantFresh))
		}
		if !mirror.Equal(dst.Version()) {
			t.Fatalf("step %d: mirror %v, version %v", i, mirror, dst.Version())
		}
	}
}

func seqs(chs []crdt.Change) string {
	var out []string
	for _, ch := range chs {
		for s := ch.Seq; s <= ch.End(); s++ {
			out = append(out, fmt.Sprint(s))
		}
	}
	slices.Sort(out)
	return fmt.Sprint(out)
}
