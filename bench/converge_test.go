package bench

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

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
