package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/weftsync/weft/internal/testbin"
	"github.com/weftsync/weft/syncserver"
)

// startInProcess serves a syncserver with an in-memory store on a random
// loopback port and returns its base URL.
func startInProcess(t *testing.T) string {
	t.Helper()
	o := syncserver.LocalOptions()
	o.Store = syncserver.NewMemStore()
	o.Insecure = true
	srv, err := syncserver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		hs.Close()
	})
	return "http://" + ln.Addr().String()
}

func TestConvergeSmallRunConverges(t *testing.T) {
	url := startInProcess(t)
	r, err := Converge(context.Background(), ConvergeOptions{
		Server: url, Clients: 6, Docs: 2, Rate: 50, Duration: 500 * time.Millisecond, Settle: 10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged || r.Clients != 6 || r.Docs != 2 {
		t.Fatalf("result %+v", r)
	}
	// 6 clients at 50/s for 0.5s make about 150 edits; a scheduler hiccup
	// may cost a few ticks, never most of them.
	if r.Edits < 60 || r.Edits > 160 {
		t.Fatalf("%d edits, want about 150", r.Edits)
	}
	if !(0 < r.P50Ms && r.P50Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
		t.Fatalf("latency quantiles out of order: %+v", r)
	}
}

func TestConvergeOptionsReportEveryProblem(t *testing.T) {
	_, err := Converge(context.Background(), ConvergeOptions{Clients: 4, Docs: 3, Rate: -1, Duration: -time.Second, Settle: -1})
	if err == nil {
		t.Fatal("bad options accepted")
	}
	for _, want := range []string{"docs", "rate", "duration", "settle"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if _, err := Converge(context.Background(), ConvergeOptions{Clients: 1}); err == nil || !strings.Contains(err.Error(), "at least 2 clients") {
		t.Errorf("one client: %v", err)
	}
}

// The conns benchmark against the real binary: a few hundred connections
// are enough to check the mechanics (child process, URL line, handshake,
// subscribe, RSS probe); the 10,000-connection figure is for `weft bench`.
func TestConnsAgainstRealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	bin := testbin.Weft(t)
	r, err := Conns(context.Background(), ConnsOptions{Conns: 300, Docs: 10, Binary: bin, Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if r.Conns != 300 || r.BaselineRSS <= 0 || r.LoadedRSS <= 0 {
		t.Fatalf("result %+v", r)
	}
	// Sanity, not a target: an idle connection costs the server something,
	// and far less than a megabyte.
	if r.BytesPerConn <= 0 || r.BytesPerConn > 1<<20 {
		t.Fatalf("implausible %.0f bytes per connection", r.BytesPerConn)
	}
}

// --procs 2 against a real `weft serve`: the second share runs in a worker
// process of the real binary, and every edit must reach the subscribers of
// both processes.
func TestConvergeProcsAgainstRealServer(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	bin := testbin.Weft(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Converge(ctx, ConvergeOptions{
		Binary: bin, WorkerBinary: bin, ServerArgs: []string{"--data=:memory:"}, Procs: 2,
		Clients: 8, Docs: 2, Rate: 40, Duration: time.Second, Settle: 30 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Converged || r.Lost != 0 || r.Undelivered != 0 || r.DuplicateDeliveries != 0 || r.Procs != 2 {
		t.Fatalf("result %+v", r)
	}
	if r.Edits == 0 || r.Acked != r.Edits {
		t.Fatalf("%d edits, %d acked: want every edit acked", r.Edits, r.Acked)
	}
	// Two documents of 4 subscribers: each edit reaches 3 others.
	if r.Deliveries != 3*r.Edits {
		t.Fatalf("%d deliveries of %d edits, want 3 each", r.Deliveries, r.Edits)
	}
	if len(r.LoadGen) != 2 || r.LoadGen[0].PID == r.LoadGen[1].PID {
		t.Fatalf("load generator processes %+v", r.LoadGen)
	}
	for i, p := range r.LoadGen {
		// Within a process each edit has one other subscriber of its
		// document; more deliveries than own edits are edits of the
		// other process.
		if p.Clients != 4 || p.Edits == 0 || p.Deliveries <= p.Edits || p.UserS+p.SysS <= 0 {
			t.Fatalf("process %d: %+v", i, p)
		}
	}
	if r.ServerCPUPerDeliveryUS <= 0 || !(0 < r.P50Ms && r.P50Ms <= r.P99Ms && r.P99Ms <= r.MaxMs) {
		t.Fatalf("result %+v", r)
	}
}

// A worker whose parent closes its stdin (as when the parent exits) closes
// its clients and exits by itself.
func TestConvergeWorkerExitsWhenParentGoes(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	bin := testbin.Weft(t)
	url := startInProcess(t)
	c, err := startConvergeChild(bin, convergeWorkerConfig{
		URL: url, RunID: "exit", First: 0, Count: 2, Clients: 2, Docs: 1, Rate: 1, Duration: time.Second, Settle: time.Second, Seed: 1,
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.ready(ctx); err != nil {
		t.Fatal(err)
	}
	c.stop()
	// stop kills only a worker still running 10 s after its stdin closed;
	// one that returned the error "parent's next command: EOF" exits 1.
	var ee *exec.ExitError
	if !errors.As(c.err, &ee) || ee.ExitCode() != 1 || !strings.Contains(c.stderr.String(), "EOF") {
		t.Fatalf("worker exit: %v\n%s", c.err, c.stderr.String())
	}
}

// Killing `weft bench converge --procs 2` with SIGKILL (no chance to clean
// up) takes its worker and its server with it.
func TestConvergeChildrenDieWithParent(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	bin := testbin.Weft(t)
	cmd := exec.Command(bin, "bench", "converge", "-v", "--procs", "2", "--clients", "4", "--docs", "2",
		"--rate", "5", "--duration", "1m", "--server-arg=--data=:memory:")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// Wait for the log line that follows every worker's ready report.
	connected := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		found := false
		for sc.Scan() {
			if !found && strings.Contains(sc.Text(), "clients connected") {
				found = true
				connected <- true
			}
		}
		close(connected)
	}()
	select {
	case ok := <-connected:
		if !ok {
			t.Fatal("weft bench converge exited before its clients connected")
		}
	case <-time.After(time.Minute):
		t.Fatal("clients did not connect within a minute")
	}
	kids := processChildren(t, cmd.Process.Pid)
	if len(kids) != 2 {
		t.Fatalf("children of weft bench converge: %v, want a server and a worker", kids)
	}
	var fds []int
	for _, pid := range kids {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			t.Fatalf("pidfd_open %d: %v", pid, err)
		}
		defer unix.Close(fd)
		fds = append(fds, fd)
	}
	cmd.Process.Kill()
	cmd.Wait()
	// A pidfd becomes readable when its process exits.
	deadline := time.Now().Add(30 * time.Second)
	for i, fd := range fds {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(pfd, int(time.Until(deadline).Milliseconds()))
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				t.Fatalf("process %d still runs 30 s after its parent was killed (%v)", kids[i], err)
			}
			break
		}
	}
}

// processChildren lists the processes whose parent is pid (from /proc; the
// kernel's children file is optional).
func processChildren(t *testing.T, pid int) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue // gone meanwhile
		}
		// Fields after the parenthesised name: state, ppid, ...
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			kids = append(kids, p)
		}
	}
	return kids
}
