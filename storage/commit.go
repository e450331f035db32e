package storage

import (
	"sync"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Group commit. A cluster peer writes a stream of small appends, one at a
// time from each of its rooms (about 1,500 a second, each ~300 bytes over
// 3 keys), and the WAL is paced to about one fsync a millisecond
// (walsync.go). Pebble shares each fsync among the commits waiting for
// it, but each commit still paid its own pass through the commit
// pipeline, its own write(2) to the WAL file and its own wake-up of the
// WAL's flush goroutine, since most arrived while the WAL waited for its
// next fsync.
//
// So while fsyncs carry few writes, the store's writes go to the
// committer: its goroutine applies whatever is queued as one Pebble batch
// with one synced Apply, then wakes every writer of that group with the
// result. It paces the fsyncs itself: a group that forms less than
// syncWait after the previous commit ended is held until then, and the
// writes arriving meanwhile join it; Pebble then syncs at once. That is
// the wait Pebble's WALMinSyncInterval made inside the WAL, moved in
// front of the Apply, so that what arrives during it joins the group
// instead of being written on its own.
//
// Once fsyncs carry fullSync writes or more (many concurrent writers,
// `weft bench store`), writes go straight to Pebble again: its commit
// pipeline then shares the fsyncs by itself and lets the writers insert
// into the memtable in parallel and while the WAL syncs, which one
// goroutine applying every write cannot.
//
// Invariants:
//
//   - A writer returns only after the group holding its batch was
//     applied and synced, or with that group's error; every writer of a
//     failed group gets the error, and the store fail-stops.
//   - A group is applied as one Pebble batch: after a crash either every
//     write of the group is there or none. (Each write was atomic on its
//     own before; a group only makes the atomic unit larger.)
//   - After a failed commit the committer applies nothing more: every
//     later group gets the first error.
//   - Writes to one document never share a group: the caller serializes
//     them (Store.begin), and a write returns only after its group
//     committed.
type committer struct {
	db    *pebble.DB
	syncs *syncPacer
	wait  time.Duration // Options.WALMinSyncInterval; ≤ 0: no pacing

	mu struct {
		sync.Mutex
		// next collects the batches of the group not yet taken by the
		// committer goroutine; nil when none is waiting.
		next *commitGroup
	}
	work chan struct{} // a token when next became non-nil (capacity 1)
	stop chan struct{} // closed by close
	done chan struct{} // closed when run returns

	// Owned by run.
	merged *pebble.Batch // reused for groups of more than one batch
	failed error         // the first commit error; nothing is applied after it
}

// commitGroup is the writes applied together. err is written by the
// committer goroutine before done is closed, and read by the writers
// after.
type commitGroup struct {
	batches []*pebble.Batch
	done    chan struct{}
	err     error
}

func newCommitter(db *pebble.DB, syncs *syncPacer, wait time.Duration) *committer {
	c := &committer{
		db:    db,
		syncs: syncs,
		wait:  wait,
		work:  make(chan struct{}, 1),
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	go c.run()
	return c
}

// commit applies b with a WAL sync, together with the batches queued
// with it, and returns when that is done. b stays the caller's: it is
// not modified, and the caller may close it once commit returns. Safe
// for concurrent use; must not be called after close.
func (c *committer) commit(b *pebble.Batch) error {
	c.mu.Lock()
	g := c.mu.next
	if g == nil {
		g = &commitGroup{done: make(chan struct{})}
		c.mu.next = g
		select {
		case c.work <- struct{}{}:
		default:
		}
	}
	g.batches = append(g.batches, b)
	c.mu.Unlock()
	<-g.done
	return g.err
}

// close stops the committer goroutine once no commit is in progress (the
// Store calls it after every operation ended).
func (c *committer) close() {
	close(c.stop)
	<-c.done
}

func (c *committer) run() {
	defer close(c.done)
	var earliest time.Time // when the next commit may start
	for {
		select {
		case <-c.work:
		case <-c.stop:
			if c.merged != nil {
				_ = c.merged.Close()
			}
			return
		}
		if d := time.Until(earliest); d > 0 {
			// Writes arriving now join the group.
			time.Sleep(d)
		}
		c.mu.Lock()
		g := c.mu.next
		c.mu.next = nil
		c.mu.Unlock()
		if g == nil {
			continue
		}
		g.err = c.apply(g.batches)
		if c.wait > 0 {
			earliest = time.Now().Add(syncWait(len(g.batches), c.wait))
		}
		close(g.done)
	}
}

// apply commits batches as one synced Pebble batch.
func (c *committer) apply(batches []*pebble.Batch) error {
	if c.failed != nil {
		return c.failed
	}
	b := batches[0]
	if len(batches) > 1 {
		if c.merged == nil {
			c.merged = c.db.NewBatch()
		}
		b = c.merged
		for _, w := range batches {
			if err := b.Apply(w, nil); err != nil {
				c.failed = err
				return err
			}
		}
	}
	if err := applySync(c.db, c.syncs, b, len(batches)); err != nil {
		// NB: merged is not reset or reused: nothing is applied after a
		// failure.
		c.failed = err
		return err
	}
	if b == c.merged {
		c.merged.Reset()
	}
	return nil
}

// applySync calls Pebble's Apply with Sync for b, which holds writes
// writes of the store. NB: when the WAL sync fails, Pebble reports it by
// calling Logger.Fatalf in this goroutine and, should Fatalf return, then
// reports success. pebbleLogger.Fatalf therefore panics with a fatalError,
// which is recovered here and becomes the error.
func applySync(db *pebble.DB, syncs *syncPacer, b *pebble.Batch, writes int) (err error) {
	defer recoverFatal(&err)
	syncs.commit(writes)
	return db.Apply(b, pebble.Sync)
}
