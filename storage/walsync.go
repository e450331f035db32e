package storage

import (
	"sync/atomic"
	"time"
)

// The WAL's fsyncs are paced: after one, the next may start only after a
// wait, and writes that arrive meanwhile share it. The wait depends on how
// many writes the fsync just done carried (syncWait):
//
//   - at least fullSync: concurrent writers already fill each fsync, and
//     a longer wait would only slow every one of them, so busySyncWait;
//   - fewer: writes come one by one, each paying a whole fsync (a
//     cluster peer persisting a stream of small batches from its clients
//     and the other peers), so the configured wait
//     (Options.WALMinSyncInterval), which makes fsyncs fewer and fuller.
//
// A wait applies only to a write that arrives less than that long after
// the previous fsync: at a low rate nothing waits. docs/performance.md
// ("The WAL's fsync pace") has the measurements.
//
// Who waits depends on the same count (commit.go): after a lone fsync the
// committer holds the next group itself, and Pebble syncs at once; after a
// full one writes go straight to Pebble, which waits busySyncWait in its
// WAL (Pebble's WALMinSyncInterval, answered by syncPacer.next).
const (
	// fullSync is the number of writes from which an fsync counts as
	// shared by concurrent writers.
	fullSync = 8
	// busySyncWait is the wait after a full fsync: enough for the
	// writers it woke to queue their next commits together.
	busySyncWait = 25 * time.Microsecond
)

// syncWait is the wait before the next fsync after one that carried
// writes, with wait as the wait after one that carried few.
func syncWait(writes int, wait time.Duration) time.Duration {
	if writes >= fullSync {
		return min(busySyncWait, wait)
	}
	return wait
}

// syncPacer counts the writes each WAL fsync carries and answers Pebble's
// question after each fsync.
type syncPacer struct {
	writes atomic.Int64 // synced writes since the last answer
	busy   atomic.Bool  // the last fsync carried at least fullSync writes
}

// commit counts writes committed with one synced Apply.
func (p *syncPacer) commit(writes int) { p.writes.Add(int64(writes)) }

// waitFunc returns Pebble's WALMinSyncInterval callback, with wait as the
// wait after an fsync that carried few writes.
func (p *syncPacer) waitFunc(wait time.Duration) func() time.Duration {
	return func() time.Duration { return p.next(wait) }
}

// next is Pebble's wait before the next fsync, and starts counting anew:
// after a full fsync syncWait's, after a lone one none, since the
// committer has waited before it applied.
func (p *syncPacer) next(wait time.Duration) time.Duration {
	n := int(p.writes.Swap(0))
	full := n >= fullSync
	p.busy.Store(full)
	if !full || wait <= 0 {
		return 0
	}
	return syncWait(n, wait)
}

// direct reports whether writes should go straight to Pebble: the last
// fsync was full.
func (p *syncPacer) direct() bool { return p.busy.Load() }
