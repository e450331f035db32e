package storage

import (
	"context"
	"testing"
	"time"
)

func TestSyncWait(t *testing.T) {
	const wait = time.Millisecond
	for _, c := range []struct {
		writes int
		wait   time.Duration
		want   time.Duration
	}{
		{1, wait, wait},
		{fullSync - 1, wait, wait},
		{fullSync, wait, busySyncWait},
		{100, wait, busySyncWait},
		// A configured wait shorter than busySyncWait is never lengthened.
		{fullSync, 10 * time.Microsecond, 10 * time.Microsecond},
		{1, 10 * time.Microsecond, 10 * time.Microsecond},
	} {
		if got := syncWait(c.writes, c.wait); got != c.want {
			t.Errorf("syncWait(%d, %v) = %v, want %v", c.writes, c.wait, got, c.want)
		}
	}
}

// Pebble waits only after a full fsync (the committer waits after a lone
// one), and writes go straight to Pebble only while fsyncs are full.
func TestSyncPacer(t *testing.T) {
	var p syncPacer
	const wait = time.Millisecond
	if got := p.next(wait); got != 0 || p.direct() {
		t.Fatalf("no writes: Pebble waits %v, direct %v; want 0, false", got, p.direct())
	}
	p.commit(fullSync - 1)
	if got := p.next(wait); got != 0 || p.direct() {
		t.Fatalf("%d writes: Pebble waits %v, direct %v; want 0, false", fullSync-1, got, p.direct())
	}
	p.commit(1)
	p.commit(fullSync - 1)
	if got := p.next(wait); got != busySyncWait || !p.direct() {
		t.Fatalf("%d writes: Pebble waits %v, direct %v; want %v, true", fullSync, got, p.direct(), busySyncWait)
	}
	// The count starts anew at each answer.
	if got := p.next(wait); got != 0 || p.direct() {
		t.Fatalf("after a full fsync, none since: Pebble waits %v, direct %v; want 0, false", got, p.direct())
	}
	// No pacing configured: Pebble never waits.
	p.commit(fullSync)
	if got := p.next(-1); got != 0 || !p.direct() {
		t.Fatalf("pacing off, full fsync: Pebble waits %v, direct %v; want 0, true", got, p.direct())
	}
}

// A lone commit right after an fsync waits for the configured interval
// before its own: the pace is wired into the committer. (Only a lower bound is
// checked: a slow machine makes the wait longer, never shorter.)
func TestStoreWaitsAfterALoneFsync(t *testing.T) {
	o := DefaultOptions()
	o.WALMinSyncInterval = 300 * time.Millisecond
	s := openT(t, t.TempDir(), o)
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Append(ctx, "pace/a", []byte("x")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := s.Append(ctx, "pace/b", []byte("y")); err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("second append acked after %v, want it to wait for the 300ms interval", el)
	}
}
