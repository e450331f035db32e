package storage

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

// queued is the number of writes waiting in the committer's next group.
func (c *committer) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.mu.next == nil {
		return 0
	}
	return len(c.mu.next.batches)
}

// groupOf starts n appends to n documents while the committer holds its
// next group (a long WALMinSyncInterval after a lone first append) and
// waits until all n are queued in that one group. It returns the channel
// that receives each append's error once the group is applied.
func groupOf(t *testing.T, s *Store, n int, batch func(i int) []byte) <-chan error {
	t.Helper()
	// A lone commit: the next group is held for the whole interval.
	mustAppend(t, s, "group/first", []byte("first"))
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := s.Append(context.Background(), fmt.Sprintf("group/%d", i), batch(i))
			errs <- err
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.commits.queued() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d appends queued in the held group after 10s", s.commits.queued(), n)
		}
		time.Sleep(time.Millisecond)
	}
	return errs
}

// Appends to different documents that arrive while the committer holds a
// group are applied together, and each is acknowledged, stored once and
// counted in its own metadata.
func TestGroupCommitStoresEveryWrite(t *testing.T) {
	o := LocalOptions()
	o.WALMinSyncInterval = time.Second
	var ops opCounter
	o.FS = errorfs.Wrap(o.FS, &ops)
	s := openT(t, "db", o)
	defer s.Close()
	const n = 6
	errs := groupOf(t, s, n, func(i int) []byte { return fmt.Appendf(nil, "batch %d", i) })
	syncs := ops.syncs.Load()
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if d := ops.syncs.Load() - syncs; d != 1 {
		t.Errorf("the group of %d appends took %d fsyncs, want 1", n, d)
	}
	for i := range n {
		doc := fmt.Sprintf("group/%d", i)
		_, batches := loadT(t, s, doc)
		if len(batches) != 1 || string(batches[0]) != fmt.Sprintf("batch %d", i) {
			t.Fatalf("%s holds %q", doc, batches)
		}
		m, ok, err := s.Meta(context.Background(), doc)
		if err != nil || !ok || m.Batches != 1 || m.LogBytes != int64(len(batches[0])) {
			t.Fatalf("%s: meta %+v, %v, %v", doc, m, ok, err)
		}
	}
}

// When the fsync of a group fails, every writer in the group gets the
// fail-stop error, and so does everything after.
func TestGroupCommitFailureReachesEveryWriter(t *testing.T) {
	inj := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			if strings.HasSuffix(op.Path, ".log") {
				return errorfs.ErrInjected
			}
		}
		return nil
	})}
	mem := vfs.NewMem()
	o := LocalOptions()
	o.FS = errorfs.Wrap(mem, inj)
	o.WALMinSyncInterval = time.Second
	s := openT(t, "db", o)
	const n = 5
	errs := groupOf(t, s, n, func(i int) []byte { return fmt.Appendf(nil, "unsynced %d", i) })
	inj.On()
	for range n {
		err := <-errs
		if !errors.Is(err, ErrFailStopped) || !errors.Is(err, errorfs.ErrInjected) {
			t.Errorf("append in the failed group = %v; want ErrFailStopped wrapping the injected error", err)
		}
	}
	inj.Off()
	if _, err := s.Append(context.Background(), "group/later", []byte("x")); !errors.Is(err, ErrFailStopped) {
		t.Fatalf("append after the failed group = %v, want ErrFailStopped", err)
	}
	if err := s.Close(); !errors.Is(err, ErrFailStopped) {
		t.Fatalf("Close = %v, want the fail-stop error", err)
	}
	// The acked append is there after a restart.
	o2 := LocalOptions()
	o2.FS = mem
	s2 := openT(t, "db", o2)
	defer s2.Close()
	if _, batches := loadT(t, s2, "group/first"); len(batches) != 1 || string(batches[0]) != "first" {
		t.Fatalf("after restart: %q, want the acked batch", batches)
	}
}

// Once the committer failed it applies nothing more, even if the disk
// recovered: every later group gets the first error.
func TestCommitterAppliesNothingAfterAFailure(t *testing.T) {
	inj := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		if op.Kind == errorfs.OpFileSyncData || op.Kind == errorfs.OpFileSync {
			if strings.HasSuffix(op.Path, ".log") {
				return errorfs.ErrInjected
			}
		}
		return nil
	})}
	o := LocalOptions()
	o.FS = errorfs.Wrap(vfs.NewMem(), inj)
	s := openT(t, "db", o)
	defer func() { _ = s.Close() }()
	inj.On()
	b := s.db.NewBatch()
	_ = b.Set([]byte("k1"), []byte("v"), nil)
	if err := s.commits.commit(b); !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("commit with a failing fsync = %v, want the injected error", err)
	}
	_ = b.Close()
	inj.Off()
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			b := s.db.NewBatch()
			defer b.Close()
			_ = b.Set(fmt.Appendf(nil, "k%d", i+2), []byte("v"), nil)
			if err := s.commits.commit(b); !errors.Is(err, errorfs.ErrInjected) {
				t.Errorf("commit after the failure = %v, want the first error", err)
			}
		})
	}
	wg.Wait()
	if _, closer, err := s.db.Get([]byte("k2")); err == nil {
		_ = closer.Close()
		t.Fatal("a batch committed after the failure was applied")
	}
}
