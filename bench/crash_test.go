package bench

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCheckCrashCountsLostAndDuplicated(t *testing.T) {
	const docs = 2
	// Writers 0 and 2 edit crash/0, writer 1 crash/1.
	texts := map[string]string{
		"crash/0": "[0:0][2:0][0:1][0:1]", // 0:1 twice, 0:2 missing
		"crash/1": "[1:0][1:1]",
	}
	acked := []int{3, 2, 1} // 0:0..0:2, 1:0..1:1, 2:0
	var res CrashResult
	reported := map[string]bool{}
	if err := checkCrash(texts, acked, docs, reported, &res); err != nil {
		t.Fatal(err)
	}
	if res.Lost != 1 || res.Duplicated != 1 {
		t.Fatalf("lost %d duplicated %d, want 1 and 1", res.Lost, res.Duplicated)
	}
	// The same loss seen again at the next kill is not counted twice.
	if err := checkCrash(texts, acked, docs, reported, &res); err != nil {
		t.Fatal(err)
	}
	if res.Lost != 1 || res.Duplicated != 1 {
		t.Fatalf("after a second check: lost %d duplicated %d, want 1 and 1", res.Lost, res.Duplicated)
	}
	// Edits made but not yet acked may be present or not.
	if err := checkCrash(map[string]string{"crash/0": "[0:0][0:1][0:2][0:3]"}, []int{3}, 1, map[string]bool{}, &res); err != nil {
		t.Fatalf("an unacked edit that survived was refused: %v", err)
	}
	for _, bad := range []map[string]string{
		{"crash/0": "[0:0]garbage"},
		{"crash/0": "[1:0]"}, // writer 1 writes crash/1
	} {
		if err := checkCrash(bad, []int{1, 1}, docs, map[string]bool{}, &res); err == nil {
			t.Errorf("checkCrash accepted %v", bad)
		}
	}
}

// TestRunCrashSmall builds weft and runs a short kill -9 test against it.
func TestRunCrashSmall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds weft and runs it for seconds")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to build weft")
	}
	bin := filepath.Join(t.TempDir(), "weft")
	build := exec.Command(goBin, "build", "-o", bin, "github.com/weftsync/weft/cmd/weft")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building weft: %v\n%s", err, out)
	}
	var logs strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res := RunCrash(ctx, CrashOptions{Binary: bin, Dir: t.TempDir(), Writers: 8, Docs: 2,
		Duration: 3 * time.Second, Kills: 2, Stderr: &lockedWriter{b: &logs}})
	t.Logf("%+v", res)
	if !res.OK || res.Kills != 3 || res.Acked < 10 {
		t.Fatalf("RunCrash = %+v\nserver log:\n%s", res, logs.String())
	}
}

func TestRunCrashNeedsBinary(t *testing.T) {
	if res := RunCrash(context.Background(), CrashOptions{}); res.OK || res.Error == "" {
		t.Fatalf("RunCrash without a binary = %+v", res)
	}
}

// lockedWriter serializes writes from the server's stderr copiers.
type lockedWriter struct {
	mu sync.Mutex
	b  *strings.Builder
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
