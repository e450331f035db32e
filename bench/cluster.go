package bench

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
)

// ClusterOptions configure `weft bench cluster`.
type ClusterOptions struct {
	// Binary is the weft executable the peers run. Default: os.Executable().
	Binary string
	// WatchBinary is the weft executable that, in fault runs, samples the
	// divergence timeline and times the heal of --partition and
	// --offline-peer in a process of its own (`weft bench
	// cluster-heal-watch`, see cluster_heal.go). Default: os.Executable().
	WatchBinary string
	// Peers is the number of `weft serve` processes. Default: 3. One is
	// a plain server, not clustered: the same run's single-server
	// baseline (every delivery is then same-peer).
	Peers int
	// Clients is the number of Go clients, client i on peer i mod Peers and
	// document i mod Docs. Default: 150.
	Clients int
	// Docs is the number of documents. Default: 10.
	Docs int
	// Rate is the edits per second of each client. Default: 10.
	Rate float64
	// Duration is how long clients edit. Default: 20s.
	Duration time.Duration
	// Settle bounds the wait, after editing, for every peer to hold
	// identical documents. Default: 60s.
	Settle time.Duration
	// Partition cuts peer 0 off (gossip and peer links; its clients keep
	// editing) a quarter into the run for this long. Default: 0 (none).
	Partition time.Duration
	// Kill kills -9 a random peer this many times during the run and
	// restarts it at once. Default: 0.
	Kill int
	// OfflinePeer stops peer 1 (kill -9) a quarter into the run for this
	// long, then restarts it. Default: 0.
	OfflinePeer time.Duration
	// AckPeers is passed to every peer's --ack-peers. Default: 0.
	AckPeers int
	// ServerArgs are extra flags for every peer; "{peer}" in one is
	// replaced by the peer's index (e.g. --debug-listen=127.0.0.1:606{peer}).
	ServerArgs []string
	// Seed makes positions and kill choices reproducible. Default: 1.
	Seed uint64
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// ClusterLatency summarizes edit → applied latencies.
type ClusterLatency struct {
	Deliveries int     `json:"deliveries"`
	P50Ms      float64 `json:"p50_ms"`
	P99Ms      float64 `json:"p99_ms"`
	MaxMs      float64 `json:"max_ms"`
}

// ClusterPoint is one sample of the divergence timeline.
type ClusterPoint struct {
	TMs       float64 `json:"t_ms"`
	Differing int     `json:"differing_docs"`
}

// ClusterResult is what `weft bench cluster --json` prints.
type ClusterResult struct {
	Peers    int     `json:"peers"`
	Clients  int     `json:"clients"`
	Docs     int     `json:"docs"`
	Edits    int     `json:"edits"`
	Acked    int     `json:"acked"`
	LoadAvg  string  `json:"loadavg"`
	Duration float64 `json:"duration_s"`
	// SamePeer: deliveries to subscribers on the editor's own peer;
	// CrossPeer: on every other peer.
	SamePeer  ClusterLatency `json:"same_peer"`
	CrossPeer ClusterLatency `json:"cross_peer"`
	Converged bool           `json:"converged"`
	// Lost counts acknowledged edits missing from some peer at the end;
	// Duplicated, edits present more than once in a document.
	Lost       int `json:"lost"`
	Duplicated int `json:"duplicated"`
	// HealMs is, for --partition and --offline-peer, the time from the heal
	// (or restart) until every peer held every change any peer held at
	// that moment.
	HealMs float64 `json:"heal_ms,omitempty"`
	Kills  int     `json:"kills,omitempty"`
	// Divergence samples the documents whose versions differ between
	// peers, every 200ms from the start of editing and once more after
	// the settle, in fault runs (--partition, --kill, --offline-peer);
	// the watcher process samples it (cluster_heal.go), not this one.
	Divergence []ClusterPoint `json:"divergence,omitempty"`
	Faults     []string       `json:"faults,omitempty"`
	// CPU over the editing window, in cores (CPU seconds per second):
	// every peer's process together, and this process's (the clients).
	// Runs without --kill or --offline-peer only (a restarted peer's
	// first process is gone before it can be read).
	ServersCores float64 `json:"servers_cores,omitempty"`
	ClientsCores float64 `json:"clients_cores,omitempty"`

	SameLat  []time.Duration `json:"-"`
	CrossLat []time.Duration `json:"-"`
}

func (o ClusterOptions) withDefaults() (ClusterOptions, error) {
	o.Peers = cmp.Or(o.Peers, 3)
	o.Clients = cmp.Or(o.Clients, 150)
	o.Docs = cmp.Or(o.Docs, 10)
	o.Rate = cmp.Or(o.Rate, 10)
	o.Duration = cmp.Or(o.Duration, 20*time.Second)
	o.Settle = cmp.Or(o.Settle, 60*time.Second)
	o.Seed = cmp.Or(o.Seed, 1)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	var errs []error
	if o.Peers < 1 || o.Peers > 16 {
		errs = append(errs, fmt.Errorf("bench: cluster needs 1..16 peers, got %d", o.Peers))
	}
	if o.Peers == 1 && (o.Partition > 0 || o.OfflinePeer > 0 || o.Kill > 0 || o.AckPeers > 0) {
		errs = append(errs, errors.New("bench: one peer (the single-server baseline) takes no fault and no --ack-peers"))
	}
	if o.Clients < o.Peers {
		errs = append(errs, fmt.Errorf("bench: cluster needs at least one client per peer, got %d clients for %d peers", o.Clients, o.Peers))
	}
	if o.Docs < 1 {
		errs = append(errs, fmt.Errorf("bench: cluster needs at least 1 document, got %d", o.Docs))
	}
	if o.Rate <= 0 || o.Rate > 1000 {
		errs = append(errs, fmt.Errorf("bench: rate must be in (0, 1000] edits/s per client, got %v", o.Rate))
	}
	if o.Partition < 0 || o.OfflinePeer < 0 || o.Kill < 0 {
		errs = append(errs, errors.New("bench: --partition, --offline-peer and --kill must not be negative"))
	}
	if o.Partition > 0 && o.OfflinePeer > 0 {
		errs = append(errs, errors.New("bench: choose one of --partition and --offline-peer"))
	}
	if f := max(o.Partition, o.OfflinePeer); f > 0 && f >= o.Duration*3/4 {
		errs = append(errs, fmt.Errorf("bench: the fault (%v) must end before editing does: use --duration > %v", f, f*4/3))
	}
	return o, errors.Join(errs...)
}

// clusterPeer is one `weft serve` child with fixed addresses, so it can be
// killed and restarted in place.
type clusterPeer struct {
	i                  int
	dir                string
	http, gossip, peer string
	args               []string
	bin                string
	proc               *ServerProcess
}

func (p *clusterPeer) start(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	args := []string{"--listen", p.http}
	if p.gossip != "" {
		args = append(args, "--gossip", p.gossip, "--peer-listen", p.peer)
	}
	args = append(args, p.args...)
	proc, err := StartServer(sctx, p.bin, p.dir, args...)
	if err != nil {
		return fmt.Errorf("peer %d: %w", p.i, err)
	}
	p.proc = proc
	return nil
}

func (p *clusterPeer) kill() {
	if p.proc != nil {
		p.proc.Kill()
		p.proc = nil
	}
}

func (p *clusterPeer) isolate(ctx context.Context, on bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("http://%s/debug/cluster/isolate?on=%v", p.http, on), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("isolate peer %d: %s", p.i, resp.Status)
	}
	return nil
}

// docState is a document as one peer serves it.
type docState struct {
	Version map[string]uint64 `json:"version"`
	Text    map[string]string `json:"text"`
}

func (p *clusterPeer) get(ctx context.Context, id string) (docState, error) {
	var st docState
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.http+"/v1/docs/"+url.PathEscape(id), nil)
	if err != nil {
		return st, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return st, nil
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("GET %s from peer %d: %s", id, p.i, resp.Status)
	}
	return st, json.Unmarshal(body, &st)
}

// clusterEdit is one edit: when it was made, by a client of which peer.
type clusterEdit struct {
	at   time.Time
	peer int
}

// clusterTracker records every delivery's latency, split by whether the
// receiver is on the editor's peer.
type clusterTracker struct {
	mu          sync.Mutex
	edits       map[crdt.ID]clusterEdit
	same, cross []time.Duration
}

func (t *clusterTracker) arrived(peer int, chs []crdt.Change) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range chs {
		e, ok := t.edits[crdt.ID{Replica: chs[i].Replica, Seq: chs[i].Seq}]
		if !ok {
			continue
		}
		if e.peer == peer {
			t.same = append(t.same, now.Sub(e.at))
		} else {
			t.cross = append(t.cross, now.Sub(e.at))
		}
	}
}

// RunCluster runs the multi-peer benchmark: Peers real `weft serve`
// processes joined by gossip, Clients Go clients spread over them editing
// Docs documents, optional faults; it measures edit → applied latency on
// every other subscriber and checks that every peer ends with identical
// documents holding every acknowledged edit.
func RunCluster(ctx context.Context, opts ClusterOptions) (ClusterResult, error) {
	o, err := opts.withDefaults()
	res := ClusterResult{Peers: o.Peers, Clients: o.Clients, Docs: o.Docs, Duration: o.Duration.Seconds()}
	if err != nil {
		return res, err
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		res.LoadAvg = strings.TrimSpace(string(b))
	}
	log := o.Logger
	bin := o.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return res, fmt.Errorf("bench: locate weft binary: %w", err)
		}
	}
	root, err := os.MkdirTemp("", "weft-bench-cluster-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(root)
	key := make([]byte, 32)
	rand.Read(key)
	common := []string{"--insecure", "--log-level", "warn"}
	if o.Peers > 1 {
		common = append(common, "--cluster-key", base64.StdEncoding.EncodeToString(key),
			"--cluster-fault-control", "--anti-entropy-interval", "1s", "--reconnect-interval", "250ms")
	}
	if o.AckPeers > 0 {
		common = append(common, "--ack-peers", fmt.Sprint(o.AckPeers))
	}
	peers := make([]*clusterPeer, o.Peers)
	for i := range peers {
		p := &clusterPeer{i: i, dir: filepath.Join(root, fmt.Sprint(i)), bin: bin}
		addrs := []*string{&p.http, &p.gossip, &p.peer}
		if o.Peers == 1 {
			addrs = addrs[:1] // a plain server: no gossip, no peer link
		}
		for _, a := range addrs {
			if *a, err = freeLoopbackAddr(); err != nil {
				return res, err
			}
		}
		p.args = slices.Clone(common)
		for _, a := range o.ServerArgs {
			p.args = append(p.args, strings.ReplaceAll(a, "{peer}", strconv.Itoa(i)))
		}
		if i > 0 {
			p.args = append(p.args, "--join", peers[0].gossip)
		}
		peers[i] = p
	}
	defer func() {
		for _, p := range peers {
			if p.proc != nil {
				p.proc.Stop(10 * time.Second)
			}
		}
	}()
	for _, p := range peers {
		if err := p.start(ctx); err != nil {
			return res, err
		}
	}
	if o.Peers > 1 {
		if err := clusterWaitMembers(ctx, peers, 30*time.Second); err != nil {
			return res, err
		}
	}
	log.Info("cluster formed", "peers", o.Peers)
	if _, err := RaiseFileLimit(uint64(o.Clients)*2 + 256); err != nil {
		return res, err
	}

	tr := &clusterTracker{edits: map[crdt.ID]clusterEdit{}}
	type member struct {
		c    *client.Client
		d    *client.Document
		peer int
		toks map[uint64]string // own seq → token
	}
	members := make([]*member, o.Clients)
	defer func() {
		for _, m := range members {
			if m != nil {
				m.c.Close()
			}
		}
	}()
	docID := func(i int) string { return fmt.Sprintf("bench/cluster/%d", i%o.Docs) }
	for i := range members {
		m := &member{peer: i % o.Peers, toks: map[uint64]string{}}
		c, err := client.New(client.LocalOptions("http://" + peers[m.peer].http))
		if err != nil {
			return res, err
		}
		m.c = c
		members[i] = m
		peer := m.peer
		if m.d, err = c.Open(docID(i), client.DocOptions{OnChanges: func(_ *client.Document, chs []crdt.Change) { tr.arrived(peer, chs) }}); err != nil {
			return res, err
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	for _, m := range members {
		if err := convergeWait(cctx, m.d.Changed(), m.d.Synced); err != nil {
			cancel()
			return res, fmt.Errorf("bench: clients did not connect and sync: %w", err)
		}
	}
	cancel()
	log.Info("clients synced", "clients", o.Clients)

	// Faults run beside the editors.
	measureCPU := o.Kill == 0 && o.OfflinePeer == 0
	var cpu0 []CPUTimes
	if measureCPU {
		if cpu0, err = clusterCPU(peers); err != nil {
			return res, err
		}
	}
	// The heal is timed, and the divergence timeline sampled, by a
	// process of its own (see cluster_heal.go). Only fault runs have one:
	// sampling reads every document from every peer five times a second,
	// as JSON, about 4% of a peer's CPU, which a latency run should not pay
	// on a saturated machine.
	var watcher *healWatcher
	var watchCfg healWatchConfig
	if o.Partition > 0 || o.OfflinePeer > 0 || o.Kill > 0 {
		wbin := o.WatchBinary
		if wbin == "" {
			if wbin, err = os.Executable(); err != nil {
				return res, fmt.Errorf("bench: locate weft binary: %w", err)
			}
		}
		watchCfg.Settle = o.Settle
		for _, p := range peers {
			watchCfg.Peers = append(watchCfg.Peers, p.http)
		}
		for d := range o.Docs {
			watchCfg.Docs = append(watchCfg.Docs, docID(d))
		}
		if watcher, err = startHealWatcher(wbin); err != nil {
			return res, err
		}
		defer watcher.stop()
	}
	start := time.Now()
	if watcher != nil {
		if err := watcher.configure(watchCfg, start); err != nil {
			return res, err
		}
	}
	runCtx, stop := context.WithTimeout(ctx, o.Duration)
	defer stop()
	var wg sync.WaitGroup
	var faultErr, healErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		faultErr = clusterFaults(runCtx, o, peers, &res, log, func(at time.Time) {
			healErr = watcher.healed(at)
		})
		if faultErr == nil && healErr != nil {
			faultErr = fmt.Errorf("bench: telling the heal watcher: %w", healErr)
		}
	}()
	interval := time.Duration(float64(time.Second) / o.Rate)
	counts := make([]int, len(members))
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(o.Seed, uint64(i)))
			t := time.NewTimer(time.Duration(rng.Int64N(int64(interval))))
			defer t.Stop()
			me := m.c.Replica()
			for n := 0; ; n++ {
				select {
				case <-runCtx.Done():
					return
				case <-t.C:
				}
				t.Reset(interval)
				tok := fmt.Sprintf("[%d:%d]", i, n)
				seq := m.d.Seq() + 1
				tr.mu.Lock()
				tr.edits[crdt.ID{Replica: me, Seq: seq}] = clusterEdit{at: time.Now(), peer: m.peer}
				tr.mu.Unlock()
				// At the start or the end: inside another token would split
				// it, and the lost check looks for whole tokens.
				if err := m.d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error {
					return tx.Insert("t", rng.IntN(2)*doc.TextLen("t"), tok)
				}); err != nil {
					return
				}
				m.toks[seq] = tok
				counts[i]++
			}
		}()
	}
	wg.Wait()
	for _, c := range counts {
		res.Edits += c
	}
	if faultErr != nil {
		return res, faultErr
	}
	log.Info("editing done", "edits", res.Edits)
	if measureCPU {
		cpu1, err := clusterCPU(peers)
		if err != nil {
			return res, err
		}
		wall := time.Since(start).Seconds()
		var srv time.Duration
		for i := range peers {
			srv += cpu1[i].Total() - cpu0[i].Total()
		}
		res.ServersCores = srv.Seconds() / wall
		res.ClientsCores = (cpu1[len(peers)].Total() - cpu0[len(peers)].Total()).Seconds() / wall
	}

	// Settle: every client saved, every peer identical.
	sctx, cancel := context.WithTimeout(ctx, o.Settle)
	defer cancel()
	for _, m := range members {
		if err := m.d.WaitSaved(sctx); err != nil {
			log.Warn("a client did not save everything", "err", err)
			break
		}
	}
	for sctx.Err() == nil {
		if clusterDiffering(sctx, peers, o.Docs, docID) == 0 {
			res.Converged = true
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the peers
	}
	if watcher != nil {
		// The watcher's timing of the heal is bounded by Settle from the
		// heal, which came before editing ended; the margin is for its
		// last sample and its answer.
		w, err := watcher.finish(o.Settle + 10*time.Second)
		if err != nil {
			return res, err
		}
		res.Divergence, res.HealMs = w.Divergence, w.HealMs
	}

	// Every acknowledged edit on every peer, exactly once.
	texts := make([]map[string]string, len(peers))
	for pi, p := range peers {
		texts[pi] = map[string]string{}
		for d := range o.Docs {
			st, err := p.get(ctx, docID(d))
			if err != nil {
				return res, err
			}
			texts[pi][docID(d)] = st.Text["t"]
		}
	}
	for i, m := range members {
		acked := m.d.Acked()
		for seq, tok := range m.toks {
			if seq > acked {
				continue
			}
			res.Acked++
			for pi := range peers {
				switch c := strings.Count(texts[pi][docID(i)], tok); {
				case c == 0:
					res.Lost++
				case c > 1:
					res.Duplicated++
				}
			}
		}
	}
	tr.mu.Lock()
	res.SameLat, res.CrossLat = slices.Clone(tr.same), slices.Clone(tr.cross)
	tr.mu.Unlock()
	res.SamePeer, res.CrossPeer = clusterStats(res.SameLat), clusterStats(res.CrossLat)
	return res, nil
}

// clusterFaults injects the configured faults; heal is called when the
// partition heals or the offline peer is back.
func clusterFaults(ctx context.Context, o ClusterOptions, peers []*clusterPeer, res *ClusterResult, log *slog.Logger, heal func(time.Time)) error {
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	bg := context.Background()
	switch {
	case o.Partition > 0:
		if !sleep(o.Duration / 4) {
			return nil
		}
		log.Info("partition: peer 0 cut off", "for", o.Partition)
		res.Faults = append(res.Faults, fmt.Sprintf("peer 0 isolated for %v", o.Partition))
		if err := peers[0].isolate(bg, true); err != nil {
			return err
		}
		sleep(o.Partition)
		if err := peers[0].isolate(bg, false); err != nil {
			return err
		}
		heal(time.Now())
	case o.OfflinePeer > 0:
		if !sleep(o.Duration / 4) {
			return nil
		}
		log.Info("offline: peer 1 stopped", "for", o.OfflinePeer)
		res.Faults = append(res.Faults, fmt.Sprintf("peer 1 killed and kept offline for %v", o.OfflinePeer))
		peers[1].kill()
		sleep(o.OfflinePeer)
		if err := peers[1].start(bg); err != nil {
			return err
		}
		heal(time.Now())
	}
	if o.Kill > 0 {
		rng := mrand.New(mrand.NewPCG(o.Seed, 0xdead))
		gap := o.Duration / time.Duration(o.Kill+1)
		for range o.Kill {
			if !sleep(gap) {
				return nil
			}
			p := peers[rng.IntN(len(peers))]
			log.Info("kill -9", "peer", p.i)
			p.kill()
			res.Kills++
			res.Faults = append(res.Faults, fmt.Sprintf("peer %d killed -9 and restarted", p.i))
			if err := p.start(bg); err != nil {
				return err
			}
		}
	}
	return nil
}

// clusterWaitMembers waits until every peer lists every other alive with
// its link up.
func clusterWaitMembers(ctx context.Context, peers []*clusterPeer, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		ok := true
		for _, p := range peers {
			resp, err := http.Get("http://" + p.http + "/v1/cluster/members")
			if err != nil {
				ok = false
				break
			}
			var m struct {
				Members []struct {
					State  string `json:"state"`
					Self   bool   `json:"self"`
					LinkUp bool   `json:"link_up"`
				} `json:"members"`
			}
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			up := 0
			for _, mb := range m.Members {
				if mb.State == "alive" && (mb.Self || mb.LinkUp) {
					up++
				}
			}
			if err != nil || up != len(peers) {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: the %d peers did not form a cluster within %v", len(peers), within)
		}
		time.Sleep(50 * time.Millisecond) // polling the peers
	}
}

// clusterDiffering counts documents whose version differs between peers
// (an unreachable peer counts every document).
func clusterDiffering(ctx context.Context, peers []*clusterPeer, docs int, docID func(int) string) int {
	n := 0
	for d := range docs {
		var first string
		for pi, p := range peers {
			st, err := p.get(ctx, docID(d))
			if err != nil {
				n++
				break
			}
			v, _ := json.Marshal(st.Version)
			if pi == 0 {
				first = string(v)
			} else if string(v) != first {
				n++
				break
			}
		}
	}
	return n
}

// clusterUnion returns, per document, the union of the peers' versions.
func clusterUnion(ctx context.Context, peers []*clusterPeer, docs int, docID func(int) string) (map[string]map[string]uint64, error) {
	out := map[string]map[string]uint64{}
	for d := range docs {
		u := map[string]uint64{}
		for _, p := range peers {
			st, err := p.get(ctx, docID(d))
			if err != nil {
				continue
			}
			for r, s := range st.Version {
				u[r] = max(u[r], s)
			}
		}
		out[docID(d)] = u
	}
	return out, nil
}

// clusterCovers reports whether every peer holds target.
func clusterCovers(ctx context.Context, peers []*clusterPeer, target map[string]map[string]uint64, docID func(int) string, docs int) bool {
	for d := range docs {
		for _, p := range peers {
			st, err := p.get(ctx, docID(d))
			if err != nil {
				return false
			}
			for r, s := range target[docID(d)] {
				if st.Version[r] < s {
					return false
				}
			}
		}
	}
	return true
}

func clusterStats(l []time.Duration) ClusterLatency {
	s := slices.Clone(l)
	slices.Sort(s)
	out := ClusterLatency{Deliveries: len(s)}
	if len(s) == 0 {
		return out
	}
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	out.P50Ms, out.P99Ms, out.MaxMs = ms(convergeQuantile(s, 0.5)), ms(convergeQuantile(s, 0.99)), ms(s[len(s)-1])
	return out
}

// clusterCPU reads the CPU time of every peer's process, then this
// process's (last).
func clusterCPU(peers []*clusterPeer) ([]CPUTimes, error) {
	out := make([]CPUTimes, 0, len(peers)+1)
	for _, p := range peers {
		t, err := ProcessCPU(p.proc.PID())
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	self, err := SelfCPU()
	if err != nil {
		return nil, err
	}
	return append(out, self), nil
}
