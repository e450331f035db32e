package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// Node is one server's membership in a weft cluster and its peer links.
// It implements syncserver.Replicator: the server reports its writes to
// it, and it applies what peers send through Options.Local.
type Node struct {
	opts     Options
	log      *slog.Logger
	m        *metrics
	name     string // node name: the advertised gossip address
	peerAddr string // advertised peer link address
	ml       *memberlist.Memberlist
	ln       net.Listener
	dig      *digests
	acks     *ackTracker
	batch    atomic.Uint64 // update batch ids, unique per process
	// savedPeers is what PeersFile holds; owned by the reconnector.
	savedPeers string
	// joined wakes the reconnector to save the peers at once when a
	// member joined: a node killed soon after it joined must still find
	// its peers again when it restarts without seeds.
	joined chan struct{}
	round  atomic.Uint64 // anti-entropy rounds

	ctx    context.Context // ends at Shutdown
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the manager: events queued

	mu struct {
		sync.Mutex
		events []memberEvent
		links  map[string]*link   // by peer name
		failed map[string]failure // members that failed, re-joined periodically
		// view is the membership as events reported it (copies: the
		// nodes memberlist's Members returns are written under its lock
		// while callers read them, a data race).
		view   map[string]memberlist.Node
		closed bool
	}
}

type memberEvent struct {
	kind int // evJoin, evUpdate, evLeave
	node memberlist.Node
}

const (
	evJoin = iota
	evUpdate
	evLeave
)

type failure struct {
	gossip string
	since  time.Time
}

// New starts a node: it binds gossip and the peer link listener, loads the
// stored documents' versions, joins the Join seeds (retrying in the
// background while alone) and starts replicating. Call Shutdown to stop.
func New(opts Options) (*Node, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{opts: o, log: o.Logger.With("component", "cluster"), dig: newDigests(o.Buckets), kick: make(chan struct{}, 1), joined: make(chan struct{}, 1)}
	n.m, err = newMetrics(o.Registry, n)
	if err != nil {
		return nil, err
	}
	n.acks = newAckTracker(o.AckPeers, o.AckTimeout, n.m, func(doc string) {
		for _, l := range n.links() {
			if pc := l.conn(); pc != nil {
				l.subscribe(pc, doc, 0)
			}
		}
	})
	n.mu.links = make(map[string]*link)
	n.mu.failed = make(map[string]failure)
	n.mu.view = make(map[string]memberlist.Node)
	n.ctx, n.cancel = context.WithCancel(context.Background())

	if o.Versions != nil {
		docs := 0
		if err := o.Versions.Versions(n.ctx, func(doc string, v crdt.VersionVector) error {
			n.dig.raise(doc, v)
			docs++
			return nil
		}); err != nil {
			return nil, fmt.Errorf("cluster: listing stored versions: %w", err)
		}
		n.log.Info("stored document versions loaded", "docs", docs)
	}

	gHost, gPort, _ := splitHostPort(o.Gossip)
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{gHost}, BindPort: gPort, Logger: n.stdLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: gossip on %s: %w", o.Gossip, err)
	}
	if gPort == 0 {
		gPort = nt.GetAutoBindPort()
	}
	advHost, advPort := "", gPort
	if o.Advertise != "" {
		advHost, advPort, _ = splitHostPort(o.Advertise)
	}
	ip, port, err := nt.FinalAdvertiseAddr(advHost, advPort)
	if err != nil {
		nt.Shutdown()
		return nil, fmt.Errorf("cluster: advertise address: %w", err)
	}
	n.name = net.JoinHostPort(ip.String(), strconv.Itoa(port))

	peerListen := o.PeerListen
	if peerListen == "" {
		p := 0
		if _, gp, _ := splitHostPort(o.Gossip); gp != 0 {
			p = gp + 1
		}
		peerListen = net.JoinHostPort(gHost, strconv.Itoa(p))
	}
	n.ln, err = net.Listen("tcp", peerListen)
	if err != nil {
		nt.Shutdown()
		return nil, fmt.Errorf("cluster: peer link listener: %w", err)
	}
	n.peerAddr = net.JoinHostPort(ip.String(), strconv.Itoa(n.ln.Addr().(*net.TCPAddr).Port))

	mc := memberlist.DefaultLANConfig()
	mc.Name = n.name
	mc.BindAddr, mc.BindPort = gHost, gPort
	mc.AdvertiseAddr, mc.AdvertisePort = ip.String(), port
	mc.SecretKey = o.Key
	mc.Delegate = &delegate{n: n}
	mc.Events = &events{n: n}
	mc.Logger = n.stdLogger()
	mc.GossipInterval = o.GossipInterval
	mc.ProbeInterval = o.ProbeInterval
	mc.ProbeTimeout = o.ProbeTimeout
	mc.SuspicionMult = o.SuspicionMult
	mc.PushPullInterval = o.PushPullInterval
	mc.GossipToTheDeadTime = o.GossipToTheDeadTime
	mc.DeadNodeReclaimTime = o.DeadNodeReclaimTime
	mc.TCPTimeout = max(o.DialTimeout, 10*o.ProbeTimeout)
	if o.Faults != nil {
		mc.Transport = newFaultTransport(nt, o.Faults)
	} else {
		mc.Transport = nt
	}
	n.ml, err = memberlist.Create(mc)
	if err != nil {
		n.ln.Close()
		mc.Transport.Shutdown()
		return nil, fmt.Errorf("cluster: starting gossip: %w", err)
	}
	n.log.Info("cluster node started", "node", n.name, "peer_addr", n.peerAddr, "join", o.Join, "ack_peers", o.AckPeers)

	n.wg.Add(3)
	go n.acceptLoop()
	go n.manager()
	go n.reconnector()
	return n, nil
}

// Name returns this node's name (its advertised gossip address).
func (n *Node) Name() string { return n.name }

// PeerAddr returns this node's advertised peer link address.
func (n *Node) PeerAddr() string { return n.peerAddr }

// stdLogger adapts memberlist's log.Logger lines to slog (debug level;
// its warnings and errors as warnings).
func (n *Node) stdLogger() *log.Logger {
	return log.New(logWriter{n.log}, "", 0)
}

type logWriter struct{ l *slog.Logger }

func (w logWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	switch {
	case bytes.Contains(p, []byte("[ERR]")), bytes.Contains(p, []byte("[WARN]")):
		w.l.Warn(msg, "source", "memberlist")
	default:
		w.l.Debug(msg, "source", "memberlist")
	}
	return len(p), nil
}

// ---- memberlist delegates ----

type delegate struct{ n *Node }

// NodeMeta is [1, peer address] in msgpack (docs/PROTOCOL.md section 14).
func (d *delegate) NodeMeta(limit int) []byte {
	b := encodeMeta(d.n.peerAddr)
	if len(b) > limit {
		d.n.log.Error("node metadata exceeds memberlist's limit", "bytes", len(b), "limit", limit)
		return nil
	}
	return b
}
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func encodeMeta(peer string) []byte {
	b := []byte{0x92, 0x01}
	if len(peer) < 32 {
		b = append(b, 0xa0|byte(len(peer)))
	} else {
		b = append(b, 0xd9, byte(len(peer)))
	}
	return append(b, peer...)
}

// decodeMeta reads encodeMeta's layout strictly.
func decodeMeta(b []byte) (string, error) {
	if len(b) < 3 || b[0] != 0x92 || b[1] != 0x01 {
		return "", errors.New("cluster: node metadata is not [1, peer]")
	}
	var n int
	switch c := b[2]; {
	case c&0xe0 == 0xa0:
		n, b = int(c&0x1f), b[3:]
	case c == 0xd9 && len(b) >= 4:
		n, b = int(b[3]), b[4:]
	default:
		return "", errors.New("cluster: node metadata: peer is not a string")
	}
	if n != len(b) {
		return "", errors.New("cluster: node metadata: bad peer length")
	}
	if _, _, err := net.SplitHostPort(string(b)); err != nil {
		return "", fmt.Errorf("cluster: node metadata: peer %q: %w", b, err)
	}
	return string(b), nil
}

type events struct{ n *Node }

func (e *events) NotifyJoin(nd *memberlist.Node)   { e.n.queue(evJoin, nd) }
func (e *events) NotifyLeave(nd *memberlist.Node)  { e.n.queue(evLeave, nd) }
func (e *events) NotifyUpdate(nd *memberlist.Node) { e.n.queue(evUpdate, nd) }

// queue records a membership event for the manager. memberlist calls it
// with its own locks held: it must not block.
func (n *Node) queue(kind int, nd *memberlist.Node) {
	c := *nd
	c.Meta = slices.Clone(nd.Meta)
	n.mu.Lock()
	n.mu.events = append(n.mu.events, memberEvent{kind: kind, node: c})
	if c.State == memberlist.StateLeft {
		delete(n.mu.view, c.Name)
	} else {
		n.mu.view[c.Name] = c
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// ---- the manager: links follow membership ----

func (n *Node) manager() {
	defer n.wg.Done()
	ae := time.NewTicker(n.opts.AntiEntropyInterval)
	defer ae.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.kick:
			n.mu.Lock()
			evs := n.mu.events
			n.mu.events = nil
			n.mu.Unlock()
			for _, ev := range evs {
				n.handle(ev)
			}
		case <-ae.C:
			for _, l := range n.links() {
				l.startRound()
			}
		}
	}
}

func (n *Node) handle(ev memberEvent) {
	nd := ev.node
	if nd.Name == n.name {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.mu.closed {
		return
	}
	switch ev.kind {
	case evJoin, evUpdate:
		delete(n.mu.failed, nd.Name)
		addr, err := decodeMeta(nd.Meta)
		if err != nil {
			n.log.Warn("member without a usable peer address", "member", nd.Name, "err", err)
			return
		}
		if l := n.mu.links[nd.Name]; l != nil {
			if l.addr == addr {
				return
			}
			close(l.stop)
		}
		l := &link{n: n, peer: nd.Name, addr: addr, stop: make(chan struct{}), done: make(chan struct{})}
		n.mu.links[nd.Name] = l
		n.wg.Add(1)
		go l.run()
		n.log.Info("member joined", "member", nd.Name, "peer_addr", addr)
		select {
		case n.joined <- struct{}{}:
		default:
		}
	case evLeave:
		if l := n.mu.links[nd.Name]; l != nil {
			close(l.stop)
			delete(n.mu.links, nd.Name)
		}
		if nd.State == memberlist.StateLeft {
			delete(n.mu.failed, nd.Name)
			n.log.Info("member left", "member", nd.Name)
			return
		}
		n.mu.failed[nd.Name] = failure{gossip: nd.Address(), since: time.Now()}
		n.mu.view[nd.Name] = nd
		n.log.Warn("member failed; it will be re-joined periodically", "member", nd.Name)
	}
}

// links returns the current outbound links.
func (n *Node) links() []*link {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]*link, 0, len(n.mu.links))
	for _, l := range n.mu.links {
		out = append(out, l)
	}
	return out
}

// reconnector re-joins failed members and, while this node is alone, the
// Join seeds (as Serf does: memberlist forgets a dead node).
func (n *Node) reconnector() {
	defer n.wg.Done()
	t := time.NewTicker(n.opts.ReconnectInterval)
	defer t.Stop()
	n.join(n.seeds())
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-n.joined:
			n.savePeers()
			continue
		case <-t.C:
		}
		now := time.Now()
		var pick string
		n.mu.Lock()
		cands := make([]string, 0, len(n.mu.failed))
		for name, f := range n.mu.failed {
			if now.Sub(f.since) > n.opts.ReconnectTimeout {
				delete(n.mu.failed, name)
				delete(n.mu.view, name)
				n.log.Info("failed member reaped", "member", name)
				continue
			}
			cands = append(cands, f.gossip)
		}
		n.mu.Unlock()
		if len(cands) > 0 {
			pick = cands[rand.IntN(len(cands))]
			n.join([]string{pick})
		}
		if n.ml.NumMembers() <= 1 {
			n.join(n.seeds())
		}
		n.savePeers()
	}
}

// seeds are the Join addresses and the members saved in PeersFile.
func (n *Node) seeds() []string {
	out := slices.Clone(n.opts.Join)
	if n.opts.PeersFile == "" {
		return out
	}
	b, err := os.ReadFile(n.opts.PeersFile)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			n.log.Warn("reading the saved peers", "file", n.opts.PeersFile, "err", err)
		}
		return out
	}
	for _, a := range strings.Split(string(b), "\n") {
		if a = strings.TrimSpace(a); a != "" && a != n.name && !slices.Contains(out, a) {
			if _, _, err := net.SplitHostPort(a); err == nil {
				out = append(out, a)
			}
		}
	}
	return out
}

// savePeers writes the gossip addresses of the members known (alive or
// failed) to PeersFile when they changed.
func (n *Node) savePeers() {
	if n.opts.PeersFile == "" {
		return
	}
	n.mu.Lock()
	var addrs []string
	for _, nd := range n.mu.view {
		if nd.Name != n.name {
			addrs = append(addrs, nd.Address())
		}
	}
	n.mu.Unlock()
	if len(addrs) == 0 {
		return // alone: keep what we knew
	}
	slices.Sort(addrs)
	data := strings.Join(addrs, "\n") + "\n"
	if data == n.savedPeers {
		return
	}
	tmp := n.opts.PeersFile + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		n.log.Warn("saving the known peers", "file", n.opts.PeersFile, "err", err)
		return
	}
	if err := os.Rename(tmp, n.opts.PeersFile); err != nil {
		n.log.Warn("saving the known peers", "file", n.opts.PeersFile, "err", err)
		return
	}
	n.savedPeers = data
}

func (n *Node) join(addrs []string) {
	if len(addrs) == 0 || n.opts.Faults.Isolated() {
		return
	}
	if k, err := n.ml.Join(addrs); err != nil {
		n.log.Debug("join failed", "addrs", addrs, "joined", k, "err", err)
	} else {
		n.m.joins.Inc()
	}
}

// ---- members ----

// Member is one node of the cluster as this node sees it.
type Member struct {
	Name     string `json:"name"`
	Gossip   string `json:"gossip"`
	PeerAddr string `json:"peer_addr,omitempty"`
	// State is alive, or failed (declared dead by gossip; re-joined
	// periodically until ReconnectTimeout).
	State  string `json:"state"`
	Self   bool   `json:"self,omitempty"`
	LinkUp bool   `json:"link_up"`
}

// Members lists the cluster as this node sees it, itself included,
// sorted by name.
func (n *Node) Members() []Member {
	out := []Member{{Name: n.name, Gossip: n.name, PeerAddr: n.peerAddr, State: "alive", Self: true}}
	n.mu.Lock()
	for _, nd := range n.mu.view {
		if nd.Name == n.name {
			continue
		}
		mb := Member{Name: nd.Name, Gossip: nd.Address(), State: stateName(nd.State)}
		if _, failed := n.mu.failed[nd.Name]; failed {
			mb.State = "failed"
		}
		mb.PeerAddr, _ = decodeMeta(nd.Meta)
		if l := n.mu.links[nd.Name]; l != nil {
			l.mu.Lock()
			mb.LinkUp = l.mu.pc != nil
			l.mu.Unlock()
		}
		out = append(out, mb)
	}
	for name, f := range n.mu.failed {
		if _, ok := n.mu.view[name]; !ok {
			out = append(out, Member{Name: name, Gossip: f.gossip, State: "failed"})
		}
	}
	n.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// ---- syncserver.Replicator ----

// Applied pushes changes made by this server's clients to every peer at
// once, each link's update frames preceded by the ownership claims of
// their replicas that the link has not carried yet; changes that came
// from a peer are not pushed on (their origin pushed them to everyone;
// anti-entropy covers links that were down).
func (n *Node) Applied(doc string, fresh []crdt.Change, encoded func() []codec.Chunk, origin string, owners []syncproto.Owner) {
	if origin != "" {
		return
	}
	links := n.links()
	if len(links) == 0 {
		return
	}
	// The bytes the server sent its own subscribers, unless a chunk is
	// larger than a peer frame takes.
	chunks := encoded()
	for _, ch := range chunks {
		if len(ch.Data) > n.opts.MaxFrameBytes/2 && len(ch.Changes) > 1 {
			chunks = codec.EncodeChunks(fresh, n.opts.MaxFrameBytes/2)
			break
		}
	}
	n.pushChunks(doc, chunks, owners, links, false)
}

// pushChunks sends encoded chunks as updates on links, each link's
// preceded by the claims in owners it has not carried yet, or all of them
// for a repair (see link.push).
func (n *Node) pushChunks(doc string, chunks []codec.Chunk, owners []syncproto.Owner, links []*link, repair bool) {
	updates := make([]update, 0, len(chunks))
	for _, ch := range chunks {
		batch := n.batch.Add(1)
		frame, err := syncproto.Encode(&syncproto.Update{Doc: doc, Batch: batch, Changes: ch.Data})
		if err != nil {
			n.log.Error("encoding an update for peers", "doc", doc, "err", err)
			continue
		}
		// What an ok ack confirms: only --ack-peers reads it.
		var need crdt.VersionVector
		if n.opts.AckPeers > 0 {
			need = make(crdt.VersionVector)
			for i := range ch.Changes {
				c := &ch.Changes[i]
				if e := c.End(); e > need[c.Replica] {
					need[c.Replica] = e
				}
			}
		}
		updates = append(updates, update{batch, frame, pushed{doc: doc, need: need, n: len(ch.Changes), at: time.Now()}})
	}
	for _, l := range links {
		l.push(doc, owners, updates, repair)
	}
}

// Durable keeps the anti-entropy digest current.
func (n *Node) Durable(doc string, v crdt.VersionVector) { n.dig.raise(doc, v) }

// Presence relays a local session's presence to every peer (best effort).
func (n *Node) Presence(doc string, m syncproto.Message) {
	frame, err := syncproto.Encode(m)
	if err != nil {
		return
	}
	for _, l := range n.links() {
		if pc := l.conn(); pc != nil {
			pc.sendDroppable(frame)
		}
	}
}

// AwaitPeers waits for AckPeers peers to confirm need (see ackTracker).
func (n *Node) AwaitPeers(doc string, need crdt.VersionVector, done func(syncproto.Status, string)) {
	n.acks.await(doc, need, done)
}

// ---- shutdown ----

// Shutdown stops the node: peer links close, gossip stops (without a
// leave message, so the others treat this node as failed and re-join it
// when it is back), and every goroutine is waited for, or ctx ends first.
func (n *Node) Shutdown(ctx context.Context) error {
	n.mu.Lock()
	if n.mu.closed {
		n.mu.Unlock()
		return nil
	}
	n.mu.closed = true
	for _, l := range n.mu.links {
		close(l.stop)
	}
	n.mu.Unlock()
	n.cancel()
	n.ln.Close()
	err := n.ml.Shutdown()
	n.acks.close()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
	return err
}

var _ io.Writer = logWriter{}
