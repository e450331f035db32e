package storage

import (
	"sync/atomic"
	"time"
)

// Pebble asks, after every WAL fsync, how long to wait before the next
// one may start; writes that arrive meanwhile are written to the WAL at
// once but share the next fsync. syncPacer answers from how many synced
// commits arrived since it last answered, which is close to how many the
// fsync just done carried:
//
//   - at least fullSync: concurrent writers already fill each fsync, and
//     a longer wait would only slow every one of them, so busySyncWait;
//   - fewer: commits come one by one, each paying a whole fsync (a
//     cluster peer persisting a stream of small batches from its clients
//     and the other peers), so the configured wait
//     (Options.WALMinSyncInterval), which makes fsyncs fewer and fuller.
//
// A wait applies only to a commit that arrives less than that long after
// the previous fsync: at a low rate nothing waits. docs/performance.md
// ("The WAL's fsync pace") has the measurements.
type syncPacer struct {
	commits atomic.Int64 // synced commits since the last answer
}

const (
	// fullSync is the number of commits from which an fsync counts as
	// shared by concurrent writers.
	fullSync = 8
	// busySyncWait is the wait after a full fsync: enough for the
	// writers it woke to queue their next commits together.
	busySyncWait = 25 * time.Microsecond
)

// commit counts a commit that asks for an fsync.
func (p *syncPacer) commit() { p.commits.Add(1) }

// waitFunc returns Pebble's WALMinSyncInterval callback, with wait as the
// wait after an fsync that carried few commits.
func (p *syncPacer) waitFunc(wait time.Duration) func() time.Duration {
	return func() time.Duration { return p.next(wait) }
}

// next is the wait before the next fsync, and starts counting anew.
func (p *syncPacer) next(wait time.Duration) time.Duration {
	if p.commits.Swap(0) >= fullSync {
		return min(busySyncWait, wait)
	}
	return wait
}
