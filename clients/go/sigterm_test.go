package client_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/internal/testbin"
)

// weftProcess is a `weft serve` child process.
type weftProcess struct {
	cmd    *exec.Cmd
	addr   string // host:port it serves on
	exited chan struct{}
	err    error // set before exited closes
	stderr strings.Builder
	mu     sync.Mutex
}

var servingLine = regexp.MustCompile(`http://(127\.0\.0\.1:[0-9]+)`)

// buildWeft returns a weft binary: make test's, or a fresh build.
func buildWeft(t *testing.T) string { return testbin.Weft(t) }

func startWeft(t *testing.T, bin, dataDir string) *weftProcess {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0", "--data", dataDir, "--insecure")
	cmd.Env = append(os.Environ(), "WEFT_LOG_LEVEL=warn")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &weftProcess{cmd: cmd, exited: make(chan struct{})}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	addr := make(chan string, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if m := servingLine.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
	}()
	go func() {
		defer wg.Done()
		b, _ := io.ReadAll(stderr)
		p.mu.Lock()
		p.stderr.Write(b)
		p.mu.Unlock()
	}()
	go func() {
		wg.Wait() // pipes drained before Wait, as os/exec requires
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
	})
	select {
	case p.addr = <-addr:
		return p
	case <-p.exited:
		t.Fatalf("weft serve exited before serving: %v\n%s", p.err, p.stderrText())
	case <-time.After(30 * time.Second):
		t.Fatalf("weft serve did not print its URL within 30s\n%s", p.stderrText())
	}
	return nil
}

func (p *weftProcess) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// SIGTERM while a client streams edits: the server drains, exits 0, and
// every edit it acked is in its data directory when it restarts. The client
// keeps editing meanwhile, reconnects to the restarted server (behind the
// same proxy address) and sends what was not acked, so in the end nothing
// at all is lost.
func TestSIGTERMLosesNoAckedChange(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the weft binary")
	}
	bin := buildWeft(t)
	data := t.TempDir()
	srv := startWeft(t, bin, data)
	px := startProxy(t, srv.addr)
	c := newClient(t, px.URL(), func(o *client.Options) {
		if testing.Verbose() {
			o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
		}
	})
	d := open(t, c, "sigterm/doc")
	waitUntil(t, 10*time.Second, "synced", d.Synced)

	// Stream edits from a goroutine until told to stop.
	stop := make(chan struct{})
	stopCtx, cancelStop := context.WithCancel(context.Background())
	defer cancelStop()
	editErr := make(chan error, 1)
	var made sync.WaitGroup
	made.Add(1)
	go func() {
		defer made.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				editErr <- nil
				return
			default:
			}
			err := d.Edit(func(tx *crdt.Tx, doc *crdt.Doc) error {
				return tx.Insert("body", doc.TextLen("body"), fmt.Sprintf("%d,", i))
			})
			if err != nil {
				editErr <- err
				return
			}
			if i%50 == 49 {
				// Let acks flow: the test wants a mix of acked and
				// in-flight edits when the signal lands.
				if err := d.WaitSaved(stopCtx); err != nil {
					if stopCtx.Err() != nil {
						editErr <- nil // the server went away mid-wait: expected
					} else {
						editErr <- err
					}
					return
				}
			}
		}
	}()
	waitUntil(t, 10*time.Second, "some edits acked", func() bool { return d.Acked() > 500 })

	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("weft serve did not exit within 30s of SIGTERM\n%s", srv.stderrText())
	}
	var exit *exec.ExitError
	if srv.err != nil && !(errors.As(srv.err, &exit) && exit.ExitCode() == 0) {
		t.Fatalf("weft serve exited with %v after SIGTERM\n%s", srv.err, srv.stderrText())
	}
	waitUntil(t, 10*time.Second, "client notices the server is gone", func() bool { return !c.Connected() })
	acked := d.Acked()
	close(stop)
	cancelStop()
	made.Wait()
	if err := <-editErr; err != nil {
		t.Fatal(err)
	}

	// Restart on the same data: every acked edit must be there.
	srv2 := startWeft(t, bin, data)
	probeClient := newClient(t, "ws://"+srv2.addr+"/v1/ws", nil)
	probe := open(t, probeClient, "sigterm/doc")
	waitUntil(t, 10*time.Second, "probe synced", probe.Synced, probe)
	have := probe.Version()[c.Replica()]
	if have < acked {
		t.Fatalf("restarted server holds %d of the client's ops, but %d were acked before SIGTERM", have, acked)
	}
	local := d.Text("body")
	if got := probe.Text("body"); !strings.HasPrefix(local, got) || uint64(len(got)) != have {
		t.Fatalf("restarted server text (%d runes) is not the %d-op prefix of the client's text", len(got), have)
	}
	t.Logf("acked before SIGTERM: %d ops; on disk after restart: %d; made in total: %d", acked, have, len(local))

	// The client reconnects to the new server and sends the rest.
	px.setTarget(srv2.addr)
	if err := d.WaitSaved(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, d, probe)
	if got := probe.Text("body"); got != local {
		t.Fatalf("after reconnect the server has %d runes, the client %d", len(got), len(local))
	}
	_ = client.ErrClosed
}
