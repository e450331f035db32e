package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

func rep(b byte) crdt.ReplicaID {
	var r crdt.ReplicaID
	r[0], r[15] = b, 0xee
	return r
}

// randomChanges builds n random well-formed changes over a few replicas,
// fields and every op kind, with seqs consecutive per replica.
func randomChanges(rng *rand.Rand, n int) []crdt.Change {
	nRep := 1 + rng.IntN(4)
	next := make([]uint64, nRep)
	for i := range next {
		next[i] = 1 + uint64(rng.IntN(3))*uint64(rng.IntN(1<<20))
	}
	fields := []string{"body", "title", "n", "ß→", ""}
	runes := []rune("ab cdeé€😀\n")
	t := hlc.New(1_700_000_000_000+int64(rng.IntN(1<<20)), uint16(rng.IntN(4)))
	randID := func() crdt.ID {
		if rng.IntN(5) == 0 {
			return crdt.ID{}
		}
		r := rng.IntN(nRep)
		return crdt.ID{Replica: rep(byte(r + 1)), Seq: 1 + uint64(rng.IntN(int(next[r])+5))}
	}
	out := make([]crdt.Change, n)
	for i := range out {
		r := rng.IntN(nRep)
		switch rng.IntN(4) {
		case 0:
			t += hlc.Timestamp(rng.IntN(3))
		case 1:
			t = hlc.New(t.WallMillis()+int64(rng.IntN(500)), 0)
		case 2:
			t = hlc.New(t.WallMillis()-int64(rng.IntN(50)), uint16(rng.IntN(1<<16)))
		}
		ch := crdt.Change{Replica: rep(byte(r + 1)), Seq: next[r], Time: t}
		for k := 1 + rng.IntN(3); k > 0; k-- {
			op := crdt.Op{Field: fields[rng.IntN(len(fields))]}
			switch rng.IntN(4) {
			case 0:
				op.Kind = crdt.OpTextInsert
				var sb strings.Builder
				for m := 1 + rng.IntN(6); m > 0; m-- {
					sb.WriteRune(runes[rng.IntN(len(runes))])
				}
				op.Text, op.Left, op.Right = sb.String(), randID(), randID()
			case 1:
				op.Kind = crdt.OpTextDelete
				op.Target = randID()
				if op.Target.IsZero() {
					op.Target = crdt.ID{Replica: rep(1), Seq: 1 + uint64(rng.IntN(100))}
				}
				op.Count = 1 + uint64(rng.IntN(int(op.Target.Seq)))
				op.Backward = rng.IntN(2) == 0
			case 2:
				op.Kind = crdt.OpCounterAdd
				op.Delta = rng.Int64N(1<<40) - 1<<39
				if op.Delta == 0 {
					op.Delta = -1 << 63
				}
			case 3:
				op.Kind = crdt.OpRegisterSet
				op.Value = []byte{0xa3, 'a', 'b', byte('c' + rng.IntN(3))}
			}
			ch.Ops = append(ch.Ops, op)
		}
		next[r] += ch.Len()
		out[i] = ch
	}
	return out
}

func TestChangesRoundTrip(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 7))
		in := randomChanges(rng, rng.IntN(40))
		b := EncodeChanges(in)
		out, err := DecodeChanges(b)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(in) == 0 && len(out) == 0 {
			continue
		}
		if !reflect.DeepEqual(in, out) {
			t.Fatalf("seed %d: round trip differs:\n in %+v\nout %+v", seed, in, out)
		}
		if b2 := EncodeChanges(out); !bytes.Equal(b, b2) {
			t.Fatalf("seed %d: encoding is not deterministic", seed)
		}
		// ChangeSeq yields the same changes, on every pass.
		seq := ChangeSeq(b).All
		for pass := range 2 {
			got, err := collectSeq(seq)
			if err != nil || !reflect.DeepEqual(got, in) {
				t.Fatalf("seed %d: ChangeSeq pass %d: %v\n in %+v\ngot %+v", seed, pass, err, in, got)
			}
		}
		// A pass inside another (which reads the header's columns in
		// place) and the outer pass both yield every change.
		nested := false
		outer, err := collectSeq(func(yield func(*crdt.Change, error) bool) {
			for c, err := range seq {
				if !nested {
					nested = true
					if got, err := collectSeq(seq); err != nil || !reflect.DeepEqual(got, in) {
						t.Fatalf("seed %d: nested ChangeSeq pass: %v\n in %+v\ngot %+v", seed, err, in, got)
					}
				}
				if !yield(c, err) {
					return
				}
			}
		})
		if err != nil || !reflect.DeepEqual(outer, in) {
			t.Fatalf("seed %d: ChangeSeq pass around a nested one: %v\n in %+v\ngot %+v", seed, err, in, outer)
		}
	}
}

func TestDecodeChangesDoesNotAlias(t *testing.T) {
	in := []crdt.Change{{Replica: rep(1), Seq: 1, Time: 5, Ops: []crdt.Op{
		{Kind: crdt.OpRegisterSet, Field: "r", Value: []byte{0x01}},
		{Kind: crdt.OpTextInsert, Field: "t", Text: "hi"},
	}}}
	b := EncodeChanges(in)
	out, err := DecodeChanges(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if !reflect.DeepEqual(in, out) {
		t.Fatalf("decoded changes alias the input: %+v", out)
	}
}

// TestDecodeChangesCorrupt: every truncation and every single-byte flip of
// valid batches must fail cleanly or decode to well-formed changes, never
// panic.
func TestDecodeChangesCorrupt(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 20; round++ {
		b := EncodeChanges(randomChanges(rng, 1+rng.IntN(10)))
		for i := 0; i < len(b); i++ {
			if _, err := DecodeChanges(b[:i]); err == nil {
				t.Fatalf("truncation to %d of %d bytes decoded", i, len(b))
			} else if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			if _, err := collectSeq(ChangeSeq(b[:i]).All); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ChangeSeq of a truncation to %d of %d bytes: %v", i, len(b), err)
			}
			c := bytes.Clone(b)
			c[i] ^= byte(1 + rng.IntN(255))
			if chs, err := DecodeChanges(c); err == nil {
				checkWellFormed(t, chs)
			}
		}
	}
}

func checkWellFormed(t *testing.T, chs []crdt.Change) {
	t.Helper()
	for _, ch := range chs {
		if ch.Replica.IsZero() || ch.Seq == 0 || len(ch.Ops) == 0 || ch.End() > MaxSeq {
			t.Fatalf("decoded malformed change %+v", ch)
		}
		for _, op := range ch.Ops {
			switch op.Kind {
			case crdt.OpTextInsert:
				if op.Text == "" {
					t.Fatalf("empty insert %+v", op)
				}
			case crdt.OpTextDelete:
				if op.Count == 0 || op.Target.IsZero() {
					t.Fatalf("bad delete %+v", op)
				}
			case crdt.OpCounterAdd, crdt.OpRegisterSet:
			default:
				t.Fatalf("unknown kind %+v", op)
			}
		}
	}
}

func TestDecodeChangesHostile(t *testing.T) {
	valid := EncodeChanges([]crdt.Change{{Replica: rep(1), Seq: 1, Time: 1 << 16, Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "t", Text: "x"}}}})
	uv := func(vs ...uint64) []byte {
		var b []byte
		for _, v := range vs {
			for v >= 0x80 {
				b = append(b, byte(v)|0x80)
				v >>= 7
			}
			b = append(b, byte(v))
		}
		return b
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	r1 := rep(1)
	emptyCols := bytes.Repeat([]byte{0}, numColumns)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty input"},
		{"format", []byte{9}, "unknown format 9"},
		{"replica bomb", cat([]byte{1}, uv(1<<40)), "replicas but only"},
		{"zero replica", cat([]byte{1}, uv(1), make([]byte, 16)), "zero id"},
		{"dup replica", cat([]byte{1}, uv(2), r1[:], r1[:]), "listed twice"},
		// Tables up to scanTable are checked by a scan, longer ones by a map.
		{"dup replica, scanned", replicaTable(uv, scanTable, 2), "listed twice"},
		{"dup replica, mapped", replicaTable(uv, scanTable+5, scanTable+1), "listed twice"},
		{"dup field, scanned", cat([]byte{1}, uv(0, 3, 1), []byte("a"), uv(1), []byte("b"), uv(1), []byte("a")), "listed twice"},
		{"field bomb", cat([]byte{1}, uv(0, 1<<50)), "fields but only"},
		{"field len bomb", cat([]byte{1}, uv(0, 1, 1000)), "only"},
		{"field too long", cat([]byte{1}, uv(0, 1, 5000)), "exceeds"},
		{"field utf8", cat([]byte{1}, uv(0, 1, 1), []byte{0xff}), "not UTF-8"},
		{"too many changes", cat([]byte{1}, uv(1), r1[:], uv(0, MaxChanges+1, MaxChanges+1)), "exceed the limit"},
		{"too many ops", cat([]byte{1}, uv(1), r1[:], uv(0, 1, MaxOps+1)), "exceed the limit"},
		{"fewer ops", cat([]byte{1}, uv(1), r1[:], uv(0, 2, 1)), "every change has one"},
		{"no replicas", cat([]byte{1}, uv(0, 0, 1, 1)), "no replicas"},
		{"column bomb", cat([]byte{1}, uv(0, 0, 0, 0, 1<<40)), "only"},
		{"trailing", append(bytes.Clone(valid), 0), "trailing"},
		{"missing columns", cat([]byte{1}, uv(0, 0, 0, 0), emptyCols[:5]), "column"},
		// One change whose columns are all empty: the first read fails.
		{"empty column", cat([]byte{1}, uv(1), r1[:], uv(0, 1, 1), emptyCols), "column change.replica holds 0 values"},
		// The counts agree with the columns, the replica index does not.
		{"bad replica index", cat([]byte{1}, uv(1), r1[:], uv(0, 1, 1), uv(2, 0, 5), emptyCols[:3], uv(2, 0, 1, 1, 0), emptyCols[6:]), "replica index 5"},
		{"ops column disagrees", cat([]byte{1}, uv(1), r1[:], uv(0, 1, 2), uv(2, 0, 0), emptyCols[:3], uv(2, 0, 1, 1, 4), emptyCols[6:]), "column change.ops"},
		{"kinds disagree", cat([]byte{1}, uv(1), r1[:], uv(0, 1, 2), uv(2, 0, 0), emptyCols[:3], uv(2, 0, 2, 1, 0), emptyCols[6:]), "column op.kind holds 1 values"},
		{"count bomb", countBomb(), "262144 changes declared"},
		{"bad text utf8", func() []byte {
			b := bytes.Clone(valid)
			i := bytes.IndexByte(b, 'x')
			b[i] = 0xff
			return b
		}(), "not UTF-8"},
	}
	for _, c := range cases {
		chs, err := DecodeChanges(c.in)
		if err == nil {
			t.Errorf("%s: decoded %+v", c.name, chs)
			continue
		}
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %q, want ErrCorrupt mentioning %q", c.name, err, c.want)
		}
	}
}

// countBomb is a 44-byte batch whose header declares MaxChanges changes
// and MaxOps ops that its columns do not hold (issue 11 §3).
func countBomb() []byte {
	r := rep(1)
	b := append([]byte{1, 1}, r[:]...)
	b = append(b, 0)                        // no fields
	b = binary.AppendUvarint(b, MaxChanges) // changes
	b = binary.AppendUvarint(b, MaxOps)     // ops
	b = append(b, 2, 0, 0)                  // change.replica: one value
	return append(b, make([]byte, numColumns-1)...)
}

// TestDeclaredCountBomb: a batch declaring 2^18 changes it does not hold
// is refused having allocated next to nothing — before, DecodeChanges
// allocated the declared changes and ops (some 52 MiB) first.
func TestDeclaredCountBomb(t *testing.T) {
	b := countBomb()
	if len(b) != 44 {
		t.Fatalf("bomb is %d bytes", len(b))
	}
	for name, decode := range map[string]func() error{
		"DecodeChanges": func() error { _, err := DecodeChanges(b); return err },
		"ChangeSeq": func() error {
			_, err := collectSeq(ChangeSeq(b).All)
			return err
		},
		"Inspect": func() error { _, err := Inspect(b); return err },
	} {
		if err := decode(); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "declared") {
			t.Fatalf("%s: %v", name, err)
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range 10 {
			_ = decode()
		}
		runtime.ReadMemStats(&after)
		if per := (after.TotalAlloc - before.TotalAlloc) / 10; per > 16<<10 {
			t.Errorf("%s allocated %d bytes refusing a 44-byte bomb", name, per)
		}
	}
}

func TestInspect(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	for i, chs := range [][]crdt.Change{randomChanges(rng, 40), textBatch(), {}} {
		b := EncodeChanges(chs)
		got, err := Inspect(b)
		if err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		want := Info{Changes: len(chs), RawBytes: len(b)}
		reps := map[crdt.ReplicaID]bool{}
		for _, c := range chs {
			reps[c.Replica] = true
			want.Ops += len(c.Ops)
			for _, op := range c.Ops {
				switch op.Kind {
				case crdt.OpTextInsert:
					want.Inserts++
					want.TextBytes += len(op.Text)
				case crdt.OpRegisterSet:
					want.Sets++
					want.ValueBytes += len(op.Value)
					want.MaxValue = max(want.MaxValue, len(op.Value))
				}
				for _, id := range []crdt.ID{op.Left, op.Right, op.Target} {
					if !id.IsZero() {
						reps[id.Replica] = true
					}
				}
			}
		}
		want.Replicas = len(reps)
		if b[0] == ChangesFormatDeflate {
			plain, err := inflate(b)
			if err != nil {
				t.Fatal(err)
			}
			want.RawBytes = len(plain)
		}
		if got != want {
			t.Errorf("batch %d: Inspect = %+v, want %+v", i, got, want)
		}
		if nc, no, err := Counts(b); err != nil || nc != got.Changes || no != got.Ops {
			t.Errorf("batch %d: Counts = %d, %d, %v", i, nc, no, err)
		}
	}
}

func TestDecodeChangesFieldChecks(t *testing.T) {
	base := crdt.Change{Replica: rep(1), Seq: 10, Time: 1 << 16}
	cases := []struct {
		name string
		op   crdt.Op
		want string
	}{
		{"count 0", crdt.Op{Kind: crdt.OpTextDelete, Field: "t", Target: crdt.ID{Replica: rep(1), Seq: 3}}, "delete of 0"},
		{"backward below 1", crdt.Op{Kind: crdt.OpTextDelete, Field: "t", Target: crdt.ID{Replica: rep(1), Seq: 3}, Count: 4, Backward: true}, "below seq 1"},
		{"forward past max", crdt.Op{Kind: crdt.OpTextDelete, Field: "t", Target: crdt.ID{Replica: rep(1), Seq: MaxSeq}, Count: 2}, "past MaxSeq"},
		{"no target", crdt.Op{Kind: crdt.OpTextDelete, Field: "t", Count: 1}, "without target"},
		{"empty insert", crdt.Op{Kind: crdt.OpTextInsert, Field: "t"}, "insert of 0 runes"},
	}
	for _, c := range cases {
		ch := base
		ch.Ops = []crdt.Op{c.op}
		_, err := DecodeChanges(EncodeChanges([]crdt.Change{ch}))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		}
	}
	// A change that runs past MaxSeq.
	ch := crdt.Change{Replica: rep(1), Seq: MaxSeq, Time: 1, Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "t", Text: "ab"}}}
	if _, err := DecodeChanges(EncodeChanges([]crdt.Change{ch})); err == nil || !strings.Contains(err.Error(), "past MaxSeq") {
		t.Errorf("seq overflow: got %v", err)
	}
	// No ops.
	ch = crdt.Change{Replica: rep(1), Seq: 1, Time: 1}
	if _, err := DecodeChanges(EncodeChanges([]crdt.Change{ch})); err == nil || !strings.Contains(err.Error(), "every change has one") {
		t.Errorf("no ops: got %v", err)
	}
}

func TestCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	chs := randomChanges(rng, 30)
	b := EncodeChanges(chs)
	nc, no, err := Counts(b)
	ops := 0
	for _, c := range chs {
		ops += len(c.Ops)
	}
	if err != nil || nc != len(chs) || no != ops {
		t.Fatalf("Counts = %d, %d, %v; want %d, %d", nc, no, err, len(chs), ops)
	}
	// Every prefix either fails or already holds the whole header.
	for i := 0; i < len(b); i++ {
		c, o, err := Counts(b[:i])
		if err == nil && (c != nc || o != no) {
			t.Fatalf("prefix %d: %d, %d", i, c, o)
		}
		if err == nil && i < 2+16 {
			t.Fatalf("prefix %d shorter than a replica table decoded", i)
		}
	}
	if _, _, err := Counts([]byte{1, 0, 0, 0xff, 0xff, 0xff, 0x7f, 1}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("over limit: %v", err)
	}
}

// The table against a map: narrow pids only (one word a slot), wide ones
// from the start, and narrow ones until a wide key or value turns the
// table wide halfway; from a small hint (it grows), an unknown one, and a
// pooled array a little too small for the hint.
func TestPidTable(t *testing.T) {
	narrow := func(rng *rand.Rand) pid { return packID(rng.IntN(64), rng.Uint64N(5000)) }
	wide := func(rng *rand.Rand) pid { return pid(rng.Uint64()) }
	for _, tc := range []struct {
		name string
		key  func(*rand.Rand) pid
		val  func(rng *rand.Rand, i int) pid
	}{
		{"narrow", narrow, func(rng *rand.Rand, _ int) pid { return narrow(rng) }},
		{"wide values", narrow, func(rng *rand.Rand, _ int) pid { return wide(rng) }},
		{"wide keys", func(rng *rand.Rand) pid { return packID(64+rng.IntN(8), rng.Uint64N(500)) }, func(rng *rand.Rand, _ int) pid { return narrow(rng) }},
		{"turns wide", narrow, func(rng *rand.Rand, i int) pid {
			if i == 10000 {
				return packID(1, 1<<26) // the first that is not narrow
			}
			return narrow(rng)
		}},
	} {
		for _, hint := range []int{3, -1, 2000} {
			rng := rand.New(rand.NewPCG(9, 9))
			var tab pidTable
			tab.w = make([]uint64, 0, max(hint*7/4, 0)) // pooled, a little small for hint
			tab.init(hint)
			model := map[pid]pid{}
			for i := 0; i < 20000; i++ {
				k := tc.key(rng)
				if rng.IntN(2) == 0 || i == 10000 {
					v := tc.val(rng, i)
					tab.put(k, v)
					model[k] = v
				} else {
					if rng.IntN(4) == 0 {
						k = pid(rng.Uint64()) // most likely absent
					}
					got, ok := tab.get(k)
					want, wok := model[k]
					if ok != wok || got != want {
						t.Fatalf("%s, hint %d: get(%d) = %d, %t; want %d, %t", tc.name, hint, k, got, ok, want, wok)
					}
				}
			}
			for k, want := range model {
				if got, ok := tab.get(k); !ok || got != want {
					t.Fatalf("%s, hint %d: at the end get(%d) = %d, %t; want %d", tc.name, hint, k, got, ok, want)
				}
			}
		}
	}
}

// appendIDColumn writes the same bytes whether the column fits in out's
// spare room (and is moved down to its length) or gets a buffer of its
// own, in part or from the start.
func TestAppendIDColumn(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	head := []byte{1, 2, 3}
	// With 200 replicas and short distances the codes are longer than
	// their parts: the column outgrows the room made for it.
	for _, nRep := range []uint64{3, 200} {
		var vals []byte
		for range 5000 {
			switch k := rng.IntN(4); {
			case nRep == 200:
				vals = appendIDVal(vals, idVal{zz: rng.Uint64N(128), r: rng.Uint64N(32), coded: true})
			case k == 0:
				vals = appendIDVal(vals, idVal{v: uint64(rng.IntN(2))})
			case k == 1:
				vals = appendIDVal(vals, idVal{v: 7}) // a run
			default:
				vals = appendIDVal(vals, idVal{zz: rng.Uint64N(1 << 20), r: rng.Uint64N(nRep), coded: true, plusOne: rng.IntN(2) == 0})
			}
		}
		var w rleWriter
		flushIDVals(&w, vals, nRep)
		w.close()
		want := binary.AppendUvarint(slices.Clone(head), uint64(len(w.out)))
		want = append(want, w.out...)
		if nRep == 200 && len(w.out) <= idColumnRoom(vals) {
			t.Fatalf("%d replicas: the column fits the room made for it", nRep)
		}
		for _, spare := range []int{0, 100, idColumnRoom(vals) + binary.MaxVarintLen64 - 1, idColumnRoom(vals) + binary.MaxVarintLen64, 4 * len(vals)} {
			out := append(make([]byte, 0, len(head)+spare), head...)
			if got := appendIDColumn(out, vals, nRep); !bytes.Equal(got, want) {
				t.Fatalf("%d replicas, spare room %d: the column differs", nRep, spare)
			}
		}
	}
}

// replicaTable is the start of a batch whose replica table lists n
// distinct replicas, then the one at index dup again.
func replicaTable(uv func(...uint64) []byte, n, dup int) []byte {
	b := append([]byte{1}, uv(uint64(n+1))...)
	for i := range n {
		r := rep(byte(i + 1))
		b = append(b, r[:]...)
	}
	r := rep(byte(dup + 1))
	return append(b, r[:]...)
}
