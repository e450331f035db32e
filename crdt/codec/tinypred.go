package codec

// tinyInserts is the most inserts a batch may hold for its decoder to
// predict right origins with a tinyPredictor.
// NB: ChangeSeq allocates a decoder per batch; with room for 4 its
// allocation moved up a size class, from 2,304 to 2,688 bytes.
const tinyInserts = 3

// tinyPredictor is the predictor (see predictor) of a batch of at most
// tinyInserts inserts, its tables kept as short lists in the decoder: a
// keystroke's decoder took a pooled predictor and cleared its two tables
// of 16 slots, a sixteenth of decoding it. It must answer as predictor
// does; TestTinyPredictor holds the two to the same answers.
type tinyPredictor struct {
	lastAfter [tinyInserts][2]pid // Left origin, first id of the latest insert with it
	runEnd    [tinyInserts][2]pid // last id of an inserted run, the run's Right origin
	nAfter    uint8               // entries of lastAfter in use
	nEnd      uint8               // entries of runEnd in use
}

func (p *tinyPredictor) right(left pid) (pid, bool) {
	if id, ok := tinyGet(&p.lastAfter, p.nAfter, left); ok {
		return id, true
	}
	if left == 0 {
		return 0, false
	}
	if r, ok := tinyGet(&p.runEnd, p.nEnd, left); ok {
		return r, true
	}
	return left + 1, true
}

func (p *tinyPredictor) inserted(first pid, n uint64, left, right pid) {
	p.nAfter = tinyPut(&p.lastAfter, p.nAfter, left, first)
	p.nEnd = tinyPut(&p.runEnd, p.nEnd, first+pid(n)-1, right)
}

func tinyGet(t *[tinyInserts][2]pid, n uint8, k pid) (pid, bool) {
	for i := range t[:n] {
		if t[i][0] == k {
			return t[i][1], true
		}
	}
	return 0, false
}

// tinyPut sets k to v in the first n entries of t and returns how many
// are in use after.
func tinyPut(t *[tinyInserts][2]pid, n uint8, k, v pid) uint8 {
	for i := range t[:n] {
		if t[i][0] == k {
			t[i][1] = v
			return n
		}
	}
	t[n] = [2]pid{k, v}
	return n + 1
}
