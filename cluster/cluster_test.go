package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
)

// TestThreeNodesReplicate: three nodes form a cluster through one seed; an
// edit through node 1 reaches a subscriber on node 3 (pushed, not polled:
// anti-entropy is slowed to a minute here), both ways, and presence
// crosses nodes.
func TestThreeNodesReplicate(t *testing.T) {
	nodes := startCluster(t, 3, func(i int, o *Options) { o.AntiEntropyInterval = time.Minute })
	a, c := newTClient(t, nodes[0]), newTClient(t, nodes[2])
	da, dc := a.open("notes/1"), c.open("notes/1")
	seen := make(chan syncproto.Presence, 16)
	pc, err := c.c.Open("notes/p", client.DocOptions{OnPresence: func(_ *client.Document, p syncproto.Presence, left bool) {
		if !left {
			seen <- p
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	a.write("notes/1", "body", "hello from 1;")
	eventually(t, "node 3's subscriber to see node 1's edit", func() bool { return dc.Text("body") == "hello from 1;" })
	c.write("notes/1", "body", "hi from 3;")
	eventually(t, "node 1's subscriber to see node 3's edit", func() bool { return da.Text("body") == "hello from 1;hi from 3;" })
	if got := waitConverged(t, nodes, "notes/1", "body"); got != "hello from 1;hi from 3;" {
		t.Fatalf("converged on %q", got)
	}

	pa := a.open("notes/p")
	eventually(t, "both presence documents to sync", func() bool { return pa.Synced() && pc.Synced() })
	if err := pa.SetPresence(syncproto.Presence{Field: "body", Typing: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-seen:
		if p.User != "anonymous" || !p.Typing {
			t.Fatalf("presence from node 1 arrived as %+v", p)
		}
	case <-time.After(waitFor):
		t.Fatal("presence from node 1 never reached node 3")
	}
	if r := nodes[0].metric("weft_cluster_antientropy_docs_repaired_total"); r != 0 {
		t.Fatalf("push replication needed %v anti-entropy repairs", r)
	}
}

// TestPartitionHeals: a node cut off from the others (gossip and peer
// links) keeps serving its clients; after the partition heals, both
// sides' edits are on every node, without any operator action, and the
// cut-off node was declared failed and re-joined by itself.
func TestPartitionHeals(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a, c := newTClient(t, nodes[0]), newTClient(t, nodes[2])
	a.write("d", "t", "before;")
	waitConverged(t, nodes, "d", "t")

	nodes[2].faults.Isolate(true)
	eventually(t, "node 1 to declare node 3 failed", func() bool {
		for _, m := range nodes[0].node.Members() {
			if m.Name == nodes[2].gossip && m.State != "alive" {
				return true
			}
		}
		return false
	})
	for i := range 5 {
		a.write("d", "t", fmt.Sprintf("a%d;", i))
		c.write("d", "t", fmt.Sprintf("c%d;", i))
	}
	if got := nodes[0].doc("d").Text("t"); len(containsAll(got, []string{"c0;"})) == 0 {
		t.Fatalf("node 1 saw a partitioned edit: %q", got)
	}
	nodes[2].faults.Isolate(false)
	waitFormed(t, nodes)
	text := waitConverged(t, nodes, "d", "t")
	if miss := containsAll(text, append(a.acked, c.acked...)); len(miss) > 0 {
		t.Fatalf("after healing, %v missing from %q", miss, text)
	}
}

// TestRestartCatchesUp: a node stopped abruptly misses edits; restarted on
// its data directory, it catches up by itself (anti-entropy when its links
// come up), including documents it never saw.
func TestRestartCatchesUp(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	a := newTClient(t, nodes[0])
	a.write("old", "t", "x;")
	waitConverged(t, nodes, "old", "t")
	nodes[2].stop(false)
	a.write("old", "t", "y;")
	for i := range 5 {
		a.write(fmt.Sprintf("new/%d", i), "t", "z;")
	}
	nodes[2].start()
	waitFormed(t, nodes)
	if got := waitConverged(t, nodes, "old", "t"); got != "x;y;" {
		t.Fatalf("old doc: %q", got)
	}
	for i := range 5 {
		waitConverged(t, nodes, fmt.Sprintf("new/%d", i), "t")
	}
}

// TestWrongKeyRefused: a node with another cluster key can neither join
// the gossip nor open a peer link, and learns no document.
func TestWrongKeyRefused(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	a := newTClient(t, nodes[0])
	a.write("secret", "t", "classified;")
	waitConverged(t, nodes, "secret", "t")

	bad := &tnode{t: t, dir: t.TempDir(), key: []byte("another key, also 32 bytes long!"), join: []string{nodes[0].gossip},
		gossip: "127.0.0.1:0", peer: "127.0.0.1:0", http: "127.0.0.1:0", faults: &Faults{}}
	bad.start()
	t.Cleanup(func() { bad.stop(true) })

	// Its peer link handshake is refused: dial node 1 directly with the
	// wrong key.
	r, w := dialRaw(t, nodes[0].peer)
	if _, err := dialHandshake(r, w, bad.key, "intruder"); !errors.Is(err, ErrAuth) {
		t.Fatalf("handshake with the wrong key: %v, want ErrAuth", err)
	}
	// And a dialer who skips the proof gets nothing more than the hello.
	r2, w2 := dialRaw(t, nodes[0].peer)
	if err := writeMsg(w2, &syncproto.PeerHello{Node: "intruder", Nonce: nonce()}); err != nil {
		t.Fatal(err)
	}
	if m, err := readMsg(r2, 4096); err != nil || m.Type() != syncproto.TypePeerHello {
		t.Fatalf("first answer: %v %v", m, err)
	}
	// It answers with a proof it cannot have made (no key), then asks.
	writeMsg(w2, &syncproto.PeerHello{Node: "intruder", Proof: nonce()})
	writeMsg(w2, &syncproto.Subscribe{Doc: "secret", Version: crdt.VersionVector{}})
	if m, err := readMsg(r2, 1<<20); err == nil {
		t.Fatalf("an unauthenticated dialer got %s", m.Type())
	}
	eventually(t, "node 1 to count the refused handshakes", func() bool {
		return nodes[0].metric("weft_cluster_auth_failures_total") >= 2
	})
	// The gossip join failed too: nobody sees the intruder and it sees
	// nobody, and it holds no document.
	for i := range 3 {
		bad.node.join([]string{nodes[0].gossip})
		_ = i
	}
	if n := len(bad.node.Members()); n != 1 {
		t.Fatalf("the wrong-key node sees %d members", n)
	}
	for _, tn := range nodes {
		if slices.ContainsFunc(tn.node.Members(), func(m Member) bool { return m.Name == bad.gossip }) {
			t.Fatalf("%s lists the wrong-key node", tn.gossip)
		}
	}
	if v := bad.doc("secret").Version(); len(v) != 0 {
		t.Fatalf("the wrong-key node learned the document: %v", v)
	}
}

// TestAckPeers: with AckPeers 1 an edit is acked once a peer holds it;
// when no peer is reachable the ack is peer_timeout, not a hang, and the
// change still replicates after the partition heals.
func TestAckPeers(t *testing.T) {
	nodes := startCluster(t, 2, func(i int, o *Options) {
		if i == 0 {
			o.AckPeers, o.AckTimeout = 1, 300*time.Millisecond
		}
	})
	a := newTClient(t, nodes[0])
	a.write("d", "t", "confirmed;")
	if got := nodes[1].doc("d").Text("t"); got != "confirmed;" {
		t.Fatalf("acked with ack-peers 1, but node 2 holds %q", got)
	}

	nodes[1].faults.Isolate(true)
	eventually(t, "node 2's link to drop", func() bool { return nodes[0].alive() == 1 })
	st := make(chan syncproto.Status, 1)
	nodes[0].node.AwaitPeers("d", crdt.VersionVector{a.c.Replica(): 1 << 40}, func(s syncproto.Status, _ string) { st <- s })
	select {
	case s := <-st:
		if s != syncproto.StatusPeerTimeout {
			t.Fatalf("AwaitPeers without peers: %v", s)
		}
	case <-time.After(waitFor):
		t.Fatal("AwaitPeers hung")
	}
	d := a.open("d")
	if err := d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error { return tx.Insert("t", doc.TextLen("t"), "later;") }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the timeout to be counted", func() bool { return nodes[0].metric("weft_cluster_ack_peer_timeouts_total") >= 2 })
	if d.Saved() {
		t.Fatal("saved while no peer could confirm")
	}
	nodes[1].faults.Isolate(false)
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := d.WaitSaved(ctx); err != nil {
		t.Fatalf("after healing: %v", err)
	}
	if got := waitConverged(t, nodes, "d", "t"); got != "confirmed;later;" {
		t.Fatalf("converged on %q", got)
	}
}

var scheduleSeeds = flag.Int("cluster.seeds", 1, "how many seeds TestRandomSchedule runs (seeds 1..N)")

// TestRandomSchedule: a seeded random schedule of partitions, abrupt
// stops and restarts across four nodes, with a client on every node
// writing throughout, ends with every node holding every acknowledged
// edit. A failure prints its seed.
func TestRandomSchedule(t *testing.T) {
	for seed := 1; seed <= *scheduleSeeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { runSchedule(t, uint64(seed)) })
	}
}

func runSchedule(t *testing.T, seed uint64) {
	start0 := time.Now()
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	const numNodes, steps = 4, 6
	docs := []string{"r/0", "r/1", "r/2"}
	nodes := startCluster(t, numNodes, nil)
	clients := make([]*tclient, numNodes)
	for i, tn := range nodes {
		clients[i] = newTClient(t, tn)
	}
	isolated := make([]bool, numNodes)
	for step := range steps {
		i := rng.IntN(numNodes)
		switch a := rng.IntN(3); {
		case a == 0 && !isolated[i]:
			t.Logf("%v seed %d step %d: isolate node %d", time.Since(start0).Round(time.Millisecond), seed, step, i)
			nodes[i].faults.Isolate(true)
			isolated[i] = true
		case a == 0 || a == 1 && isolated[i]:
			t.Logf("%v seed %d step %d: heal node %d", time.Since(start0).Round(time.Millisecond), seed, step, i)
			nodes[i].faults.Isolate(false)
			isolated[i] = false
		default:
			t.Logf("%v seed %d step %d: kill and restart node %d", time.Since(start0).Round(time.Millisecond), seed, step, i)
			nodes[i].restart()
		}
		for c, tc := range clients {
			tc.write(docs[rng.IntN(len(docs))], "t", fmt.Sprintf("<%d.%d>", step, c))
		}
	}
	for i := range nodes {
		nodes[i].faults.Isolate(false)
	}
	waitFormed(t, nodes)
	var acked []string
	for _, tc := range clients {
		acked = append(acked, tc.acked...)
	}
	all := ""
	for _, d := range docs {
		all += waitConverged(t, nodes, d, "t")
	}
	if miss := containsAll(all, acked); len(miss) > 0 {
		t.Fatalf("seed %d: acknowledged edits lost: %v", seed, miss)
	}
}

// TestAntiEntropy: documents a node has never seen reach it by
// anti-entropy alone; after both nodes restart cold (re-forming through
// the peers they saved, without seeds), rounds over identical documents
// load none of them (digests come from the versions the store records)
// and repair nothing.
func TestAntiEntropy(t *testing.T) {
	const docs = 60
	n1 := newTNode(t, nil, nil)
	a := newTClient(t, n1)
	for i := range docs {
		a.write(fmt.Sprintf("ae/%d", i), "t", fmt.Sprintf("doc %d;", i))
	}
	n2 := newTNode(t, nil, nil)
	n2.node.join([]string{n1.gossip})
	nodes := []*tnode{n1, n2}
	waitFormed(t, nodes)
	for i := range docs {
		if got := waitConverged(t, nodes, fmt.Sprintf("ae/%d", i), "t"); got != fmt.Sprintf("doc %d;", i) {
			t.Fatalf("ae/%d: %q", i, got)
		}
	}
	if r := n2.metric("weft_cluster_antientropy_docs_repaired_total") + n1.metric("weft_cluster_antientropy_docs_repaired_total"); r < docs {
		t.Fatalf("%v documents repaired, want ≥ %d", r, docs)
	}

	a.c.Close() // its documents would load again when it resubscribes
	n1.stop(true)
	n2.stop(true)
	n1.start()
	n2.start()
	waitFormed(t, nodes)
	if got := n2.metric("weft_cluster_digest_docs"); got != docs {
		t.Fatalf("node 2's digest holds %v documents after a restart, want %d", got, docs)
	}
	r1, r2 := n1.metric("weft_cluster_antientropy_rounds_total"), n2.metric("weft_cluster_antientropy_rounds_total")
	eventually(t, "three more rounds each way", func() bool {
		return n1.metric("weft_cluster_antientropy_rounds_total") >= r1+3 && n2.metric("weft_cluster_antientropy_rounds_total") >= r2+3
	})
	for _, tn := range nodes {
		if l := tn.metric("weft_doc_loads_total"); l != 0 {
			t.Errorf("%s loaded %v documents comparing identical ones", tn.gossip, l)
		}
		if r := tn.metric("weft_cluster_antientropy_docs_repaired_total"); r != 0 {
			t.Errorf("%s repaired %v identical documents", tn.gossip, r)
		}
	}
}
