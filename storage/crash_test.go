package storage

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
	"github.com/prometheus/client_golang/prometheus"
)

var crashSeeds = flag.Int("crash-seeds", 4, "number of seeds for TestPowerLossKeepsAckedBatches")

// crashWorkload drives concurrent writers on a store. Each document's
// batches are "doc:i" for i = 0, 1, ...; a snapshot is the list of the
// batch numbers it covers, so Load can be checked against what was written.
type crashWorkload struct {
	pad      int           // bytes of padding per batch (big batches force memtable flushes)
	progress chan struct{} // gets a token after acks (capacity 1, never blocks)
	mu       struct {
		sync.Mutex
		acked map[string]int // doc → batches acknowledged (Append returned nil)
	}
}

func (w *crashWorkload) ackedCopy() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := make(map[string]int, len(w.mu.acked))
	for k, v := range w.mu.acked {
		c[k] = v
	}
	return c
}

// run writes to docs until stop is closed or a write fails; snapshotEvery
// says how often (in batches) a writer replaces its log with a snapshot.
func (w *crashWorkload) run(s *Store, doc string, rng *rand.Rand, stop <-chan struct{}) error {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		if i > 0 && rng.IntN(8) == 0 {
			var b strings.Builder
			for j := range i {
				fmt.Fprintf(&b, "%d,", j)
			}
			if err := s.WriteSnapshot(context.Background(), doc, []byte(b.String())); err != nil {
				return err
			}
		}
		b := fmt.Appendf(nil, "%s:%d", doc, i)
		if w.pad > 0 {
			b = append(b, '#')
			b = append(b, strings.Repeat("p", w.pad)...)
		}
		if _, err := s.Append(context.Background(), doc, b); err != nil {
			return err
		}
		w.mu.Lock()
		w.mu.acked[doc] = i + 1
		w.mu.Unlock()
		select {
		case w.progress <- struct{}{}:
		default:
		}
	}
}

// replay returns the batch numbers Load shows for doc: the snapshot's list
// followed by the logged batches. It fails on anything the workload did not
// write.
func replay(doc string, snap []byte, batches [][]byte) ([]int, error) {
	var got []int
	if snap != nil {
		for _, f := range strings.Split(strings.TrimSuffix(string(snap), ","), ",") {
			n, err := strconv.Atoi(f)
			if err != nil {
				return nil, fmt.Errorf("snapshot %q: %v", snap, err)
			}
			got = append(got, n)
		}
	}
	for _, b := range batches {
		body, _, _ := strings.Cut(string(b), "#")
		rest, ok := strings.CutPrefix(body, doc+":")
		n, err := strconv.Atoi(rest)
		if !ok || err != nil {
			return nil, fmt.Errorf("batch %q does not belong to %q", b, doc)
		}
		got = append(got, n)
	}
	return got, nil
}

// checkRecovered opens the store on fs and checks that every document holds
// exactly batches 0..k-1 for some k ≥ what was acked before the crash: no
// acked batch lost, none duplicated, no gap, nothing foreign.
func checkRecovered(t *testing.T, fs vfs.FS, ackedBefore map[string]int, docs []string) {
	t.Helper()
	o := LocalOptions()
	o.FS = fs
	s, err := Open("db", o)
	if err != nil {
		t.Fatalf("reopen after crash: %v", err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			t.Errorf("close after crash: %v", err)
		}
	}()
	for _, doc := range docs {
		snap, batches, err := s.Load(context.Background(), doc)
		if err != nil {
			t.Fatalf("Load(%q) after crash: %v", doc, err)
		}
		got, err := replay(doc, snap, batches)
		if err != nil {
			t.Fatalf("%s: %v", doc, err)
		}
		for i, n := range got {
			if n != i {
				t.Fatalf("%s: recovered batches %v are not 0..k-1 (lost or duplicated)", doc, got)
			}
		}
		if len(got) < ackedBefore[doc] {
			t.Fatalf("%s: %d batches acked before the crash, %d recovered", doc, ackedBefore[doc], len(got))
		}
		m, ok, err := s.Meta(context.Background(), doc)
		if err != nil || (len(got) > 0) != ok {
			t.Fatalf("%s: Meta ok=%v err=%v with %d batches recovered", doc, ok, err, len(got))
		}
		var logBytes int64
		for _, b := range batches {
			logBytes += int64(len(b))
		}
		if ok && (m.Batches != int64(len(batches)) || m.LogBytes != logBytes || m.SnapshotBytes != int64(len(snap))) {
			t.Fatalf("%s: meta %+v disagrees with data (%d batches, %d log bytes, %d snapshot bytes)",
				doc, m, len(batches), logBytes, len(snap))
		}
	}
}

// TestPowerLossKeepsAckedBatches simulates power loss at random points of a
// concurrent workload with Pebble's crashable in-memory filesystem: the
// crash image holds what was synced plus a random part of what was not.
// Every batch acknowledged before the crash must be in the image, and the
// store must open cleanly on it.
func TestPowerLossKeepsAckedBatches(t *testing.T) {
	for seed := range uint64(*crashSeeds) {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 99))
			mem := vfs.NewCrashableMem()
			o := LocalOptions()
			o.FS = mem
			o.MemTableBytes = 1 << 20
			reg := prometheus.NewRegistry()
			o.Registerer = reg
			s := openT(t, "db", o)

			const writers = 8
			docs := make([]string, writers)
			for i := range docs {
				docs[i] = fmt.Sprintf("doc/%d", i)
			}
			w := &crashWorkload{}
			if seed%2 == 1 {
				w.pad = 4 << 10 // ~1 MiB memtable fills every ~250 batches
			}
			w.mu.acked = map[string]int{}
			w.progress = make(chan struct{}, 1)
			stop := make(chan struct{})
			errs := make(chan error, writers)
			var wg sync.WaitGroup
			for i, doc := range docs {
				wrng := rand.New(rand.NewPCG(seed, uint64(i)))
				wg.Go(func() { errs <- w.run(s, doc, wrng, stop) })
			}

			// Crash three times at random moments while the writers run.
			type image struct {
				fs    *vfs.MemFS
				acked map[string]int
			}
			var images []image
			// A bound on a stalled workload, not on a slow one: the
			// property is durability, and under -race on a loaded 2-core
			// machine (the WAL pacer's 1 ms waits running late) the three
			// crashes took longer than 20 s in all while batches were
			// still being acked.
			const stall = 20 * time.Second
			deadline := time.NewTimer(stall)
			defer deadline.Stop()
			for range 3 {
				// Crash after a random amount of further progress rather
				// than after some time.
				step := 20 + rng.IntN(100)
				if w.pad > 0 {
					step = 200 + rng.IntN(400)
				}
				target := total(w.ackedCopy()) + step
				for total(w.ackedCopy()) < target {
					select {
					case <-w.progress:
						deadline.Reset(stall)
					case err := <-errs:
						t.Fatalf("writer stopped: %v", err)
					case <-deadline.C:
						t.Fatalf("workload stalled: no batch acked in %v: %v", stall, w.ackedCopy())
					}
				}
				acked := w.ackedCopy() // acked strictly before the clone starts
				img := mem.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: rng.IntN(101), RNG: rng})
				images = append(images, image{img, acked})
			}
			close(stop)
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatalf("writer: %v", err)
				}
			}
			flushes := counterValue(t, s.metrics.flushes)
			if w.pad > 0 && flushes == 0 {
				t.Fatal("the big-batch workload flushed no memtable: the crash images hold no sstables")
			}
			t.Logf("%d memtable flushes during the workload", int(flushes))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for i, img := range images {
				t.Logf("crash %d: %d batches acked before it", i, total(img.acked))
				checkRecovered(t, img.fs, img.acked, docs)
			}
			// The clean shutdown keeps everything.
			checkRecovered(t, mem, w.ackedCopy(), docs)
		})
	}
}

func total(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// TestSyncFailureFailStops injects an fsync failure into the WAL with
// Pebble's errorfs: the batch being synced is not acknowledged, the error is
// clear, and every later call is refused.
func TestSyncFailureFailStops(t *testing.T) {
	mem := vfs.NewMem()
	inj := &errorfs.Toggle{Injector: errorfs.InjectorFunc(func(op errorfs.Op) error {
		switch op.Kind {
		case errorfs.OpFileSync, errorfs.OpFileSyncData, errorfs.OpFileSyncTo:
			if strings.HasSuffix(op.Path, ".log") {
				return errorfs.ErrInjected
			}
		}
		return nil
	})}
	var logs lockedBuffer
	o := LocalOptions()
	o.FS = errorfs.Wrap(mem, inj)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s := openT(t, "db", o)
	ctx := context.Background()
	mustAppend(t, s, "d", []byte("before"))

	inj.On()
	_, err := s.Append(ctx, "d", []byte("unsynced"))
	if !errors.Is(err, ErrFailStopped) || !errors.Is(err, errorfs.ErrInjected) {
		t.Fatalf("Append with failing fsync = %v; want ErrFailStopped wrapping the injected error", err)
	}
	select {
	case <-s.Failed():
	default:
		t.Fatal("Failed() not closed after a failed write")
	}
	inj.Off() // even a healthy disk now must not be trusted
	if _, err := s.Append(ctx, "d", []byte("after")); !errors.Is(err, ErrFailStopped) {
		t.Fatalf("Append after fail-stop = %v, want ErrFailStopped", err)
	}
	if err := s.WriteSnapshot(ctx, "e", []byte("s")); !errors.Is(err, ErrFailStopped) {
		t.Fatalf("WriteSnapshot after fail-stop = %v, want ErrFailStopped", err)
	}
	if _, _, err := s.Load(ctx, "d"); !errors.Is(err, ErrFailStopped) {
		t.Fatalf("Load after fail-stop = %v, want ErrFailStopped", err)
	}
	if !strings.Contains(logs.String(), "refusing all further writes") {
		t.Fatalf("fail-stop not logged clearly; log:\n%s", logs.String())
	}
	if err := s.Close(); !errors.Is(err, ErrFailStopped) {
		t.Fatalf("Close after fail-stop = %v, want the fail-stop error", err)
	}

	// A restart recovers from the disk: the acked batch is there.
	o2 := LocalOptions()
	o2.FS = mem
	s2 := openT(t, "db", o2)
	defer s2.Close()
	_, batches := loadT(t, s2, "d")
	if len(batches) == 0 || string(batches[0]) != "before" {
		t.Fatalf("after restart: %q, want the acked batch first", batches)
	}
}

// lockedBuffer is a log sink safe for Pebble's background goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
