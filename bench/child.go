package bench

import (
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// childEnv is the environment of a process a benchmark starts: the
// caller's, without its WEFT_* variables (flags come from the command
// line and from extra only: the caller's environment must not change what
// is measured), and with each KEY=VALUE of extra replacing any KEY the
// caller has.
func childEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "WEFT_") || overridden(kv, extra) {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// overridden reports whether extra sets kv's variable.
func overridden(kv string, extra []string) bool {
	k, _, _ := strings.Cut(kv, "=")
	for _, e := range extra {
		if ek, _, _ := strings.Cut(e, "="); ek == k {
			return true
		}
	}
	return false
}

// childCommand is binary with args as a child of the benchmark: with
// childEnv(extra...), and killed when the benchmark dies, so that no
// server or worker is left behind, still pinned to a CPU the next run
// measures. NB: the kernel sends Pdeathsig when the thread that forked
// the child exits, not the process; the Go runtime ends a thread only
// when a goroutine locked to it returns, which nothing here does.
func childCommand(binary string, extra []string, args ...string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = childEnv(extra...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// childPipes are a started child's standard streams, as the benchmark
// holds them: its stdin (nil unless asked for), its stdout, and the tail
// of its stderr for error messages.
type childPipes struct {
	stdin  io.WriteCloser
	stdout io.ReadCloser
	stderr *tailBuffer
}

// startChild starts cmd (a childCommand) with a pipe from its stdout, one
// to its stdin when withStdin, and the last tailMax bytes of its stderr
// kept.
func startChild(cmd *exec.Cmd, withStdin bool, tailMax int) (childPipes, error) {
	var p childPipes
	var err error
	if withStdin {
		if p.stdin, err = cmd.StdinPipe(); err != nil {
			return p, err
		}
	}
	if p.stdout, err = cmd.StdoutPipe(); err != nil {
		return p, err
	}
	p.stderr = &tailBuffer{max: tailMax}
	cmd.Stderr = p.stderr
	return p, cmd.Start()
}
