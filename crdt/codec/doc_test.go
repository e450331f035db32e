package codec

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// mergeScenario mirrors `weft bench merge` on real documents: replica b
// writes a 1,000-character base, a forks it and makes n random
// single-character edits (70 % inserts), each its own transaction. It returns
// the delta a→b and both documents.
func mergeScenario(t testing.TB, seed uint64, n int, tm timing) (delta []crdt.Change, a, b *crdt.Doc) {
	rng := rand.New(rand.NewPCG(seed, 3))
	wall := &hlc.ManualWall{Millis: 1_763_000_000_000}
	b = crdt.NewDoc(rep(0x11), hlc.NewClock(wall.Read, 0), crdt.Options{})
	a = crdt.NewDoc(rep(0x22), hlc.NewClock(wall.Read, 0), crdt.Options{})
	tx := b.Begin()
	var sb strings.Builder
	for i := 0; i < 1000; i++ {
		sb.WriteByte(byte('a' + rng.IntN(26)))
	}
	must(t, tx.Insert("body", 0, sb.String()))
	must(t, tx.Commit())
	must(t, a.Apply(b.ChangesSince(nil)...))
	fork := a.Version()
	for i := 0; i < n; i++ {
		if tm == typing {
			wall.Millis += 40 + int64(rng.IntN(360))
		}
		tx := a.Begin()
		l := a.TextLen("body")
		if rng.IntN(10) < 7 || l == 0 {
			must(t, tx.Insert("body", rng.IntN(l+1), string(rune('a'+rng.IntN(26)))))
		} else {
			must(t, tx.Delete("body", rng.IntN(l), 1))
		}
		must(t, tx.Commit())
	}
	return a.ChangesSince(fork), a, b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRealDocMerge encodes what real documents produce, decodes it into the
// other replica and checks convergence and the size target.
func TestRealDocMerge(t *testing.T) {
	for _, tm := range []timing{fastLoop, typing} {
		delta, a, b := mergeScenario(t, 1, 10000, tm)
		data := EncodeChanges(delta)
		back, err := DecodeChanges(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, delta) {
			t.Fatal("decoded delta differs from the encoded one")
		}
		must(t, b.Apply(back...))
		if b.Text("body") != a.Text("body") || b.Pending() != 0 {
			t.Fatalf("replicas differ after merge (pending %d)", b.Pending())
		}
		per := float64(len(data)) / 10000
		t.Logf("timing %d: %d changes, %d bytes, %.2f bytes/edit", tm, len(delta), len(data), per)
		if per > 6 {
			t.Errorf("timing %d: %.2f bytes/edit, target ≤ 6", tm, per)
		}
	}
}

func BenchmarkEncodeRealDoc(b *testing.B) {
	delta, _, _ := mergeScenario(b, 1, 10000, fastLoop)
	b.ReportAllocs()
	var n int
	for b.Loop() {
		n = len(EncodeChanges(delta))
	}
	b.ReportMetric(float64(n)/10000, "bytes/edit")
}
