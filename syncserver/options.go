package syncserver

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// Options configure a Server. The zero value of a field means "use the
// default" unless its doc says otherwise; New clones the struct and never
// mutates the caller's copy.
type Options struct {
	// Store keeps documents durably. Required.
	Store Store

	// Logger receives structured logs. Default: a logger that discards.
	Logger *slog.Logger
	// Registry receives the server's Prometheus metrics and is what
	// /metrics serves; other components (the store) may register theirs in
	// it too. One Server per registry: New fails if the server's metrics
	// are already registered. Default: a fresh private registry (never the
	// global one).
	Registry *prometheus.Registry
	// OnFatal, if set, is called once (from a server goroutine) when the
	// store fails and the server stops acknowledging writes (fail-stop). The
	// same error is also delivered on Fatal(). Default: nil.
	OnFatal func(error)
	// UI, if set, is served at / (GET of its files; "/" is its
	// index.html): cmd/weft passes the embedded demo page. Default: nil
	// (no page).
	UI fs.FS

	// Secret is the HS256 key that signs access tokens. Required unless
	// Insecure. Default: none.
	Secret []byte
	// Insecure lets connections without a token in as an anonymous user with
	// write access to every document (local development only; New logs a
	// warning). Tokens that are presented are still verified when Secret is
	// set. Default: false.
	Insecure bool
	// TokenAudience, when set, must be the aud claim of every token (or
	// one of its values); tokens minted for another service are refused.
	// Default: "" (not checked).
	TokenAudience string
	// TokenIssuer, when set, must be the iss claim of every token.
	// Default: "" (not checked).
	TokenIssuer string
	// AllowedOrigins lists the browser origins (scheme://host[:port]) that
	// may open a WebSocket or call the HTTP API; "*" allows any. Requests
	// without an Origin header (non-browser clients) and same-origin requests
	// are always allowed; with Insecure, so are loopback origins
	// (http(s)://localhost, 127.0.0.0/8, [::1], any port) for local
	// development. A refused origin is logged and answered 403 with a body
	// naming --allow-origin. Default: none.
	AllowedOrigins []string

	// MaxFrameBytes bounds one WebSocket frame and one POSTed body. Default:
	// 1 MiB.
	MaxFrameBytes int64
	// MaxDocBytes bounds the size of one document: the larger of its
	// encoded size (snapshot plus log) and its decoded, in-memory size
	// (crdt.Doc.MemSize, pending changes included). An update is charged
	// its decoded size (text, values and per-op overhead, never its
	// possibly compressed bytes); one that would grow a document past the
	// bound is refused with too_large. Default: 64 MiB.
	MaxDocBytes int64
	// MaxValueBytes bounds one register value, decoded; a larger one is
	// refused with too_large. Default: 1 MiB.
	MaxValueBytes int64
	// MaxChangesPerSec is the sustained rate of operations (inserted or
	// deleted characters, counter adds, register sets) one connection, or
	// one principal over HTTP, may submit; a batch over it is refused with
	// rate_limited. Default: 2000.
	MaxChangesPerSec int
	// ChangesBurst is the bucket size of that rate limit, announced in
	// welcome (Limits.MaxOpsBurst) so that clients split their batches to
	// it. A batch whose header declares more ops than this is refused with
	// too_large (it could never pass). It must be at least
	// crdt.MaxChangeOps, the most ops one change holds: a change cannot be
	// split, so a smaller burst would refuse some changes for good.
	// Default: 10000.
	ChangesBurst int
	// MaxPresencePerSec is the sustained rate of presence messages one
	// connection may send; beyond it presence is dropped and answered with
	// an error rate_limited. Default: 30.
	MaxPresencePerSec int
	// PresenceInterval is the coalescing window: a room relays at most one
	// presence per session per interval (the latest). Default: 50ms.
	PresenceInterval time.Duration
	// PresenceTTL expires the presence of a session that has been silent that
	// long (a leave is announced). Default: 30s.
	PresenceTTL time.Duration
	// MaxConnections bounds concurrent WebSocket connections and event
	// streams; above it the handshake is refused with 503. Default: 50000.
	MaxConnections int
	// MaxDocsPerConn bounds the documents one connection subscribes to at
	// once. Default: 1000.
	MaxDocsPerConn int
	// MaxDocsPerUser bounds the documents one principal holds open at once
	// over all its connections and event streams (each pins a loaded
	// document); beyond it a subscribe is refused with too_large.
	// Default: 5000.
	MaxDocsPerUser int
	// MaxLoadedDocs bounds the documents loaded at once; a request that
	// would load one more is refused with overloaded (503) until idle ones
	// unload. Default: 100000.
	MaxLoadedDocs int
	// MaxSubscribesPerSec is the sustained rate of subscribe messages one
	// connection may send (each encodes the catch-up on the document's
	// goroutine); the burst is MaxDocsPerConn plus a second's worth, so a
	// reconnecting client resubscribes everything at once. Beyond it subscribe is answered
	// rate_limited. Default: 100.
	MaxSubscribesPerSec int
	// MaxPending bounds the changes a document holds while their
	// dependencies are missing (crdt.Options.MaxPending). Default: 4096.
	MaxPending int
	// MaxPendingBytes bounds the decoded, in-memory size of the changes a
	// document holds while their dependencies are missing; an update that
	// could push it further is refused with pending_full. Default: 8 MiB.
	MaxPendingBytes int64
	// MaxClockOffset is how far ahead of the server's wall clock a change's
	// timestamp may be; beyond it the update is refused with clock_skew.
	// Default: 10s.
	MaxClockOffset time.Duration
	// SendQueue is the number of frames queued for one connection; a client
	// that lets it fill is disconnected with CloseTooSlow. Default: 256.
	SendQueue int

	// AuthTimeout is how long a new connection may take to send hello.
	// Default: 10s.
	AuthTimeout time.Duration
	// PingInterval is the period of server WebSocket pings. Default: 30s.
	PingInterval time.Duration
	// PongTimeout is how long after a ping the server waits for any frame
	// (a pong or a message) before closing with CloseHeartbeatTimeout.
	// Default: 10s.
	PongTimeout time.Duration
	// WriteTimeout bounds one frame write to a client. Default: 10s.
	WriteTimeout time.Duration
	// ParkIdle is how long a connection may send nothing before its reader
	// goroutine parks: it exits, and one epoll instance for the whole
	// server waits for the connection's next bytes (Linux; elsewhere, or
	// if negative, readers stay blocked in a read). Pongs to the server's
	// pings do not unpark it for long. Default: 1s.
	ParkIdle time.Duration

	// IdleTimeout unloads a document that has had no subscribers for that
	// long. Default: 2m.
	IdleTimeout time.Duration
	// MemoryBudget bounds the bytes of loaded documents, as crdt.Doc.MemSize
	// estimates them; above it the least recently used documents without
	// subscribers are unloaded. 0 disables the budget. Default: 1 GiB.
	MemoryBudget int64
	// SnapshotMinBytes: a new snapshot is written when a document's log
	// outgrows both its snapshot and this size. Default: 64 KiB.
	SnapshotMinBytes int64
	// MaxBatchChanges bounds the changes a room writes to the store in one
	// group commit. Default: 4096.
	MaxBatchChanges int

	// Replica is the server's own replica id in every document it holds.
	// Default: a random UUID.
	Replica crdt.ReplicaID
	// Wall is the wall clock of the server's HLCs and timers' notion of
	// "now" for presence. Default: hlc.SystemWall.
	Wall hlc.Wall
}

// DefaultOptions returns the production defaults (without Store or Secret,
// which have none).
func DefaultOptions() Options {
	return Options{
		MaxFrameBytes:       1 << 20,
		MaxDocBytes:         64 << 20,
		MaxValueBytes:       1 << 20,
		MaxPendingBytes:     8 << 20,
		MaxChangesPerSec:    2000,
		ChangesBurst:        10000,
		MaxPresencePerSec:   30,
		PresenceInterval:    50 * time.Millisecond,
		PresenceTTL:         30 * time.Second,
		MaxConnections:      50000,
		MaxDocsPerConn:      1000,
		MaxDocsPerUser:      5000,
		MaxLoadedDocs:       100000,
		MaxSubscribesPerSec: 100,
		MaxPending:          4096,
		MaxClockOffset:      10 * time.Second,
		SendQueue:           256,
		AuthTimeout:         10 * time.Second,
		PingInterval:        30 * time.Second,
		PongTimeout:         10 * time.Second,
		WriteTimeout:        10 * time.Second,
		ParkIdle:            time.Second,
		IdleTimeout:         2 * time.Minute,
		MemoryBudget:        1 << 30,
		SnapshotMinBytes:    64 << 10,
		MaxBatchChanges:     4096,
	}
}

// LocalOptions returns DefaultOptions with short timers, for tests on
// loopback.
func LocalOptions() Options {
	o := DefaultOptions()
	o.AuthTimeout = 2 * time.Second
	o.PingInterval = 2 * time.Second
	o.PongTimeout = 2 * time.Second
	o.WriteTimeout = 2 * time.Second
	o.IdleTimeout = 5 * time.Second
	o.PresenceInterval = 10 * time.Millisecond
	o.SnapshotMinBytes = 4 << 10
	return o
}

// MinSecretBytes is the shortest HS256 secret a server accepts (and `weft
// token` signs with): shorter ones can be brute-forced offline from any
// token.
const MinSecretBytes = 16

// CheckOptions reports every problem New would find in o, without starting
// anything: a command line can validate its flags before it opens a store.
// A nil Store is not reported here.
func CheckOptions(o Options) error {
	if o.Store == nil {
		o.Store = NewMemStore()
	}
	_, err := o.withDefaults()
	return err
}

// withDefaults fills zero fields from DefaultOptions and validates; it
// returns every problem at once.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("syncserver: "+format, args...)) }

	o.AllowedOrigins = append([]string(nil), o.AllowedOrigins...)
	o.Secret = append([]byte(nil), o.Secret...)
	if o.Store == nil {
		bad("Options.Store is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if len(o.Secret) == 0 && !o.Insecure {
		bad("Options.Secret is required unless Options.Insecure is set")
	}
	if len(o.Secret) > 0 && len(o.Secret) < MinSecretBytes {
		bad("Options.Secret must be at least %d bytes, got %d", MinSecretBytes, len(o.Secret))
	}
	for _, origin := range o.AllowedOrigins {
		if origin == "" {
			bad("Options.AllowedOrigins contains an empty origin")
		}
	}
	intDef := func(name string, v *int, def, min int) {
		if *v == 0 {
			*v = def
		}
		if *v < min {
			bad("Options.%s must be ≥ %d, got %d", name, min, *v)
		}
	}
	int64Def := func(name string, v *int64, def, min int64) {
		if *v == 0 {
			*v = def
		}
		if *v < min {
			bad("Options.%s must be ≥ %d, got %d", name, min, *v)
		}
	}
	durDef := func(name string, v *time.Duration, def, min time.Duration) {
		if *v == 0 {
			*v = def
		}
		if *v < min {
			bad("Options.%s must be ≥ %v, got %v", name, min, *v)
		}
	}
	int64Def("MaxFrameBytes", &o.MaxFrameBytes, d.MaxFrameBytes, 1024)
	int64Def("MaxDocBytes", &o.MaxDocBytes, d.MaxDocBytes, 1024)
	int64Def("MaxValueBytes", &o.MaxValueBytes, d.MaxValueBytes, 64)
	int64Def("MaxPendingBytes", &o.MaxPendingBytes, d.MaxPendingBytes, 1024)
	intDef("MaxChangesPerSec", &o.MaxChangesPerSec, d.MaxChangesPerSec, 1)
	intDef("ChangesBurst", &o.ChangesBurst, d.ChangesBurst, 1)
	intDef("MaxPresencePerSec", &o.MaxPresencePerSec, d.MaxPresencePerSec, 1)
	durDef("PresenceInterval", &o.PresenceInterval, d.PresenceInterval, time.Millisecond)
	durDef("PresenceTTL", &o.PresenceTTL, d.PresenceTTL, time.Millisecond)
	intDef("MaxConnections", &o.MaxConnections, d.MaxConnections, 1)
	intDef("MaxDocsPerConn", &o.MaxDocsPerConn, d.MaxDocsPerConn, 1)
	intDef("MaxDocsPerUser", &o.MaxDocsPerUser, d.MaxDocsPerUser, 1)
	intDef("MaxLoadedDocs", &o.MaxLoadedDocs, d.MaxLoadedDocs, 1)
	intDef("MaxSubscribesPerSec", &o.MaxSubscribesPerSec, d.MaxSubscribesPerSec, 1)
	intDef("MaxPending", &o.MaxPending, d.MaxPending, 1)
	durDef("MaxClockOffset", &o.MaxClockOffset, d.MaxClockOffset, time.Millisecond)
	intDef("SendQueue", &o.SendQueue, d.SendQueue, 4)
	durDef("AuthTimeout", &o.AuthTimeout, d.AuthTimeout, time.Millisecond)
	durDef("PingInterval", &o.PingInterval, d.PingInterval, time.Millisecond)
	durDef("PongTimeout", &o.PongTimeout, d.PongTimeout, time.Millisecond)
	durDef("WriteTimeout", &o.WriteTimeout, d.WriteTimeout, time.Millisecond)
	if o.ParkIdle == 0 {
		o.ParkIdle = d.ParkIdle
	}
	durDef("IdleTimeout", &o.IdleTimeout, d.IdleTimeout, time.Millisecond)
	int64Def("SnapshotMinBytes", &o.SnapshotMinBytes, d.SnapshotMinBytes, 1)
	intDef("MaxBatchChanges", &o.MaxBatchChanges, d.MaxBatchChanges, 1)
	if o.MemoryBudget < 0 {
		bad("Options.MemoryBudget must be ≥ 0 (0 disables it), got %d", o.MemoryBudget)
	}
	if o.MaxFrameBytes > 64<<20 {
		bad("Options.MaxFrameBytes must be ≤ 64 MiB, got %d", o.MaxFrameBytes)
	}
	if o.ChangesBurst < crdt.MaxChangeOps {
		bad("Options.ChangesBurst (%d) must be at least crdt.MaxChangeOps (%d), the most operations one change holds: a change cannot be split", o.ChangesBurst, crdt.MaxChangeOps)
	}
	if o.ChangesBurst < o.MaxChangesPerSec/10 {
		bad("Options.ChangesBurst (%d) must be at least a tenth of MaxChangesPerSec (%d)", o.ChangesBurst, o.MaxChangesPerSec)
	}
	if o.Replica.IsZero() {
		o.Replica = crdt.ReplicaID(uuid.New())
	}
	if o.Wall == nil {
		o.Wall = hlc.SystemWall
	}
	return o, errors.Join(errs...)
}

// limits is what welcome announces.
func (o *Options) limits() syncproto.Limits {
	return syncproto.Limits{
		MaxFrame:          uint64(o.MaxFrameBytes),
		MaxChangesPerSec:  uint64(o.MaxChangesPerSec),
		MaxPresencePerSec: uint64(o.MaxPresencePerSec),
		MaxDocBytes:       uint64(o.MaxDocBytes),
		MaxPending:        uint64(o.MaxPending),
		MaxDocs:           uint64(o.MaxDocsPerConn),
		MaxOpsBurst:       uint64(o.ChangesBurst),
	}
}
