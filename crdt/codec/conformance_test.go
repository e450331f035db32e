package codec_test

// The conformance corpus the TypeScript client (clients/ts) is tested
// against: change batches with the changes each decodes to, and scripted
// concurrent histories with every intermediate and final state and the
// bytes of each replica's whole history. TestConformanceCorpus fails when
// the committed corpus differs from what the Go code produces now;
// regenerate it with
//
//	go test ./crdt/codec -run 'TestConformance' -update-conformance
//
// and review the diff (a change there is a change of the CRDT's or the
// codec's behaviour that the TypeScript client must follow).

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

var updateConformance = flag.Bool("update-conformance", false, "rewrite testdata/conformance (the TypeScript client's corpus)")

const conformanceDir = "testdata/conformance"

type cfID struct {
	Replica string `json:"replica"`
	Seq     uint64 `json:"seq"`
}

type cfOp struct {
	Kind     string `json:"kind"`
	Field    string `json:"field"`
	Text     string `json:"text,omitempty"`
	Left     *cfID  `json:"left,omitempty"`
	Right    *cfID  `json:"right,omitempty"`
	Target   *cfID  `json:"target,omitempty"`
	Count    uint64 `json:"count,omitempty"`
	Backward bool   `json:"backward,omitempty"`
	Delta    string `json:"delta,omitempty"`
	Value    string `json:"value_hex,omitempty"`
}

type cfChange struct {
	Replica string `json:"replica"`
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`
	Ops     []cfOp `json:"ops"`
}

func cfIDOf(id crdt.ID) *cfID {
	if id.IsZero() {
		return nil
	}
	return &cfID{Replica: id.Replica.String(), Seq: id.Seq}
}

func cfChanges(cs []crdt.Change) []cfChange {
	out := make([]cfChange, len(cs))
	for i, c := range cs {
		out[i] = cfChange{Replica: c.Replica.String(), Seq: c.Seq, Time: strconv.FormatUint(uint64(c.Time), 10)}
		for _, op := range c.Ops {
			o := cfOp{Kind: op.Kind.String(), Field: op.Field}
			switch op.Kind {
			case crdt.OpTextInsert:
				o.Text, o.Left, o.Right = op.Text, cfIDOf(op.Left), cfIDOf(op.Right)
			case crdt.OpTextDelete:
				o.Target, o.Count, o.Backward = cfIDOf(op.Target), op.Count, op.Backward
			case crdt.OpCounterAdd:
				o.Delta = strconv.FormatInt(op.Delta, 10)
			case crdt.OpRegisterSet:
				o.Value = hex.EncodeToString(op.Value)
			}
			out[i].Ops = append(out[i].Ops, o)
		}
	}
	return out
}

// plainForm returns the uncompressed (format 1) form of an encoded batch.
func plainForm(t testing.TB, b []byte) []byte {
	if b[0] != codec.ChangesFormatDeflate {
		return b
	}
	n, k := binary.Uvarint(b[1:])
	raw, err := io.ReadAll(flate.NewReader(bytes.NewReader(b[1+k:])))
	if err != nil || uint64(len(raw)) != n {
		t.Fatalf("inflating a batch: %v (%d bytes, want %d)", err, len(raw), n)
	}
	return append([]byte{codec.ChangesFormat}, raw...)
}

type cfBatch struct {
	Name     string     `json:"name"`
	Hex      string     `json:"hex"`
	PlainHex string     `json:"plain_hex"`
	Changes  []cfChange `json:"changes"`
}

// cfState is a document's value, field by field.
type cfState struct {
	Texts     map[string]string `json:"texts"`
	Counters  map[string]string `json:"counters"`
	Registers map[string]string `json:"registers"`
	Pending   int               `json:"pending"`
}

func stateOf(d *crdt.Doc) cfState {
	s := cfState{Texts: map[string]string{}, Counters: map[string]string{}, Registers: map[string]string{}, Pending: d.Pending()}
	for _, f := range d.Fields() {
		switch f.Type {
		case crdt.FieldText:
			s.Texts[f.Name] = d.Text(f.Name)
		case crdt.FieldCounter:
			s.Counters[f.Name] = strconv.FormatInt(d.Counter(f.Name), 10)
		case crdt.FieldRegister:
			v, _ := d.Register(f.Name)
			s.Registers[f.Name] = hex.EncodeToString(v)
		}
	}
	return s
}

// cfStep is one step of a scripted history: a local transaction of
// replica R at wall time Wall, or a sync (To applies what From has and its
// version lacks, in reverse order if Reverse, or From's whole history if
// Full), after which To's state is recorded.
type cfStep struct {
	R       *int       `json:"r,omitempty"`
	Wall    int64      `json:"wall,omitempty"`
	Ops     [][]any    `json:"ops,omitempty"`
	Sync    []int      `json:"sync,omitempty"`
	Reverse bool       `json:"reverse,omitempty"`
	Full    bool       `json:"full,omitempty"`
	Batch   string     `json:"batch_hex,omitempty"` // plain encoding of what was sent
	State   *cfState   `json:"state,omitempty"`
	Applied []cfChange `json:"-"`
}

type cfHistory struct {
	Name     string   `json:"name"`
	Seed     uint64   `json:"seed"`
	Replicas []string `json:"replicas"`
	Steps    []cfStep `json:"steps"`
	Final    cfState  `json:"final"`
	History  []string `json:"history_sha256"` // per replica: sha256 of the plain encoding of ChangesSince(nil)
	Versions []string `json:"versions"`
}

func cfReplica(i int) crdt.ReplicaID {
	var r crdt.ReplicaID
	for k := range r {
		r[k] = byte(0x11*(i+1) + k)
	}
	return r
}

var cfAlphabet = []string{"a", "b", "c", "d", "e", " ", "é", "中", "😀", "\n", "x", "y", "z"}

func cfRandText(rng *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString(cfAlphabet[rng.IntN(len(cfAlphabet))])
	}
	return b.String()
}

// msgpack values for registers: a fixstr, a positive fixint, nil, an array.
func cfRandValue(rng *rand.Rand) []byte {
	switch rng.IntN(4) {
	case 0:
		s := cfRandText(rng, 1+rng.IntN(5))
		return append([]byte{0xa0 | byte(len(s))}, s...)
	case 1:
		return []byte{byte(rng.IntN(128))}
	case 2:
		return []byte{0xc0}
	}
	return []byte{0x92, 0x01, 0xa1, 'q'}
}

// genHistory runs a random history on n replicas and records it.
func genHistory(t *testing.T, name string, seed uint64, n, steps int, typing bool) cfHistory {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	walls := make([]*hlc.ManualWall, n)
	docs := make([]*crdt.Doc, n)
	h := cfHistory{Name: name, Seed: seed}
	for i := range docs {
		walls[i] = &hlc.ManualWall{Millis: 1_700_000_000_000}
		docs[i] = crdt.NewDoc(cfReplica(i), hlc.NewClock(walls[i].Read, 0), crdt.Options{})
		h.Replicas = append(h.Replicas, cfReplica(i).String())
	}
	sync := func(from, to int, reverse, full bool) {
		var cs []crdt.Change
		if full {
			cs = docs[from].ChangesSince(nil)
		} else {
			cs = docs[from].ChangesSince(docs[to].Version())
		}
		if len(cs) == 0 {
			return
		}
		b := codec.EncodeChanges(cs)
		dec, err := codec.DecodeChanges(b)
		if err != nil {
			t.Fatal(err)
		}
		if reverse {
			for i, j := 0, len(dec)-1; i < j; i, j = i+1, j-1 {
				dec[i], dec[j] = dec[j], dec[i]
			}
		}
		if err := docs[to].Apply(dec...); err != nil {
			t.Fatalf("%s: sync %d→%d: %v", name, from, to, err)
		}
		st := stateOf(docs[to])
		h.Steps = append(h.Steps, cfStep{Sync: []int{from, to}, Reverse: reverse, Full: full, Batch: hex.EncodeToString(plainForm(t, b)), State: &st})
	}
	for s := 0; s < steps; s++ {
		if rng.IntN(4) == 0 {
			from, to := rng.IntN(n), rng.IntN(n)
			if from != to {
				sync(from, to, rng.IntN(3) == 0, rng.IntN(8) == 0)
			}
			continue
		}
		r := rng.IntN(n)
		d := docs[r]
		switch rng.IntN(5) {
		case 0: // same millisecond: logical increments
		case 1:
			walls[r].Millis -= int64(rng.IntN(50)) // a clock that steps back
		default:
			walls[r].Millis += int64(1 + rng.IntN(400))
		}
		step := cfStep{R: &r, Wall: walls[r].Millis}
		tx := d.Begin()
		nops := 1 + rng.IntN(3)
		if typing {
			nops = 1
		}
		for k := 0; k < nops; k++ {
			field := "body"
			if !typing && rng.IntN(5) == 0 {
				field = "title"
			}
			l := d.TextLen(field)
			switch c := rng.IntN(10); {
			case c < 5 || l == 0:
				pos := rng.IntN(l + 1)
				if typing && l > 0 && rng.IntN(4) != 0 {
					pos = l - rng.IntN(min(l, 3)) // mostly at or near the end
				}
				txt := cfRandText(rng, 1+rng.IntN(4))
				if typing {
					txt = cfRandText(rng, 1)
				}
				if err := tx.Insert(field, pos, txt); err != nil {
					t.Fatal(err)
				}
				step.Ops = append(step.Ops, []any{"ins", field, pos, txt})
			case c < 8:
				pos := rng.IntN(l)
				cnt := 1 + rng.IntN(min(3, l-pos))
				if typing && rng.IntN(2) == 0 {
					pos, cnt = l-1, 1 // a backspace
				}
				if err := tx.Delete(field, pos, cnt); err != nil {
					t.Fatal(err)
				}
				step.Ops = append(step.Ops, []any{"del", field, pos, cnt})
			case c < 9:
				delta := int64(rng.IntN(11) - 5)
				if delta == 0 {
					delta = 1 << 60 // exercises deltas beyond 2^53
				}
				if err := tx.Add("likes", delta); err != nil {
					t.Fatal(err)
				}
				step.Ops = append(step.Ops, []any{"add", "likes", strconv.FormatInt(delta, 10)})
			default:
				v := cfRandValue(rng)
				if err := tx.Set("meta", v); err != nil {
					t.Fatal(err)
				}
				step.Ops = append(step.Ops, []any{"set", "meta", hex.EncodeToString(v)})
			}
		}
		tx.Commit()
		if len(step.Ops) > 0 {
			h.Steps = append(h.Steps, step)
		}
	}
	// Converge: everyone gets everything, in two rounds.
	for round := 0; round < 2; round++ {
		for a := 0; a < n; a++ {
			for b := 0; b < n; b++ {
				if a != b {
					sync(a, b, false, false)
				}
			}
		}
	}
	h.Final = stateOf(docs[0])
	for i, d := range docs {
		if got := stateOf(d); fmt.Sprint(got) != fmt.Sprint(h.Final) {
			t.Fatalf("%s: replica %d did not converge", name, i)
		}
		sum := sha256.Sum256(plainForm(t, codec.EncodeChanges(d.ChangesSince(nil))))
		h.History = append(h.History, hex.EncodeToString(sum[:]))
		h.Versions = append(h.Versions, d.Version().String())
	}
	return h
}

func conformanceBatches(t *testing.T) []cfBatch {
	var out []cfBatch
	add := func(name string, cs []crdt.Change) {
		b := codec.EncodeChanges(cs)
		dec, err := codec.DecodeChanges(b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cfBatch{Name: name, Hex: hex.EncodeToString(b), PlainHex: hex.EncodeToString(plainForm(t, b)), Changes: cfChanges(dec)})
	}
	a, o := cfReplica(0), cfReplica(1)
	t0 := hlc.New(1_763_900_000_000, 0)
	add("every op kind", []crdt.Change{
		{Replica: a, Seq: 1, Time: t0, Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "body", Text: "hi", Left: crdt.ID{Replica: o, Seq: 1}}}},
		{Replica: a, Seq: 3, Time: t0 + 1, Ops: []crdt.Op{
			{Kind: crdt.OpTextDelete, Field: "body", Target: crdt.ID{Replica: o, Seq: 1}, Count: 1},
			{Kind: crdt.OpCounterAdd, Field: "likes", Delta: -2},
			{Kind: crdt.OpRegisterSet, Field: "title", Value: []byte{0xa2, 'o', 'k'}},
		}},
	})
	add("outside the BMP, backward delete, large deltas", []crdt.Change{
		{Replica: a, Seq: 1, Time: t0, Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "body", Text: "a😀中é\n"}}},
		{Replica: o, Seq: 7, Time: t0 + 5<<16, Ops: []crdt.Op{
			{Kind: crdt.OpTextInsert, Field: "body", Text: "𝄞x", Left: crdt.ID{Replica: a, Seq: 2}, Right: crdt.ID{Replica: a, Seq: 3}},
			{Kind: crdt.OpTextDelete, Field: "body", Target: crdt.ID{Replica: a, Seq: 5}, Count: 3, Backward: true},
			{Kind: crdt.OpCounterAdd, Field: "n", Delta: 1<<62 + 3},
			{Kind: crdt.OpCounterAdd, Field: "n", Delta: -(1 << 63)},
		}},
		{Replica: a, Seq: 6, Time: t0 + 7<<16 + 3, Ops: []crdt.Op{{Kind: crdt.OpRegisterSet, Field: "ü", Value: []byte{0xcf, 1, 2, 3, 4, 5, 6, 7, 8}}}},
	})
	// Typing by two replicas, as ChangesSince returns a merge of them.
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	x := crdt.NewDoc(a, hlc.NewClock(wall.Read, 0), crdt.Options{})
	y := crdt.NewDoc(o, hlc.NewClock(wall.Read, 0), crdt.Options{})
	for i, ch := range "the quick brown fox" {
		wall.Millis += int64(i % 3)
		x.Begin().Insert("body", x.TextLen("body"), string(ch))
		y.Begin().Insert("body", 0, string(ch))
		if i%5 == 4 {
			tx := y.Begin()
			tx.Delete("body", 1, 2)
			tx.Commit()
		}
	}
	if err := x.Apply(y.ChangesSince(nil)...); err != nil {
		t.Fatal(err)
	}
	add("two typists merged", x.ChangesSince(nil))
	// Large enough to be compressed.
	big := crdt.NewDoc(a, hlc.NewClock(wall.Read, 0), crdt.Options{})
	tx := big.Begin()
	tx.Insert("body", 0, strings.Repeat("All work and no play makes Jack a dull boy. ", 200))
	tx.Commit()
	for i := 0; i < 50; i++ {
		wall.Millis++
		tx := big.Begin()
		tx.Insert("body", i*37, "ü")
		tx.Commit()
	}
	b := codec.EncodeChanges(big.ChangesSince(nil))
	if b[0] != codec.ChangesFormatDeflate {
		t.Fatal("the large batch was not compressed")
	}
	add("compressed", big.ChangesSince(nil))
	return out
}

// cfRefused is a batch every decoder must refuse as corrupt (Go:
// codec.ErrCorrupt; TS: CorruptError from inflateBatch or decodeChanges),
// with a phrase both implementations' error messages contain.
type cfRefused struct {
	Name  string `json:"name"`
	Hex   string `json:"hex"`
	Error string `json:"error_contains"`
}

// conformanceRefused derives refused batches from the valid ones: bytes
// after the end of a compressed batch's DEFLATE stream (Go's flate ignores
// them, Node's DecompressionStream too, Chromium's refuses them: the rule
// is that they make the batch corrupt), wrong raw lengths, a truncated
// stream, and a byte after the plain form's last column.
func conformanceRefused(t *testing.T) []cfRefused {
	var z, plain []byte
	for _, b := range conformanceBatches(t) {
		h, err := hex.DecodeString(b.Hex)
		if err != nil {
			t.Fatal(err)
		}
		if h[0] == codec.ChangesFormatDeflate && z == nil {
			z = h
		}
		if h[0] == codec.ChangesFormat && plain == nil {
			plain = h
		}
	}
	rawLen, k := binary.Uvarint(z[1:])
	stream := z[1+k:]
	withLen := func(n uint64, s []byte) []byte {
		return append(binary.AppendUvarint([]byte{codec.ChangesFormatDeflate}, n), s...)
	}
	cat := func(a []byte, b ...byte) []byte { return append(a[:len(a):len(a)], b...) }
	const after = "after the end of the DEFLATE stream"
	out := []cfRefused{
		{"compressed, a zero byte after the stream", hex.EncodeToString(cat(z, 0)), after},
		{"compressed, an empty DEFLATE stream after the stream", hex.EncodeToString(cat(z, 0x03, 0x00)), after},
		{"compressed, 7 bytes after the stream", hex.EncodeToString(cat(z, 1, 2, 3, 4, 5, 6, 7)), after},
		{"compressed, the stream twice", hex.EncodeToString(cat(z, stream...)), after},
		{"compressed, raw_len one short", hex.EncodeToString(withLen(rawLen-1, stream)), "header says"},
		{"compressed, raw_len one long", hex.EncodeToString(withLen(rawLen+1, stream)), "header says"},
		{"compressed, the stream's last byte missing", hex.EncodeToString(z[:len(z)-1]), "compressed batch"},
		{"plain, a byte after the last column", hex.EncodeToString(cat(plain, 0)), "trailing bytes"},
	}
	for _, r := range out {
		b, _ := hex.DecodeString(r.Hex)
		if _, err := codec.DecodeChanges(b); !errors.Is(err, codec.ErrCorrupt) || !strings.Contains(err.Error(), r.Error) {
			t.Errorf("refused batch %q: DecodeChanges gave %v, want ErrCorrupt containing %q", r.Name, err, r.Error)
		}
	}
	return out
}

// TestConformanceRefused checks (or writes) refused.json, the batches
// clients/ts/test/conformance.test.ts must refuse as Go does.
func TestConformanceRefused(t *testing.T) {
	writeOrCompare(t, "refused.json", conformanceRefused(t))
}

func writeOrCompare(t *testing.T, name string, v any) {
	got, err := json.MarshalIndent(v, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join(conformanceDir, name)
	if *updateConformance {
		if err := os.MkdirAll(conformanceDir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (regenerate with -update-conformance)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: the Go CRDT or codec now behaves differently; regenerate with -update-conformance, review the diff, and make clients/ts follow", path)
	}
}

// TestConformanceCorpus checks (or, with -update-conformance, writes) the
// corpus that clients/ts/test/conformance.test.ts replays.
func TestConformanceCorpus(t *testing.T) {
	writeOrCompare(t, "batches.json", conformanceBatches(t))
	var hs []cfHistory
	for i, c := range []struct {
		n, steps int
		typing   bool
	}{{2, 60, false}, {3, 120, false}, {3, 150, true}, {4, 200, false}, {2, 300, true}} {
		hs = append(hs, genHistory(t, fmt.Sprintf("random %d", i), uint64(1000+i), c.n, c.steps, c.typing))
	}
	writeOrCompare(t, "histories.json", hs)
}

// TestConformanceTraces checks (or writes) traces.json: what replaying
// every embedded editing trace gives. Long replays: skipped under -race,
// as TestTraceHistories is (the run without -race covers it).
func TestConformanceTraces(t *testing.T) {
	if codec.RaceEnabled && !*updateConformance {
		t.Skip("long replays; covered by the run without -race")
	}
	writeOrCompare(t, "traces.json", conformanceTraces(t))
}

// cfTrace is an editing trace (internal/traces) replayed by Go: the
// sha256 of its final text and of the plain encoding of the whole history
// the replay leaves (ChangesSince(nil)), and the sizes of that encoding.
type cfTrace struct {
	Name         string `json:"name"`
	Concurrent   bool   `json:"concurrent,omitempty"`
	EndSHA256    string `json:"end_sha256"`
	HistorySHA   string `json:"history_sha256"`
	PlainBytes   int    `json:"plain_bytes"`
	EncodedBytes int    `json:"encoded_bytes"`
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func traceRID(b byte) crdt.ReplicaID {
	var r crdt.ReplicaID
	r[0], r[15] = b, b
	return r
}

// conformanceTraces replays every embedded trace as crdt's trace tests do
// (sequential: one replica, one transaction per trace transaction at its
// recorded wall time; concurrent: one replica per agent forking and
// merging at exactly the versions its transaction's parents name).
func conformanceTraces(t *testing.T) []cfTrace {
	var out []cfTrace
	record := func(name string, concurrent bool, d *crdt.Doc, end string) {
		if got := d.Text("body"); got != end {
			t.Fatalf("%s: replay does not give the trace's end content", name)
		}
		enc := codec.EncodeChanges(d.ChangesSince(nil))
		plain := plainForm(t, enc)
		out = append(out, cfTrace{Name: name, Concurrent: concurrent, EndSHA256: sha([]byte(end)), HistorySHA: sha(plain), PlainBytes: len(plain), EncodedBytes: len(enc)})
	}
	for _, name := range traces.Sequential {
		tr, err := traces.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		wall := &hlc.ManualWall{}
		d := crdt.NewDoc(traceRID(1), hlc.NewClock(wall.Read, 0), crdt.Options{})
		if tr.StartContent != "" {
			tx := d.Begin()
			tx.Insert("body", 0, tr.StartContent)
			tx.Commit()
		}
		for i := range tr.Txns {
			wall.Millis = tr.Txns[i].WallMillis()
			tx := d.Begin()
			for _, p := range tr.Txns[i].Patches {
				if p.Del > 0 {
					if err := tx.Delete("body", p.Pos, p.Del); err != nil {
						t.Fatal(err)
					}
				}
				if p.Ins != "" {
					if err := tx.Insert("body", p.Pos, p.Ins); err != nil {
						t.Fatal(err)
					}
				}
			}
			tx.Commit()
		}
		record(name, false, d, tr.EndContent)
	}
	tr, err := traces.Load("concurrent/friendsforever.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	wall := &hlc.ManualWall{Millis: 1}
	newDoc := func(b byte) *crdt.Doc { return crdt.NewDoc(traceRID(b), hlc.NewClock(wall.Read, 0), crdt.Options{}) }
	all := newDoc(100)
	agents := make([]*crdt.Doc, tr.NumAgents)
	for a := range agents {
		agents[a] = newDoc(byte(a + 1))
	}
	versions := make([]crdt.VersionVector, len(tr.Txns))
	for i := range tr.Txns {
		txn := &tr.Txns[i]
		target := crdt.VersionVector{}
		for _, p := range txn.Parents {
			target.Merge(versions[p])
		}
		d := agents[txn.Agent]
		if !target.Covers(d.Version()) {
			d = newDoc(byte(txn.Agent + 1))
		}
		var need []crdt.Change
		for _, c := range all.ChangesSince(d.Version()) {
			if c.End() <= target[c.Replica] {
				need = append(need, c)
			}
		}
		if err := d.Apply(need...); err != nil {
			t.Fatalf("txn %d: %v", i, err)
		}
		before := d.Version()
		wall.Millis++
		tx := d.Begin()
		for _, p := range txn.Patches {
			if p.Del > 0 {
				if err := tx.Delete("body", p.Pos, p.Del); err != nil {
					t.Fatal(err)
				}
			}
			if p.Ins != "" {
				if err := tx.Insert("body", p.Pos, p.Ins); err != nil {
					t.Fatal(err)
				}
			}
		}
		tx.Commit()
		agents[txn.Agent] = d
		if err := all.Apply(d.ChangesSince(before)...); err != nil {
			t.Fatalf("txn %d: %v", i, err)
		}
		versions[i] = d.Version()
	}
	record("concurrent/friendsforever.json.gz", true, all, tr.EndContent)
	return out
}
