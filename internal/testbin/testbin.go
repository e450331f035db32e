// Package testbin gives tests the weft binary to run as a real process
// (kill -9, SIGTERM, many connections, a cluster of servers).
//
// make test builds the binary once before the tests and names it in
// $WEFT_BIN (the TypeScript tests read the same variable); without it,
// each call builds cmd/weft into the test's temporary directory. From a
// cold build cache that build is a full compile of weft and its
// dependencies, and test packages run in parallel: one build before the
// tests instead of one per test kept make test from timing out on a loaded
// 2-core machine.
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Weft returns the path of a weft binary built from this module: $WEFT_BIN
// if set (it must exist), else a fresh build in t.TempDir().
func Weft(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("WEFT_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("WEFT_BIN: %v", err)
		}
		return p
	}
	bin := filepath.Join(t.TempDir(), "weft")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/weftsync/weft/cmd/weft").CombinedOutput(); err != nil {
		t.Fatalf("go build cmd/weft: %v\n%s", err, out)
	}
	return bin
}
