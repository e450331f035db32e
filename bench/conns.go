package bench

import (
	"cmp"
	"context"
	cryptorand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
)

// ConnsOptions configure the idle-connection memory benchmark.
type ConnsOptions struct {
	// Conns is the number of idle connections to open. Default: 10000.
	Conns int
	// Docs is the number of documents the connections subscribe to (round
	// robin). Default: 100.
	Docs int
	// Binary is the weft executable to start. Default: os.Executable().
	Binary string
	// ServerArgs are extra flags for the server. Default: none.
	ServerArgs []string
	// Parallel bounds the connections being opened at once. Default: 64.
	Parallel int
	// Timeout bounds the whole run. Default: 5m.
	Timeout time.Duration
	// Logger receives progress. Default: discard.
	Logger *slog.Logger
}

// DefaultConnsOptions returns the defaults described on each field.
func DefaultConnsOptions() ConnsOptions {
	return ConnsOptions{Conns: 10000, Docs: 100, Parallel: 64, Timeout: 5 * time.Minute}
}

func (o ConnsOptions) withDefaults() (ConnsOptions, error) {
	d := DefaultConnsOptions()
	o.Conns = cmp.Or(o.Conns, d.Conns)
	o.Docs = cmp.Or(o.Docs, d.Docs)
	o.Parallel = cmp.Or(o.Parallel, d.Parallel)
	o.Timeout = cmp.Or(o.Timeout, d.Timeout)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.ServerArgs = slices.Clone(o.ServerArgs)
	var errs []error
	if o.Conns < 1 || o.Conns > 1_000_000 {
		errs = append(errs, fmt.Errorf("bench: conns must be in [1, 1000000], got %d", o.Conns))
	}
	if o.Docs < 1 {
		errs = append(errs, fmt.Errorf("bench: docs must be ≥ 1, got %d", o.Docs))
	}
	if o.Parallel < 1 {
		errs = append(errs, fmt.Errorf("bench: parallel must be ≥ 1, got %d", o.Parallel))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("bench: timeout %v is negative", o.Timeout))
	}
	return o, errors.Join(errs...)
}

// ConnsResult is what `weft bench conns --json` prints. BytesPerConn is
// the growth of the server's resident set divided by Conns.
type ConnsResult struct {
	Conns        int     `json:"conns"`
	BytesPerConn float64 `json:"bytes_per_conn"`
	BaselineRSS  int64   `json:"baseline_rss_bytes"`
	LoadedRSS    int64   `json:"loaded_rss_bytes"`
}

// perSourceAddr is how many connections share one loopback source address;
// beyond it the next address (127.0.0.2, ...) is used so that no source
// runs out of ephemeral ports.
const perSourceAddr = 20000

// Conns starts a server process, opens Conns idle authenticated WebSocket
// connections, each subscribed to one of Docs documents, and reports how
// much the server's resident memory grew per connection. The baseline is
// taken after every document was loaded by a warm-up connection, so the
// figure is the cost of a connection, not of the documents.
func Conns(ctx context.Context, opts ConnsOptions) (ConnsResult, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return ConnsResult{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	log := o.Logger
	res := ConnsResult{Conns: o.Conns}

	// Both this process and the server hold one descriptor per connection;
	// the server inherits the raised limit.
	if lim, err := RaiseFileLimit(uint64(o.Conns) + 1024); err != nil {
		return res, err
	} else if lim < uint64(o.Conns)+64 {
		return res, fmt.Errorf("bench: RLIMIT_NOFILE hard limit %d is too low for %d connections", lim, o.Conns)
	}
	bin := o.Binary
	if bin == "" {
		if bin, err = os.Executable(); err != nil {
			return res, fmt.Errorf("bench: locate weft binary: %w", err)
		}
	}
	dir, err := os.MkdirTemp("", "weft-bench-conns-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	// Real authentication: a random secret for this run, passed in the
	// environment, and a signed token that every connection presents.
	var key [24]byte
	if _, err := cryptorand.Read(key[:]); err != nil {
		return res, err
	}
	secret := hex.EncodeToString(key[:])
	token, err := MintToken(ctx, bin, secret, "bench-conns", "bench/conns/*:write")
	if err != nil {
		return res, err
	}
	// Every connection is the same principal, and each subscription counts
	// against the server's per-user cap (default 5,000): raise it to what
	// the run opens, unless the caller chose a value.
	args := o.ServerArgs
	if !slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(strings.TrimLeft(a, "-"), "max-docs-per-user") }) {
		args = append([]string{fmt.Sprintf("--max-docs-per-user=%d", o.Conns+o.Docs)}, args...)
	}
	srv, err := StartServerEnv(ctx, bin, dir, []string{"WEFT_SECRET=" + secret}, args...)
	if err != nil {
		return res, err
	}
	defer srv.Stop(10 * time.Second)
	wsURL := "ws" + srv.URL[len("http"):] + "/v1/ws"
	log.Info("started server", "url", srv.URL, "pid", srv.PID())

	var (
		mu    sync.Mutex
		conns []*websocket.Conn // guarded by mu
		wg    sync.WaitGroup
	)
	defer func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	open := func(i int) error {
		c, err := openIdle(ctx, wsURL, token, fmt.Sprintf("bench/conns/%d", i%o.Docs), i/perSourceAddr)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		// Keep reading: gorilla answers the server's pings from inside
		// ReadMessage, and a close from the server ends the loop.
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		return nil
	}
	openMany := func(from, to int) error {
		sem := make(chan struct{}, o.Parallel)
		errc := make(chan error, 1)
		var owg sync.WaitGroup
		for i := from; i < to; i++ {
			select {
			case sem <- struct{}{}:
			case err := <-errc:
				owg.Wait()
				return err
			case <-ctx.Done():
				owg.Wait()
				return ctx.Err()
			}
			owg.Add(1)
			go func() {
				defer owg.Done()
				defer func() { <-sem }()
				if err := open(i); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}()
		}
		owg.Wait()
		select {
		case err := <-errc:
			return err
		default:
			return nil
		}
	}

	// Warm up: load every document and let the server reach steady state.
	if err := openMany(0, o.Docs); err != nil {
		return res, fmt.Errorf("bench: warm-up: %w", err)
	}
	if res.BaselineRSS, err = settledRSS(ctx, srv.PID()); err != nil {
		return res, err
	}
	log.Info("baseline", "rss", res.BaselineRSS)
	if err := openMany(o.Docs, o.Docs+o.Conns); err != nil {
		return res, fmt.Errorf("bench: %w (server stderr: %s)", err, srv.Stderr())
	}
	if res.LoadedRSS, err = settledRSS(ctx, srv.PID()); err != nil {
		return res, err
	}
	mu.Lock()
	opened := len(conns)
	mu.Unlock()
	if opened != o.Docs+o.Conns {
		return res, fmt.Errorf("bench: %d of %d connections open", opened, o.Docs+o.Conns)
	}
	res.BytesPerConn = float64(res.LoadedRSS-res.BaselineRSS) / float64(o.Conns)
	log.Info("loaded", "rss", res.LoadedRSS, "bytes_per_conn", res.BytesPerConn)
	return res, nil
}

// settledRSS samples the server's RSS until two readings 200ms apart
// differ by less than 1%, at most for 5s, and returns the last.
func settledRSS(ctx context.Context, pid int) (int64, error) {
	prev, err := RSS(pid)
	if err != nil {
		return 0, err
	}
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for time.Now().Before(deadline) {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		cur, err := RSS(pid)
		if err != nil {
			return 0, err
		}
		diff := cur - prev
		if diff < 0 {
			diff = -diff
		}
		if diff*100 < cur {
			return cur, nil
		}
		prev = cur
	}
	return prev, nil
}

// openIdle opens one connection from loopback source address 127.0.0.(2+src)
// (127.0.0.1 for src 0), says hello, subscribes to doc and waits for the
// welcome and the document's sync reply.
func openIdle(ctx context.Context, wsURL, token, doc string, src int) (*websocket.Conn, error) {
	d := websocket.Dialer{
		HandshakeTimeout: 30 * time.Second,
		ReadBufferSize:   1024,
		WriteBufferSize:  1024,
	}
	if src > 0 {
		local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+src))}
		if src > 250 {
			return nil, fmt.Errorf("too many connections for one loopback /24")
		}
		nd := &net.Dialer{LocalAddr: local, Timeout: 30 * time.Second}
		d.NetDialContext = nd.DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, _, err := d.DialContext(dctx, wsURL, nil)
	if err != nil {
		return nil, err
	}
	replica := crdt.ReplicaID(uuid.New())
	send := func(m syncproto.Message) error {
		data, err := syncproto.Encode(m)
		if err != nil {
			return err
		}
		return c.WriteMessage(websocket.BinaryMessage, data)
	}
	deadline, _ := dctx.Deadline()
	c.SetWriteDeadline(deadline)
	c.SetReadDeadline(deadline)
	if err := send(&syncproto.Hello{Version: syncproto.ProtocolVersion, Token: token, Replica: replica, ClientName: "weft-bench-conns"}); err != nil {
		c.Close()
		return nil, err
	}
	if err := send(&syncproto.Subscribe{Doc: doc, Version: crdt.VersionVector{}}); err != nil {
		c.Close()
		return nil, err
	}
	welcomed, synced := false, false
	for !welcomed || !synced {
		_, data, err := c.ReadMessage()
		if err != nil {
			c.Close()
			return nil, err
		}
		m, err := syncproto.Decode(data)
		if err != nil {
			if errors.Is(err, syncproto.ErrUnknownMessage) {
				continue
			}
			c.Close()
			return nil, err
		}
		switch m := m.(type) {
		case *syncproto.Welcome:
			welcomed = true
		case *syncproto.Sync:
			synced = true
		case *syncproto.Error:
			c.Close()
			return nil, fmt.Errorf("server error %s: %s", m.Status, m.Message)
		}
	}
	c.SetReadDeadline(time.Time{})
	c.SetWriteDeadline(time.Time{})
	return c, nil
}
