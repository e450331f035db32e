package codec

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// editModel is a plain list of characters with tombstones, enough to give
// hand-built edits the origins a real sequence CRDT would record: Left is the
// visible character before the position, Right the item right after Left
// (tombstones included).
type editModel struct {
	ids     []crdt.ID
	deleted []bool
	visible int
}

func (m *editModel) itemOfVisible(pos int) int { // index of the pos'th visible item
	for i, n := 0, 0; i < len(m.ids); i++ {
		if !m.deleted[i] {
			if n == pos {
				return i
			}
			n++
		}
	}
	return len(m.ids)
}

type timing int

const (
	fastLoop timing = iota // every edit in the same millisecond burst (a benchmark loop)
	typing                 // 40-400 ms between edits (a person)
)

// editTrace builds n single-character edits by one replica (70 % inserts,
// each its own change) on a document of base characters by another replica.
// With near, positions random-walk (as a person's edits do); otherwise they
// are uniform (as in `weft bench merge`).
func editTrace(seed uint64, n, base int, near bool, tm timing) []crdt.Change {
	key := fmt.Sprint(seed, n, base, near, tm)
	traceCache.Lock()
	defer traceCache.Unlock()
	if chs, ok := traceCache.m[key]; ok {
		return chs
	}
	chs := buildEditTrace(seed, n, base, near, tm)
	traceCache.m[key] = chs
	return chs
}

// traceCache keeps built traces: building one is quadratic (the model is a
// plain list) and the size test and benchmarks share them. Callers must not
// modify the result.
var traceCache = struct {
	sync.Mutex
	m map[string][]crdt.Change
}{m: map[string][]crdt.Change{}}

func buildEditTrace(seed uint64, n, base int, near bool, tm timing) []crdt.Change {
	rng := rand.New(rand.NewPCG(seed, 99))
	x, a := rep(0x11), rep(0x22)
	m := &editModel{}
	for i := 1; i <= base; i++ {
		m.ids = append(m.ids, crdt.ID{Replica: x, Seq: uint64(i)})
		m.deleted = append(m.deleted, false)
	}
	m.visible = base
	wall := int64(1_763_000_000_000)
	clock := hlc.NewClock(func() int64 { return wall }, 0)
	seq := uint64(1)
	pos := rng.IntN(base + 1)
	out := make([]crdt.Change, 0, n)
	for len(out) < n {
		if near && rng.IntN(10) > 0 {
			pos += rng.IntN(21) - 10
		} else {
			pos = rng.IntN(m.visible + 1)
		}
		pos = max(0, min(pos, m.visible))
		if tm == typing {
			wall += 40 + int64(rng.IntN(360))
		}
		ch := crdt.Change{Replica: a, Seq: seq, Time: clock.Now()}
		if rng.IntN(10) < 7 || m.visible == 0 {
			var left, right crdt.ID
			at := 0 // list index to insert at
			if pos > 0 {
				li := m.itemOfVisible(pos - 1)
				left, at = m.ids[li], li+1
			}
			if at < len(m.ids) {
				right = m.ids[at]
			}
			ch.Ops = []crdt.Op{{Kind: crdt.OpTextInsert, Field: "body", Text: string(rune('a' + rng.IntN(26))), Left: left, Right: right}}
			id := crdt.ID{Replica: a, Seq: seq}
			m.ids = append(m.ids[:at], append([]crdt.ID{id}, m.ids[at:]...)...)
			m.deleted = append(m.deleted[:at], append([]bool{false}, m.deleted[at:]...)...)
			m.visible++
			pos++
		} else {
			if pos == m.visible {
				pos--
			}
			i := m.itemOfVisible(pos)
			ch.Ops = []crdt.Op{{Kind: crdt.OpTextDelete, Field: "body", Target: m.ids[i], Count: 1}}
			m.deleted[i] = true
			m.visible--
		}
		seq++
		out = append(out, ch)
	}
	return out
}

var sizeCases = []struct {
	name string
	near bool
	tm   timing
}{
	{"near/loop", true, fastLoop},
	{"near/typing", true, typing},
	{"uniform/loop", false, fastLoop},
	{"uniform/typing", false, typing},
}

// TestEncodedSize checks issue 3's target: 10,000 single-character edits
// (70 % inserts, each its own change) in at most 6 bytes per edit. Sizes are
// deterministic, so this is a plain test; BenchmarkEncodeEdits reports them.
func TestEncodedSize(t *testing.T) {
	if raceEnabled {
		t.Skip("sizes are deterministic; checked by the run without -race")
	}
	for _, c := range sizeCases {
		chs := editTrace(1, 10000, 1000, c.near, c.tm)
		b := EncodeChanges(chs)
		per := float64(len(b)) / float64(len(chs))
		t.Logf("%-15s %6d bytes, %.2f bytes/edit", c.name, len(b), per)
		if per > 6 {
			t.Errorf("%s: %.2f bytes/edit, target ≤ 6", c.name, per)
		}
		if _, err := DecodeChanges(b); err != nil {
			t.Fatal(err)
		}
	}
}

func BenchmarkEncodeEdits(b *testing.B) {
	for _, c := range sizeCases {
		chs := editTrace(1, 10000, 1000, c.near, c.tm)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				n = len(EncodeChanges(chs))
			}
			b.ReportMetric(float64(n)/float64(len(chs)), "bytes/edit")
		})
	}
}

func BenchmarkDecodeEdits(b *testing.B) {
	for _, c := range sizeCases {
		data := EncodeChanges(editTrace(1, 10000, 1000, c.near, c.tm))
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := DecodeChanges(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ExampleEncodeChanges() {
	chs := []crdt.Change{{
		Replica: rep(1), Seq: 1, Time: hlc.New(1_763_000_000_000, 0),
		Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "body", Text: "hi"}},
	}}
	b := EncodeChanges(chs)
	back, err := DecodeChanges(b)
	fmt.Println(len(b), err, back[0].Ops[0].Text)
	// Output: 70 <nil> hi
}
