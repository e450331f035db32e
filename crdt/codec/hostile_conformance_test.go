package codec_test

// The hostile part of the conformance corpus: what a replica refuses must
// be refused by every implementation alike (issue 11), or replicas split.
// hostile.json holds documents with honest concurrent edits and hostile
// changes (inserts whose origins contradict the text, changes stamped no
// later than what they follow), delivered one at a time in a shuffled
// order and then as one batch, with what Go's crdt answers each time and
// the state it leaves. clients/ts/test/conformance.test.ts replays it.

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

// cfHostileState is a document's state with what decides agreement past
// the visible fields: its version and how many pending changes it dropped.
type cfHostileState struct {
	cfState
	Version  map[string]uint64 `json:"version"`
	Rejected int               `json:"rejected"`
}

// cfDelivery is one delivery of a batch and what the receiving replica
// answered: ok, origins (crdt.ErrOrigins) or backdated (crdt.ErrBackdated).
type cfDelivery struct {
	Batch   string         `json:"batch_hex"`
	Outcome string         `json:"outcome"`
	State   cfHostileState `json:"state"`
}

type cfHostile struct {
	Name  string       `json:"name"`
	Seed  uint64       `json:"seed"`
	Base  string       `json:"base_hex"`
	Steps []cfDelivery `json:"steps"` // one change each
	Batch cfDelivery   `json:"batch"` // all of them at once, into a fresh copy of the base
}

func hostileStateOf(d *crdt.Doc) cfHostileState {
	s := cfHostileState{cfState: stateOf(d), Version: map[string]uint64{}, Rejected: d.Rejected()}
	for r, seq := range d.Version() {
		s.Version[hex.EncodeToString(r[:])] = seq
	}
	return s
}

// hostileReceiver is the replica that receives the deliveries: its wall
// clock far ahead, so that only the rules under test can refuse.
func hostileReceiver(t *testing.T, base []crdt.Change) *crdt.Doc {
	d := crdt.NewDoc(cfReplica(7), hlc.NewClock((&hlc.ManualWall{Millis: 1 << 40}).Read, 0), crdt.Options{})
	if err := d.Apply(base...); err != nil {
		t.Fatal(err)
	}
	return d
}

func deliver(t *testing.T, d *crdt.Doc, cs []crdt.Change) cfDelivery {
	b := codec.EncodeChanges(cs)
	dec, err := codec.DecodeChanges(b)
	if err != nil {
		t.Fatal(err)
	}
	out := cfDelivery{Batch: hex.EncodeToString(plainForm(t, b)), Outcome: "ok"}
	switch err := d.Apply(dec...); {
	case err == nil:
	case errors.Is(err, crdt.ErrOrigins):
		out.Outcome = "origins"
	case errors.Is(err, crdt.ErrBackdated):
		out.Outcome = "backdated"
	default:
		t.Fatalf("delivery refused otherwise: %v", err)
	}
	out.State = hostileStateOf(d)
	return out
}

func hostileEdit(t *testing.T, rng *rand.Rand, d *crdt.Doc) {
	tx := d.Begin()
	l := d.TextLen("body")
	var err error
	if l == 0 || rng.IntN(3) > 0 {
		err = tx.Insert("body", rng.IntN(l+1), cfRandText(rng, 1+rng.IntN(3)))
	} else {
		p := rng.IntN(l)
		err = tx.Delete("body", p, 1+rng.IntN(min(3, l-p)))
	}
	if err != nil {
		t.Fatal(err)
	}
	tx.Commit()
}

// genHostile builds one case from seed: a base from two replicas editing
// and syncing, honest replicas editing copies of it concurrently, hostile
// inserts with origins drawn at random among the characters there are
// (stamped after all of them, so only the origins can be wrong), and
// changes stamped no later than a character they name.
func genHostile(t *testing.T, seed uint64) cfHostile {
	rng := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	a := crdt.NewDoc(cfReplica(0), hlc.NewClock(wall.Read, 0), crdt.Options{})
	b := crdt.NewDoc(cfReplica(1), hlc.NewClock(wall.Read, 0), crdt.Options{})
	sync := func(from, to *crdt.Doc) {
		if err := to.Apply(from.ChangesSince(to.Version())...); err != nil {
			t.Fatal(err)
		}
	}
	for range 4 + rng.IntN(8) {
		wall.Millis += int64(1 + rng.IntN(50))
		hostileEdit(t, rng, []*crdt.Doc{a, b}[rng.IntN(2)])
		if rng.IntN(3) == 0 {
			sync(b, a)
			sync(a, b)
		}
	}
	sync(b, a)
	base := a.ChangesSince(nil)
	type char struct {
		id crdt.ID
		t  hlc.Timestamp
	}
	var chars []char
	for _, c := range base {
		seq := c.Seq
		for _, op := range c.Ops {
			if op.Kind == crdt.OpTextInsert {
				for k := range op.Len() {
					chars = append(chars, char{crdt.ID{Replica: c.Replica, Seq: seq + k}, c.Time})
				}
			}
			seq += op.Len()
		}
	}
	var extra []crdt.Change
	for h := range 1 + rng.IntN(3) {
		hw := &hlc.ManualWall{Millis: wall.Millis + 100}
		d := crdt.NewDoc(cfReplica(2+h), hlc.NewClock(hw.Read, 0), crdt.Options{})
		sync(a, d)
		for range 1 + rng.IntN(3) {
			hw.Millis += int64(1 + rng.IntN(20))
			hostileEdit(t, rng, d)
		}
		extra = append(extra, d.ChangesSince(a.Version())...)
	}
	now := wall.Millis + 10_000
	pick := func() crdt.ID {
		if len(chars) == 0 || rng.IntN(6) == 0 {
			return crdt.ID{}
		}
		return chars[rng.IntN(len(chars))].id
	}
	for h := range 2 + rng.IntN(4) {
		r := cfReplica(8 + h)
		seq := uint64(1)
		for range 1 + rng.IntN(3) {
			now += 10
			c := crdt.Change{Replica: r, Seq: seq, Time: hlc.New(now, 0), Ops: []crdt.Op{{
				Kind: crdt.OpTextInsert, Field: "body", Text: cfRandText(rng, 1+rng.IntN(2)), Left: pick(), Right: pick()}}}
			extra = append(extra, c)
			for k := range c.Len() {
				chars = append(chars, char{crdt.ID{Replica: r, Seq: seq + k}, c.Time})
			}
			seq += c.Len()
		}
	}
	if len(chars) > 0 {
		// Stamped no later than the character named (its time, or a
		// millisecond earlier).
		for h := range 1 + rng.IntN(2) {
			ch := chars[rng.IntN(len(chars))]
			at := ch.t - hlc.Timestamp(rng.IntN(2))<<16
			op := crdt.Op{Kind: crdt.OpTextDelete, Field: "body", Target: ch.id, Count: 1}
			if rng.IntN(2) == 0 {
				op = crdt.Op{Kind: crdt.OpTextInsert, Field: "body", Text: cfRandText(rng, 1), Left: ch.id}
			}
			extra = append(extra, crdt.Change{Replica: cfReplica(14 + h), Seq: 1, Time: at, Ops: []crdt.Op{op}})
		}
	}
	rng.Shuffle(len(extra), func(i, j int) { extra[i], extra[j] = extra[j], extra[i] })
	hc := cfHostile{Name: fmt.Sprintf("hostile %d", seed), Seed: seed, Base: hex.EncodeToString(plainForm(t, codec.EncodeChanges(base)))}
	d := hostileReceiver(t, base)
	for _, c := range extra {
		hc.Steps = append(hc.Steps, deliver(t, d, []crdt.Change{c}))
	}
	batch := slices.Clone(extra)
	rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
	hc.Batch = deliver(t, hostileReceiver(t, base), batch)
	return hc
}

// TestConformanceHostile checks (or writes) hostile.json, and that it
// holds refusals of both kinds and deliveries that apply.
func TestConformanceHostile(t *testing.T) {
	var cases []cfHostile
	seen := map[string]int{}
	for seed := range uint64(40) {
		hc := genHostile(t, 2000+seed)
		for _, s := range append(slices.Clone(hc.Steps), hc.Batch) {
			seen[s.Outcome]++
		}
		cases = append(cases, hc)
	}
	if seen["ok"] == 0 || seen["origins"] == 0 || seen["backdated"] == 0 {
		t.Fatalf("outcomes %v: the corpus must hold every kind", seen)
	}
	writeOrCompare(t, "hostile.json", cases)
}
