package client

import (
	"fmt"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// serverWelcome records what the welcome says about the server: its clock
// (for clock_skew recovery, and folded into every document's HLC so that
// the next local change is ordered after the server's present, as
// PROTOCOL.md §4 asks) and its limits.
func (c *Client) serverWelcome(w *syncproto.Welcome) {
	c.welcomeSkew.Store(c.opts.Wall() - w.ServerTime.WallMillis())
	c.serverTime.Store(uint64(w.ServerTime))
	c.mu.Lock()
	docs := c.openDocsLocked()
	c.mu.Unlock()
	for _, d := range docs {
		d.mu.Lock()
		d.witnessServerLocked()
		d.mu.Unlock()
	}
	var every time.Duration
	if n := w.Limits.MaxPresencePerSec; n > 0 {
		every = time.Second / time.Duration(n)
	}
	c.presenceEvery.Store(int64(every))
	c.maxFrame.Store(int64(min(w.Limits.MaxFrame, 1<<40)))
	c.maxRate.Store(int64(min(w.Limits.MaxChangesPerSec, 1<<40)))
	c.maxBurst.Store(int64(min(w.Limits.MaxOpsBurst, 1<<40)))
	c.session.Store(&w.Session)
}

// witnessServerLocked folds the server_time of the last welcome into the
// document's clock. A document opened later folds it in when it opens.
func (d *Document) witnessServerLocked() {
	if t := hlc.Timestamp(d.c.serverTime.Load()); t != 0 && d.mu.doc != nil {
		d.mu.doc.Clock().Witness(t)
	}
}

// sessionID returns the server's id for the current (or last) connection.
func (c *Client) sessionID() string {
	if p := c.session.Load(); p != nil {
		return *p
	}
	return ""
}

func (c *Client) presenceInterval() time.Duration { return time.Duration(c.presenceEvery.Load()) }

// correctSkew makes the documents' clocks read the local wall minus the
// lead the local wall had over the server's clock at the last welcome. It
// only ever moves the correction towards the server's clock.
func (c *Client) correctSkew() {
	if s := c.welcomeSkew.Load(); s > c.skewMillis.Load() {
		c.skewMillis.Store(s)
		c.opts.Logger.Warn("weft client: local clock is ahead of the server; correcting", "ahead_ms", s)
	}
}

// restampLocked recovers from a clock_skew refusal: the server found our
// timestamps too far ahead of its clock. Every own change the server
// cannot hold (above both acked and mayHold: never sent, or sent only in
// batches it refused whole) gets a new timestamp from a clock corrected to
// the server's time; the caller then reconnects, and the server's Sync
// reply says exactly what to resend. Nothing is lost: the same operations
// keep their ids; only their times change, which no one else has seen.
// It returns how many changes it re-stamped.
//
// NB: a change the server may hold keeps its time even if it was refused
// too (a batch was refused, a later one's outcome is unknown): re-stamping
// it could make two versions of one change, e.g. an LWW write that wins
// here and loses everywhere else, with equal version vectors, forever.
//
// NB: crdt has no way to change the time of stored operations, so this
// rebuilds the document from its full history: O(document), but it runs
// only after a refusal, not per edit.
//
// HAZARD: an own change that straddles the boundary keeps its old time;
// the server would refuse it again. Batches end on change boundaries, so
// this does not happen with this client's own batches.
func (d *Document) restampLocked() (int, error) {
	c := d.c
	c.correctSkew()
	me := c.replica
	keep := max(d.mu.acked, d.mu.mayHold)
	if d.knownLocked()[me] <= keep {
		return 0, nil
	}
	all := d.mu.doc.ChangesSince(crdt.VersionVector{})
	clock := hlc.NewClock(c.wallNow, 0)
	restamped := 0
	for i := range all {
		ch := &all[i]
		if ch.Replica == me && ch.Seq > keep {
			ch.Time = clock.Now()
			restamped++
			continue
		}
		if _, err := clock.Update(ch.Time); err != nil {
			return 0, err
		}
	}
	nd := crdt.NewDoc(me, clock, crdt.Options{MaxPending: c.opts.MaxPending})
	if err := nd.Apply(all...); err != nil {
		return 0, fmt.Errorf("client: rebuild with new timestamps: %w", err)
	}
	if nd.Pending() != 0 {
		return 0, fmt.Errorf("client: rebuild with new timestamps left %d changes pending", nd.Pending())
	}
	d.mu.doc = nd
	d.mu.known = nil
	if d.mu.file != nil {
		if err := d.mu.file.rewrite(codec.EncodeSnapshot(nd)); err != nil {
			return 0, err
		}
	}
	c.opts.Logger.Info("weft client: re-stamped unsent changes", "doc", d.id, "changes", restamped, "kept_below", keep)
	return restamped, nil
}
