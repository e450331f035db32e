package crdt_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
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

// backdatedBatch is the attack: replica 2 types one character in
// 2023; replica 3 then sends n one-character changes stamped in 1970,
// each inserted after the previous, the first after the 2023 character.
func backdatedBatch(n int) (base, attack []crdt.Change) {
	src := newDoc(2, &hlc.ManualWall{Millis: 1_700_000_000_000})
	tx := src.Begin()
	tx.Insert("body", 0, "x")
	tx.Commit()
	base = src.ChangesSince(nil)
	left := crdt.ID{Replica: rid(2), Seq: 1}
	for i := range n {
		c := crdt.Change{Replica: rid(3), Seq: uint64(i + 1), Time: hlc.New(int64(1000+i), 0), Ops: []crdt.Op{{
			Kind: crdt.OpTextInsert, Field: "body", Text: "y", Left: left,
		}}}
		attack = append(attack, c)
		left = crdt.ID{Replica: rid(3), Seq: uint64(i + 1)}
	}
	return base, attack
}

// TestBackdatedChangesRefused: changes stamped before the characters they
// name, or before their replica's previous change, are refused as
// invalid, whole batch, document untouched; At never panics (it did:
// "re-applying own history failed", taking the server down).
func TestBackdatedChangesRefused(t *testing.T) {
	base, attack := backdatedBatch(5000)
	for _, how := range []string{"Apply", "ApplySeq"} {
		d := newDoc(1, &hlc.ManualWall{Millis: 1_700_000_000_000})
		if err := d.Apply(base...); err != nil {
			t.Fatal(err)
		}
		before := d.Describe()
		var err error
		if how == "Apply" {
			err = d.Apply(attack...)
		} else {
			err = d.ApplySeq(reusingSeq(attack, -1, nil))
		}
		if !errors.Is(err, crdt.ErrInvalidChange) || !errors.Is(err, crdt.ErrBackdated) {
			t.Fatalf("%s: %v", how, err)
		}
		if d.Describe() != before || d.Version()[rid(3)] != 0 || d.Pending() != 0 {
			t.Fatalf("%s: refused batch left a trace: %q %v", how, d.Describe(), d.Version())
		}
	}
	// A replica's change stamped before its previous one.
	d := newDoc(1, &hlc.ManualWall{Millis: 1_700_000_000_000})
	prev := []crdt.Change{
		{Replica: rid(4), Seq: 1, Time: hlc.New(5000, 0), Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}},
		{Replica: rid(4), Seq: 2, Time: hlc.New(5000, 0), Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1}}},
	}
	if err := d.Apply(prev...); !errors.Is(err, crdt.ErrBackdated) {
		t.Fatalf("second change stamped as the first: %v", err)
	}
	if err := d.Apply(prev[0]); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(prev[1]); !errors.Is(err, crdt.ErrBackdated) || d.Counter("n") != 1 {
		t.Fatalf("second change in its own batch: %v, counter %d", err, d.Counter("n"))
	}
	// The same, into the document loaded from its state (whose times
	// checkTimes must know without having applied them).
	loaded, err := crdt.FromState(d.ExportState(), rid(1), hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := loaded.Apply(prev[1]); !errors.Is(err, crdt.ErrBackdated) {
		t.Fatalf("second change into the loaded document: %v", err)
	}
	// A delete stamped no later than the character it deletes.
	del := crdt.Change{Replica: rid(5), Seq: 1, Time: base[0].Time, Ops: []crdt.Op{{
		Kind: crdt.OpTextDelete, Field: "body", Target: crdt.ID{Replica: rid(2), Seq: 1}, Count: 1}}}
	d2 := newDoc(1, &hlc.ManualWall{Millis: 1_700_000_000_000})
	if err := d2.Apply(append(slices.Clone(base), del)...); !errors.Is(err, crdt.ErrBackdated) {
		t.Fatalf("delete stamped with the character: %v", err)
	}
	del.Time++
	if err := d2.Apply(append(slices.Clone(base), del)...); err != nil || d2.Text("body") != "" {
		t.Fatalf("delete stamped after: %v %q", err, d2.Text("body"))
	}
}

// TestAtNeverPanics: history stored before backdated changes were refused
// (ApplyTrusted takes it as it is) still gives an At at every time.
func TestAtNeverPanics(t *testing.T) {
	base, attack := backdatedBatch(300)
	d := newDoc(1, &hlc.ManualWall{Millis: 1_700_000_000_000})
	if err := d.ApplyTrusted(reusingSeq(append(base, attack...), -1, nil)); err != nil {
		t.Fatal(err)
	}
	if got := d.TextLen("body"); got != 301 {
		t.Fatalf("trusted history: %d runes", got)
	}
	for _, at := range []hlc.Timestamp{0, hlc.New(1000, 0), hlc.New(1100, 5), hlc.New(1_700_000_000_000, 0), hlc.New(1_800_000_000_000, 0)} {
		v := d.At(at) // panicked: "re-applying own history failed"
		if !v.ReadOnly() {
			t.Fatal("At is not read-only")
		}
		want := ""
		if at >= base[0].Time {
			want = d.Text("body")
		}
		if v.Text("body") != want {
			t.Errorf("At(%v) = %q, want %q", at, v.Text("body"), want)
		}
	}
}

// descending returns one replica's n one-op changes (honestly stamped)
// listed in descending seq order: the order the encoder never produces
// that made planning quadratic (20,000 took 43 s).
func descending(n int) []crdt.Change {
	src := newDoc(7, &hlc.ManualWall{Millis: 1_000})
	for i := range n {
		tx := src.Begin()
		if i%2 == 0 {
			tx.Insert("body", i/2, "a")
		} else {
			tx.Add("n", 1)
		}
		tx.Commit()
	}
	cs := src.ChangesSince(nil)
	slices.Reverse(cs)
	return cs
}

// TestAdversarialOrderOnePass: a batch in descending seq order is planned
// in one pass, not one pass per change: it allocates about what the same
// batch in order does (planning it pass by pass grew a new list of the
// changes left every pass, thousands of allocations).
func TestAdversarialOrderOnePass(t *testing.T) {
	const n = 2000
	desc := descending(n)
	asc := slices.Clone(desc)
	slices.Reverse(asc)
	allocs := func(cs []crdt.Change) float64 {
		return testing.AllocsPerRun(3, func() {
			d := newDoc(1, &hlc.ManualWall{Millis: 1_000_000})
			if err := d.Apply(cs...); err != nil {
				t.Fatal(err)
			}
		})
	}
	a, b := allocs(asc), allocs(desc)
	if b > a+50 {
		t.Errorf("descending order: %.0f allocations, in order %.0f", b, a)
	}
	// The work, counted rather than timed: a planner that takes one
	// change per pass looks at n²/2 of them, whether it allocates or not.
	manyReplicas := backToFront(500)
	for name, cs := range map[string][]crdt.Change{"descending": desc, "in order": asc, "500 replicas back to front": manyReplicas} {
		steps, err := crdt.PlanSteps(newDoc(1, &hlc.ManualWall{Millis: 1_000_000}), cs)
		if err != nil || steps > len(cs) {
			t.Errorf("%s: planning %d changes looked at %d (%v), want each once", name, len(cs), steps, err)
		}
	}
	d := newDoc(1, &hlc.ManualWall{Millis: 1_000_000})
	if err := d.Apply(desc...); err != nil || d.Counter("n") != n/2 || d.TextLen("body") != n/2 {
		t.Fatalf("%v: counter %d, text %d", err, d.Counter("n"), d.TextLen("body"))
	}
}

// TestInconsistentOriginsMinimal is the case: base "abcdefgh"
// (replica X, seqs 1..8); P inserts with left none and right X@3, Q with
// left none and right X@2. P then Q gave "aQbPcdefgh", Q then P
// "aPQbcdefgh": replicas split for good. Both contradict the text ('a',
// and 'b' for P, lie between their origins, and their senders knew them)
// and are refused in either order.
func TestInconsistentOriginsMinimal(t *testing.T) {
	x := newDoc(9, &hlc.ManualWall{Millis: 1000})
	tx := x.Begin()
	tx.Insert("body", 0, "abcdefgh")
	tx.Commit()
	base := x.ChangesSince(nil)
	ins := func(r byte, right uint64, text string) crdt.Change {
		return crdt.Change{Replica: rid(r), Seq: 1, Time: hlc.New(2000+int64(r), 0), Ops: []crdt.Op{{
			Kind: crdt.OpTextInsert, Field: "body", Text: text, Right: crdt.ID{Replica: rid(9), Seq: right}}}}
	}
	p, q := ins(1, 3, "P"), ins(2, 2, "Q")
	var texts []string
	for _, order := range [][]crdt.Change{{p, q}, {q, p}} {
		d := newDoc(5, &hlc.ManualWall{Millis: 10_000})
		if err := d.Apply(base...); err != nil {
			t.Fatal(err)
		}
		for _, c := range order {
			if err := d.Apply(c); !errors.Is(err, crdt.ErrOrigins) {
				t.Errorf("%s: %v", c.Ops[0].Text, err)
			}
		}
		texts = append(texts, d.Text("body"))
	}
	if texts[0] != "abcdefgh" || texts[1] != texts[0] {
		t.Fatalf("texts %q", texts)
	}
	// With right X@1 (the first character) the same inserts are honest.
	p, q = ins(1, 1, "P"), ins(2, 1, "Q")
	for _, order := range [][]crdt.Change{{p, q}, {q, p}} {
		d := newDoc(5, &hlc.ManualWall{Millis: 10_000})
		if err := d.Apply(append(slices.Clone(base), order...)...); err != nil {
			t.Fatal(err)
		}
		if got := d.Text("body"); got != "PQabcdefgh" {
			t.Fatalf("honest inserts: %q", got)
		}
	}
}

// hostileScenario builds, from a seed, a base document and a set of
// changes made on top of it: honest ones (replicas editing copies of the
// base concurrently) and hostile ones (inserts whose origins are drawn at
// random from the characters there are, their own earlier ones included,
// stamped after all of them so that only the origins can be wrong).
func hostileScenario(t *testing.T, rng *rand.Rand) (base, extra []crdt.Change) {
	wall := &hlc.ManualWall{Millis: 1000}
	a, b := newDoc(1, wall), newDoc(2, wall)
	for range 4 + rng.IntN(6) {
		wall.Millis += int64(1 + rng.IntN(50))
		randomEdit(t, rng, []*crdt.Doc{a, b}[rng.IntN(2)])
		if rng.IntN(3) == 0 {
			if err := a.Apply(b.ChangesSince(a.Version())...); err != nil {
				t.Fatal(err)
			}
			if err := b.Apply(a.ChangesSince(b.Version())...); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.Apply(b.ChangesSince(a.Version())...); err != nil {
		t.Fatal(err)
	}
	base = a.ChangesSince(nil)
	// Characters of "body" anyone can name, in creation order.
	var chars []crdt.ID
	for _, c := range base {
		seq := c.Seq
		for _, op := range c.Ops {
			if op.Kind == crdt.OpTextInsert && op.Field == "body" {
				for k := range op.Len() {
					chars = append(chars, crdt.ID{Replica: c.Replica, Seq: seq + k})
				}
			}
			seq += op.Len()
		}
	}
	// Honest concurrent editors.
	for h := range 1 + rng.IntN(3) {
		hw := &hlc.ManualWall{Millis: wall.Millis + 100}
		d := newDoc(byte(20+h), hw)
		if err := d.Apply(base...); err != nil {
			t.Fatal(err)
		}
		for range 1 + rng.IntN(3) {
			hw.Millis += int64(1 + rng.IntN(20))
			randomEdit(t, rng, d)
		}
		extra = append(extra, d.ChangesSince(a.Version())...)
	}
	// Hostile inserts: random origins among the characters there are.
	now := wall.Millis + 10_000
	pick := func() crdt.ID {
		if len(chars) == 0 || rng.IntN(6) == 0 {
			return crdt.ID{}
		}
		return chars[rng.IntN(len(chars))]
	}
	for h := range 2 + rng.IntN(4) {
		r := rid(byte(40 + h))
		seq := uint64(1)
		for range 1 + rng.IntN(3) {
			now += 10
			text := randString(rng, 1+rng.IntN(2))
			c := crdt.Change{Replica: r, Seq: seq, Time: hlc.New(now, 0), Ops: []crdt.Op{{
				Kind: crdt.OpTextInsert, Field: "body", Text: text, Left: pick(), Right: pick()}}}
			extra = append(extra, c)
			for k := range c.Len() {
				chars = append(chars, crdt.ID{Replica: r, Seq: seq + k})
			}
			seq += c.Len()
		}
	}
	return base, extra
}

// TestHostileOriginsConverge is the property issue 11 asks for: random
// batches with hostile origins (and honest concurrent edits), delivered
// in several orders, one change at a time or as one batch, by Apply and
// by ApplySeq, leave every replica identical; a batch is refused whole or
// applied. (Before, random hostile origins split replicas in 22 of 60
// trials.)
func TestHostileOriginsConverge(t *testing.T) {
	n := 60
	if *seeds > 20 {
		n = 3 * *seeds
	}
	for seed := range n {
		rng := rand.New(rand.NewPCG(uint64(seed), 11))
		base, extra := hostileScenario(t, rng)
		var want, wantBatch string
		for order := range 6 {
			cs := slices.Clone(extra)
			rng.Shuffle(len(cs), func(i, j int) { cs[i], cs[j] = cs[j], cs[i] })
			d := newDoc(3, &hlc.ManualWall{Millis: 1 << 40})
			if err := d.Apply(base...); err != nil {
				t.Fatal(err)
			}
			before := state(d)
			beforeLog := fmt.Sprint(d.ChangesSince(nil))
			if order%2 == 0 {
				// One change at a time: refused ones are refused, the
				// rest applied or held until their dependencies come.
				for _, c := range cs {
					var err error
					if order%4 == 0 {
						err = d.Apply(c)
					} else {
						err = d.ApplySeq(reusingSeq([]crdt.Change{c}, -1, nil))
					}
					if err != nil && !errors.Is(err, crdt.ErrOrigins) {
						t.Fatalf("seed %d: %v", seed, err)
					}
				}
				if got := state(d); want == "" {
					want = got
				} else if got != want {
					t.Fatalf("seed %d order %d: replicas differ:\n%s\n%s", seed, order, got, want)
				}
				continue
			}
			// The whole set as one batch.
			var err error
			if order%4 == 1 {
				err = d.Apply(cs...)
			} else {
				err = d.ApplySeq(reusingSeq(cs, -1, nil))
			}
			got := state(d)
			if err != nil {
				if !errors.Is(err, crdt.ErrOrigins) {
					t.Fatalf("seed %d: %v", seed, err)
				}
				if got != before || fmt.Sprint(d.ChangesSince(nil)) != beforeLog {
					t.Fatalf("seed %d order %d: refused batch left a trace:\n%s\n%s", seed, order, got, before)
				}
				// And the document goes on: the honest changes apply.
				for _, c := range cs {
					if c.Replica[0] < 40 {
						if err := d.Apply(c); err != nil {
							t.Fatalf("seed %d: honest change after a refused batch: %v", seed, err)
						}
					}
				}
				got = "refused"
			}
			if wantBatch == "" {
				wantBatch = got
			} else if got != wantBatch {
				t.Fatalf("seed %d order %d: batches differ:\n%s\n%s", seed, order, got, wantBatch)
			}
		}
	}
}

// TestRefusedBatchRollsBack: a batch whose last change has inconsistent
// origins is found out only as it is integrated, after the changes before
// it changed the text, a counter, a register and made a field and a
// replica: all of it is taken back, by Apply and by ApplySeq, and the
// document goes on as if the batch never came.
func TestRefusedBatchRollsBack(t *testing.T) {
	x := newDoc(9, &hlc.ManualWall{Millis: 1000})
	tx := x.Begin()
	tx.Insert("body", 0, "abcdefgh")
	tx.Add("n", 2)
	tx.Set("r", []byte{0xa1, 'a'})
	tx.Commit()
	base := x.ChangesSince(nil)
	xid := func(s uint64) crdt.ID { return crdt.ID{Replica: rid(9), Seq: s} }
	good := []crdt.Change{
		{Replica: rid(1), Seq: 1, Time: hlc.New(2000, 0), Ops: []crdt.Op{
			{Kind: crdt.OpTextInsert, Field: "body", Text: "zz", Left: xid(1), Right: xid(2)},
			{Kind: crdt.OpTextDelete, Field: "body", Target: xid(3), Count: 1},
			{Kind: crdt.OpCounterAdd, Field: "n", Delta: 5},
			{Kind: crdt.OpRegisterSet, Field: "r", Value: []byte{0xa1, 'b'}},
			{Kind: crdt.OpTextInsert, Field: "new", Text: "q"},
		}},
		{Replica: rid(1), Seq: 7, Time: hlc.New(2001, 0), Ops: []crdt.Op{
			{Kind: crdt.OpTextInsert, Field: "body", Text: "w", Left: crdt.ID{Replica: rid(1), Seq: 2}, Right: xid(2)}}},
	}
	bad := crdt.Change{Replica: rid(2), Seq: 1, Time: hlc.New(2002, 0), Ops: []crdt.Op{
		{Kind: crdt.OpTextInsert, Field: "body", Text: "!", Left: xid(1), Right: xid(4)}}}
	batch := append(slices.Clone(good), bad)
	for _, how := range []string{"Apply", "ApplySeq"} {
		d := newDoc(5, &hlc.ManualWall{Millis: 10_000})
		if err := d.Apply(base...); err != nil {
			t.Fatal(err)
		}
		before, beforeLog, clock := state(d), fmt.Sprint(d.ChangesSince(nil)), d.Clock().Last()
		var err error
		if how == "Apply" {
			err = d.Apply(batch...)
		} else {
			err = d.ApplySeq(reusingSeq(batch, -1, nil))
		}
		if !errors.Is(err, crdt.ErrOrigins) {
			t.Fatalf("%s: %v", how, err)
		}
		if state(d) != before || fmt.Sprint(d.ChangesSince(nil)) != beforeLog || d.Clock().Last() != clock || len(d.Fields()) != 3 {
			t.Fatalf("%s: the batch left a trace:\n%s\n%s", how, state(d), before)
		}
		if err := d.Apply(good...); err != nil {
			t.Fatalf("%s: the good part after: %v", how, err)
		}
		if d.Text("body") != "azzwbdefgh" || d.Counter("n") != 7 || d.Text("new") != "q" {
			t.Fatalf("%s: %q %d %q", how, d.Text("body"), d.Counter("n"), d.Text("new"))
		}
	}
}

// TestTrimmedChangeKeepsLeftOrigin: a change that overlaps what a replica
// already holds is applied from the first seq it lacks. When that seq is
// inside the change's second insert, the cut insert's left origin is the
// character just before the cut, not one counted from the change's first
// seq (which named 'a' here instead of 'c' and made the rest of the
// change contradict the text).
func TestTrimmedChangeKeepsLeftOrigin(t *testing.T) {
	x := rid(7)
	ins := func(text string, left, right uint64) crdt.Op {
		op := crdt.Op{Kind: crdt.OpTextInsert, Field: "t", Text: text}
		if left > 0 {
			op.Left = crdt.ID{Replica: x, Seq: left}
		}
		if right > 0 {
			op.Right = crdt.ID{Replica: x, Seq: right}
		}
		return op
	}
	at := hlc.New(1_000, 0)
	// "ab" (seqs 1-2), then "c" between them (seq 3): "acb".
	short := crdt.Change{Replica: x, Seq: 1, Time: at, Ops: []crdt.Op{ins("ab", 0, 0), ins("c", 1, 2)}}
	// The same change grown by one character typed after c: "acdb".
	long := crdt.Change{Replica: x, Seq: 1, Time: at, Ops: []crdt.Op{ins("ab", 0, 0), ins("cd", 1, 2)}}

	whole := newDoc(1, &hlc.ManualWall{Millis: 2_000})
	if err := whole.Apply(long); err != nil {
		t.Fatal(err)
	}
	d := newDoc(2, &hlc.ManualWall{Millis: 2_000})
	if err := d.Apply(short); err != nil {
		t.Fatal(err)
	}
	if err := d.Apply(long); err != nil {
		t.Fatalf("applying the overlapping change: %v", err)
	}
	if got, want := d.Text("t"), whole.Text("t"); got != want || want != "acdb" {
		t.Fatalf("after the overlap the text is %q; the whole change gives %q (want \"acdb\")", got, want)
	}
}
