package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ServerProcess is a `weft serve` child process started by a benchmark so
// that the server's memory and CPU are measured apart from the load
// generator's.
type ServerProcess struct {
	// URL is the base URL the server printed on start, e.g.
	// "http://127.0.0.1:41234".
	URL string
	cmd *exec.Cmd
	// exited is closed when the process has exited; err is then set.
	exited chan struct{}
	err    error
	stderr *tailBuffer
}

var urlLine = regexp.MustCompile(`(https?|wss?)://[0-9A-Za-z.\-\[\]:]+`)

// StartServer runs `binary serve args...` with its data in dataDir and waits
// (until ctx ends) for the line announcing its URL. The server listens on a
// random loopback port unless args say otherwise.
func StartServer(ctx context.Context, binary, dataDir string, args ...string) (*ServerProcess, error) {
	return StartServerEnv(ctx, binary, dataDir, nil, args...)
}

// StartServerEnv is StartServer with extra KEY=VALUE environment variables
// (e.g. WEFT_SECRET, which then stays off the command line).
func StartServerEnv(ctx context.Context, binary, dataDir string, env []string, args ...string) (*ServerProcess, error) {
	full := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", dataDir}, args...)
	cmd := childCommand(binary, env, full...)
	pipes, err := startChild(cmd, false, 8<<10)
	if err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", binary, err)
	}
	stdout := pipes.stdout
	p := &ServerProcess{cmd: cmd, exited: make(chan struct{}), stderr: pipes.stderr}
	found := make(chan string, 1)
	go func() {
		// Read stdout to the end so the child never blocks on a full pipe.
		sc := bufio.NewScanner(stdout)
		sent := false
		for sc.Scan() {
			if m := urlLine.FindString(sc.Text()); m != "" && !sent {
				found <- m
				sent = true
			}
		}
		io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	select {
	case u := <-found:
		p.URL = u
		return p, nil
	case <-p.exited:
		return nil, fmt.Errorf("bench: server exited before announcing its URL: %v\n%s", p.err, p.stderr.String())
	case <-ctx.Done():
		p.Kill()
		return nil, fmt.Errorf("bench: server did not announce its URL: %w\n%s", ctx.Err(), p.stderr.String())
	}
}

// PID returns the server's process id.
func (p *ServerProcess) PID() int { return p.cmd.Process.Pid }

// Stop sends SIGTERM and waits up to timeout for a graceful exit, then kills.
func (p *ServerProcess) Stop(timeout time.Duration) error {
	select {
	case <-p.exited:
		return p.err
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.err
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("bench: server did not exit within %v of SIGTERM", timeout)
	}
}

// Kill ends the process at once and waits for it.
func (p *ServerProcess) Kill() {
	p.cmd.Process.Kill()
	<-p.exited
}

// Stderr returns the last few KiB the server wrote to stderr.
func (p *ServerProcess) Stderr() string { return p.stderr.String() }

// RSS returns the resident set size of process pid in bytes, from the VmRSS
// line of /proc/PID/status.
func RSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("bench: read RSS: %w", err)
	}
	return parseVmRSS(string(data))
}

func parseVmRSS(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("bench: unexpected VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("bench: unexpected VmRSS line %q: %w", strings.TrimSpace(line), err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("bench: no VmRSS line in /proc status")
}

// RaiseFileLimit raises this process's soft RLIMIT_NOFILE to at least want
// (up to the hard limit) and returns the new soft limit. Children started
// afterwards inherit it.
func RaiseFileLimit(want uint64) (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("bench: getrlimit: %w", err)
	}
	if lim.Cur >= want {
		return lim.Cur, nil
	}
	lim.Cur = min(want, lim.Max)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, fmt.Errorf("bench: setrlimit: %w", err)
	}
	return lim.Cur, nil
}

// tailBuffer keeps the last max bytes written to it; the child's stderr
// goroutine writes while the benchmark may read.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte // guarded by mu
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// MintToken runs `binary token` to sign a token for user with grants
// (e.g. "bench/*:write") under secret.
func MintToken(ctx context.Context, binary, secret, user, grants string) (string, error) {
	cmd := exec.CommandContext(ctx, binary, "token", "--user", user, "--docs", grants, "--ttl", "24h")
	cmd.Env = childEnv("WEFT_SECRET=" + secret)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("bench: weft token: %w: %s", err, ee.Stderr)
		}
		return "", fmt.Errorf("bench: weft token: %w", err)
	}
	tok := strings.TrimSpace(string(out))
	if tok == "" || strings.ContainsAny(tok, " \n") {
		return "", fmt.Errorf("bench: weft token printed %q, not one token", out)
	}
	return tok, nil
}
