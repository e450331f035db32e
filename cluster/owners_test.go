package cluster

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/syncserver"
)

// refusedUnauthorized fails the test unless err is the client's report of
// a batch refused with unauthorized.
func refusedUnauthorized(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: saved, want refused as unauthorized", what)
	}
	if !errors.Is(err, client.ErrRejected) || !strings.Contains(err.Error(), "unauthorized") {
		t.Fatalf("%s: %v, want refused as unauthorized", what, err)
	}
}

// holds reports whether tn holds changes of replica in doc.
func holds(tn *tnode, doc string, replica crdt.ReplicaID) bool {
	return tn.doc(doc).Version()[replica] > 0
}

// noMallory fails the test if any node holds text of mallory's.
func noMallory(t *testing.T, nodes []*tnode, doc string) {
	t.Helper()
	for i, tn := range nodes {
		if got := tn.doc(doc).Text("t"); strings.Contains(got, "mallory") {
			t.Fatalf("node %d holds mallory's text: %q", i+1, got)
		}
	}
}

// TestOwnershipAcrossNodes: alice writes through node 1; node 2 learns
// alice's claim on her replica with her changes, so mallory, writing with
// alice's replica id through node 2, is refused there and nothing of hers
// reaches node 1; alice, moving to node 2 with her replica, keeps writing.
// Anti-entropy is slowed to a minute: the live relay carries the claim.
func TestOwnershipAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, func(i int, o *Options) { o.AntiEntropyInterval = time.Minute })
	R := crdt.ReplicaID(uuid.New())
	alice := newTClientAs(t, nodes[0], "alice", R)
	alice.write("d", "t", "alice 1;")
	eventually(t, "node 2 to hold alice's change", func() bool { return holds(nodes[1], "d", R) })

	mallory := newTClientAs(t, nodes[1], "mallory", R)
	refusedUnauthorized(t, "mallory writing with alice's replica through node 2", mallory.syncedWrite("d", "t", "mallory;"))

	// alice's next change, the seq mallory tried to take, is hers on both.
	alice.write("d", "t", "alice 2;")
	if got := waitConverged(t, nodes, "d", "t"); got != "alice 1;alice 2;" {
		t.Fatalf("converged on %q", got)
	}
	noMallory(t, nodes, "d")
	if c := nodes[1].metric("weft_peer_owner_conflicts_total"); c != 0 {
		t.Fatalf("%v owner conflicts", c)
	}

	// alice fails over to node 2 and keeps writing with her replica.
	alice.c.Close()
	alice2 := newTClientAs(t, nodes[1], "alice", R)
	if err := alice2.syncedWrite("d", "t", "alice 3;"); err != nil {
		t.Fatalf("alice on node 2 with her replica: %v", err)
	}
	if got := waitConverged(t, nodes, "d", "t"); got != "alice 1;alice 2;alice 3;" {
		t.Fatalf("converged on %q", got)
	}
}

// TestOwnershipSurvivesRestart: node 2 keeps the claims it learned from
// node 1 in its store: restarted while node 1 is down (nobody to learn
// from again), it still refuses mallory with alice's replica id, and
// takes alice's next changes (the honest failover).
func TestOwnershipSurvivesRestart(t *testing.T) {
	// AckPeers 1 on node 1: alice's ok means node 2 holds her change
	// durably, and so her claim, which is stored before it. (Not on node
	// 2, which will have no peer to confirm alice's later change.)
	nodes := startCluster(t, 2, func(i int, o *Options) {
		if i == 0 {
			o.AckPeers = 1
		}
	})
	R := crdt.ReplicaID(uuid.New())
	alice := newTClientAs(t, nodes[0], "alice", R)
	alice.write("d", "t", "alice 1;")
	alice.c.Close()

	nodes[0].stop(false)
	nodes[1].restart()
	if !holds(nodes[1], "d", R) {
		t.Fatal("node 2 lost alice's acknowledged change")
	}
	mallory := newTClientAs(t, nodes[1], "mallory", R)
	refusedUnauthorized(t, "mallory with alice's replica through node 2 after its restart", mallory.syncedWrite("d", "t", "mallory;"))
	noMallory(t, nodes[1:], "d")

	alice2 := newTClientAs(t, nodes[1], "alice", R)
	if err := alice2.syncedWrite("d", "t", "alice 2;"); err != nil {
		t.Fatalf("alice on node 2 with her replica: %v", err)
	}
	if got := nodes[1].doc("d").Text("t"); got != "alice 1;alice 2;" {
		t.Fatalf("node 2 holds %q", got)
	}
}

// TestOwnershipByAntiEntropy: a node cut off while alice wrote never saw
// the live relay; the anti-entropy repair after the partition heals
// brings it alice's changes and her claim, so mallory is refused there.
func TestOwnershipByAntiEntropy(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	nodes[1].faults.Isolate(true)
	eventually(t, "node 1's link to node 2 to go down", func() bool { return nodes[0].alive() == 1 })
	R := crdt.ReplicaID(uuid.New())
	alice := newTClientAs(t, nodes[0], "alice", R)
	alice.write("d", "t", "alice 1;")
	if holds(nodes[1], "d", R) {
		t.Fatal("an isolated node got alice's change")
	}

	nodes[1].faults.Isolate(false)
	waitFormed(t, nodes)
	waitConverged(t, nodes, "d", "t")
	mallory := newTClientAs(t, nodes[1], "mallory", R)
	refusedUnauthorized(t, "mallory with alice's replica through node 2 after the repair", mallory.syncedWrite("d", "t", "mallory;"))
	if n := nodes[1].metric("weft_peer_owners_adopted_total"); n != 1 {
		t.Fatalf("node 2 adopted %v claims, want 1", n)
	}
	alice.write("d", "t", "alice 2;")
	if got := waitConverged(t, nodes, "d", "t"); got != "alice 1;alice 2;" {
		t.Fatalf("converged on %q", got)
	}
	noMallory(t, nodes, "d")
}

// TestPeerLinkOwners: on a raw peer link, a subscribe's answer opens with
// the claims on the replicas of the changes it carries; claims a peer
// sends before its updates are adopted (another user is then refused that
// replica), and a claim contradicting a local one is counted and changes
// nothing.
func TestPeerLinkOwners(t *testing.T) {
	nodes := startCluster(t, 1, nil)
	R := crdt.ReplicaID(uuid.New())
	alice := newTClientAs(t, nodes[0], "alice", R)
	alice.write("d", "t", "alice 1;")

	r, w := dialRaw(t, nodes[0].peer)
	if _, err := dialHandshake(r, w, testKey, "n-test"); err != nil {
		t.Fatal(err)
	}
	recv := func() syncproto.Message {
		t.Helper()
		m, err := readMsg(r, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}

	// The answer to a subscribe: the claims, then the changes.
	if err := writeMsg(w, &syncproto.Subscribe{Doc: "d", Version: crdt.VersionVector{}}); err != nil {
		t.Fatal(err)
	}
	o, ok := recv().(*syncproto.Owners)
	if !ok || o.Doc != "d" || len(o.Owners) != 1 || o.Owners[0] != (syncproto.Owner{Replica: R, Principal: "alice"}) {
		t.Fatalf("the subscribe's answer opened with %#v, want alice's claim", o)
	}
	for {
		if _, ok := recv().(*syncproto.Sync); ok {
			break
		}
	}

	// A peer's claim, then its changes of that replica (bob's, on the
	// peer's server).
	B := crdt.ReplicaID(uuid.New())
	bd := typed(t, B, "t", "bob 1;")
	if err := writeMsg(w, &syncproto.Owners{Doc: "e", Owners: []syncproto.Owner{{Replica: B, Principal: "bob"}}}); err != nil {
		t.Fatal(err)
	}
	if err := writeMsg(w, &syncproto.Update{Doc: "e", Batch: 1, Changes: codec.EncodeChanges(bd.ChangesSince(nil))}); err != nil {
		t.Fatal(err)
	}
	for {
		if a, ok := recv().(*syncproto.Ack); ok {
			if a.Status != syncproto.StatusOK {
				t.Fatalf("the peer's update: %v %s", a.Status, a.Message)
			}
			break
		}
	}
	mallory := newTClientAs(t, nodes[0], "mallory", B)
	refusedUnauthorized(t, "mallory with the replica a peer's claim gave bob", mallory.syncedWrite("e", "t", "mallory;"))

	// A contradicting claim: counted, alice keeps her replica.
	if err := writeMsg(w, &syncproto.Owners{Doc: "d", Owners: []syncproto.Owner{{Replica: R, Principal: "mallory"}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the conflict to be counted", func() bool { return nodes[0].metric("weft_peer_owner_conflicts_total") == 1 })
	alice.write("d", "t", "alice 2;")
	if got := nodes[0].metric("weft_peer_owners_adopted_total"); got != 1 {
		t.Fatalf("%v claims adopted, want 1 (bob's)", got)
	}
}

// TestPeerOwnersNotTaken: claims an acceptor cannot take (the document
// cannot load: the server is at its loaded-documents limit) are answered
// with error(overloaded), and the pusher's updates of that document are
// refused on that connection even once it could load, since they would
// apply without their claims; a new connection carries the claims again.
func TestPeerOwnersNotTaken(t *testing.T) {
	tn := &tnode{t: t, dir: t.TempDir(), key: testKey, gossip: "127.0.0.1:0", peer: "127.0.0.1:0", http: "127.0.0.1:0",
		faults: &Faults{}, smod: func(o *syncserver.Options) { o.MaxLoadedDocs, o.IdleTimeout = 1, 20*time.Millisecond }}
	tn.start()
	t.Cleanup(func() { tn.stop(true) })
	holder := newTClient(t, tn)
	a := holder.open("a")
	eventually(t, "a to sync", a.Synced)

	B := crdt.ReplicaID(uuid.New())
	bd := typed(t, B, "t", "bob 1;")
	claims := &syncproto.Owners{Doc: "b", Owners: []syncproto.Owner{{Replica: B, Principal: "bob"}}}
	changes := codec.EncodeChanges(bd.ChangesSince(nil))
	link := func() (send func(syncproto.Message), recv func() syncproto.Message) {
		conn, err := net.Dial("tcp", tn.peer)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conn.SetDeadline(time.Now().Add(waitFor))
		r, w := bufio.NewReader(conn), bufio.NewWriter(conn)
		if _, err := dialHandshake(r, w, testKey, "n-test"); err != nil {
			t.Fatal(err)
		}
		return func(m syncproto.Message) {
				t.Helper()
				if err := writeMsg(w, m); err != nil {
					t.Fatal(err)
				}
			}, func() syncproto.Message {
				t.Helper()
				m, err := readMsg(r, 1<<20)
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
	}
	ackOf := func(recv func() syncproto.Message) *syncproto.Ack {
		t.Helper()
		for {
			if a, ok := recv().(*syncproto.Ack); ok {
				return a
			}
		}
	}

	send, recv := link()
	send(claims)
	if e, ok := recv().(*syncproto.Error); !ok || e.Doc != "b" || e.Status != syncproto.StatusOverloaded {
		t.Fatalf("claims that could not be taken were answered %#v", e)
	}
	send(&syncproto.Update{Doc: "b", Batch: 1, Changes: changes})
	if a := ackOf(recv); a.Status != syncproto.StatusOverloaded {
		t.Fatalf("an update after its claims failed: %v %s", a.Status, a.Message)
	}
	holder.c.Close()
	eventually(t, "a to unload", func() bool { return tn.metric("weft_docs_loaded") == 0 })
	send(&syncproto.Update{Doc: "b", Batch: 2, Changes: changes})
	if a := ackOf(recv); a.Status != syncproto.StatusOverloaded {
		t.Fatalf("an update without its claims on the same connection, the document loadable: %v %s", a.Status, a.Message)
	}
	if holds(tn, "b", B) {
		t.Fatal("bob's change was applied without its claim")
	}
	eventually(t, "b to unload", func() bool { return tn.metric("weft_docs_loaded") == 0 })

	send, recv = link()
	send(claims)
	send(&syncproto.Update{Doc: "b", Batch: 1, Changes: changes})
	if a := ackOf(recv); a.Status != syncproto.StatusOK {
		t.Fatalf("claims and update on a new connection: %v %s", a.Status, a.Message)
	}
	eventually(t, "b to unload", func() bool { return tn.metric("weft_docs_loaded") == 0 })
	mallory := newTClientAs(t, tn, "mallory", B)
	refusedUnauthorized(t, "mallory with bob's replica", mallory.syncedWrite("b", "t", "mallory;"))
}

// TestServerReplicaAcrossNodes: node 1's own replica (its JSON edits)
// reaches node 2 claimed for the servers' principal, so mallory cannot
// write with it through node 2.
func TestServerReplicaAcrossNodes(t *testing.T) {
	nodes := startCluster(t, 2, func(i int, o *Options) { o.AntiEntropyInterval = time.Minute })
	req, err := http.NewRequest("POST", "http://"+nodes[0].http+"/v1/docs/j/ops", strings.NewReader(`[{"field":"t","insert":"by node 1;","at":0}]`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tokenFor(t, "alice"))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST ops: %s", resp.Status)
	}
	v := nodes[0].doc("j").Version()
	if len(v) != 1 {
		t.Fatalf("a document of one JSON edit has version %v", v)
	}
	var S crdt.ReplicaID
	for r := range v {
		S = r
	}
	eventually(t, "node 2 to hold node 1's edit", func() bool { return holds(nodes[1], "j", S) })
	mallory := newTClientAs(t, nodes[1], "mallory", S)
	refusedUnauthorized(t, "mallory writing with node 1's replica through node 2", mallory.syncedWrite("j", "t", "mallory;"))
	noMallory(t, nodes, "j")
}
