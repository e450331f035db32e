package syncserver

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/weftsync/weft/crdt/syncproto"
)

// ErrShuttingDown is returned for work refused because Shutdown has begun.
var ErrShuttingDown = errors.New("syncserver: shutting down")

// ErrTooManyDocs is returned for a request that would load a document
// while Options.MaxLoadedDocs are loaded.
var ErrTooManyDocs = errors.New("syncserver: too many documents loaded")

// Server is a weft sync server: it serves documents over WebSocket and HTTP
// and keeps them durably in a Store. Create it with New, mount Handler on an
// http.Server, and call Shutdown before closing the store.
type Server struct {
	opts    Options
	log     Logger
	m       *metrics
	auth    *authenticator
	upgrade websocket.Upgrader
	handler http.Handler

	httpRate *principalRates // POST /v1/docs/{id}/changes, per principal
	userDocs userDocs        // documents each principal holds open

	conns    atomic.Int64 // open WebSocket connections and event streams
	draining atomic.Bool

	fatalOnce sync.Once
	fatalErr  atomic.Pointer[error]
	fatalCh   chan error // receives the first fatal error, then nothing

	rooms struct {
		sync.Mutex
		// m holds every live room, loading or loaded. A room removes itself
		// (under this lock) when it unloads or its load fails.
		m map[string]*room
	}
	sessions struct {
		sync.Mutex
		m map[*session]struct{}
	}

	// broadcastAfterDurable holds fan-out until the changes are durable.
	// Off in production (see "Broadcast before persist" in doc.go); tests
	// and BenchmarkFanout turn it on to compare.
	broadcastAfterDurable bool
	// testDispatch, if set (by tests, before any connection), is called
	// with every message a session dispatches.
	testDispatch func(syncproto.Message)

	repl replication // the cluster, if any (replicate.go)

	sessionWG sync.WaitGroup // one per session (reader and writer)
	// readerWG counts sessions whose reader may still dispatch messages;
	// joined with sessionWG, under the same lock.
	readerWG sync.WaitGroup
	// poller resumes parked readers (see session.park); nil: none park.
	poller     *poller
	pollerOnce sync.Once
	roomWG     sync.WaitGroup // one per room goroutine
	stop       chan struct{}  // closed by Shutdown: stops the janitor
	janitorWG  sync.WaitGroup
}

// Logger is the subset of *slog.Logger the server uses.
type Logger = interface {
	Debug(msg string, args ...any)
	Info(msg string, args ...any)
	Warn(msg string, args ...any)
	Error(msg string, args ...any)
}

// New returns a Server for opts. It validates every option and reports all
// problems at once.
func New(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(o.Registry)
	if err != nil {
		return nil, fmt.Errorf("syncserver: registering metrics: %w", err)
	}
	if err := registerRuntime(o.Registry); err != nil {
		return nil, fmt.Errorf("syncserver: registering runtime metrics: %w", err)
	}
	s := &Server{
		opts: o,
		log:  o.Logger,
		m:    m,
		auth: &authenticator{secret: o.Secret, insecure: o.Insecure, now: func() time.Time { return time.UnixMilli(o.Wall()) },
			audience: o.TokenAudience, issuer: o.TokenIssuer},
		fatalCh: make(chan error, 1),
		stop:    make(chan struct{}),

		httpRate: newPrincipalRates(o.MaxChangesPerSec, o.ChangesBurst),
	}
	s.rooms.m = make(map[string]*room)
	s.userDocs.m = make(map[string]int)
	s.sessions.m = make(map[*session]struct{})
	s.upgrade = websocket.Upgrader{
		HandshakeTimeout: o.AuthTimeout,
		// NB: a small read buffer of our own (rather than reusing net/http's
		// 4 KiB one, which would pin it) and write buffers lent from a pool
		// only while a frame is written keep idle connections small (see
		// "Memory" in the package doc). Large frames are read straight
		// into their destination by bufio, so the small buffer costs no
		// extra copies for them.
		ReadBufferSize:  0, // gorilla reads through guardHijack's small reader
		WriteBufferPool: &sync.Pool{},
		CheckOrigin:     s.originAllowed,
	}
	if o.Insecure {
		o.Logger.Warn("INSECURE MODE: connections without a token get anonymous write access to every document; never use this in production")
	}
	if o.ParkIdle > 0 {
		p, err := newPoller(o.Logger)
		if err != nil {
			o.Logger.Info("idle connection readers will not park", "err", err)
		} else {
			s.poller = p
		}
	}
	s.handler = s.routes()
	s.janitorWG.Add(1)
	go s.janitor()
	return s, nil
}

// Handler returns the server's HTTP handler: /v1/ws, /v1/docs/..., /metrics,
// /healthz and /readyz.
func (s *Server) Handler() http.Handler { return s.handler }

// Fatal returns a channel that receives the first fatal error (a store
// failure, after which the server acknowledges nothing more). A process
// should then shut down and exit non-zero.
func (s *Server) Fatal() <-chan error { return s.fatalCh }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ws", s.serveWS)
	mux.HandleFunc("/v1/docs/", s.serveDocs)
	// Without a method: listDocs answers the CORS preflight (OPTIONS) too.
	mux.HandleFunc("/v1/docs", s.listDocs)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.opts.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.fatal(); err != nil {
			http.Error(w, "fatal: "+err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	if s.opts.UI != nil {
		// "/" without a method: "GET /" would conflict with "/v1/docs/".
		files := http.FileServerFS(s.opts.UI)
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
				return
			}
			files.ServeHTTP(w, r)
		})
	}
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		switch {
		case s.fatal() != nil:
			http.Error(w, "fatal: "+s.fatal().Error(), http.StatusServiceUnavailable)
		case s.draining.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		default:
			fmt.Fprintln(w, "ready")
		}
	})
	return s.recoverHTTP(mux)
}

// failStop records a store failure: the first one is logged, delivered on
// Fatal and to Options.OnFatal.
func (s *Server) failStop(doc string, err error) {
	s.fatalOnce.Do(func() {
		err = fmt.Errorf("syncserver: store failed on document %q, acknowledging nothing more: %w", doc, err)
		s.fatalErr.Store(&err)
		s.log.Error("FATAL: store write failed; the server stops acknowledging writes (fail-stop)", "doc", doc, "err", err)
		s.fatalCh <- err
		if s.opts.OnFatal != nil {
			s.opts.OnFatal(err)
		}
	})
}

func (s *Server) fatal() error {
	if p := s.fatalErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Shutdown stops the server gracefully: it refuses new connections, stops
// reading from clients, lets every room persist and acknowledge what it has
// received, closes every WebSocket with 1001 (going away) and every event
// stream, and waits for all goroutines. It returns ctx.Err() if ctx ends
// first (the remaining connections are then closed abruptly). Calling it
// twice is harmless.
func (s *Server) Shutdown(ctx context.Context) error {
	s.sessions.Lock() // see serveWS
	first := !s.draining.Swap(true)
	s.sessions.Unlock()
	if first {
		close(s.stop)
	}
	s.janitorWG.Wait()

	// 1. Stop reading: no new updates enter the rooms.
	sessions := s.allSessions()
	for _, ss := range sessions {
		ss.stopReading()
	}
	// Every reader, these and those of sessions that registered after the
	// list was taken (they stop themselves, see serveWS).
	if err := waitCtx(ctx, &s.readerWG); err != nil {
		s.abort(sessions)
		return err
	}
	// 2. Rooms persist and ack everything they hold, close event streams,
	// and exit.
	s.rooms.Lock()
	rooms := make([]*room, 0, len(s.rooms.m))
	for _, r := range s.rooms.m {
		rooms = append(rooms, r)
	}
	s.rooms.Unlock()
	for _, r := range rooms {
		select {
		case r.cmds <- cmdStop{}:
		case <-r.done:
		case <-ctx.Done():
			s.abort(sessions)
			return ctx.Err()
		}
	}
	if err := waitCtx(ctx, &s.roomWG); err != nil {
		s.abort(sessions)
		return err
	}
	// 3. Close every socket with 1001 after its queued acks.
	for _, ss := range sessions {
		ss.kick(closeGoingAway, "server shutting down")
	}
	if err := waitCtx(ctx, &s.sessionWG); err != nil {
		s.abort(sessions)
		return err
	}
	if s.poller != nil {
		s.pollerOnce.Do(s.poller.close)
	}
	return nil
}

// waitCtx waits for wg, or until ctx ends (its error). The waiting
// goroutine outlives a cancelled wait until wg is done.
func waitCtx(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Server) abort(sessions []*session) {
	for _, ss := range sessions {
		ss.kick(closeGoingAway, "server shutdown timed out")
		ss.conn.Close()
	}
}

func (s *Server) allSessions() []*session {
	s.sessions.Lock()
	defer s.sessions.Unlock()
	out := make([]*session, 0, len(s.sessions.m))
	for ss := range s.sessions.m {
		out = append(out, ss)
	}
	return out
}

// janitor unloads idle rooms and enforces the memory budget.
func (s *Server) janitor() {
	defer s.janitorWG.Done()
	period := min(s.opts.IdleTimeout/4, time.Second)
	period = max(period, 5*time.Millisecond)
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			now := time.Now()
			s.sweep(now)
			s.httpRate.prune(now)
		}
	}
}

// sweep asks idle rooms, and the least recently used rooms over the memory
// budget, to unload. A room unloads only if it is quiescent (see room.run).
func (s *Server) sweep(now time.Time) {
	type cand struct {
		r        *room
		lastUsed int64
		bytes    int64
	}
	var idle []*room
	var free []cand
	var total int64
	s.rooms.Lock()
	for _, r := range s.rooms.m {
		// The budget is about memory: count the loaded document's
		// in-memory size, not its (much smaller) encoding.
		b := r.mem.Load() + roomOverhead
		total += b
		if r.refs > 0 {
			continue
		}
		lu := r.lastUsed.Load()
		if now.UnixNano()-lu >= int64(s.opts.IdleTimeout) {
			idle = append(idle, r)
			total -= b
			continue
		}
		free = append(free, cand{r, lu, b})
	}
	s.rooms.Unlock()
	s.m.bytesHeld.Set(float64(total))
	for _, r := range idle {
		r.trySend(cmdUnload{reason: "idle"})
	}
	if s.opts.MemoryBudget == 0 || total <= s.opts.MemoryBudget {
		return
	}
	slices.SortFunc(free, func(a, b cand) int { return cmp.Compare(a.lastUsed, b.lastUsed) }) // least recently used first
	for _, c := range free {
		if total <= s.opts.MemoryBudget {
			break
		}
		c.r.trySend(cmdUnload{reason: "budget"})
		total -= c.bytes
	}
}
