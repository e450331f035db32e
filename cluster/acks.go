package cluster

import (
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
)

// ackTracker implements --ack-peers: it remembers, per document and peer,
// the version that peer acked ok (its durable store covers it; acks are
// only sent after durability, and a version vector is downward closed, so
// merging acked versions by maximum is sound), and answers waiting client
// batches once k peers cover them, or with peer_timeout after timeout.
type ackTracker struct {
	k       int
	timeout time.Duration
	m       *metrics
	// probe asks every peer for doc's durable version (a subscribe): a
	// batch still unconfirmed a third of the way to its timeout may have
	// reached the peers by another path (their own anti-entropy round)
	// that produced no ack here.
	probe func(doc string)

	mu struct {
		sync.Mutex
		acked   map[string]map[string]crdt.VersionVector // doc → peer → acked
		waiters map[string][]*ackWait                    // doc → batches waiting
		closed  bool
	}
}

type ackWait struct {
	need  crdt.VersionVector
	done  func(syncproto.Status, string)
	timer *time.Timer
	probe *time.Timer
}

func newAckTracker(k int, timeout time.Duration, m *metrics, probe func(string)) *ackTracker {
	t := &ackTracker{k: k, timeout: timeout, m: m, probe: probe}
	t.mu.acked = make(map[string]map[string]crdt.VersionVector)
	t.mu.waiters = make(map[string][]*ackWait)
	return t
}

// confirmed records that peer acked ok a batch covering need in doc.
func (t *ackTracker) confirmed(peer, doc string, need crdt.VersionVector) {
	if t.k == 0 {
		return
	}
	t.mu.Lock()
	if t.mu.acked[doc] == nil {
		t.mu.acked[doc] = make(map[string]crdt.VersionVector)
	}
	v := t.mu.acked[doc][peer]
	if v == nil {
		v = make(crdt.VersionVector, len(need))
		t.mu.acked[doc][peer] = v
	}
	for r, s := range need {
		if s > v[r] {
			v[r] = s
		}
	}
	var ready []*ackWait
	ws := t.mu.waiters[doc]
	kept := ws[:0]
	for _, w := range ws {
		if t.countLocked(doc, w.need) >= t.k {
			ready = append(ready, w)
		} else {
			kept = append(kept, w)
		}
	}
	clear(ws[len(kept):])
	if len(kept) == 0 {
		delete(t.mu.waiters, doc)
	} else {
		t.mu.waiters[doc] = kept
	}
	t.mu.Unlock()
	for _, w := range ready {
		w.timer.Stop()
		w.probe.Stop()
		w.done(syncproto.StatusOK, "")
	}
}

func (t *ackTracker) countLocked(doc string, need crdt.VersionVector) int {
	c := 0
	for _, v := range t.mu.acked[doc] {
		if v.Covers(need) {
			c++
		}
	}
	return c
}

// await calls done with ok once k peers cover need, or with peer_timeout.
func (t *ackTracker) await(doc string, need crdt.VersionVector, done func(syncproto.Status, string)) {
	if t.k == 0 {
		done(syncproto.StatusOK, "")
		return
	}
	t.mu.Lock()
	if t.mu.closed {
		t.mu.Unlock()
		done(syncproto.StatusOverloaded, "the server is shutting down; durable here, peers not confirmed")
		return
	}
	if t.countLocked(doc, need) >= t.k {
		t.mu.Unlock()
		done(syncproto.StatusOK, "")
		return
	}
	w := &ackWait{need: need, done: done}
	t.mu.waiters[doc] = append(t.mu.waiters[doc], w)
	w.timer = time.AfterFunc(t.timeout, func() { t.expire(doc, w) })
	w.probe = time.AfterFunc(t.timeout/3, func() {
		t.mu.Lock()
		waiting := slices.Contains(t.mu.waiters[doc], w)
		t.mu.Unlock()
		if waiting {
			t.probe(doc)
		}
	})
	t.mu.Unlock()
}

func (t *ackTracker) expire(doc string, w *ackWait) {
	t.mu.Lock()
	ws := t.mu.waiters[doc]
	i := -1
	for j, x := range ws {
		if x == w {
			i = j
			break
		}
	}
	if i < 0 {
		t.mu.Unlock()
		return // answered meanwhile
	}
	t.mu.waiters[doc] = append(ws[:i], ws[i+1:]...)
	if len(t.mu.waiters[doc]) == 0 {
		delete(t.mu.waiters, doc)
	}
	got := t.countLocked(doc, w.need)
	t.mu.Unlock()
	t.m.ackTimeouts.Inc()
	w.done(syncproto.StatusPeerTimeout, fmt.Sprintf("durable here; %d of %d peers confirmed within %v", got, t.k, t.timeout))
}

// close answers every waiting batch (shutdown).
func (t *ackTracker) close() {
	t.mu.Lock()
	t.mu.closed = true
	all := t.mu.waiters
	t.mu.waiters = make(map[string][]*ackWait)
	t.mu.Unlock()
	for _, ws := range all {
		for _, w := range ws {
			w.probe.Stop()
			if w.timer.Stop() {
				w.done(syncproto.StatusOverloaded, "the server is shutting down; durable here, peers not confirmed")
			}
		}
	}
}
