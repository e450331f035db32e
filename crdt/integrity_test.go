package crdt_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// Tests for the integrity rules of issue 11: what a hostile or unlucky
// input must not be able to do to a document.

// TestApplyWallSteppedBack: Apply read the wall clock once to check a
// change's time and again to fold it in, and panicked ("clock refused a
// checked time") when the clock had stepped back in between.
func TestApplyWallSteppedBack(t *testing.T) {
	src := newDoc(2, &hlc.ManualWall{Millis: 10_000})
	tx := src.Begin()
	tx.Add("n", 1)
	tx.Commit()
	ch := src.ChangesSince(nil)
	for _, name := range []string{"Apply", "ApplySeq"} {
		reads := 0
		wall := func() int64 {
			reads++
			if reads == 1 {
				return 10_000
			}
			return 0 // stepped back ten seconds after the first read
		}
		d := crdt.NewDoc(rid(1), hlc.NewClock(wall, 500*time.Millisecond), crdt.Options{})
		var err error
		if name == "Apply" {
			err = d.Apply(ch...)
		} else {
			err = d.ApplySeq(reusingSeq(ch, -1, nil))
		}
		if err != nil || d.Counter("n") != 1 {
			t.Fatalf("%s: %v, counter %d", name, err, d.Counter("n"))
		}
		if d.Clock().Last() < ch[0].Time {
			t.Fatalf("%s: clock %v did not witness %v", name, d.Clock().Last(), ch[0].Time)
		}
	}
}

// TestApplyTrustedSkipsSkew: history stored when the wall clock was ahead
// loads after the clock was stepped back past the max offset; the same
// bytes from a peer are still refused.
func TestApplyTrustedSkipsSkew(t *testing.T) {
	src := newDoc(2, &hlc.ManualWall{Millis: 1_000_000})
	tx := src.Begin()
	tx.Insert("body", 0, "stored")
	tx.Commit()
	ch := src.ChangesSince(nil)
	wall := &hlc.ManualWall{Millis: 1_000}
	d := crdt.NewDoc(rid(1), hlc.NewClock(wall.Read, 500*time.Millisecond), crdt.Options{})
	if err := d.ApplySeq(reusingSeq(ch, -1, nil)); !errors.Is(err, hlc.ErrClockOffset) {
		t.Fatalf("ApplySeq of a change 999 s ahead: %v", err)
	}
	if err := d.ApplyTrusted(reusingSeq(ch, -1, nil)); err != nil {
		t.Fatalf("ApplyTrusted: %v", err)
	}
	if d.Text("body") != "stored" || d.Clock().Now() <= ch[0].Time {
		t.Fatalf("text %q, clock %v", d.Text("body"), d.Clock().Last())
	}
}

// TestCounterOverflow: counters wrapped (+MaxInt64 twice read −2). The
// value is now the exact sum saturated to int64, the same on every
// replica whatever order the adds arrive in.
func TestCounterOverflow(t *testing.T) {
	var chs []crdt.Change
	for i, delta := range []int64{math.MaxInt64, math.MaxInt64, -math.MaxInt64, math.MinInt64, math.MinInt64, 5} {
		wall := &hlc.ManualWall{Millis: int64(1000 + i)}
		src := newDoc(byte(10+i), wall)
		tx := src.Begin()
		tx.Add("n", delta)
		tx.Commit()
		chs = append(chs, src.ChangesSince(nil)...)
	}
	orders := [][]int{{0, 1, 2, 3, 4, 5}, {5, 4, 3, 2, 1, 0}, {3, 0, 4, 1, 5, 2}}
	// The exact sum: 2·(2^63−1) − (2^63−1) − 2·2^63 + 5 = −2^63 + 4.
	const final = math.MinInt64 + 4
	for _, order := range orders {
		d := newDoc(1, &hlc.ManualWall{Millis: 10_000})
		for _, i := range order {
			if err := d.Apply(chs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if got := d.Counter("n"); got != final {
			t.Errorf("order %v: counter %d, want %d", order, got, int64(final))
		}
	}
	d := newDoc(1, &hlc.ManualWall{Millis: 10_000})
	if err := d.Apply(chs[0], chs[1]); err != nil {
		t.Fatal(err)
	}
	if got := d.Counter("n"); got != math.MaxInt64 {
		t.Errorf("+MaxInt64 twice = %d, want MaxInt64 (saturated)", got)
	}
	d2 := newDoc(1, &hlc.ManualWall{Millis: 10_000})
	if err := d2.Apply(chs[3], chs[4]); err != nil {
		t.Fatal(err)
	}
	if got := d2.Counter("n"); got != math.MinInt64 {
		t.Errorf("MinInt64 twice = %d, want MinInt64 (saturated)", got)
	}
	// Loaded from state, the sum is the same.
	st, err := crdt.FromState(d.ExportState(), rid(1), hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
	if err != nil || st.Counter("n") != math.MaxInt64 {
		t.Errorf("from state: %v, %d", err, st.Counter("n"))
	}
}
