package bench

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CPUTimes is the CPU a process has used, split as the kernel accounts it.
type CPUTimes struct {
	User time.Duration
	Sys  time.Duration
}

// Sub returns the CPU used between b and a.
func (a CPUTimes) Sub(b CPUTimes) CPUTimes {
	return CPUTimes{User: a.User - b.User, Sys: a.Sys - b.Sys}
}

// Total is user plus system time.
func (a CPUTimes) Total() time.Duration { return a.User + a.Sys }

// clockTick is the unit of utime and stime in /proc/PID/stat: USER_HZ,
// which Linux fixes at 100 on every architecture Go supports (sysconf
// _SC_CLK_TCK reports it; the kernel's own HZ is not visible there).
const clockTick = 10 * time.Millisecond

// ProcessCPU returns the CPU time process pid has used, from
// /proc/PID/stat (Linux), at 10 ms resolution.
func ProcessCPU(pid int) (CPUTimes, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return CPUTimes{}, fmt.Errorf("bench: CPU time of process %d: %w", pid, err)
	}
	return parseProcStat(string(data))
}

// parseProcStat reads utime and stime (fields 14 and 15) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// hold spaces and parentheses itself, so fields are counted after the last
// ')'.
func parseProcStat(s string) (CPUTimes, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return CPUTimes{}, fmt.Errorf("bench: malformed /proc stat line %q", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime is field 14, so f[11]; stime f[12].
	if len(f) < 13 {
		return CPUTimes{}, fmt.Errorf("bench: /proc stat line has %d fields after the name, want ≥ 13", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return CPUTimes{}, fmt.Errorf("bench: /proc stat utime %q: %w", f[11], err)
	}
	st, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return CPUTimes{}, fmt.Errorf("bench: /proc stat stime %q: %w", f[12], err)
	}
	return CPUTimes{User: time.Duration(u) * clockTick, Sys: time.Duration(st) * clockTick}, nil
}

// SelfCPU returns the CPU time this process has used (getrusage, µs
// resolution).
func SelfCPU() (CPUTimes, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return CPUTimes{}, fmt.Errorf("bench: getrusage: %w", err)
	}
	return CPUTimes{
		User: time.Duration(ru.Utime.Nano()),
		Sys:  time.Duration(ru.Stime.Nano()),
	}, nil
}

// PinProcess restricts every thread of process pid to the given CPUs
// (sched_setaffinity on each entry of /proc/PID/task; threads created later
// inherit the mask of the thread that creates them). The task list is read
// twice, so a thread started by a not-yet-pinned thread during the first
// pass is caught by the second.
func PinProcess(pid int, cpus []int) error {
	if len(cpus) == 0 {
		return nil
	}
	var set unix.CPUSet
	for _, c := range cpus {
		if c < 0 || c >= 1024 {
			return fmt.Errorf("bench: CPU %d out of range", c)
		}
		set.Set(c)
	}
	for range 2 {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		if err != nil {
			return fmt.Errorf("bench: pin process %d: %w", pid, err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
				return fmt.Errorf("bench: pin thread %d of process %d to CPUs %v: %w", tid, pid, cpus, err)
			}
		}
	}
	return nil
}

// ParseCPUList parses a CPU list such as "0", "1,3" or "0-1" (the format
// of taskset -c); "" is no list.
func ParseCPUList(s string) ([]int, error) {
	var out []int
	if s == "" {
		return nil, nil
	}
	for part := range strings.SplitSeq(s, ",") {
		a, b, isRange := strings.Cut(part, "-")
		lo, err := strconv.Atoi(strings.TrimSpace(a))
		if err != nil {
			return nil, fmt.Errorf("bench: CPU list %q: %w", s, err)
		}
		hi := lo
		if isRange {
			if hi, err = strconv.Atoi(strings.TrimSpace(b)); err != nil {
				return nil, fmt.Errorf("bench: CPU list %q: %w", s, err)
			}
		}
		if lo < 0 || hi < lo || hi >= 1024 {
			return nil, fmt.Errorf("bench: CPU list %q: bad range %d-%d", s, lo, hi)
		}
		for c := lo; c <= hi; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}
