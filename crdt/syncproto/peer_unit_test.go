package syncproto

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

type fixture struct {
	wall     hlc.ManualWall
	cdoc     *crdt.Doc
	sdoc     *crdt.Doc
	cli, srv *Peer
}

// newFixture returns a synced client/server pair; the server refuses
// timestamps more than 1 s ahead of its wall clock.
func newFixture(t *testing.T) *fixture {
	f := &fixture{wall: hlc.ManualWall{Millis: 1_763_000_000_000}}
	f.cdoc = crdt.NewDoc(rid(1), hlc.NewClock(f.wall.Read, 0), crdt.Options{})
	f.sdoc = crdt.NewDoc(rid(9), hlc.NewClock(f.wall.Read, time.Second), crdt.Options{MaxPending: 1})
	var err error
	if f.cli, err = NewPeer(f.cdoc, "d", Options{Role: RoleClient}); err != nil {
		t.Fatal(err)
	}
	if f.srv, err = NewPeer(f.sdoc, "d", Options{Role: RoleServer}); err != nil {
		t.Fatal(err)
	}
	f.exchange(t, f.cli.Subscribe()...)
	return f
}

// exchange delivers m client→server and the replies back and forth until
// quiet, and returns every message the server sent.
func (f *fixture) exchange(t *testing.T, ms ...Message) []Message {
	t.Helper()
	var fromServer []Message
	toServer := ms
	for round := 0; len(toServer) > 0; round++ {
		if round > 20 {
			t.Fatal("no quiescence")
		}
		var next []Message
		for _, m := range toServer {
			out, err := f.srv.Receive(m)
			if err != nil {
				t.Fatalf("server: %v", err)
			}
			for _, r := range out {
				fromServer = append(fromServer, r)
				back, err := f.cli.Receive(r)
				if err != nil {
					t.Fatalf("client: %v", err)
				}
				next = append(next, back...)
			}
		}
		toServer = next
	}
	return fromServer
}

func (f *fixture) edit(t *testing.T, text string) {
	t.Helper()
	tx := f.cdoc.Begin()
	if err := tx.Insert("body", 0, text); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestClockSkewHaltsAndResumes(t *testing.T) {
	f := newFixture(t)
	f.wall.Millis += 5000 // only the client's view: both read f.wall...
	f.edit(t, "future")
	f.wall.Millis -= 5000 // ...so move it back before the server checks
	out := f.cli.Outgoing()
	if len(out) != 1 {
		t.Fatalf("outgoing %d messages", len(out))
	}
	replies := f.exchange(t, out[0])
	if ack := replies[0].(*Ack); ack.Status != StatusClockSkew || !strings.Contains(ack.Message, "ahead") {
		t.Fatalf("ack %+v, want clock_skew", ack)
	}
	if f.sdoc.Text("body") != "" {
		t.Fatal("server applied a refused batch")
	}
	st, _, halted := f.cli.Halted()
	if !halted || st != StatusClockSkew || f.cli.Saved() {
		t.Fatalf("client halted=%t status=%s saved=%t", halted, st, f.cli.Saved())
	}
	if out := f.cli.Outgoing(); len(out) != 0 {
		t.Fatalf("halted client still sends %v", out)
	}
	// Time catches up; the client resumes and the batch goes through.
	f.wall.Millis += 5000
	f.exchange(t, f.cli.Resume()...)
	if f.sdoc.Text("body") != "future" || !f.cli.Saved() {
		t.Fatalf("after resume: server %q saved=%t", f.sdoc.Text("body"), f.cli.Saved())
	}
}

func TestRetryableAckRewinds(t *testing.T) {
	f := newFixture(t)
	f.edit(t, "x")
	out := f.cli.Outgoing()
	u := out[0].(*Update)
	if _, err := f.cli.Receive(&Ack{Doc: "d", Batch: u.Batch, Status: StatusRateLimited}); err != nil {
		t.Fatal(err)
	}
	if _, _, halted := f.cli.Halted(); halted {
		t.Fatal("rate_limited halted the client")
	}
	again := f.cli.Outgoing()
	if len(again) != 1 || again[0].(*Update).Batch == u.Batch {
		t.Fatalf("retry: %v", again)
	}
	f.exchange(t, again[0])
	if !f.cli.Saved() {
		t.Fatal("not saved after the retry was acked")
	}
}

func TestServerAckStatuses(t *testing.T) {
	f := newFixture(t)
	// Undecodable changes.
	out, err := f.srv.Receive(&Update{Doc: "d", Batch: 7, Changes: []byte{1, 2, 3}})
	if err != nil || out[0].(*Ack).Status != StatusInvalid {
		t.Fatalf("garbage: %v %v", out, err)
	}
	// A change that references an id nobody has... is held (missing deps).
	other := crdt.NewDoc(rid(5), hlc.NewClock(f.wall.Read, 0), crdt.Options{})
	tx := other.Begin()
	_ = tx.Insert("body", 0, "ab")
	_ = tx.Commit()
	tx = other.Begin()
	_ = tx.Insert("body", 1, "c")
	_ = tx.Commit()
	chs := other.ChangesSince(nil)
	out, err = f.srv.Receive(&Update{Doc: "d", Batch: 8, Changes: codec.EncodeChanges(chs[1:])})
	if err != nil || out[0].(*Ack).Status != StatusMissingDeps {
		t.Fatalf("missing deps: %v %v", out, err)
	}
	// The pending buffer (1 here) is full now.
	tx = other.Begin()
	_ = tx.Insert("body", 0, "z")
	_ = tx.Commit()
	chs = other.ChangesSince(nil)
	out, err = f.srv.Receive(&Update{Doc: "d", Batch: 9, Changes: codec.EncodeChanges(chs[2:])})
	if err != nil || out[0].(*Ack).Status != StatusPendingFull {
		t.Fatalf("pending full: %v %v", out, err)
	}
	// A client told missing_deps resubscribes.
	f.edit(t, "q")
	u := f.cli.Outgoing()[0].(*Update)
	back, err := f.cli.Receive(&Ack{Doc: "d", Batch: u.Batch, Status: StatusMissingDeps})
	if err != nil || len(back) != 1 || back[0].Type() != TypeSubscribe {
		t.Fatalf("client on missing_deps: %v %v", back, err)
	}
}

func TestReceiveUnexpected(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		p *Peer
		m Message
	}{
		{f.cli, &Subscribe{Doc: "d"}},
		{f.cli, &Update{Doc: "d"}},
		{f.srv, &Ack{Doc: "d"}},
		{f.srv, &Changes{Doc: "other"}},
		{f.srv, &Presence{Doc: "d"}},
		{f.srv, &Ping{}},
	}
	for _, c := range cases {
		if _, err := c.p.Receive(c.m); !errors.Is(err, ErrUnexpected) {
			t.Errorf("%T to %s: %v, want ErrUnexpected", c.m, c.p.opts.Role, err)
		}
	}
	// Corrupt changes from the server are an error, the document untouched.
	before := f.cdoc.Version()
	if _, err := f.cli.Receive(&Changes{Doc: "d", Changes: []byte{1, 0xff}}); !errors.Is(err, codec.ErrCorrupt) {
		t.Fatalf("corrupt changes: %v", err)
	}
	if !f.cdoc.Version().Equal(before) {
		t.Fatal("document changed")
	}
}

func TestNewPeerValidates(t *testing.T) {
	_, err := NewPeer(nil, "", Options{Role: 7, MaxOpsPerMessage: -1, MaxBytesPerMessage: -1})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"Role", "MaxOpsPerMessage", "MaxBytesPerMessage", "nil Doc", "document id"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not report %s", err, want)
		}
	}
}

func TestStatusFor(t *testing.T) {
	cases := map[error]Status{
		nil:                        StatusOK,
		hlc.ErrClockOffset:         StatusClockSkew,
		crdt.ErrPendingFull:        StatusPendingFull,
		crdt.ErrInvalidChange:      StatusInvalid,
		codec.ErrCorrupt:           StatusInvalid,
		errors.New("disk on fire"): StatusInternal,
	}
	for err, want := range cases {
		if got := StatusFor(err); got != want {
			t.Errorf("StatusFor(%v) = %s, want %s", err, got, want)
		}
	}
}

func TestOutgoingRespectsByteLimit(t *testing.T) {
	f := newFixture(t)
	p, err := NewPeer(f.cdoc, "d", Options{Role: RoleClient, MaxBytesPerMessage: 120})
	if err != nil {
		t.Fatal(err)
	}
	f.cli = p
	f.exchange(t, f.cli.Subscribe()...)
	for i := 0; i < 40; i++ {
		f.edit(t, strings.Repeat("x", 1+i%7))
	}
	out := f.cli.Outgoing()
	if len(out) < 3 {
		t.Fatalf("%d messages for 40 changes under a 120-byte limit", len(out))
	}
	for _, m := range out {
		u := m.(*Update)
		chs, err := codec.DecodeChanges(u.Changes)
		if err != nil {
			t.Fatal(err)
		}
		if len(u.Changes) > 120 && len(chs) > 1 {
			t.Fatalf("batch of %d changes in %d bytes", len(chs), len(u.Changes))
		}
		for _, r := range f.exchange(t, m) {
			if a, ok := r.(*Ack); ok && a.Status != StatusOK {
				t.Fatalf("ack %+v", a)
			}
		}
	}
	if !f.cli.Saved() || f.sdoc.Text("body") != f.cdoc.Text("body") {
		t.Fatalf("saved=%t, server %d runes, client %d", f.cli.Saved(), f.sdoc.TextLen("body"), f.cdoc.TextLen("body"))
	}
}

// lagging is a server document whose store has not caught up: durable is
// what it reports as on disk.
type lagging struct {
	*crdt.Doc
	durable crdt.VersionVector
}

func (l *lagging) DurableVersion() crdt.VersionVector { return l.durable.Clone() }

// A server-role Peer answers subscribe with the durable version, so a
// client that resubscribes while its change is applied but not durable is
// not saved, and resends the change.
func TestSyncCarriesTheDurableVersion(t *testing.T) {
	f := newFixture(t)
	ld := &lagging{Doc: f.sdoc, durable: f.sdoc.Version()}
	srv, err := NewPeer(ld, "d", Options{Role: RoleServer})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	f.edit(t, "x")
	out := f.cli.Outgoing()
	if len(out) != 1 {
		t.Fatalf("outgoing %v", out)
	}
	if _, err := f.srv.Receive(out[0]); err != nil { // applied; the ack is lost with the connection
		t.Fatal(err)
	}
	f.cli.Reset()
	replies, err := f.srv.Receive(f.cli.Subscribe()[0])
	if err != nil {
		t.Fatal(err)
	}
	var resent []Message
	for _, r := range replies {
		if s, ok := r.(*Sync); ok && s.Version[rid(1)] != 0 {
			t.Fatalf("sync version %v holds the client's change that is not durable", s.Version)
		}
		back, err := f.cli.Receive(r)
		if err != nil {
			t.Fatal(err)
		}
		resent = append(resent, back...)
	}
	if f.cli.Saved() {
		t.Fatal("client saved after a sync that does not hold its change durably")
	}
	if len(resent) != 1 {
		t.Fatalf("client resent %d messages, want its update", len(resent))
	}
	ld.durable = f.sdoc.Version()
	f.exchange(t, resent[0])
	if !f.cli.Saved() {
		t.Fatal("client not saved after the durable ack")
	}
}

// A server may echo a client's own changes back before they are durable;
// the echo confirms nothing: only the batch's ok ack does.
func TestEchoOfOwnChangesConfirmsNothing(t *testing.T) {
	f := newFixture(t)
	f.edit(t, "x")
	out := f.cli.Outgoing()
	if len(out) != 1 {
		t.Fatalf("outgoing %v", out)
	}
	u := out[0].(*Update)
	if _, err := f.srv.Receive(u); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli.Receive(&Changes{Doc: "d", Changes: u.Changes}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cli.Receive(&Ack{Doc: "d", Batch: u.Batch, Status: StatusOverloaded}); err != nil {
		t.Fatal(err)
	}
	if f.cli.Saved() {
		t.Fatal("saved after an echo and a refused ack")
	}
	again := f.cli.Outgoing()
	if len(again) != 1 {
		t.Fatalf("after the refusal the client sends %d messages, want the batch again", len(again))
	}
	f.exchange(t, again[0])
	if !f.cli.Saved() {
		t.Fatal("not saved after the ok ack")
	}
}
