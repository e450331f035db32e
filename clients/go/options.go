package client

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// Options configure a Client. The zero value is not usable: start from
// DefaultOptions and set URL.
type Options struct {
	// URL is the server's WebSocket endpoint, e.g. "ws://127.0.0.1:7420/v1/ws".
	// An http:// or https:// URL is turned into ws:// or wss://, and a URL
	// with an empty path gets "/v1/ws". Required.
	URL string
	// Token is the access token sent in hello (a JWT minted by `weft token`).
	// Default: "" (anonymous; only a server run with --insecure accepts it).
	Token string
	// Replica is this client's replica id. When zero, the client loads the
	// id kept in Dir, or generates a random UUID (and keeps it in Dir, if
	// set), so that a restarted client continues its own sequence.
	// Default: zero (generated).
	Replica crdt.ReplicaID
	// Dir keeps one file per open document with its local replica, so edits
	// made offline survive a restart, plus the replica id. Two clients must
	// never share a Dir at once (the client locks it). Default: "" (memory
	// only).
	Dir string
	// NoSync skips fsync of the local files: faster, but an OS crash may
	// lose the last local edits. Default: false.
	NoSync bool
	// Wall is the wall clock the documents' hybrid logical clocks read.
	// Default: hlc.SystemWall.
	Wall hlc.Wall
	// Logger receives connection events. Default: a logger that discards.
	Logger *slog.Logger
	// Backoff paces reconnection: exponential with full jitter, capped.
	// Default: Backoff{Base: 250ms, Max: 30s}.
	Backoff Backoff
	// DialTimeout bounds one connection attempt including the hello/welcome
	// handshake. Default: 10s.
	DialTimeout time.Duration
	// PingInterval is how often the client sends an application ping while
	// idle; the connection is dropped when nothing arrives for twice as long.
	// Default: 20s.
	PingInterval time.Duration
	// Header is sent with the WebSocket handshake (e.g. Origin). Default: nil.
	Header http.Header
	// SendQueue bounds the control messages (pongs, presence) waiting for
	// the writer. Default: 256.
	SendQueue int
	// MaxBatchOps bounds the operations put in one update message (and the
	// server's ops burst announced in welcome bounds it further); larger
	// backlogs (a day offline) go out as several batches. Default: 4096.
	MaxBatchOps int
	// MaxPending is crdt.Options.MaxPending for every document. Default: 4096.
	MaxPending int
}

// DefaultOptions returns the defaults described on each field.
func DefaultOptions() Options {
	return Options{
		Wall:         hlc.SystemWall,
		Backoff:      Backoff{Base: 250 * time.Millisecond, Max: 30 * time.Second},
		DialTimeout:  10 * time.Second,
		PingInterval: 20 * time.Second,
		SendQueue:    256,
		MaxBatchOps:  4096,
		MaxPending:   4096,
	}
}

// LocalOptions returns options for tests on one machine: fast reconnection
// and no fsync.
func LocalOptions(url string) Options {
	o := DefaultOptions()
	o.URL = url
	o.NoSync = true
	o.Backoff = Backoff{Base: 10 * time.Millisecond, Max: 200 * time.Millisecond}
	o.DialTimeout = 5 * time.Second
	return o
}

// ErrOptions wraps every invalid-options error.
var ErrOptions = errors.New("client: invalid options")

// withDefaults returns a copy of o with zero fields filled in and every
// problem reported at once. The caller's Options are never modified.
func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	if o.Wall == nil {
		o.Wall = d.Wall
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.Backoff.Base = cmp.Or(o.Backoff.Base, d.Backoff.Base)
	o.Backoff.Max = cmp.Or(o.Backoff.Max, d.Backoff.Max)
	o.DialTimeout = cmp.Or(o.DialTimeout, d.DialTimeout)
	o.PingInterval = cmp.Or(o.PingInterval, d.PingInterval)
	o.SendQueue = cmp.Or(o.SendQueue, d.SendQueue)
	o.MaxBatchOps = cmp.Or(o.MaxBatchOps, d.MaxBatchOps)
	o.MaxPending = cmp.Or(o.MaxPending, d.MaxPending)
	o.Header = o.Header.Clone()
	o.Backoff.attempt = 0

	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrOptions}, args...)...))
	}
	if o.URL == "" {
		bad("URL is required")
	} else if u, err := normalizeURL(o.URL); err != nil {
		bad("URL %q: %v", o.URL, err)
	} else {
		o.URL = u
	}
	if o.Backoff.Base < 0 || o.Backoff.Max < 0 || o.Backoff.Base > o.Backoff.Max {
		bad("Backoff must have 0 < Base ≤ Max, got Base %v Max %v", o.Backoff.Base, o.Backoff.Max)
	}
	if o.DialTimeout < 0 {
		bad("DialTimeout %v is negative", o.DialTimeout)
	}
	if o.PingInterval < 0 {
		bad("PingInterval %v is negative", o.PingInterval)
	}
	if o.SendQueue < 0 {
		bad("SendQueue %d is negative", o.SendQueue)
	}
	if o.MaxBatchOps < 0 {
		bad("MaxBatchOps %d is negative", o.MaxBatchOps)
	}
	if o.MaxPending < 0 {
		bad("MaxPending %d is negative", o.MaxPending)
	}
	return o, errors.Join(errs...)
}

func normalizeURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	switch u.Scheme {
	case "ws", "wss":
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	default:
		return "", fmt.Errorf("scheme %q is not ws, wss, http or https", u.Scheme)
	}
	if u.Host == "" {
		return "", errors.New("no host")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/ws"
	}
	return u.String(), nil
}
