package crdt_test

import (
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

var seeds = flag.Int("seeds", 40, "number of random seeds for the convergence tests")

// state renders everything observable about a document.
func state(d *crdt.Doc) string {
	return d.Describe() + fmt.Sprintf("version %v pending %d\n", d.Version(), d.Pending())
}

var alphabet = []rune("abcdefghij XYZ\n→é😀")

func randString(rng *rand.Rand, n int) string {
	r := make([]rune, n)
	for i := range r {
		r[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(r)
}

// randomEdit makes one local transaction of 1-3 random ops.
func randomEdit(t *testing.T, rng *rand.Rand, d *crdt.Doc) {
	tx := d.Begin()
	for k := 1 + rng.IntN(3); k > 0; k-- {
		var err error
		switch x := rng.IntN(20); {
		case x < 9:
			name := []string{"body", "title", "x"}[rng.IntN(3)]
			err = tx.Insert(name, rng.IntN(d.TextLen(name)+1), randString(rng, 1+rng.IntN(4)))
		case x < 14:
			name := []string{"body", "title", "x"}[rng.IntN(3)]
			if n := d.TextLen(name); n > 0 {
				pos := rng.IntN(n)
				err = tx.Delete(name, pos, 1+rng.IntN(min(4, n-pos)))
			}
		case x < 17:
			name := []string{"likes", "x"}[rng.IntN(2)]
			err = tx.Add(name, int64(rng.IntN(7)-3)|1)
		default:
			name := []string{"owner", "x"}[rng.IntN(2)]
			err = tx.Set(name, []byte{0xa1, byte('a' + rng.IntN(26))})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tx.Commit()
}

// deliver sends from → to a random, lossy, duplicated, reordered part of what
// to lacks (as far as an old snapshot of its version says).
func deliver(t *testing.T, rng *rand.Rand, from, to *crdt.Doc, stale crdt.VersionVector) {
	var cs []crdt.Change
	switch rng.IntN(3) {
	case 0:
		cs = from.ChangesSince(to.Version())
	case 1:
		cs = from.ChangesSince(stale)
	default:
		cs = from.ChangesSince(nil)
	}
	var out []crdt.Change
	for _, c := range cs {
		if rng.IntN(5) == 0 {
			continue // dropped: a later sync redelivers it
		}
		out = append(out, c)
		if rng.IntN(8) == 0 {
			out = append(out, c) // duplicated
		}
	}
	if rng.IntN(2) == 0 {
		rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	}
	switch rng.IntN(3) {
	case 0:
		if err := to.Apply(out...); err != nil {
			t.Fatal(err)
		}
		return
	case 1:
		// Read from a source, as a server applies a received batch:
		// in order it is applied as read, else collected for Apply.
		if err := to.ApplySeq(reusingSeq(out, -1, nil)); err != nil {
			t.Fatal(err)
		}
		return
	}
	for _, c := range out {
		if err := to.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRandomConvergence(t *testing.T) {
	for seed := 0; seed < *seeds; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(seed), 7))
			const n = 5
			walls := make([]*hlc.ManualWall, n)
			docs := make([]*crdt.Doc, n)
			stale := make([]crdt.VersionVector, n)
			for i := range docs {
				walls[i] = &hlc.ManualWall{Millis: int64(1000 + rng.IntN(50))}
				docs[i] = newDoc(byte(i+1), walls[i])
				stale[i] = docs[i].Version()
			}
			for step := 0; step < 300; step++ {
				i := rng.IntN(n)
				walls[i].Millis += int64(rng.IntN(3))
				if rng.IntN(3) > 0 {
					randomEdit(t, rng, docs[i])
				} else {
					j := rng.IntN(n)
					if j != i {
						sameAsChangesSince(t, docs[i], stale[j])
						deliver(t, rng, docs[i], docs[j], stale[j])
						if rng.IntN(4) == 0 {
							stale[j] = docs[j].Version()
						}
					}
				}
			}
			// Heal: exact syncs until quiescent.
			for round := 0; round < 3; round++ {
				for i := range docs {
					for j := range docs {
						if i != j {
							if err := docs[j].Apply(docs[i].ChangesSince(docs[j].Version())...); err != nil {
								t.Fatal(err)
							}
						}
					}
				}
			}
			want := state(docs[0])
			for i := 1; i < n; i++ {
				if got := state(docs[i]); got != want {
					t.Fatalf("seed %d: replica %d differs:\n%s\nreplica 0:\n%s", seed, i, got, want)
				}
			}
			if docs[0].Pending() != 0 || strings.Contains(want, "pending 0") == false {
				t.Fatalf("pending left: %s", want)
			}
		})
	}
}

// A single replica's text behaves exactly like a plain string.
func TestTextMatchesStringModel(t *testing.T) {
	for seed := 0; seed < *seeds; seed++ {
		rng := rand.New(rand.NewPCG(uint64(seed), 11))
		d := newDoc(1, &hlc.ManualWall{})
		var model []rune
		for step := 0; step < 2000; step++ {
			tx := d.Begin()
			if len(model) == 0 || rng.IntN(10) < 6 {
				pos := rng.IntN(len(model) + 1)
				if rng.IntN(3) == 0 && len(model) > 0 {
					pos = len(model) // typing at the end
				}
				s := randString(rng, 1+rng.IntN(3))
				if err := tx.Insert("t", pos, s); err != nil {
					t.Fatal(err)
				}
				model = append(model[:pos], append([]rune(s), model[pos:]...)...)
			} else {
				pos := rng.IntN(len(model))
				k := 1 + rng.IntN(min(5, len(model)-pos))
				if err := tx.Delete("t", pos, k); err != nil {
					t.Fatal(err)
				}
				model = append(model[:pos], model[pos+k:]...)
			}
			tx.Commit()
			if d.TextLen("t") != len(model) {
				t.Fatalf("seed %d step %d: len %d, model %d", seed, step, d.TextLen("t"), len(model))
			}
		}
		if got := d.Text("t"); got != string(model) {
			t.Fatalf("seed %d: text differs from model", seed)
		}
	}
}

// Concurrent runs typed at one place never interleave.
func TestNonInterleaving(t *testing.T) {
	for _, backwards := range []bool{false, true} {
		wa, wb := &hlc.ManualWall{}, &hlc.ManualWall{}
		a, b := newDoc(1, wa), newDoc(2, wb)
		tx := a.Begin()
		tx.Insert("t", 0, "[]")
		tx.Commit()
		b.Apply(a.ChangesSince(nil)...)
		typeRun(a, "abcdef", backwards)
		typeRun(b, "UVWXYZ", backwards)
		a.Apply(b.ChangesSince(a.Version())...)
		b.Apply(a.ChangesSince(b.Version())...)
		if a.Text("t") != b.Text("t") {
			t.Fatalf("diverged: %q %q", a.Text("t"), b.Text("t"))
		}
		got := a.Text("t")
		if got != "[abcdefUVWXYZ]" && got != "[UVWXYZabcdef]" {
			t.Fatalf("backwards=%v: runs interleaved: %q", backwards, got)
		}
	}
}

func typeRun(d *crdt.Doc, s string, backwards bool) {
	for i, r := range []rune(s) {
		tx := d.Begin()
		pos := 1 + i
		if backwards {
			pos = 1
			r = []rune(s)[len(s)-1-i]
		}
		tx.Insert("t", pos, string(r))
		tx.Commit()
	}
}

// An invalid change anywhere in a batch leaves the document untouched.
func TestRejectedBatchLeavesNoTrace(t *testing.T) {
	a, b := newDoc(1, &hlc.ManualWall{Millis: 5}), newDoc(2, &hlc.ManualWall{Millis: 5})
	tx := a.Begin()
	tx.Insert("t", 0, "hello")
	tx.Add("c", 2)
	tx.Commit()
	good := a.ChangesSince(nil)
	before := state(b)
	bad := crdt.Change{Replica: rid(9), Seq: 1, Time: hlc.New(5, 0), Ops: []crdt.Op{{
		Kind: crdt.OpTextDelete, Field: "t", Target: crdt.ID{Replica: rid(1), Seq: 6}, Count: 1, // seq 6 is the counter op
	}}}
	err := b.Apply(append(good, bad)...)
	if !errors.Is(err, crdt.ErrInvalidChange) {
		t.Fatalf("want ErrInvalidChange, got %v", err)
	}
	if got := state(b); got != before {
		t.Fatalf("rejected batch changed the doc:\n%s", got)
	}
	err = b.ApplySeq(reusingSeq(append(good, bad), -1, nil))
	if !errors.Is(err, crdt.ErrInvalidChange) {
		t.Fatalf("ApplySeq: want ErrInvalidChange, got %v", err)
	}
	if got := state(b); got != before {
		t.Fatalf("batch ApplySeq rejected changed the doc:\n%s", got)
	}
	far := crdt.Change{Replica: rid(9), Seq: 1, Time: hlc.New(1e12, 0), Ops: []crdt.Op{{Kind: crdt.OpCounterAdd, Field: "c", Delta: 1}}}
	c := crdt.NewDoc(rid(3), hlc.NewClock((&hlc.ManualWall{Millis: 5}).Read, 500e6), crdt.Options{})
	if err := c.Apply(far); !errors.Is(err, hlc.ErrClockOffset) {
		t.Fatalf("want clock offset error, got %v", err)
	}
	if err := b.Apply(good...); err != nil || b.Text("t") != "hello" || b.Counter("c") != 2 {
		t.Fatalf("good batch: %v %q", err, b.Text("t"))
	}
}

func TestPendingBounded(t *testing.T) {
	a := newDoc(1, &hlc.ManualWall{})
	for i := 0; i < 10; i++ {
		tx := a.Begin()
		tx.Add("c", 1)
		tx.Commit()
	}
	cs := a.ChangesSince(nil)
	b := crdt.NewDoc(rid(2), hlc.NewClock((&hlc.ManualWall{}).Read, 0), crdt.Options{MaxPending: 4})
	if err := b.Apply(cs[5:]...); !errors.Is(err, crdt.ErrPendingFull) {
		t.Fatalf("want ErrPendingFull, got %v", err)
	}
	if b.Pending() != 0 {
		t.Fatal("refused batch left pending changes")
	}
	if err := b.Apply(cs[6:]...); err != nil || b.Pending() != 4 {
		t.Fatalf("pending: %v %d", err, b.Pending())
	}
	if err := b.Apply(cs[:6]...); err != nil || b.Pending() != 0 || b.Counter("c") != 10 {
		t.Fatalf("after deps arrive: %v pending %d counter %d", err, b.Pending(), b.Counter("c"))
	}
}

// Two replicas that edited a shared text offline, at random places, merge
// to the same text: big enough that leaves split and runs fragment.
func TestForkedMerge(t *testing.T) {
	for seed := uint64(0); seed < 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 17))
		a, b := newDoc(1, &hlc.ManualWall{Millis: 1}), newDoc(2, &hlc.ManualWall{Millis: 1})
		tx := a.Begin()
		tx.Insert("t", 0, strings.Repeat("0123456789", 100))
		tx.Commit()
		if err := b.Apply(a.ChangesSince(nil)...); err != nil {
			t.Fatal(err)
		}
		for _, d := range []*crdt.Doc{a, b} {
			for i := 0; i < 3000; i++ {
				tx := d.Begin()
				if n := d.TextLen("t"); rng.IntN(10) < 7 || n == 0 {
					tx.Insert("t", rng.IntN(n+1), randString(rng, 1))
				} else {
					tx.Delete("t", rng.IntN(n), 1)
				}
				tx.Commit()
			}
		}
		if err := a.Apply(b.ChangesSince(a.Version())...); err != nil {
			t.Fatal(err)
		}
		if err := b.Apply(a.ChangesSince(b.Version())...); err != nil {
			t.Fatal(err)
		}
		if a.Text("t") != b.Text("t") {
			t.Fatalf("seed %d: forked replicas diverged", seed)
		}
	}
}

func TestMemSizeGrowsWithContent(t *testing.T) {
	d := newDoc(1, &hlc.ManualWall{})
	empty := d.MemSize()
	tx := d.Begin()
	tx.Insert("t", 0, strings.Repeat("x", 100000))
	tx.Commit()
	if got := d.MemSize(); got < empty+100000 {
		t.Fatalf("MemSize %d after 100,000 bytes of text (empty %d)", got, empty)
	}
}

// Merge laws for counters and registers: applying the same changes in any
// order (commutative), in any grouping (associative) and more than once
// (idempotent) gives the same document.
func TestMergeLawsCountersRegisters(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	var sets [][]crdt.Change
	for r := byte(1); r <= 3; r++ {
		d := newDoc(r, &hlc.ManualWall{Millis: 100})
		for i := 0; i < 20; i++ {
			tx := d.Begin()
			if rng.IntN(2) == 0 {
				tx.Add("n", int64(rng.IntN(9)-4)|1)
			} else {
				tx.Set("reg", []byte{byte(rng.IntN(100))}) // positive fixint
			}
			tx.Commit()
		}
		sets = append(sets, d.ChangesSince(nil))
	}
	apply := func(groups ...[]crdt.Change) string {
		d := newDoc(9, &hlc.ManualWall{Millis: 100})
		for _, g := range groups {
			if err := d.Apply(g...); err != nil {
				t.Fatal(err)
			}
		}
		return state(d)
	}
	join := func(a, b []crdt.Change) []crdt.Change { return append(append([]crdt.Change(nil), a...), b...) }
	a, b, c := sets[0], sets[1], sets[2]
	want := apply(a, b, c)
	for name, got := range map[string]string{
		"commutative":  apply(c, a, b),
		"associative":  apply(join(a, b), c),
		"associative2": apply(a, join(b, c)),
		"idempotent":   apply(a, b, a, c, b, c),
	} {
		if got != want {
			t.Fatalf("%s: %s\nwant %s", name, got, want)
		}
	}
}

// References to characters inserted earlier in the same batch are checked
// against what the batch inserted: the right field, characters only (not a
// counter op's seq), whether the batch wrote one text field or several.
func TestBatchReferencesToItsOwnCharacters(t *testing.T) {
	// Small batches search the batch's insert ranges; large ones (padded
	// here with counter changes) use bitsets.
	for _, test := range []struct {
		fields []string
		pad    int
	}{{[]string{"t"}, 0}, {[]string{"t", "u"}, 0}, {[]string{"t"}, 30}, {[]string{"t", "u"}, 30}} {
		fields := test.fields
		a := newDoc(1, &hlc.ManualWall{Millis: 5})
		for _, f := range fields {
			tx := a.Begin()
			tx.Insert(f, 0, "ab") // seqs 1-2 ("t"), 4-5 ("u")
			tx.Add("c", 1)        // seq 3 (then 6): not characters
			tx.Commit()
		}
		for range test.pad {
			tx := a.Begin()
			tx.Add("c", 1)
			tx.Commit()
		}
		base := a.ChangesSince(nil)
		if test.pad > 0 && len(base) < 16 {
			t.Fatalf("padded batch of %d changes: too small to take the bitset path", len(base))
		}
		del := func(field string, seq uint64, n uint64) crdt.Change {
			return crdt.Change{Replica: rid(1), Seq: uint64(3*len(fields) + test.pad + 1), Time: hlc.New(6, 0), Ops: []crdt.Op{{
				Kind: crdt.OpTextDelete, Field: field, Target: crdt.ID{Replica: rid(1), Seq: seq}, Count: n,
			}}}
		}
		cases := []struct {
			name  string
			c     crdt.Change
			valid bool
		}{
			{"own characters", del("t", 1, 2), true},
			{"run into a counter op", del("t", 2, 2), false},
			{"counter op", del("t", 3, 1), false},
			{"wrong field", del("x", 1, 1), false},
		}
		if len(fields) == 2 {
			cases = append(cases,
				struct {
					name  string
					c     crdt.Change
					valid bool
				}{"second field", del("u", 4, 2), true},
				struct {
					name  string
					c     crdt.Change
					valid bool
				}{"first field's characters as the second's", del("u", 1, 1), false})
		}
		for _, tc := range cases {
			b := newDoc(2, &hlc.ManualWall{Millis: 5})
			err := b.Apply(append(slices.Clone(base), tc.c)...)
			if tc.valid && err != nil {
				t.Errorf("%v/%s: %v", fields, tc.name, err)
			}
			if !tc.valid && !errors.Is(err, crdt.ErrInvalidChange) {
				t.Errorf("%v/%s: want ErrInvalidChange, got %v", fields, tc.name, err)
			}
			if !tc.valid && b.Text("t") != "" {
				t.Errorf("%v/%s: a rejected batch changed the document", fields, tc.name)
			}
		}
	}
}

// A large batch of typing (runs that merge into few log entries) leaves the
// receiving document no bigger than receiving it change by change: the
// log capacity reserved for the batch is given back.
func TestLargeBatchKeepsNoSpareLog(t *testing.T) {
	a := newDoc(1, &hlc.ManualWall{Millis: 5})
	for i := range 5000 {
		tx := a.Begin()
		tx.Insert("t", i, "x")
		tx.Commit()
	}
	cs := a.ChangesSince(nil)
	whole, oneByOne := newDoc(2, &hlc.ManualWall{Millis: 5}), newDoc(3, &hlc.ManualWall{Millis: 5})
	if err := whole.Apply(cs...); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if err := oneByOne.Apply(c); err != nil {
			t.Fatal(err)
		}
	}
	if whole.Text("t") != oneByOne.Text("t") {
		t.Fatal("texts differ")
	}
	if w, o := whole.MemSize(), oneByOne.MemSize(); w > o+o/4 {
		t.Fatalf("one batch of %d changes: %d bytes; one at a time: %d bytes", len(cs), w, o)
	}
}

// Large batches check references to their own characters with bitsets,
// small ones by searching ranges: the same batch must get the same verdict
// and the same document either way, valid or not. Seeded random batches
// from two writers (one typing in one text field, one in two), with
// references corrupted at random (other seqs, the other field, counter
// ops, seqs past the batch).
func TestBatchCheckPathsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	refused := 0
	for round := 0; round < 300; round++ {
		a, b := newDoc(1, &hlc.ManualWall{Millis: 5}), newDoc(2, &hlc.ManualWall{Millis: 5})
		for i := 0; i < 40; i++ {
			d := a
			if rng.IntN(3) == 0 {
				d = b
				if err := b.Apply(a.ChangesSince(b.Version())...); err != nil {
					t.Fatal(err)
				}
			}
			tx := d.Begin()
			// Writer 1 types in one field (its batch characters go in a
			// bitset), writer 2 in both (its are searched as ranges).
			f := "t"
			if d == b && rng.IntN(2) == 0 {
				f = "u"
			}
			switch n := d.TextLen(f); {
			case rng.IntN(6) == 0:
				tx.Add("c", 1)
			case n > 0 && rng.IntN(4) == 0:
				tx.Delete(f, rng.IntN(n), 1+rng.IntN(min(n, 3)))
			default:
				tx.Insert(f, rng.IntN(n+1), "xy"[:1+rng.IntN(2)])
			}
			tx.Commit()
		}
		if err := a.Apply(b.ChangesSince(a.Version())...); err != nil {
			t.Fatal(err)
		}
		batch := a.ChangesSince(nil)
		// Corrupt one reference in about half the rounds.
		if round%2 == 1 {
			c := &batch[rng.IntN(len(batch))]
			ops := slices.Clone(c.Ops)
			op := &ops[rng.IntN(len(ops))]
			bad := crdt.ID{Replica: rid(byte(1 + rng.IntN(2))), Seq: uint64(1 + rng.IntN(60))}
			switch op.Kind {
			case crdt.OpTextInsert:
				if rng.IntN(2) == 0 {
					op.Left = bad
				} else {
					op.Right = bad
				}
			case crdt.OpTextDelete:
				op.Target = bad
			}
			if rng.IntN(4) == 0 && op.Kind != crdt.OpCounterAdd {
				op.Field = map[string]string{"t": "u", "u": "t"}[op.Field]
			}
			c.Ops = ops
		}
		var verdicts [3]error
		var texts [3]string
		for k, from := range []int{1, 1 << 30} { // bitsets, then ranges only
			old := crdt.SetBitsFrom(from)
			d := newDoc(3, &hlc.ManualWall{Millis: 5})
			verdicts[k] = d.Apply(batch...)
			crdt.SetBitsFrom(old)
			texts[k] = d.Text("t") + "|" + d.Text("u")
		}
		d := newDoc(3, &hlc.ManualWall{Millis: 5})
		verdicts[2] = d.ApplySeq(reusingSeq(batch, -1, nil))
		texts[2] = d.Text("t") + "|" + d.Text("u")
		if (verdicts[0] == nil) != (verdicts[1] == nil) || texts[0] != texts[1] {
			t.Fatalf("round %d: bitsets say %v (%q), ranges say %v (%q)", round, verdicts[0], texts[0], verdicts[1], texts[1])
		}
		if (verdicts[0] == nil) != (verdicts[2] == nil) || texts[0] != texts[2] {
			t.Fatalf("round %d: Apply says %v (%q), ApplySeq says %v (%q)", round, verdicts[0], texts[0], verdicts[2], texts[2])
		}
		if round%2 == 0 && verdicts[0] != nil {
			t.Fatalf("round %d: an uncorrupted batch was refused: %v", round, verdicts[0])
		}
		if verdicts[0] != nil {
			refused++
		}
	}
	// Some corruptions land on valid references; most must not, or the
	// comparison above proves little.
	if refused < 75 {
		t.Fatalf("only %d of 150 corrupted batches were refused", refused)
	}
}

// sameAsChangesSince checks that EachChangeSince yields exactly what
// ChangesSince returns, in the same order.
func sameAsChangesSince(t *testing.T, d *crdt.Doc, v crdt.VersionVector) {
	t.Helper()
	var got []crdt.Change
	for c := range d.EachChangeSince(v) {
		cc := *c
		cc.Ops = slices.Clone(c.Ops) // the yielded ops are reused
		got = append(got, cc)
	}
	if want := d.ChangesSince(v); !reflect.DeepEqual(got, want) {
		t.Fatalf("EachChangeSince(%v) yields %d changes that differ from ChangesSince's %d", v, len(got), len(want))
	}
	// SizeSince counts the seqs past v, and those that are characters.
	var ops, inserts int
	for _, c := range got {
		seq := c.Seq
		for _, op := range c.Ops {
			for k := uint64(0); k < uint64(op.Len()); k++ {
				if seq+k > v[c.Replica] {
					ops++
					if op.Kind == crdt.OpTextInsert {
						inserts++
					}
				}
			}
			seq += uint64(op.Len())
		}
	}
	if o, i := d.SizeSince(v); o != ops || i != inserts {
		t.Fatalf("SizeSince(%v) = %d, %d; the changes since hold %d seqs past v, %d of them characters", v, o, i, ops, inserts)
	}
}

// A remote insert whose right origin sits inside a run while its left
// origin is before the run (a history no honest replica writes: the run's
// earlier characters lie between the origins) is refused by every replica;
// one between two characters of a run cuts the run where its right origin
// starts.
func TestRightOriginInsideARun(t *testing.T) {
	a := newDoc(1, &hlc.ManualWall{Millis: 5})
	tx := a.Begin()
	tx.Insert("t", 0, "abc") // one run, seqs 1-3
	tx.Commit()
	base := a.ChangesSince(nil)
	odd := crdt.Change{Replica: rid(2), Seq: 1, Time: hlc.New(6, 0), Ops: []crdt.Op{{
		Kind: crdt.OpTextInsert, Field: "t", Text: "X", Right: crdt.ID{Replica: rid(1), Seq: 2},
	}}}
	b := newDoc(3, &hlc.ManualWall{Millis: 5})
	if err := b.Apply(base...); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*crdt.Doc{a, b} {
		if err := d.Apply(odd); !errors.Is(err, crdt.ErrOrigins) || !errors.Is(err, crdt.ErrInvalidChange) || d.Text("t") != "abc" {
			t.Fatalf("inconsistent origins: %v, text %q", err, d.Text("t"))
		}
	}
	odd.Ops[0].Left = crdt.ID{Replica: rid(1), Seq: 1}
	if err := b.Apply(odd); err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(odd); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*crdt.Doc{a, b} {
		if got := d.Text("t"); got != "aXbc" {
			t.Fatalf("text %q, want %q", got, "aXbc")
		}
	}
	// The cut run still behaves as text: delete across the cut.
	tx = b.Begin()
	if err := tx.Delete("t", 0, 4); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	if got := b.Text("t"); got != "" {
		t.Fatalf("after deleting all: %q", got)
	}
}

// ApplySeq records a batch in the document's logs as it reads it: a
// source's error, or an invalid change, takes every record back, including
// the growth of a log's last span, new replicas and new fields.
func TestApplySeqUndo(t *testing.T) {
	a := newDoc(1, &hlc.ManualWall{Millis: 5})
	for i, s := range []string{"h", "e", "l", "l", "o"} {
		tx := a.Begin()
		tx.Insert("t", i, s)
		tx.Commit()
	}
	tx := a.Begin()
	tx.Add("c", 3)
	tx.Set("r", []byte{0xa1, 'x'})
	tx.Insert("u", 0, "new field")
	tx.Commit()
	all := a.ChangesSince(nil)

	b := newDoc(2, &hlc.ManualWall{Millis: 5})
	if err := b.Apply(all[:3]...); err != nil {
		t.Fatal(err)
	}
	before, log := state(b), b.ChangesSince(nil)
	// The rest continues b's last span of a's typing, then names new
	// fields; then a change of a new replica that is invalid.
	bad := crdt.Change{Replica: rid(9), Seq: 1, Time: hlc.New(5, 0), Ops: []crdt.Op{{
		Kind: crdt.OpTextDelete, Field: "t", Target: crdt.ID{Replica: rid(1), Seq: 6}, Count: 1, // the counter op
	}}}
	boom := errors.New("boom")
	for _, seq := range []crdt.ChangeSeq{
		reusingSeq(append(slices.Clone(all[3:]), bad), -1, nil),
		reusingSeq(all[3:], 2, boom), // after the span grew
	} {
		if err := b.ApplySeq(seq); err == nil {
			t.Fatal("a failing batch was applied")
		}
		if got := state(b); got != before {
			t.Fatalf("a failed batch changed the doc:\n%s\nwant\n%s", got, before)
		}
		if got := b.ChangesSince(nil); !reflect.DeepEqual(got, log) {
			t.Fatalf("a failed batch changed the log:\n%+v\nwant\n%+v", got, log)
		}
	}
	if err := b.ApplySeq(reusingSeq(all[3:], -1, nil)); err != nil {
		t.Fatal(err)
	}
	if state(b) != state(a) || !reflect.DeepEqual(b.ChangesSince(nil), a.ChangesSince(nil)) {
		t.Fatalf("after the failures, the batch gives\n%s\nwant\n%s", state(b), state(a))
	}
	// All duplicates: read again into a slice for Apply, a no-op.
	if err := b.ApplySeq(reusingSeq(all, -1, nil)); err != nil || state(b) != state(a) {
		t.Fatalf("duplicate batch: %v\n%s", err, state(b))
	}
}
