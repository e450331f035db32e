package bench

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a parenthesis, as the kernel allows.
	line := "4242 (weft (x) y) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 9 0 100 1000000 500 18446744073709551615"
	got, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	if want := (CPUTimes{User: 2500 * time.Millisecond, Sys: 370 * time.Millisecond}); got != want {
		t.Fatalf("parseProcStat = %+v, want %+v", got, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 2 3 4 5 6 7 8 9 u s"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q) accepted a malformed line", bad)
		}
	}
}

// ProcessCPU of this process agrees with getrusage (within /proc's 10 ms
// ticks) after burning some CPU.
func TestProcessCPUMatchesSelf(t *testing.T) {
	x := 0
	for deadline := time.Now().Add(50 * time.Millisecond); time.Now().Before(deadline); {
		x++
	}
	_ = x
	self, err := SelfCPU()
	if err != nil {
		t.Fatal(err)
	}
	proc, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if proc.Total() == 0 || self.Total() == 0 {
		t.Fatalf("no CPU time reported: proc %+v self %+v", proc, self)
	}
	if d := self.Total() - proc.Total(); d < -20*time.Millisecond || d > 200*time.Millisecond {
		t.Fatalf("proc %v and getrusage %v disagree", proc.Total(), self.Total())
	}
}

func TestParseCPUList(t *testing.T) {
	for in, want := range map[string][]int{"": nil, "1": {1}, "0,2": {0, 2}, "0-2,5": {0, 1, 2, 5}} {
		got, err := ParseCPUList(in)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("ParseCPUList(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"x", "2-1", "-1", "0,", "5000"} {
		if _, err := ParseCPUList(bad); err == nil {
			t.Errorf("ParseCPUList(%q) accepted", bad)
		}
	}
}

// Pinning a child process to CPU 0 shows in its /proc status.
func TestPinProcess(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	defer cmd.Process.Kill()
	if err := PinProcess(cmd.Process.Pid, []int{0}); err != nil {
		t.Fatal(err)
	}
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(cmd.Process.Pid, &set); err != nil {
		t.Fatal(err)
	}
	if set.Count() != 1 || !set.IsSet(0) {
		t.Fatalf("affinity after pinning: %d CPUs, CPU 0 set %v", set.Count(), set.IsSet(0))
	}
}
