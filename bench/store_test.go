package bench

import (
	"context"
	"flag"
	"io"
	"testing"

	"github.com/weftsync/weft/storage"
)

var storeFull = flag.Bool("store-full", false, "run TestRunStoreSmall at full size (64 writers × 500 batches, 3 runs)")

func TestRunStoreSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("replays the automerge-paper trace")
	}
	o := StoreOptions{
		Open: func(dir string) (DurableStore, io.Closer, error) {
			st, err := storage.Open(dir, storage.DefaultOptions())
			return st, st, err
		},
		Dir:     t.TempDir(),
		Writers: 8,
		Batches: 20,
		Runs:    1,
	}
	if *storeFull {
		o.Writers, o.Batches, o.Runs = 0, 0, 0 // the defaults
	}
	res := RunStore(context.Background(), o)
	if res.Error != "" || !res.OK {
		t.Fatalf("RunStore: %+v", res)
	}
	if res.AckedPerS <= 0 || res.ColdLoadMS <= 0 || res.SnapshotBytes == 0 || res.BatchBytes < 10 {
		t.Fatalf("implausible result: %+v", res)
	}
	t.Logf("%+v", res)
}

func TestRunStoreReportsMissingOpener(t *testing.T) {
	if res := RunStore(context.Background(), StoreOptions{}); res.Error == "" || res.OK {
		t.Fatalf("RunStore without Open = %+v", res)
	}
}
