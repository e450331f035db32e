package client

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// receive hands OnChanges exactly what a message added: its changes when
// all are new, without the duplicates when some are not, and with the
// changes it released from the pending buffer.
func TestReceiveReportsExactlyWhatWasApplied(t *testing.T) {
	// No server listens: the document is driven by hand on connection 1.
	c, err := New(LocalOptions("ws://127.0.0.1:1/v1/ws"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var got []string
	d, err := c.Open("doc", DocOptions{OnChanges: func(_ *Document, chs []crdt.Change) {
		got = append(got, spans(chs))
	}})
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	if err := d.resetLocked(1); err != nil {
		t.Fatal(err)
	}
	d.mu.Unlock()

	remote := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	var edits [][]crdt.Change // edits[i]: the change of remote's i-th edit
	for _, s := range []string{"ab", "c", "d", "e"} {
		before := remote.Version()
		tx := remote.Begin()
		if err := tx.Insert("t", 0, s); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		edits = append(edits, remote.ChangesSince(before))
	}
	send := func(chs ...[]crdt.Change) {
		t.Helper()
		got = nil
		m := &syncproto.Changes{Doc: "doc", Changes: codec.EncodeChanges(slices.Concat(chs...))}
		if err := d.receive(1, m); err != nil {
			t.Fatal(err)
		}
	}
	want := func(w ...string) {
		t.Helper()
		if !slices.Equal(got, w) {
			t.Fatalf("OnChanges saw %q, want %q", got, w)
		}
	}

	send(edits[0])
	want("1-2")
	send(edits[0], edits[1]) // a duplicate, then something new
	want("3-3")
	// A local edit moves the document's own entry of the version.
	if err := d.Edit(func(tx *crdt.Tx, _ *crdt.Doc) error { return tx.Insert("t", 0, "z") }); err != nil {
		t.Fatal(err)
	}
	if s := d.Seq(); s != 1 {
		t.Fatalf("Seq after one local edit of one character = %d, want 1", s)
	}
	send(edits[3]) // its dependency is missing: held, nothing applied
	want()
	send(edits[2]) // releases the held change
	want("4-4 5-5")
	send(edits[3])
	want()
	if s, v := d.Seq(), d.Version()[c.Replica()]; s != v {
		t.Fatalf("Seq %d, Version says %d", s, v)
	}
	if s := d.Text("t"); len(s) != len("zedcab") {
		t.Fatalf("text %q after the remote edits (%q) and one local one", s, remote.Text("t"))
	}
}

// spans renders changes as seq ranges, sorted.
func spans(chs []crdt.Change) string {
	var out []string
	for _, ch := range chs {
		out = append(out, fmt.Sprintf("%d-%d", ch.Seq, ch.End()))
	}
	slices.Sort(out)
	s := ""
	for i, x := range out {
		if i > 0 {
			s += " "
		}
		s += x
	}
	return s
}
