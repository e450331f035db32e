package storage

import (
	"context"
	"testing"
	"time"
)

func TestSyncPacer(t *testing.T) {
	var p syncPacer
	const wait = time.Millisecond
	if got := p.next(wait); got != wait {
		t.Fatalf("no commits: wait %v, want %v", got, wait)
	}
	for range fullSync - 1 {
		p.commit()
	}
	if got := p.next(wait); got != wait {
		t.Fatalf("%d commits: wait %v, want %v", fullSync-1, got, wait)
	}
	for range fullSync {
		p.commit()
	}
	if got := p.next(wait); got != busySyncWait {
		t.Fatalf("%d commits: wait %v, want %v", fullSync, got, busySyncWait)
	}
	// The count starts anew at each answer.
	if got := p.next(wait); got != wait {
		t.Fatalf("after a full fsync, none since: wait %v, want %v", got, wait)
	}
	// A configured wait shorter than busySyncWait is never lengthened.
	for range fullSync {
		p.commit()
	}
	if got := p.next(10 * time.Microsecond); got != 10*time.Microsecond {
		t.Fatalf("wait 10µs after a full fsync: %v", got)
	}
}

// A lone commit right after an fsync waits for the configured interval
// before its own: the pacer is wired into Pebble. (Only a lower bound is
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
