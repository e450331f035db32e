package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/internal/webui"
	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

func init() {
	register(command{
		name:    "serve",
		summary: "run a sync server (WebSocket + HTTP) on a local data directory",
		run:     runServe,
	})
}

// memoryData is the --data value that keeps documents in memory only.
const memoryData = ":memory:"

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	def := syncserver.DefaultOptions()
	fs := newFlagSet("weft serve", stderr)
	listen := fs.String("listen", "127.0.0.1:7420", "address to serve on (host:port; port 0 picks a free one)")
	data := fs.String("data", "./weft-data", "data directory (Pebble); "+memoryData+" keeps documents in memory only")
	secret := fs.String("secret", "", "HS256 secret that signs access tokens (at least 16 bytes); required unless --insecure")
	audience := fs.String("token-audience", "", "when set, tokens must carry this aud claim (tokens minted for other services are refused)")
	issuer := fs.String("token-issuer", "", "when set, tokens must carry this iss claim")
	insecure := fs.Bool("insecure", false, "allow connections without a token as an anonymous writer of every document, and browser pages from any localhost port (development only)")
	origins := fs.String("allow-origin", "", "comma-separated browser origins allowed to connect (scheme://host[:port]; * for any)")
	maxFrame := byteSize(def.MaxFrameBytes)
	fs.Var(&maxFrame, "max-frame", "largest WebSocket frame or POST body (bytes; KiB/MiB/GiB suffixes allowed)")
	maxDoc := byteSize(def.MaxDocBytes)
	fs.Var(&maxDoc, "max-doc", "largest document, encoded or decoded in memory")
	maxValue := byteSize(def.MaxValueBytes)
	fs.Var(&maxValue, "max-value", "largest register value (decoded)")
	maxPendingBytes := byteSize(def.MaxPendingBytes)
	fs.Var(&maxPendingBytes, "max-pending-bytes", "decoded bytes per document of changes waiting for missing dependencies")
	rate := fs.Int("max-changes-per-sec", def.MaxChangesPerSec, "sustained operations per second per connection")
	burst := fs.Int("changes-burst", def.ChangesBurst, "burst of operations per connection")
	presence := fs.Int("max-presence-per-sec", def.MaxPresencePerSec, "presence messages per second per connection")
	conns := fs.Int("max-conns", def.MaxConnections, "concurrent connections and event streams (over it: HTTP 503)")
	docsPerConn := fs.Int("max-docs-per-conn", def.MaxDocsPerConn, "documents one connection may subscribe to")
	docsPerUser := fs.Int("max-docs-per-user", def.MaxDocsPerUser, "documents one user may hold open over all connections and event streams")
	loadedDocs := fs.Int("max-loaded-docs", def.MaxLoadedDocs, "documents loaded at once (over it: overloaded)")
	subscribes := fs.Int("max-subscribes-per-sec", def.MaxSubscribesPerSec, "subscribes per second per connection (burst: --max-docs-per-conn)")
	pending := fs.Int("max-pending", def.MaxPending, "changes per document waiting for missing dependencies")
	clockOffset := fs.Duration("max-clock-offset", def.MaxClockOffset, "how far ahead of the server's clock a change may be stamped")
	sendQueue := fs.Int("send-queue", def.SendQueue, "frames queued per connection before a slow client is dropped")
	authTimeout := fs.Duration("auth-timeout", def.AuthTimeout, "time a new connection has to send hello")
	pingInterval := fs.Duration("ping-interval", def.PingInterval, "WebSocket ping period")
	pongTimeout := fs.Duration("pong-timeout", def.PongTimeout, "time after a ping before a silent connection is closed")
	parkIdle := fs.Duration("park-idle", def.ParkIdle, "silence after which a connection's reader goroutine parks on the server's epoll (Linux; negative: never)")
	budget := byteSize(def.MemoryBudget)
	fs.Var(&budget, "memory-budget", "bytes of loaded documents before the least recently used idle ones are unloaded (0: no budget)")
	idle := fs.Duration("idle-timeout", def.IdleTimeout, "unload a document this long after its last subscriber left")
	walSync := fs.Duration("wal-sync-interval", storage.DefaultOptions().WALMinSyncInterval, "after an fsync that carried few commits, wait this long before the next so that commits arriving meanwhile share it (each ack waits at most this much longer; at most 1s; 0: the default; negative: never wait)")
	snapMin := byteSize(def.SnapshotMinBytes)
	fs.Var(&snapMin, "snapshot-min", "write a snapshot once a document's log exceeds both its snapshot and this size")
	shutdownTimeout := fs.Duration("shutdown-timeout", 30*time.Second, "time SIGTERM/SIGINT gives connections to drain")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	tlsCert := fs.String("tls-cert", "", "PEM certificate (chain) file: serve HTTPS and WSS instead of HTTP (with --tls-key)")
	tlsKey := fs.String("tls-key", "", "PEM private key file of --tls-cert")
	debugListen := fs.String("debug-listen", "", "serve Go's profiler (/debug/pprof/) on this separate address, e.g. 127.0.0.1:6060; keep it off public interfaces")
	var tlsConfig *tls.Config
	cf := addClusterFlags(fs) // cluster.go
	fs.Usage = func() {
		flagUsage(fs, "weft serve [flags]", "Runs a weft sync server. It prints one line with its URL once it listens.")
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "weft serve: --log-level: %v\n", err)
		return 2
	}
	logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	reg := prometheus.NewRegistry()

	o := syncserver.DefaultOptions()
	o.Logger = logger
	o.Registry = reg
	o.Secret = []byte(*secret)
	o.Insecure = *insecure
	o.TokenAudience = *audience
	o.TokenIssuer = *issuer
	for _, s := range strings.Split(*origins, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.AllowedOrigins = append(o.AllowedOrigins, s)
		}
	}
	o.MaxFrameBytes = int64(maxFrame)
	o.MaxDocBytes = int64(maxDoc)
	o.MaxChangesPerSec = *rate
	o.ChangesBurst = *burst
	o.MaxPresencePerSec = *presence
	o.MaxConnections = *conns
	o.MaxDocsPerConn = *docsPerConn
	o.MaxDocsPerUser = *docsPerUser
	o.MaxLoadedDocs = *loadedDocs
	o.MaxSubscribesPerSec = *subscribes
	o.MaxPending = *pending
	o.MaxValueBytes = int64(maxValue)
	o.MaxPendingBytes = int64(maxPendingBytes)
	o.MaxClockOffset = *clockOffset
	o.SendQueue = *sendQueue
	o.AuthTimeout = *authTimeout
	o.PingInterval = *pingInterval
	o.PongTimeout = *pongTimeout
	o.ParkIdle = *parkIdle
	o.MemoryBudget = int64(budget)
	o.IdleTimeout = *idle
	o.SnapshotMinBytes = int64(snapMin)
	o.UI = webui.FS()
	// Every flag is checked before the store is opened: a typo costs
	// nothing, and the errors name flags, not Go fields.
	badFlags := false
	if *walSync > time.Second {
		fmt.Fprintf(stderr, "weft serve: --wal-sync-interval %v: must be at most 1s (every ack may wait for it)\n", *walSync)
		badFlags = true
	}
	if err := syncserver.CheckOptions(o); err != nil {
		for _, e := range unwrapJoined(err) {
			fmt.Fprintf(stderr, "weft serve: %s\n", flagNames(e.Error()))
		}
		return 2
	}
	if badFlags {
		return 2
	}
	if _, _, err := cf.options(); err != nil {
		for _, e := range unwrapJoined(err) {
			fmt.Fprintf(stderr, "weft serve: %v\n", e)
		}
		return 2
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		fmt.Fprintln(stderr, "weft serve: --tls-cert and --tls-key go together")
		return 2
	}
	scheme := "http"
	if *tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(*tlsCert, *tlsKey)
		if err != nil {
			fmt.Fprintf(stderr, "weft serve: --tls-cert/--tls-key: %v\n", err)
			return 2
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		scheme = "https"
	}

	var store syncserver.Store
	var closer io.Closer
	var storeFailed <-chan struct{}
	if *data == memoryData {
		store = syncserver.NewMemStore()
		logger.Warn("documents are kept in memory only (--data " + memoryData + "): everything is lost when the server stops")
	} else {
		st, c, err := openStore(*data, *walSync, logger, reg)
		if err != nil {
			fmt.Fprintf(stderr, "weft serve: opening %s: %v\n", *data, err)
			return 1
		}
		store, closer = st, c
		if h, ok := c.(storeHealth); ok {
			storeFailed = h.Failed()
		}
	}
	closeStore := func() int {
		if closer == nil {
			return 0
		}
		if err := closer.Close(); err != nil {
			logger.Error("closing the store", "err", err)
			return 1
		}
		return 0
	}

	o.Store = store
	srv, err := syncserver.New(o)
	if err != nil {
		fmt.Fprintf(stderr, "weft serve: %s\n", flagNames(err.Error()))
		closeStore()
		return 2
	}

	peersDir := *data
	if peersDir == memoryData {
		peersDir = ""
	}
	node, faults, err := cf.start(srv, store, peersDir, reg, logger)
	if err != nil {
		fmt.Fprintf(stderr, "weft serve: %v\n", err)
		shutdownServer(srv, nil, *shutdownTimeout, logger)
		closeStore()
		return 1
	}
	// The cluster stops after the server: rooms persist what they hold and
	// report it to it on the way out.
	defer shutdownNode(node, *shutdownTimeout, logger)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintf(stderr, "weft serve: %v\n", err)
		shutdownServer(srv, nil, *shutdownTimeout, logger)
		closeStore()
		return 1
	}
	hs := &http.Server{
		Handler:           clusterHandler(srv.Handler(), node, faults),
		ReadHeaderTimeout: 10 * time.Second,
		// Idle keep-alive HTTP connections (not WebSockets, which are
		// hijacked, nor event streams, which are busy) are closed.
		IdleTimeout:    2 * time.Minute,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		TLSConfig:      tlsConfig,
	}
	if tlsConfig != nil {
		// The HTTP/1.1-only Upgrade of a WebSocket needs ALPN to offer it.
		ln = tls.NewListener(ln, tlsConfig.Clone())
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	if *debugListen != "" {
		dl, err := net.Listen("tcp", *debugListen)
		if err != nil {
			fmt.Fprintf(stderr, "weft serve: --debug-listen: %v\n", err)
			shutdownServer(srv, hs, *shutdownTimeout, logger)
			closeStore()
			return 1
		}
		ds := &http.Server{Handler: debugHandler(), ReadHeaderTimeout: 10 * time.Second}
		defer ds.Close()
		go func() {
			if err := ds.Serve(dl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("the debug listener stopped", "err", err)
			}
		}()
		logger.Info("profiler listening", "addr", dl.Addr().String())
	}
	fmt.Fprintf(stdout, "weft serving %s://%s (data %s)\n", scheme, ln.Addr(), *data)

	code := 0
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "reason", "signal")
	case err := <-srv.Fatal():
		logger.Error("shutting down after a fatal store error", "err", err)
		code = 1
	case <-storeFailed:
		logger.Error("shutting down: the store fail-stopped")
		code = 1
	case err := <-served:
		logger.Error("the HTTP server stopped", "err", err)
		code = 1
	}
	if err := shutdownServer(srv, hs, *shutdownTimeout, logger); err != nil && code == 0 {
		code = 1
	}
	if c := closeStore(); c != 0 && code == 0 {
		code = c
	}
	return code
}

// shutdownServer drains the sync server first (it owns the hijacked
// WebSockets and ends the event streams the HTTP server would wait for),
// then the HTTP server.
func shutdownServer(srv *syncserver.Server, hs *http.Server, timeout time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var errs []error
	if err := srv.Shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("sync server shutdown: %w", err))
	}
	if hs != nil {
		if err := hs.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("HTTP server shutdown: %w", err))
		}
	}
	err := errors.Join(errs...)
	if err != nil {
		logger.Error("unclean shutdown", "err", err)
	}
	return err
}

// flagUsage prints a command's help: every flag with its default and the
// environment variable that may set it.
func flagUsage(fs *flag.FlagSet, usage, about string) {
	w := fs.Output()
	fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags (each also settable as the environment variable shown; flags win):\n", usage, about)
	fs.VisitAll(func(f *flag.Flag) {
		def := ""
		if f.DefValue != "" && f.DefValue != "false" {
			def = fmt.Sprintf(" (default %s)", f.DefValue)
		}
		fmt.Fprintf(w, "  --%s\n        %s%s [%s]\n", f.Name, f.Usage, def, envName(f.Name))
	})
}

// byteSize is a flag value of bytes with an optional KiB/MiB/GiB (or
// KB/MB/GB, also powers of two) suffix.
type byteSize int64

func (b *byteSize) String() string {
	v := int64(*b)
	for _, u := range []struct {
		s string
		n int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if v >= u.n && v%u.n == 0 {
			return strconv.FormatInt(v/u.n, 10) + u.s
		}
	}
	return strconv.FormatInt(v, 10)
}

func (b *byteSize) Set(s string) error {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		s string
		n int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(s, u.s) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.s)), u.n
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("want a non-negative byte count such as 65536 or 64MiB")
	}
	if n > (1<<62)/mult {
		return fmt.Errorf("byte count too large")
	}
	*b = byteSize(n * mult)
	return nil
}

// optionFlags names the flag behind each syncserver.Options field, so that
// validation errors speak the command line's language.
var optionFlags = map[string]string{
	"Secret": "secret", "Insecure": "insecure", "AllowedOrigins": "allow-origin",
	"MaxFrameBytes": "max-frame", "MaxDocBytes": "max-doc",
	"MaxChangesPerSec": "max-changes-per-sec", "ChangesBurst": "changes-burst",
	"MaxPresencePerSec": "max-presence-per-sec", "MaxConnections": "max-conns",
	"MaxDocsPerConn": "max-docs-per-conn", "MaxPending": "max-pending",
	"MaxValueBytes": "max-value", "MaxPendingBytes": "max-pending-bytes",
	"MaxClockOffset": "max-clock-offset", "SendQueue": "send-queue",
	"AuthTimeout": "auth-timeout", "PingInterval": "ping-interval",
	"PongTimeout": "pong-timeout", "MemoryBudget": "memory-budget", "ParkIdle": "park-idle",
	"IdleTimeout": "idle-timeout", "SnapshotMinBytes": "snapshot-min",
}

var optionField = regexp.MustCompile(`Options\.([A-Za-z]+)|\b(MaxChangesPerSec)\b`)

// flagNames rewrites "syncserver: Options.Secret must ..." as
// "--secret must ...". A field no flag sets keeps its Go name.
func flagNames(msg string) string {
	msg = strings.TrimPrefix(msg, "syncserver: ")
	return optionField.ReplaceAllStringFunc(msg, func(m string) string {
		if f, ok := optionFlags[strings.TrimPrefix(m, "Options.")]; ok {
			return "--" + f
		}
		return m
	})
}

// unwrapJoined returns the errors inside an errors.Join, or err alone.
func unwrapJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// debugHandler serves Go's profiler (net/http/pprof) for --debug-listen,
// on its own mux so nothing of it is reachable through the public
// listener.
func debugHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
