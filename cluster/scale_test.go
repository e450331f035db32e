package cluster

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/storage"
)

var scaleDocs = flag.Int("cluster.scale", 0, "run TestAntiEntropyScale with this many stored documents (e.g. 10000; a tenth differ)")

// TestAntiEntropyScale measures anti-entropy over many stored, unloaded
// documents (run with -cluster.scale 10000): two nodes start on stores
// that hold the same documents except a tenth, which one node has an
// extra change of. It reports how long until they agree, then the CPU an
// anti-entropy round costs at rest and the documents it loaded (none).
func TestAntiEntropyScale(t *testing.T) {
	if *scaleDocs == 0 {
		t.Skip("a measurement: run with -cluster.scale N")
	}
	n, differ := *scaleDocs, *scaleDocs/10
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir()}
	var stores [2]*storage.Store
	for i := range stores {
		st, err := storage.Open(filepath.Join(dirs[i], "db"), storage.DefaultOptions())
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = st
	}
	t0 := time.Now()
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				id := fmt.Sprintf("scale/%d", i)
				d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
				tx := d.Begin()
				tx.Insert("t", 0, id)
				tx.Commit()
				b := codec.EncodeChanges(d.ChangesSince(nil))
				for _, st := range stores {
					if _, err := st.AppendVersion(ctx, id, b, d.Version()); err != nil {
						t.Error(err)
					}
				}
				if i < differ {
					v := d.Version()
					tx := d.Begin()
					tx.Insert("t", 0, "more ")
					tx.Commit()
					if _, err := stores[1].AppendVersion(ctx, id, codec.EncodeChanges(d.ChangesSince(v)), d.Version()); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	for _, st := range stores {
		st.Close()
	}
	t.Logf("wrote %d documents (%d differing) in %v", n, differ, time.Since(t0))

	// Production timings (memberlist's LAN configuration, a round every
	// 10s), so that "at rest" costs what it would in a deployment.
	mod := func(o *Options) {
		d := DefaultOptions()
		o.AntiEntropyInterval, o.Buckets = d.AntiEntropyInterval, d.Buckets
		o.GossipInterval, o.ProbeInterval, o.ProbeTimeout = d.GossipInterval, d.ProbeInterval, d.ProbeTimeout
		o.SuspicionMult, o.PushPullInterval = d.SuspicionMult, d.PushPullInterval
	}
	a := &tnode{t: t, dir: dirs[0], key: testKey, mod: mod, gossip: "127.0.0.1:0", peer: "127.0.0.1:0", http: "127.0.0.1:0", faults: &Faults{}}
	a.start()
	defer a.stop(true)
	start := time.Now()
	b := &tnode{t: t, dir: dirs[1], key: testKey, mod: mod, join: []string{a.gossip}, gossip: "127.0.0.1:0", peer: "127.0.0.1:0", http: "127.0.0.1:0", faults: &Faults{}}
	b.start()
	defer b.stop(true)
	eventually(t, "the digests to agree", func() bool {
		da, db := a.node.dig.snapshot(), b.node.dig.snapshot()
		for i := range da {
			if da[i] != db[i] {
				return false
			}
		}
		return true
	})
	t.Logf("%d differing documents repaired in %v (from the second node's start; repaired %v+%v, loads %v+%v)", differ, time.Since(start),
		a.metric("weft_cluster_antientropy_docs_repaired_total"), b.metric("weft_cluster_antientropy_docs_repaired_total"),
		a.metric("weft_doc_loads_total"), b.metric("weft_doc_loads_total"))

	loads := a.metric("weft_doc_loads_total") + b.metric("weft_doc_loads_total")
	r0 := a.metric("weft_cluster_antientropy_rounds_total") + b.metric("weft_cluster_antientropy_rounds_total")
	cpu0, w0 := cpuTime(), time.Now()
	// A measurement window, not synchronisation: polling the metrics
	// meanwhile would cost more CPU than what is measured.
	<-time.After(25 * time.Second)
	rounds := a.metric("weft_cluster_antientropy_rounds_total") + b.metric("weft_cluster_antientropy_rounds_total") - r0
	cpu, wall := cpuTime()-cpu0, time.Since(w0)
	t.Logf("at rest: %v rounds in %v; the process (both nodes: gossip, rounds, timers) used %v of CPU: %.3f%% of a core per node; documents loaded meanwhile: %v",
		rounds, wall.Round(time.Millisecond), cpu.Round(time.Millisecond), 100*float64(cpu)/2/float64(wall),
		a.metric("weft_doc_loads_total")+b.metric("weft_doc_loads_total")-loads)
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
