//go:build !invariants

// The sequential traces are too long to replay with a full structural
// check after every keystroke; the invariants build skips them.

package crdt_test

import (
	"testing"

	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/internal/traces"
)

func TestSequentialTraces(t *testing.T) {
	for _, name := range traces.Sequential {
		t.Run(name, func(t *testing.T) {
			tr, err := traces.Load(name)
			if err != nil {
				t.Fatal(err)
			}
			d := replay(t, tr)
			if got := d.Text("body"); got != tr.EndContent {
				t.Fatalf("replay of %s: got %d runes, want %d", name, len([]rune(got)), len([]rune(tr.EndContent)))
			}
			// The full history, applied to a fresh replica, gives the same text.
			e := newDoc(2, &hlc.ManualWall{})
			if err := e.Apply(d.ChangesSince(nil)...); err != nil {
				t.Fatal(err)
			}
			if e.Text("body") != tr.EndContent || e.Pending() != 0 {
				t.Fatalf("remote replay differs (pending %d)", e.Pending())
			}
			if !e.Version().Equal(d.Version()) {
				t.Fatalf("versions differ: %v vs %v", e.Version(), d.Version())
			}
		})
	}
}
