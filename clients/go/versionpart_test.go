package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/syncserver"

	client "github.com/weftsync/weft/clients/go"
)

// A sync whose version is too large for one frame arrives as version_part
// messages and a sync with the last part (PROTOCOL §4). The server's
// version is durable in every part: when the client's own entry travels
// in a version_part, the edits it covers are saved, though no ack for
// them ever arrives. Here the ack is lost (the connection is cut while the
// write is on its way to disk), the write completes while the client is
// away, and the client's replica sorts first, so its entry is in the
// first version_part, not in the sync.
func TestOwnEntryInVersionPartIsSaved(t *testing.T) {
	const others = 3000
	hs := newHeldStore()
	ts := startServer(t, func(o *syncserver.Options) {
		o.Store = hs
		o.MaxFrameBytes = 32 << 10 // versions split at 16 KiB: about 800 replicas a part
	})
	t.Cleanup(hs.release)
	// A document others replicas have written to, one character each.
	var chs []crdt.Change
	for i := range others {
		var r crdt.ReplicaID
		r[0], r[1], r[2] = 0x80, byte(i>>8), byte(i)
		d := crdt.NewDoc(r, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		tx := d.Begin()
		if err := tx.Set("r", []byte{0xc0}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		chs = append(chs, d.ChangesSince(nil)...)
	}
	if _, err := hs.Append(context.Background(), "doc/many", codec.EncodeChanges(chs)); err != nil {
		t.Fatal(err)
	}

	px := startProxy(t, ts.Addr)
	var first crdt.ReplicaID
	first[15] = 1 // before every 0x80… replica in replica order
	c := newClient(t, px.URL(), func(o *client.Options) { o.Replica = first })
	w := open(t, c, "doc/many")
	waitUntil(t, 10*time.Second, "synced", w.Synced, w)
	if got := len(w.Version()); got != others {
		t.Fatalf("client holds %d replicas after the split sync, want %d", got, others)
	}

	hs.hold()
	edit(t, w, func(tx *crdt.Tx, _ *crdt.Doc) error { return tx.Insert("body", 0, "mine") })
	select {
	case <-hs.entered:
	case <-ctxT(t, 5*time.Second).Done():
		t.Fatal("the store never saw the write")
	}
	px.setDown(true)
	waitUntil(t, 5*time.Second, "cut noticed", func() bool { return !c.Connected() })
	if w.Saved() {
		t.Fatal("saved before any disk holds the edit")
	}
	hs.release()
	waitUntil(t, 5*time.Second, "write on disk", func() bool {
		return storedVersion(t, hs, "doc/many")[first] > 0
	})
	px.setDown(false)
	if err := w.WaitSaved(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("the server's split sync holds the edit, but: %v", err)
	}
}

// storedVersion is the version of what st holds of doc (its snapshot, if
// the server compacted, and the batches after it).
func storedVersion(t *testing.T, st syncserver.Store, doc string) crdt.VersionVector {
	t.Helper()
	snap, batches, err := st.Load(context.Background(), doc)
	if err != nil {
		t.Fatal(err)
	}
	v := crdt.VersionVector{}
	if snap != nil {
		d, err := codec.DecodeSnapshot(snap, crdt.ReplicaID{0xff}, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		v = d.Version()
	}
	for _, b := range batches {
		cs, err := codec.DecodeChanges(b)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if e := c.End(); e > v[c.Replica] {
				v[c.Replica] = e
			}
		}
	}
	return v
}
