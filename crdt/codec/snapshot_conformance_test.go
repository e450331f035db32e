package codec_test

// Snapshots in the conformance corpus (see conformance_test.go): for each
// document, the snapshot Go encodes, the value it decodes to, and a batch
// of changes made after it (by a replica that loaded the snapshot) with the
// value the document has once they are applied. clients/ts must decode
// each snapshot to exactly that value and then accept the later changes.
// Regenerated with the rest of the corpus:
//
//	go test ./crdt/codec -run 'TestConformance' -update-conformance

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

type cfSnapshot struct {
	Name string `json:"name"`
	// Hex is the snapshot; File names it instead (a file next to
	// snapshots.json) when it is large.
	Hex  string `json:"hex,omitempty"`
	File string `json:"file,omitempty"`
	// State is the decoded value; for large texts TextSHA256 holds the
	// sha256 of each text instead.
	State      cfState           `json:"state"`
	TextSHA256 map[string]string `json:"text_sha256,omitempty"`
	Version    map[string]uint64 `json:"version"`
	// LaterHex is a plain batch of changes made after the snapshot; After
	// (or AfterTextSHA256) what the document is once they are applied.
	LaterHex        string            `json:"later_hex"`
	After           cfState           `json:"after"`
	AfterTextSHA256 map[string]string `json:"after_text_sha256,omitempty"`
}

func versionOf(d *crdt.Doc) map[string]uint64 {
	v := map[string]uint64{}
	for r, s := range d.Version() {
		v[r.String()] = s
	}
	return v
}

// hashTexts moves the texts of s into a map of their sha256.
func hashTexts(s *cfState) map[string]string {
	h := map[string]string{}
	for k, v := range s.Texts {
		h[k] = sha([]byte(v))
	}
	s.Texts = map[string]string{}
	return h
}

// snapshotCase snapshots d, loads the snapshot as replica later (in Go),
// lets edit change it, and records all of it.
func snapshotCase(t *testing.T, name string, d *crdt.Doc, later crdt.ReplicaID, wall *hlc.ManualWall, edit func(tx *crdt.Tx) error, large bool) (cfSnapshot, []byte) {
	t.Helper()
	snap := codec.EncodeSnapshot(d)
	e, err := codec.DecodeSnapshot(snap, later, hlc.NewClock(wall.Read, 0), crdt.Options{})
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c := cfSnapshot{Name: name, State: stateOf(e), Version: versionOf(e)}
	v := e.Version()
	wall.Millis += 1000
	tx := e.Begin()
	if err := edit(tx); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	c.LaterHex = hex.EncodeToString(plainForm(t, codec.EncodeChanges(e.ChangesSince(v))))
	c.After = stateOf(e)
	if large {
		c.TextSHA256 = hashTexts(&c.State)
		c.AfterTextSHA256 = hashTexts(&c.After)
		c.File = name + ".snapshot"
		return c, snap
	}
	c.Hex = hex.EncodeToString(snap)
	return c, nil
}

func conformanceSnapshots(t *testing.T) ([]cfSnapshot, map[string][]byte) {
	var out []cfSnapshot
	files := map[string][]byte{}
	add := func(c cfSnapshot, file []byte) {
		out = append(out, c)
		if file != nil {
			files[c.File] = file
		}
	}
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	newDoc := func(b byte) *crdt.Doc { return crdt.NewDoc(traceRID(b), hlc.NewClock(wall.Read, 0), crdt.Options{}) }
	commit := func(d *crdt.Doc, f func(tx *crdt.Tx) error) {
		wall.Millis += 7
		tx := d.Begin()
		if err := f(tx); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	sync := func(from, to *crdt.Doc) {
		if err := to.Apply(from.ChangesSince(to.Version())...); err != nil {
			t.Fatal(err)
		}
	}

	// Empty document.
	add(snapshotCase(t, "empty", newDoc(1), traceRID(2), wall, func(tx *crdt.Tx) error { return tx.Insert("body", 0, "hi") }, false))

	// Counters (including sums past int64), registers and text with
	// deletions, written by three replicas concurrently.
	a, b, c := newDoc(1), newDoc(2), newDoc(3)
	commit(a, func(tx *crdt.Tx) error {
		if err := tx.Insert("body", 0, "hello, wörld 🌍!"); err != nil {
			return err
		}
		if err := tx.Add("likes", 9_223_372_036_854_775_000); err != nil {
			return err
		}
		return tx.Set("title", []byte{0xa5, 'f', 'i', 'r', 's', 't'})
	})
	sync(a, b)
	sync(a, c)
	commit(b, func(tx *crdt.Tx) error {
		if err := tx.Delete("body", 5, 2); err != nil {
			return err
		}
		if err := tx.Insert("body", 5, " dear"); err != nil {
			return err
		}
		if err := tx.Add("likes", 1000); err != nil {
			return err
		}
		return tx.Set("title", []byte{0xa6, 's', 'e', 'c', 'o', 'n', 'd'})
	})
	commit(c, func(tx *crdt.Tx) error {
		if err := tx.Insert("body", 0, ">> "); err != nil {
			return err
		}
		if err := tx.Delete("body", 10, 5); err != nil {
			return err
		}
		if err := tx.Add("likes", -3); err != nil {
			return err
		}
		return tx.Add("down", -42)
	})
	for i := 0; i < 20; i++ {
		commit(a, func(tx *crdt.Tx) error { return tx.Insert("notes", i, string(rune('a'+i))) })
	}
	commit(a, func(tx *crdt.Tx) error { return tx.Delete("notes", 3, 10) })
	commit(a, func(tx *crdt.Tx) error { return tx.Insert("notes", 2, "ü🌍") })
	for i := 0; i < 5; i++ { // backspaces: a backward delete span
		commit(c, func(tx *crdt.Tx) error { return tx.Delete("body", 12-i, 1) })
	}
	sync(b, a)
	sync(c, a)
	sync(a, b)
	add(snapshotCase(t, "counters registers deletions", a, traceRID(4), wall, func(tx *crdt.Tx) error {
		if err := tx.Insert("body", 2, "[later]"); err != nil {
			return err
		}
		if err := tx.Delete("notes", 0, 2); err != nil {
			return err
		}
		if err := tx.Add("likes", 5000); err != nil {
			return err
		}
		return tx.Set("title", []byte{0xa5, 't', 'h', 'i', 'r', 'd'})
	}, false))
	// The same document exported by another replica (its own log first).
	add(snapshotCase(t, "exported by another replica", b, traceRID(1), wall, func(tx *crdt.Tx) error { return tx.Insert("body", 0, "A") }, false))

	// The automerge-paper trace with its whole history.
	tr, err := traces.Load("automerge-paper.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	tw := &hlc.ManualWall{}
	d := crdt.NewDoc(traceRID(1), hlc.NewClock(tw.Read, 0), crdt.Options{})
	for i := range tr.Txns {
		tw.Millis = tr.Txns[i].WallMillis()
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
	if d.Text("body") != tr.EndContent {
		t.Fatal("automerge-paper: replay does not give the end content")
	}
	add(snapshotCase(t, "automerge-paper", d, traceRID(2), tw, func(tx *crdt.Tx) error {
		if err := tx.Delete("body", 100, 50); err != nil {
			return err
		}
		return tx.Insert("body", 1000, "an edit after the snapshot")
	}, true))
	return out, files
}

// TestConformanceSnapshots checks (or writes) snapshots.json and the large
// snapshots it names.
func TestConformanceSnapshots(t *testing.T) {
	// Not skipped under -race (unlike TestConformanceTraces): one replay
	// of automerge-paper, so that make test's race run checks this file.
	cases, files := conformanceSnapshots(t)
	writeOrCompare(t, "snapshots.json", cases)
	for name, b := range files {
		path := filepath.Join(conformanceDir, name)
		if *updateConformance {
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (regenerate with -update-conformance)", err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("%s is stale; regenerate with -update-conformance", path)
		}
	}
}

// conformanceRefusedSnapshots derives snapshots every decoder must refuse
// from a valid one: the body must be exactly one zstd frame
// (docs/PROTOCOL.md, section 9). zstd decoders also decode a second frame
// and skip skippable ones; the TypeScript client refuses both, and Go
// must too, or a snapshot loads on one replica and not on another.
func conformanceRefusedSnapshots(t *testing.T) []cfRefused {
	data := codec.EncodeSnapshot(snapDocs(t, 1))
	var env []msgpack.RawMessage
	if err := msgpack.Unmarshal(data, &env); err != nil || len(env) != 4 {
		t.Fatalf("envelope: %v", err)
	}
	var body []byte
	if err := msgpack.Unmarshal(env[3], &body); err != nil {
		t.Fatalf("envelope body: %v", err)
	}
	envelope := func(body []byte) []byte {
		var b bytes.Buffer
		e := msgpack.NewEncoder(&b)
		e.EncodeArrayLen(4)
		b.Write(env[0])
		b.Write(env[1])
		b.Write(env[2]) // raw_len: the frames below hold as many bytes
		e.EncodeBytes(body)
		return b.Bytes()
	}
	// The envelope rebuilt around the same body is the snapshot.
	if !bytes.Equal(envelope(body), data) {
		t.Fatal("the rebuilt envelope differs")
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	plain, err := dec.DecodeAll(body, nil)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	half := len(plain) / 2
	cat := func(a []byte, b ...byte) []byte { return append(a[:len(a):len(a)], b...) }
	const notOne = "body is not exactly one zstd frame"
	out := []cfRefused{
		{"an empty zstd frame after the frame", hex.EncodeToString(envelope(cat(body, enc.EncodeAll(nil, nil)...))), notOne},
		{"a skippable frame after the frame", hex.EncodeToString(envelope(cat(body, 0x50, 0x2a, 0x4d, 0x18, 2, 0, 0, 0, 9, 9))), notOne},
		{"a zero byte after the frame", hex.EncodeToString(envelope(cat(body, 0))), notOne},
		// The TypeScript client refuses this one sooner: the first frame
		// declares half of raw_len.
		{"the body in two frames of half each", hex.EncodeToString(envelope(cat(enc.EncodeAll(plain[:half], nil), enc.EncodeAll(plain[half:], nil)...))), "bad snapshot"},
		{"a skippable frame before the frame", hex.EncodeToString(envelope(append([]byte{0x50, 0x2a, 0x4d, 0x18, 0, 0, 0, 0}, body...))), "body is not a zstd frame"},
		// A valid frame whose window (64 MiB) exceeds both raw_len and 8
		// MiB: the decoder would allocate it whatever the body holds.
		{"a 64 MiB window for a small body", hex.EncodeToString(envelope(bigWindow(t, plain))), "zstd window of 67108864 bytes"},
	}
	for _, r := range out {
		b, _ := hex.DecodeString(r.Hex)
		if _, err := codec.DecodeSnapshot(b, snapReplica(3), snapClock(), crdt.Options{}); !errors.Is(err, codec.ErrSnapshot) || !strings.Contains(err.Error(), r.Error) {
			t.Errorf("refused snapshot %q: %v, want ErrSnapshot containing %q", r.Name, err, r.Error)
		}
	}
	return out
}

// TestConformanceRefusedSnapshots checks (or writes)
// refused_snapshots.json, the snapshots clients/ts/test/snapshot.test.ts
// must refuse as Go does.
func TestConformanceRefusedSnapshots(t *testing.T) {
	writeOrCompare(t, "refused_snapshots.json", conformanceRefusedSnapshots(t))
}

// bigWindow encodes plain as one multi-segment frame and raises the
// window its header declares to 64 MiB (a decoder may use a larger window
// than the encoder did, so the frame stays valid).
func bigWindow(t *testing.T, plain []byte) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithSingleSegment(false))
	if err != nil {
		t.Fatal(err)
	}
	z := enc.EncodeAll(plain, nil)
	if z[4]&0x20 != 0 {
		t.Fatalf("frame header %x: a single segment", z[4:6])
	}
	z[5] = 0x80 // exponent 16: 2^(10+16)
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(1<<27))
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	if got, err := dec.DecodeAll(z, nil); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the frame with a 64 MiB window does not decode: %v", err)
	}
	return z
}
