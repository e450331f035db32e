package bench

import (
	"slices"
	"strings"
	"testing"
)

// TestChildEnv: a child gets none of the caller's WEFT_* variables, and
// what the benchmark sets replaces the caller's value instead of
// standing beside it.
func TestChildEnv(t *testing.T) {
	t.Setenv("WEFT_DATA", "/somewhere")
	t.Setenv("GOGC", "50")
	t.Setenv("BENCH_CHILD_KEPT", "yes")
	env := childEnv("GOGC=400", "WEFT_SECRET=s")
	count := func(prefix string) int {
		n := 0
		for _, kv := range env {
			if strings.HasPrefix(kv, prefix) {
				n++
			}
		}
		return n
	}
	switch {
	case count("WEFT_DATA=") != 0:
		t.Errorf("the caller's WEFT_DATA reached the child: %q", env)
	case count("GOGC=") != 1 || !slices.Contains(env, "GOGC=400"):
		t.Errorf("GOGC: want only 400, got %q", env)
	case !slices.Contains(env, "WEFT_SECRET=s"):
		t.Errorf("the benchmark's WEFT_SECRET is missing: %q", env)
	case !slices.Contains(env, "BENCH_CHILD_KEPT=yes"):
		t.Errorf("another variable of the caller was dropped: %q", env)
	}
}
