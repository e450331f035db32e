package client_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	client "github.com/weftsync/weft/clients/go"
	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/syncserver"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// testServer is a real syncserver with an in-memory store on a random
// loopback port.
type testServer struct {
	URL   string // ws://127.0.0.1:PORT/v1/ws
	Addr  string
	srv   *syncserver.Server
	hs    *http.Server
	store *syncserver.MemStore
}

func startServer(t testing.TB, mutate func(*syncserver.Options)) *testServer {
	t.Helper()
	o := syncserver.LocalOptions()
	o.Store = syncserver.NewMemStore()
	o.Secret = testSecret
	o.Insecure = true
	if mutate != nil {
		mutate(&o)
	}
	srv, err := syncserver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{URL: "ws://" + ln.Addr().String() + "/v1/ws", Addr: ln.Addr().String(), srv: srv,
		hs: &http.Server{Handler: srv.Handler()}}
	ts.store, _ = o.Store.(*syncserver.MemStore)
	go ts.hs.Serve(ln)
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ts.srv.Shutdown(ctx); err != nil {
		t.Errorf("server shutdown: %v", err)
	}
	ts.hs.Close()
}

func token(t *testing.T, user, grants string) string {
	t.Helper()
	g, err := syncserver.ParseGrants(grants)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := syncserver.MintToken(testSecret, syncserver.Claims{
		Name: user, Docs: g,
		RegisteredClaims: jwt.RegisteredClaims{Subject: user, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))},
	})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func newClient(t testing.TB, url string, mutate func(*client.Options)) *client.Client {
	t.Helper()
	o := client.LocalOptions(url)
	if mutate != nil {
		mutate(&o)
	}
	c, err := client.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("client close: %v", err)
		}
	})
	return c
}

func open(t testing.TB, c *client.Client, doc string) *client.Document {
	t.Helper()
	d, err := c.Open(doc, client.DocOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// waitUntil re-checks cond whenever one of the documents signals a change
// and at least every 20ms, until it holds or the deadline passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool, docs ...*client.Document) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	signal := make(chan struct{}, 1)
	stop := make(chan struct{})
	defer close(stop)
	for _, d := range docs {
		go func() {
			for {
				select {
				case <-d.Changed():
					select {
					case signal <- struct{}{}:
					default:
					}
				case <-stop:
					return
				}
			}
		}()
	}
	for !cond() {
		select {
		case <-signal:
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// state renders every field of a replica.
func state(d *client.Document) string {
	var out string
	d.Read(func(doc *crdt.Doc) { out = doc.Describe() })
	return out
}

// waitConverged waits until every replica is saved and all have the same
// version vector, then checks their contents are identical and returns it.
func waitConverged(t *testing.T, docs ...*client.Document) string {
	t.Helper()
	for _, d := range docs {
		if err := d.WaitSaved(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	waitUntil(t, 10*time.Second, "equal version vectors", func() bool {
		v := docs[0].Version()
		for _, d := range docs[1:] {
			if !d.Version().Equal(v) {
				return false
			}
		}
		return true
	}, docs...)
	s0 := state(docs[0])
	for i, d := range docs[1:] {
		if s := state(d); s != s0 {
			t.Fatalf("replica %d differs at equal versions:\n%s\nreplica 0:\n%s", i+1, s, s0)
		}
	}
	return s0
}

func edit(t *testing.T, d *client.Document, fn func(tx *crdt.Tx, doc *crdt.Doc) error) {
	t.Helper()
	if err := d.Edit(fn); err != nil {
		t.Fatal(err)
	}
}

// proxy is a loopback TCP relay that a test can take down (closing every
// relayed connection and refusing new ones) and bring back, to cut a
// client off the server without touching either.
type proxy struct {
	ln     net.Listener
	mu     sync.Mutex
	target string                // guarded by mu
	down   bool                  // guarded by mu
	conns  map[net.Conn]struct{} // guarded by mu
	wg     sync.WaitGroup
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
		p.wg.Wait()
	})
	return p
}

func (p *proxy) URL() string { return "ws://" + p.ln.Addr().String() + "/v1/ws" }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target) // NB: under mu, so setTarget and setDown are exact
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, err := io.Copy(dst, src)
	_ = err // a cut connection ends here; both ends are closed below
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// setTarget points new connections at another server.
func (p *proxy) setTarget(addr string) {
	p.mu.Lock()
	p.target = addr
	p.mu.Unlock()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
	}
}

// debugLogger logs client internals to stderr under -v, and nothing
// otherwise.
func debugLogger() *slog.Logger {
	if !testing.Verbose() {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// heldStore is a MemStore whose writes wait, once hold is called, until
// release: a disk whose fsync has not returned yet.
type heldStore struct {
	*syncserver.MemStore
	mu      sync.Mutex
	gate    chan struct{} // nil: writes pass; else they wait for it to close
	entered chan struct{} // receives once per write that waits
}

func newHeldStore() *heldStore {
	return &heldStore{MemStore: syncserver.NewMemStore(), entered: make(chan struct{}, 64)}
}

func (h *heldStore) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = make(chan struct{})
}

func (h *heldStore) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

func (h *heldStore) wait(ctx context.Context) error {
	h.mu.Lock()
	g := h.gate
	h.mu.Unlock()
	if g == nil {
		return nil
	}
	h.entered <- struct{}{}
	select {
	case <-g:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *heldStore) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	if err := h.wait(ctx); err != nil {
		return 0, err
	}
	return h.MemStore.Append(ctx, doc, batch)
}

func (h *heldStore) WriteSnapshot(ctx context.Context, doc string, snap []byte) error {
	if err := h.wait(ctx); err != nil {
		return err
	}
	return h.MemStore.WriteSnapshot(ctx, doc, snap)
}
