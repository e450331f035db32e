package bench

import (
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftsync/weft/crdt"
)

// convergeCombine's bookkeeping on hand-made reports of two processes: a
// document with writers a (process 0) and b (process 1) and a reader c
// (process 1).
func TestConvergeCombine(t *testing.T) {
	a, b, c := crdt.ReplicaID{1}, crdt.ReplicaID{2}, crdt.ReplicaID{3}
	full := crdt.VersionVector{a: 5, b: 2}
	finals := []convergeFinal{{
		Replicas: []convergeReplica{{
			Replica: a, Acked: 5, Version: full, Digest: [32]byte{9},
			// Edits at seq 1 (ops 1-2), 3, 4 and 5.
			Starts: []convergeStart{{Seq: 1, At: 100}, {Seq: 3, At: 200}, {Seq: 4, At: 300}, {Seq: 5, At: 400}},
		}},
		// b's edit arrived at a.
		Arrivals: []convergeArrival{{Replica: b, Seq: 1, End: 2, Last: 150, N: 1}},
	}, {
		Replicas: []convergeReplica{
			{Replica: b, Acked: 2, Version: full, Digest: [32]byte{9}, Starts: []convergeStart{{Seq: 1, At: 120}}},
			// c lacks a's last edit.
			{Replica: c, Version: crdt.VersionVector{a: 4, b: 2}, Digest: [32]byte{8}},
		},
		Arrivals: []convergeArrival{
			// a's first three edits arrived at b and c as one batch,
			// the later one at c 1 µs after b.
			{Replica: a, Seq: 1, End: 4, Last: 1300, N: 1},
			{Replica: a, Seq: 1, End: 4, Last: 1301, N: 1},
			// a's edit 5 reached b twice, c never.
			{Replica: a, Seq: 5, End: 5, Last: 1400, N: 2},
			// b's own edit at c, and an op that starts no edit.
			{Replica: b, Seq: 1, End: 2, Last: 170, N: 1},
			{Replica: a, Seq: 2, End: 2, Last: 1500, N: 1},
		},
	}}
	out := convergeCombine(finals)
	if out.edits != 5 || out.acked != 5 || out.lost != 1 {
		t.Errorf("edits %d acked %d lost %d, want 5 5 1", out.edits, out.acked, out.lost)
	}
	if out.undelivered != 0 || out.duplicated != 0 {
		// a@5 arrived twice in all, as often as it has other
		// subscribers: per-edit counts cannot tell, the versions can.
		t.Errorf("undelivered %d duplicated %d, want 0 0", out.undelivered, out.duplicated)
	}
	if out.differing != 1 {
		t.Errorf("differing %d, want 1", out.differing)
	}
	if out.deliveries[0] != 1 || out.deliveries[1] != 3+3+2+1 {
		t.Errorf("deliveries %v, want [1 9]", out.deliveries)
	}
	want := map[time.Duration]int{1201: 1, 1101: 1, 1001: 1, 1000: 1, 50: 1}
	got := map[time.Duration]int{}
	for _, l := range out.latencies {
		got[l]++
	}
	if len(got) != len(want) {
		t.Fatalf("latencies %v, want %v", out.latencies, want)
	}
	for l, n := range want {
		if got[l] != n {
			t.Fatalf("latencies %v, want %v", out.latencies, want)
		}
	}
}

// The bottleneck warning's rules, each on its own.
func TestConvergeBottleneckRules(t *testing.T) {
	srv := CPUTimes{User: 8 * time.Second, Sys: 2 * time.Second} // 0.5 of a core over 20 s
	for _, tc := range []struct {
		name   string
		procs  []ConvergeProc
		edits  int
		want   bool
		reason string
	}{
		{"quiet", []ConvergeProc{{UserS: 4, SysS: 2, Cores: 0.3}, {UserS: 4, SysS: 2, Cores: 0.3}}, 40000, false, ""},
		{"a saturated process", []ConvergeProc{{UserS: 14, SysS: 4, Cores: 0.9}, {UserS: 1, Cores: 0.05}}, 40000, true, "process 1 of 2 kept 0.90 of a core"},
		{"busy and above the server", []ConvergeProc{{UserS: 9, SysS: 3, Cores: 0.6}}, 40000, true, "more CPU than the server"},
		{"above the server but idle", []ConvergeProc{{UserS: 9, SysS: 3, Cores: 0.4}}, 40000, false, ""},
		{"edits short of the rate", []ConvergeProc{{UserS: 4, Cores: 0.2}}, 30000, true, "made 30000 of the 40000 edits"},
	} {
		r := ConvergeResult{Edits: tc.edits, Deliveries: 19 * tc.edits, LoadGen: tc.procs}
		r.measureCPU(srv, 20*time.Second, true, []int{0, 1}, 40000)
		if r.LoadGenBottleneck != tc.want || !strings.Contains(r.Warning, tc.reason) || tc.want == (r.Warning == "") {
			t.Errorf("%s: bottleneck %v, warning %q; want %v mentioning %q", tc.name, r.LoadGenBottleneck, r.Warning, tc.want, tc.reason)
		}
	}
}

// convergeNow agrees with CLOCK_MONOTONIC read directly, which other
// processes read too.
func TestConvergeNowIsClockMonotonic(t *testing.T) {
	var ts unix.Timespec
	before := convergeNow()
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	after := convergeNow()
	// The offset is taken between two reads at start: allow a
	// millisecond for a descheduling there.
	if mono := ts.Nano(); mono < before-int64(time.Millisecond) || mono > after+int64(time.Millisecond) {
		t.Fatalf("CLOCK_MONOTONIC %d outside [%d, %d]", mono, before, after)
	}
}
