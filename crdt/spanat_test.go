package crdt

import (
	"math/rand/v2"
	"testing"

	"github.com/weftsync/weft/hlc"
)

// spanAt and timeRunAt guess where a seq's span or time run is before
// they search (see blockStart): on logs of one-seq entries, of long ones
// and of both mixed, every seq must map to the entry holding it, whatever
// the hints left by the lookup before.
func TestSpanAndTimeRunLookups(t *testing.T) {
	for seed := uint64(1); seed <= 12; seed++ {
		rng := rand.New(rand.NewPCG(seed, 9))
		long := []int{0, 1, 3, 10}[seed%4] // how often (of 10) an entry is long
		d := &Doc{logs: []rlog{{next: 1}}}
		lg := &d.logs[0]
		seq := uint32(1)
		for range 2000 {
			n := uint32(1)
			if rng.IntN(10) < long {
				n = 2 + uint32(rng.IntN(40))
			}
			lg.spans = append(lg.spans, span{seq: seq, n: n})
			lg.indexTail()
			lg.times = append(lg.times, timeRun{seq: seq, nf: n, t: hlc.Timestamp(seq)})
			lg.indexTimes()
			seq += n
		}
		lg.next = seq
		probe := func(q uint32) {
			i := d.spanAt(0, q)
			if s := lg.spans[i]; q < s.seq || q >= s.seq+s.n {
				t.Fatalf("seed %d: spanAt(%d) = span %d (%d+%d)", seed, q, i, s.seq, s.n)
			}
			j := d.timeRunAt(0, q)
			if j == len(lg.times) {
				t.Fatalf("seed %d: timeRunAt(%d) past the runs", seed, q)
			}
			if r := lg.times[j]; q < r.seq || q >= r.seq+r.n() {
				t.Fatalf("seed %d: timeRunAt(%d) = run %d (%d+%d)", seed, q, j, r.seq, r.n())
			}
		}
		for q := uint32(1); q < seq; q++ {
			probe(q)
		}
		for range 5000 {
			probe(1 + uint32(rng.IntN(int(seq-1))))
		}
		if j := d.timeRunAt(0, seq); j != len(lg.times) {
			t.Fatalf("seed %d: timeRunAt(%d), past the log, = %d", seed, seq, j)
		}
	}
}
