package codec_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

func snapReplica(b byte) crdt.ReplicaID { return crdt.ReplicaID{b, 15: b} }

func snapClock() *hlc.Clock { return hlc.NewClock((&hlc.ManualWall{Millis: 1e12}).Read, 0) }

// snapDocs builds two replicas that edited all field types concurrently and
// merged, so snapshots hold tombstones, several replicas and split runs.
func snapDocs(t testing.TB, seed uint64) *crdt.Doc {
	rng := rand.New(rand.NewPCG(seed, 3))
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	a := crdt.NewDoc(snapReplica(1), hlc.NewClock(wall.Read, 0), crdt.Options{})
	b := crdt.NewDoc(snapReplica(2), hlc.NewClock(wall.Read, 0), crdt.Options{})
	for i := 0; i < 200; i++ {
		d := a
		if rng.IntN(2) == 0 {
			d = b
		}
		wall.Millis += int64(rng.IntN(3))
		tx := d.Begin()
		var err error
		switch x := rng.IntN(10); {
		case x < 5:
			err = tx.Insert("body", rng.IntN(d.TextLen("body")+1), []string{"a", "bc", "é", "😀x"}[rng.IntN(4)])
		case x < 7 && d.TextLen("body") > 0:
			p := rng.IntN(d.TextLen("body"))
			err = tx.Delete("body", p, 1+rng.IntN(min(3, d.TextLen("body")-p)))
		case x < 8:
			err = tx.Add("likes", int64(rng.IntN(5)-2)|1)
		default:
			err = tx.Set("title", []byte{0xa2, 'h', byte('a' + rng.IntN(26))})
		}
		if err != nil {
			t.Fatal(err)
		}
		tx.Commit()
		if rng.IntN(10) == 0 {
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
	return a
}

func describe(d *crdt.Doc) string {
	return d.Describe() + fmt.Sprintf("version %v\n", d.Version())
}

func TestSnapshotRoundTrip(t *testing.T) {
	for seed := uint64(0); seed < 30; seed++ {
		a := snapDocs(t, seed)
		data := codec.EncodeSnapshot(a)
		if again := codec.EncodeSnapshot(a); string(again) != string(data) {
			t.Fatal("snapshot encoding is not deterministic")
		}
		for _, as := range []crdt.ReplicaID{snapReplica(1), snapReplica(7)} {
			d, err := codec.DecodeSnapshot(data, as, snapClock(), crdt.Options{})
			if err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
			if describe(d) != describe(a) {
				t.Fatalf("seed %d: decoded differs:\n%s\nwant\n%s", seed, describe(d), describe(a))
			}
			// The loaded replica has the whole history: a fresh replica
			// syncing from it ends up equal too, and it can go on editing.
			e := crdt.NewDoc(snapReplica(9), snapClock(), crdt.Options{})
			if err := e.Apply(d.ChangesSince(nil)...); err != nil {
				t.Fatal(err)
			}
			if describe(e) != describe(a) {
				t.Fatalf("seed %d: history from snapshot differs", seed)
			}
			tx := d.Begin()
			if err := tx.Insert("body", 0, "Z"); err != nil {
				t.Fatal(err)
			}
			tx.Commit()
			if err := a.Apply(d.ChangesSince(a.Version())...); err != nil {
				t.Fatal(err)
			}
			if a.Text("body") != d.Text("body") {
				t.Fatal("edit after load does not merge back")
			}
			a = snapDocs(t, seed) // undo the merge for the next replica id
		}
	}
}

func TestSnapshotHostile(t *testing.T) {
	data := codec.EncodeSnapshot(snapDocs(t, 1))
	rng := rand.New(rand.NewPCG(5, 5))
	check := func(b []byte) {
		defer func() {
			if p := recover(); p != nil {
				t.Fatalf("panic on hostile snapshot: %v", p)
			}
		}()
		d, err := codec.DecodeSnapshot(b, snapReplica(3), snapClock(), crdt.Options{})
		if err == nil {
			_ = describe(d) // must be internally consistent
			return
		}
		if !errors.Is(err, codec.ErrSnapshot) {
			t.Fatalf("error does not wrap ErrSnapshot: %v", err)
		}
	}
	for n := 0; n < len(data); n += 1 + n/16 {
		check(data[:n])
	}
	for i := 0; i < 2000; i++ {
		b := append([]byte(nil), data...)
		for k := 1 + rng.IntN(3); k > 0; k-- {
			b[rng.IntN(len(b))] ^= byte(1 << rng.IntN(8))
		}
		check(b)
	}
	// A crafted State with bad references is refused, not trusted.
	s := snapDocs(t, 2).ExportState()
	for i := range s.Logs[0].Spans {
		if s.Logs[0].Spans[i].Kind == crdt.OpTextDelete {
			s.Logs[0].Spans[i].A.Seq = 1 << 30
			break
		}
	}
	check(codec.EncodeState(s))
	if _, err := codec.DecodeSnapshot(codec.EncodeState(s), snapReplica(3), snapClock(), crdt.Options{}); err == nil {
		t.Fatal("snapshot with a dangling delete target accepted")
	}
}

func FuzzDecodeSnapshot(f *testing.F) {
	f.Add(codec.EncodeSnapshot(snapDocs(f, 3)))
	f.Add(codec.EncodeSnapshot(crdt.NewDoc(snapReplica(1), snapClock(), crdt.Options{})))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := codec.DecodeSnapshot(b, snapReplica(3), snapClock(), crdt.Options{})
		if err != nil {
			if !errors.Is(err, codec.ErrSnapshot) {
				t.Fatalf("error does not wrap ErrSnapshot: %v", err)
			}
			return
		}
		// Whatever loads must work: read it, edit it, re-encode it.
		_ = describe(d)
		tx := d.Begin()
		if err := tx.Insert("body", d.TextLen("body"), "x"); err != nil {
			t.Fatal(err)
		}
		tx.Commit()
		if _, err := codec.DecodeSnapshot(codec.EncodeSnapshot(d), snapReplica(4), snapClock(), crdt.Options{}); err != nil {
			t.Fatalf("re-encoded snapshot does not load: %v", err)
		}
	})
}

// TestWriteSnapshotSeeds keeps the committed fuzz seed corpus in step with
// the format: run with WEFT_WRITE_SEEDS=1 after a format change.
func TestWriteSnapshotSeeds(t *testing.T) {
	if os.Getenv("WEFT_WRITE_SEEDS") == "" {
		t.Skip("set WEFT_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzDecodeSnapshot seeds")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeSnapshot")
	os.MkdirAll(dir, 0o755)
	for seed := uint64(0); seed < 4; seed++ {
		data := codec.EncodeSnapshot(snapDocs(t, seed))
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%d", seed)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
