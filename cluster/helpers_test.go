package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

// waitFor bounds every wait in these tests.
const waitFor = 20 * time.Second

var testKey = bytes.Repeat([]byte{0x42}, KeyLen)

// testSecret signs the tokens of tokenFor: the nodes take token-less
// clients as "anonymous" (insecure) and verify the tokens presented.
var testSecret = bytes.Repeat([]byte{0x17}, 32)

// tnode is one weft server of a test cluster: a real Pebble store, a real
// sync server on 127.0.0.1 and a real cluster Node. Restarts reuse its
// addresses and data directory.
type tnode struct {
	t      testing.TB
	dir    string
	key    []byte
	join   []string
	mod    func(*Options)
	smod   func(*syncserver.Options) // the sync server's, if set
	gossip string                    // fixed after the first start
	peer   string
	http   string

	faults *Faults
	st     *storage.Store
	srv    *syncserver.Server
	hs     *http.Server
	node   *Node
	reg    *prometheus.Registry
	up     bool
}

func newTNode(t testing.TB, join []string, mod func(*Options)) *tnode {
	t.Helper()
	tn := &tnode{t: t, dir: t.TempDir(), key: testKey, join: join, mod: mod,
		gossip: "127.0.0.1:0", peer: "127.0.0.1:0", http: "127.0.0.1:0", faults: &Faults{}}
	tn.start()
	t.Cleanup(func() { tn.stop(true) })
	return tn
}

func (tn *tnode) start() {
	t := tn.t
	t.Helper()
	st, err := storage.Open(filepath.Join(tn.dir, "db"), storage.DefaultOptions())
	if err != nil {
		t.Fatalf("storage.Open: %v", err)
	}
	tn.st = st
	tn.reg = prometheus.NewRegistry()
	so := syncserver.LocalOptions()
	so.Store = st
	so.Insecure = true
	so.Secret = testSecret
	so.Registry = tn.reg
	if tn.smod != nil {
		tn.smod(&so)
	}
	if testing.Verbose() && os.Getenv("WEFT_TEST_LOG") != "" {
		so.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := syncserver.New(so)
	if err != nil {
		t.Fatalf("syncserver.New: %v", err)
	}
	tn.srv = srv
	o := LocalOptions()
	o.Gossip, o.PeerListen, o.Join, o.Key = tn.gossip, tn.peer, tn.join, tn.key
	o.Local, o.Versions, o.Registry, o.Faults = srv, st, tn.reg, tn.faults
	o.PeersFile = filepath.Join(tn.dir, "peers")
	o.Logger = so.Logger
	if tn.mod != nil {
		tn.mod(&o)
	}
	node, err := New(o)
	if err != nil {
		t.Fatalf("cluster.New: %v", err)
	}
	tn.node = node
	tn.gossip, tn.peer = node.Name(), node.PeerAddr()
	srv.SetReplicator(node)
	ln, err := net.Listen("tcp", tn.http)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	tn.http = ln.Addr().String()
	tn.hs = &http.Server{Handler: srv.Handler()}
	go tn.hs.Serve(ln)
	tn.up = true
}

// stop ends the node. graceful: as weft serve on SIGTERM; otherwise as
// abruptly as one process can stop in place (connections cut, nothing
// drained; the store holds exactly what was acknowledged).
func (tn *tnode) stop(graceful bool) {
	if !tn.up {
		return
	}
	tn.up = false
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if !graceful {
		tn.hs.Close()
		tn.node.Shutdown(ctx)
		dead, c := context.WithCancel(ctx)
		c()
		tn.srv.Shutdown(dead) // abort: close every socket now
		tn.srv.Shutdown(ctx)  // then wait for the rooms
	} else {
		if err := tn.srv.Shutdown(ctx); err != nil {
			tn.t.Errorf("srv.Shutdown: %v", err)
		}
		tn.hs.Shutdown(ctx)
		if err := tn.node.Shutdown(ctx); err != nil {
			tn.t.Errorf("node.Shutdown: %v", err)
		}
	}
	if err := tn.st.Close(); err != nil {
		tn.t.Errorf("store close: %v", err)
	}
}

func (tn *tnode) restart() {
	tn.stop(false)
	tn.start()
}

func (tn *tnode) url() string { return "ws://" + tn.http + "/v1/ws" }

// doc returns the document as this node holds it.
func (tn *tnode) doc(id string) *crdt.Doc {
	tn.t.Helper()
	chunks, _, _, err := tn.srv.PeerSync(context.Background(), id, nil, 1<<20)
	if err != nil {
		tn.t.Fatalf("PeerSync(%s): %v", id, err)
	}
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	for _, ch := range chunks {
		cs, err := codec.DecodeChanges(ch.Data)
		if err != nil {
			tn.t.Fatalf("decode: %v", err)
		}
		if err := d.Apply(cs...); err != nil {
			tn.t.Fatalf("apply: %v", err)
		}
	}
	return d
}

// alive counts members this node sees alive with a peer link up (itself
// included).
func (tn *tnode) alive() int {
	c := 0
	for _, m := range tn.node.Members() {
		if m.State == "alive" && (m.Self || m.LinkUp) {
			c++
		}
	}
	return c
}

// metric sums a counter or gauge of this node's registry.
func (tn *tnode) metric(name string) float64 {
	mfs, err := tn.reg.Gather()
	if err != nil {
		tn.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += metricValue(m)
		}
	}
	return sum
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// eventually waits for cond, failing the test after waitFor.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", waitFor, what)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising
	}
}

// startCluster starts n nodes, all joining through the first.
func startCluster(t testing.TB, n int, mod func(i int, o *Options)) []*tnode {
	t.Helper()
	nodes := []*tnode{newTNode(t, nil, modFor(mod, 0))}
	for i := 1; i < n; i++ {
		nodes = append(nodes, newTNode(t, []string{nodes[0].gossip}, modFor(mod, i)))
	}
	waitFormed(t, nodes)
	return nodes
}

func modFor(mod func(int, *Options), i int) func(*Options) {
	if mod == nil {
		return nil
	}
	return func(o *Options) { mod(i, o) }
}

// waitFormed waits until every running node sees every other alive with a
// link up.
func waitFormed(t testing.TB, nodes []*tnode) {
	t.Helper()
	eventually(t, fmt.Sprintf("%d nodes to see each other", len(nodes)), func() bool {
		for _, tn := range nodes {
			if tn.alive() != len(nodes) {
				return false
			}
		}
		return true
	})
}

// waitConverged waits until every node holds doc at the same version and
// returns that text of field.
func waitConverged(t testing.TB, nodes []*tnode, doc, field string) string {
	t.Helper()
	var text string
	eventually(t, "nodes to converge on "+doc, func() bool {
		var v crdt.VersionVector
		for i, tn := range nodes {
			d := tn.doc(doc)
			if d.Pending() != 0 {
				return false
			}
			if i == 0 {
				v, text = d.Version(), d.Text(field)
				continue
			}
			if !v.Covers(d.Version()) || !d.Version().Covers(v) || d.Text(field) != text {
				return false
			}
		}
		return true
	})
	return text
}

// tclient is a real Go client on one node.
type tclient struct {
	t testing.TB
	c *client.Client

	mu    sync.Mutex
	docs  map[string]*client.Document
	acked []string // tokens whose edits were acked
}

func newTClient(t testing.TB, tn *tnode) *tclient {
	t.Helper()
	c, err := client.New(client.LocalOptions(tn.url()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tclient{t: t, c: c, docs: map[string]*client.Document{}}
}

// tokenFor mints a token for user with write access to every document.
func tokenFor(t testing.TB, user string) string {
	t.Helper()
	tok, err := syncserver.MintToken(testSecret, syncserver.Claims{
		Docs:             []syncserver.Grant{{Pattern: "*", Access: "write"}, {Pattern: "*/*", Access: "write"}},
		RegisteredClaims: jwt.RegisteredClaims{Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
	})
	if err != nil {
		t.Fatalf("MintToken: %v", err)
	}
	return tok
}

// newTClientAs is a client on tn authenticated as user, writing with
// replica id replica.
func newTClientAs(t testing.TB, tn *tnode, user string, replica crdt.ReplicaID) *tclient {
	t.Helper()
	o := client.LocalOptions(tn.url())
	o.Token, o.Replica = tokenFor(t, user), replica
	c, err := client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &tclient{t: t, c: c, docs: map[string]*client.Document{}}
}

func (tc *tclient) open(id string) *client.Document {
	tc.t.Helper()
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if d := tc.docs[id]; d != nil {
		return d
	}
	d, err := tc.c.Open(id, client.DocOptions{})
	if err != nil {
		tc.t.Fatal(err)
	}
	tc.docs[id] = d
	return d
}

// write appends token to field and waits until it is saved.
func (tc *tclient) write(id, field, token string) {
	tc.t.Helper()
	if err := tc.save(tc.open(id), field, token); err != nil {
		tc.t.Fatalf("WaitSaved(%s): %v", token, err)
	}
}

// syncedWrite appends token to field once the document is synced (so the
// edit follows everything the node holds) and returns how its save ended
// (nil: saved).
func (tc *tclient) syncedWrite(id, field, token string) error {
	tc.t.Helper()
	d := tc.open(id)
	eventually(tc.t, id+" to sync", d.Synced)
	return tc.save(d, field, token)
}

func (tc *tclient) save(d *client.Document, field, token string) error {
	tc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	if err := d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error { return tx.Insert(field, doc.TextLen(field), token) }); err != nil {
		tc.t.Fatal(err)
	}
	if err := d.WaitSaved(ctx); err != nil {
		return err
	}
	tc.mu.Lock()
	tc.acked = append(tc.acked, token)
	tc.mu.Unlock()
	return nil
}

func containsAll(text string, tokens []string) (missing []string) {
	for _, tok := range tokens {
		if !strings.Contains(text, tok) {
			missing = append(missing, tok)
		}
	}
	return missing
}

// dialRaw opens a bare TCP connection to a peer-link address, closed at the
// end of the test, with a deadline of waitFor on everything.
func dialRaw(t *testing.T, addr string) (*bufio.Reader, *bufio.Writer) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(waitFor))
	return bufio.NewReader(conn), bufio.NewWriter(conn)
}

// typed is a document of replica r whose one change inserts text into
// field.
func typed(t *testing.T, r crdt.ReplicaID, field, text string) *crdt.Doc {
	t.Helper()
	d := crdt.NewDoc(r, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := d.Begin()
	if err := tx.Insert(field, 0, text); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return d
}
