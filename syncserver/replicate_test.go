package syncserver

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// fakeReplicator records what the server reports and answers AwaitPeers
// with a fixed status.
type fakeReplicator struct {
	mu       sync.Mutex
	applied  map[string]int // origin → changes
	owners   map[crdt.ReplicaID]string
	durable  map[string]crdt.VersionVector
	presence []syncproto.Message
	awaited  int
	answer   syncproto.Status
}

func newFakeReplicator(answer syncproto.Status) *fakeReplicator {
	return &fakeReplicator{applied: map[string]int{}, owners: map[crdt.ReplicaID]string{}, durable: map[string]crdt.VersionVector{}, answer: answer}
}

func (f *fakeReplicator) Applied(doc string, fresh []crdt.Change, encoded func() []codec.Chunk, origin string, owners []syncproto.Owner) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applied[origin] += len(fresh)
	for _, o := range owners {
		f.owners[o.Replica] = o.Principal
	}
}

func (f *fakeReplicator) Durable(doc string, v crdt.VersionVector) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.durable[doc] == nil {
		f.durable[doc] = crdt.VersionVector{}
	}
	f.durable[doc].Merge(v)
}

func (f *fakeReplicator) Presence(doc string, m syncproto.Message) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.presence = append(f.presence, m)
}

func (f *fakeReplicator) AwaitPeers(doc string, need crdt.VersionVector, done func(syncproto.Status, string)) {
	f.mu.Lock()
	f.awaited++
	st := f.answer
	f.mu.Unlock()
	done(st, "fake: "+st.String())
}

func (f *fakeReplicator) get(fn func(f *fakeReplicator) bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fn(f)
}

// TestReplicatorHooks: a client's change is reported as local, its
// durable version too, and its ack goes through AwaitPeers (a refusal
// there reaches the client); a peer's changes of another user's replica
// are applied without claiming it, fan out to local subscribers and are
// reported with their origin; PeerSync answers with exactly what the
// peer lacks.
func TestReplicatorHooks(t *testing.T) {
	ts := newTestServer(t, nil)
	rep := newFakeReplicator(syncproto.StatusOverloaded)
	ts.srv.SetReplicator(rep)

	alice := ts.dial(ts.token("alice"))
	alice.subscribe("d")
	a := alice.update("d", insert("t", 0, "hi"))
	if a.Status != syncproto.StatusOverloaded {
		t.Fatalf("ack with a refusing AwaitPeers: got %v, want overloaded", a.Status)
	}
	if !rep.get(func(f *fakeReplicator) bool { return f.applied[""] == 1 && f.awaited == 1 }) {
		t.Fatalf("replicator saw applied=%v awaited=%d", rep.applied, rep.awaited)
	}
	eventually(t, "durable version reported", func() bool {
		return rep.get(func(f *fakeReplicator) bool { return f.durable["d"].Covers(alice.doc("d").Version()) })
	})

	// A peer relays changes of a replica no one here has seen.
	other := crdt.ReplicaID(uuid.New())
	od := crdt.NewDoc(other, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := od.Begin()
	if err := tx.Insert("u", 0, "from n2"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	changes := od.ChangesSince(nil)
	acked := make(chan syncproto.Status, 1)
	if err := ts.srv.PeerUpdate(context.Background(), "d", "n2", changes, 10, func(st syncproto.Status, _ string) { acked <- st }); err != nil {
		t.Fatal(err)
	}
	if st := <-acked; st != syncproto.StatusOK {
		t.Fatalf("peer update: %v", st)
	}
	c := recvType[*syncproto.Changes](alice)
	alice.absorb(c)
	if got := alice.doc("d").Text("u"); got != "from n2" {
		t.Fatalf("subscriber got %q", got)
	}
	if !rep.get(func(f *fakeReplicator) bool { return f.applied["n2"] == 1 && f.awaited == 1 }) {
		t.Fatalf("peer change: applied=%v awaited=%d (a peer's update must not wait for peers)", rep.applied, rep.awaited)
	}
	// The relayed replica was not claimed by the peer: its owner may
	// still write with it.
	rep.mu.Lock()
	rep.answer = syncproto.StatusOK
	rep.mu.Unlock()
	bob := ts.dialAs(ts.token("bob"), other)
	bob.docs["d"] = od
	bob.sent["d"] = od.Version()
	bob.subscribe("d")
	if a := bob.update("d", insert("u", 0, "bob: ")); a.Status != syncproto.StatusOK {
		t.Fatalf("owner writing after a peer relayed its replica: %v %s", a.Status, a.Message)
	}

	// A peer relays new changes of that replica, now bob's here (bob also
	// writes through the peer's server): a peer is a trusted relay, so
	// they apply, and they neither take the replica from bob nor give it
	// to anyone else.
	before := od.Version()
	tx = od.Begin()
	if err := tx.Insert("u", 0, "via n2: "); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.PeerUpdate(context.Background(), "d", "n2", od.ChangesSince(before), 10, func(st syncproto.Status, _ string) { acked <- st }); err != nil {
		t.Fatal(err)
	}
	if st := <-acked; st != syncproto.StatusOK {
		t.Fatalf("peer relaying an owned replica: %v", st)
	}
	relayed := od.Version()
	mallory := ts.dialAs(ts.token("mallory"), other)
	mallory.docs["d"] = od
	mallory.sent["d"] = od.Version()
	mallory.subscribe("d")
	if a := mallory.update("d", insert("u", 0, "mallory: ")); a.Status != syncproto.StatusUnauthorized {
		t.Fatalf("another user writing with bob's replica after a peer relayed it: %v %s", a.Status, a.Message)
	}

	// PeerSync: exactly what a peer with alice's changes lacks.
	chunks, v, _, err := ts.srv.PeerSync(context.Background(), "d", alice.doc("d").Version(), 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, ch := range chunks {
		cs, err := codec.DecodeChanges(ch.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			if c.Replica == alice.replica {
				t.Fatalf("PeerSync sent back a change the peer has: %v", c.Replica)
			}
		}
		n += len(cs)
	}
	if n == 0 || !v.Covers(relayed) || v.Covers(od.Version()) {
		t.Fatalf("PeerSync: %d changes, version %v", n, v)
	}
}

// TestPeerPresence: a session on another server shows up on local
// subscribers, is replayed to newcomers and leaves; local presence is
// reported to the replicator.
func TestPeerPresence(t *testing.T) {
	ts := newTestServer(t, nil)
	rep := newFakeReplicator(syncproto.StatusOK)
	ts.srv.SetReplicator(rep)
	alice := ts.dial(ts.token("alice"))
	alice.subscribe("d")

	remote := &syncproto.Presence{Doc: "d", Session: "n2-s1", User: "carol", Name: "Carol", Color: "#abcdef", Clock: 1}
	ts.srv.PeerPresence("d", remote)
	p := recvType[*syncproto.Presence](alice)
	if p.Session != "n2-s1" || p.User != "carol" {
		t.Fatalf("remote presence arrived as %+v", p)
	}
	bob := ts.dial(ts.token("bob"))
	bob.send(&syncproto.Subscribe{Doc: "d"})
	if p := recvType[*syncproto.Presence](bob); p.Session != "n2-s1" {
		t.Fatalf("newcomer got %+v", p)
	}
	ts.srv.PeerPresence("d", &syncproto.PresenceLeave{Doc: "d", Session: "n2-s1"})
	if l := recvType[*syncproto.PresenceLeave](alice); l.Session != "n2-s1" {
		t.Fatalf("leave: %+v", l)
	}

	bob.send(&syncproto.Presence{Doc: "d", Clock: 1, Typing: true})
	eventually(t, "local presence reported", func() bool {
		return rep.get(func(f *fakeReplicator) bool {
			for _, m := range f.presence {
				if p, ok := m.(*syncproto.Presence); ok && p.User == "bob" {
					return true
				}
			}
			return false
		})
	})
}

// TestPeerOwners: a peer's claim for a replica without an owner here is
// adopted before the peer's changes of it apply, so another user cannot
// take that replica through this server while its owner still can; it is
// stored with the document; a contradicting claim keeps the local owner
// and is counted; claims travel out with local changes (Applied) and with
// PeerSync's answer.
func TestPeerOwners(t *testing.T) {
	ts := newTestServer(t, nil)
	rep := newFakeReplicator(syncproto.StatusOK)
	ts.srv.SetReplicator(rep)
	ctx := context.Background()

	// alice writes with replica R on another server; its claim comes first.
	R := crdt.ReplicaID(uuid.New())
	od := crdt.NewDoc(R, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := od.Begin()
	if err := tx.Insert("t", 0, "alice on n2;"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.PeerOwners(ctx, "d", "n2", []syncproto.Owner{{Replica: R, Principal: "alice"}}); err != nil {
		t.Fatal(err)
	}
	acked := make(chan syncproto.Status, 1)
	if err := ts.srv.PeerUpdate(ctx, "d", "n2", od.ChangesSince(nil), 10, func(st syncproto.Status, _ string) { acked <- st }); err != nil {
		t.Fatal(err)
	}
	if st := <-acked; st != syncproto.StatusOK {
		t.Fatalf("peer update: %v", st)
	}
	if got := ts.counter("weft_peer_owners_adopted_total"); got != 1 {
		t.Fatalf("adopted %v claims, want 1", got)
	}
	if o, err := ts.mem.Owners(ctx, "d"); err != nil || o[R] != "alice" {
		t.Fatalf("stored owners %v, %v", o, err)
	}

	mallory := ts.dialAs(ts.token("mallory"), R)
	mallory.subscribe("d")
	if a := mallory.update("d", insert("t", 0, "mallory as alice;")); a.Status != syncproto.StatusUnauthorized {
		t.Fatalf("mallory writing with alice's replica after the peer's claim: %v %s", a.Status, a.Message)
	}
	alice := ts.dialAs(ts.token("alice"), R)
	alice.subscribe("d")
	if a := alice.update("d", insert("t", 0, "alice here;")); a.Status != syncproto.StatusOK {
		t.Fatalf("alice writing with her replica after failing over: %v %s", a.Status, a.Message)
	}

	// A contradicting claim, and one for this server's own replica, change
	// nothing and are counted.
	if err := ts.srv.PeerOwners(ctx, "d", "n3", []syncproto.Owner{{Replica: R, Principal: "mallory"}, {Replica: ts.srv.opts.Replica, Principal: "mallory"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the conflicts to be counted", func() bool { return ts.counter("weft_peer_owner_conflicts_total") == 2 })
	if a := alice.update("d", insert("t", 0, "still alice;")); a.Status != syncproto.StatusOK {
		t.Fatalf("alice after a contradicting claim: %v %s", a.Status, a.Message)
	}

	// Out: alice's local write reported with her claim, PeerSync with it.
	if !rep.get(func(f *fakeReplicator) bool { return f.owners[R] == "alice" }) {
		t.Fatalf("Applied reported owners %v", rep.owners)
	}
	_, _, owners, err := ts.srv.PeerSync(ctx, "d", nil, 1<<16)
	if err != nil {
		t.Fatal(err)
	}
	if len(owners) != 1 || owners[0] != (syncproto.Owner{Replica: R, Principal: "alice"}) {
		t.Fatalf("PeerSync's owners: %v", owners)
	}
	if _, _, owners, _ := ts.srv.PeerSync(ctx, "d", alice.doc("d").Version(), 1<<16); len(owners) != 0 {
		t.Fatalf("PeerSync with nothing to send gave owners %v", owners)
	}

	// Stored: a server restarted on the store still refuses mallory.
	restarted := newTestServer(t, func(o *Options) { o.Store = ts.mem })
	m2 := restarted.dialAs(restarted.token("mallory"), R)
	m2.subscribe("d")
	if a := m2.update("d", insert("t", 0, "mallory again;")); a.Status != syncproto.StatusUnauthorized {
		t.Fatalf("mallory after a restart: %v %s", a.Status, a.Message)
	}
}

// TestServerReplicaClaim: a server's own replica (its JSON edits) goes to
// peers claimed for ServerPrincipal, which no token may carry, so a peer
// that adopted the claim refuses that replica to everyone; a peer relaying
// that claim back on the server's own replica is no conflict.
func TestServerReplicaClaim(t *testing.T) {
	ts := newTestServer(t, nil)
	rep := newFakeReplicator(syncproto.StatusOK)
	ts.srv.SetReplicator(rep)
	ctx := context.Background()
	if code, out := postOps(t, ts, "d", ts.token("alice"), `[{"field":"t","insert":"by the server;","at":0}]`); code != 200 {
		t.Fatalf("POST ops: %d %v", code, out)
	}
	own := ts.srv.opts.Replica
	if !rep.get(func(f *fakeReplicator) bool { return f.owners[own] == ServerPrincipal }) {
		t.Fatalf("Applied reported owners %v for a JSON edit", rep.owners)
	}
	if err := ts.srv.PeerOwners(ctx, "d", "n2", []syncproto.Owner{{Replica: own, Principal: ServerPrincipal}}); err != nil {
		t.Fatal(err)
	}

	// Another server's replica, claimed for ServerPrincipal by its peer.
	S := crdt.ReplicaID(uuid.New())
	sd := crdt.NewDoc(S, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := sd.Begin()
	if err := tx.Insert("u", 0, "by n2;"); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := ts.srv.PeerOwners(ctx, "d", "n2", []syncproto.Owner{{Replica: S, Principal: ServerPrincipal}}); err != nil {
		t.Fatal(err)
	}
	acked := make(chan syncproto.Status, 1)
	if err := ts.srv.PeerUpdate(ctx, "d", "n2", sd.ChangesSince(nil), 10, func(st syncproto.Status, _ string) { acked <- st }); err != nil {
		t.Fatal(err)
	}
	if st := <-acked; st != syncproto.StatusOK {
		t.Fatalf("peer update: %v", st)
	}
	mallory := ts.dialAs(ts.token("mallory"), S)
	mallory.subscribe("d")
	if a := mallory.update("d", insert("u", 0, "mallory as n2;")); a.Status != syncproto.StatusUnauthorized {
		t.Fatalf("mallory writing with another server's replica: %v %s", a.Status, a.Message)
	}
	if c := ts.counter("weft_peer_owner_conflicts_total"); c != 0 {
		t.Fatalf("%v conflicts", c)
	}

	// No token may name the servers' principal.
	if _, err := MintToken(testSecret, Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: ServerPrincipal,
		ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("MintToken for %q: %v", ServerPrincipal, err)
	}
	forged, err := jwt.NewWithClaims(jwt.SigningMethodHS256, Claims{Docs: []Grant{{Pattern: "*", Access: "write"}},
		RegisteredClaims: jwt.RegisteredClaims{Subject: ServerPrincipal, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}).SignedString(testSecret)
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d", forged, nil); code != http.StatusUnauthorized {
		t.Fatalf("a token for %q got HTTP %d", ServerPrincipal, code)
	}
}
