package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// KeyLen is the length of the cluster key: it encrypts gossip (AES-256)
// and authenticates peer links (HMAC-SHA256).
const KeyLen = 32

// Local is the server a Node replicates for: *syncserver.Server
// implements it (cmd/weft wires them).
type Local interface {
	// PeerUpdate applies changes sent by the peer named peer as a trusted
	// replica; ack is called once, without blocking, after they are
	// durable (ok) or refused. It blocks only while the document loads
	// or its queue is full.
	PeerUpdate(ctx context.Context, doc, peer string, changes []crdt.Change, size int64, ack func(syncproto.Status, string)) error
	// PeerOwners takes the replica ownership claims the peer named peer
	// holds for doc, before the changes that follow them on the link: a
	// replica without a local owner gets the peer's (stored with the
	// document), a contradicting claim keeps the local one. Calls for one
	// document take effect in call order, and before the PeerUpdate
	// calls made after them. It blocks only while the document loads or
	// its queue is full.
	PeerOwners(ctx context.Context, doc, peer string, owners []syncproto.Owner) error
	// PeerSync returns doc's changes that since lacks, in chunks of at
	// most maxBytes, doc's version and the ownership claims held for the
	// replicas of those changes. It may load the document. The version
	// is what doc holds durably.
	PeerSync(ctx context.Context, doc string, since crdt.VersionVector, maxBytes int) ([]codec.Chunk, crdt.VersionVector, []syncproto.Owner, error)
	// PeerPresence relays a presence or presence_leave of another
	// server's session to local subscribers. It never blocks.
	PeerPresence(doc string, m syncproto.Message)
}

// VersionLister lists the version vector the store records for every
// document, without loading any (storage.Store implements it).
type VersionLister interface {
	Versions(ctx context.Context, fn func(doc string, v crdt.VersionVector) error) error
}

// Options configure a Node. New clones them, fills defaults and reports
// every problem at once; it never mutates the caller's copy.
type Options struct {
	// Gossip is the memberlist bind address, host:port (UDP and TCP); port
	// 0 picks a free one. Required.
	Gossip string
	// Advertise is the host:port other nodes reach this node's gossip at,
	// when the bind address is not reachable (0.0.0.0, NAT). Its host is
	// also advertised for the peer link. Default: the bound gossip
	// address.
	Advertise string
	// PeerListen is the bind address of the peer link listener. Default:
	// the gossip host with the gossip port + 1 (port 0 when the gossip
	// port is 0).
	PeerListen string
	// Join lists gossip addresses of known members. They are joined at
	// start and again whenever this node is alone, so a cluster re-forms
	// after every node restarted. Default: none (a new cluster).
	Join []string
	// PeersFile, if set, is where the node keeps the gossip addresses of
	// the members it knew, and re-joins them at start and whenever it is
	// alone (as Serf's snapshot): a cluster whose every node restarted
	// re-forms even without seeds. Default: "" (seeds only).
	PeersFile string
	// Key is the 32-byte cluster key. Required.
	Key []byte
	// Local is the server whose documents are replicated. Required.
	Local Local
	// Versions, if set, lists stored documents' versions at start so that
	// anti-entropy knows documents not written since. Default: none.
	Versions VersionLister

	// AckPeers is how many other peers must hold a client's change durably
	// before it is acked (0: the local store alone). Default: 0.
	AckPeers int
	// AckTimeout bounds that wait; then the ack is peer_timeout.
	// Default: 5s.
	AckTimeout time.Duration
	// AckDelay is how long this node may hold an ack it owes a pusher
	// when it wrote to that pusher less than AckDelay ago, so that the
	// acks of the updates that became durable meanwhile go out in one
	// write(2) (and are read with one read(2)) rather than one each; an
	// ack also leaves with any other frame sent to that pusher sooner,
	// and at once on a quiet connection. A peer's AckPeers waits up to as
	// much longer under load. Negative: every ack is written at once.
	// Default: 2ms.
	AckDelay time.Duration

	// AntiEntropyInterval is the period of anti-entropy rounds on each
	// link (one also runs when a link comes up). Default: 10s.
	AntiEntropyInterval time.Duration
	// ReconnectInterval is how often a failed member (or, when alone, the
	// Join seeds) is re-joined, as Serf does. Default: 10s.
	ReconnectInterval time.Duration
	// ReconnectTimeout is how long a failed member is retried before it is
	// forgotten. Default: 24h.
	ReconnectTimeout time.Duration
	// Buckets is the number of anti-entropy digest buckets, a power of
	// two; every node of a cluster must use the same. Default: 1024.
	Buckets int
	// MaxFrameBytes bounds one peer-link frame. Default: 16 MiB.
	MaxFrameBytes int
	// SendQueue is the frames queued for one peer link; a peer that lets
	// it fill is disconnected (and repaired by anti-entropy after it
	// reconnects). Default: 8192.
	SendQueue int
	// DialTimeout bounds a peer link dial and its handshake. Default: 5s.
	DialTimeout time.Duration
	// RetryMax is the longest wait between two dials of a peer link: it
	// bounds how long after a partition heals the link is back (a refused
	// dial to a peer that is down costs next to nothing). Default: 250ms.
	RetryMax time.Duration

	// GossipInterval, ProbeInterval, ProbeTimeout, SuspicionMult,
	// PushPullInterval, GossipToTheDeadTime and DeadNodeReclaimTime are
	// memberlist's timings. Default: memberlist's LAN configuration
	// (200ms, 1s, 500ms, 4, 30s, 30s) and 10s.
	GossipInterval      time.Duration
	ProbeInterval       time.Duration
	ProbeTimeout        time.Duration
	SuspicionMult       int
	PushPullInterval    time.Duration
	GossipToTheDeadTime time.Duration
	DeadNodeReclaimTime time.Duration

	// Faults, if set, lets a test or benchmark cut this node off (a
	// partition). Default: nil.
	Faults *Faults
	// Logger receives structured logs. Default: discard.
	Logger *slog.Logger
	// Registry receives the cluster's metrics. Default: a private registry.
	Registry prometheus.Registerer
}

// DefaultOptions returns the production defaults (without the required
// fields).
func DefaultOptions() Options {
	return Options{
		AckTimeout:          5 * time.Second,
		AckDelay:            2 * time.Millisecond,
		AntiEntropyInterval: 10 * time.Second,
		ReconnectInterval:   10 * time.Second,
		ReconnectTimeout:    24 * time.Hour,
		Buckets:             1024,
		MaxFrameBytes:       16 << 20,
		SendQueue:           8192,
		DialTimeout:         5 * time.Second,
		RetryMax:            250 * time.Millisecond,
		GossipInterval:      200 * time.Millisecond,
		ProbeInterval:       time.Second,
		ProbeTimeout:        500 * time.Millisecond,
		SuspicionMult:       4,
		PushPullInterval:    30 * time.Second,
		GossipToTheDeadTime: 30 * time.Second,
		DeadNodeReclaimTime: 10 * time.Second,
	}
}

// LocalOptions returns DefaultOptions with timings for tests on loopback
// (as Serf's tests: failures noticed in a fraction of a second, failed
// members re-joined every 100ms).
func LocalOptions() Options {
	o := DefaultOptions()
	o.AckTimeout = 2 * time.Second
	o.AntiEntropyInterval = 300 * time.Millisecond
	o.ReconnectInterval = 100 * time.Millisecond
	o.Buckets = 64
	o.DialTimeout = time.Second
	o.RetryMax = 100 * time.Millisecond
	o.GossipInterval = 20 * time.Millisecond
	o.ProbeInterval = 100 * time.Millisecond
	o.ProbeTimeout = 50 * time.Millisecond
	o.SuspicionMult = 3
	o.PushPullInterval = time.Second
	o.GossipToTheDeadTime = time.Second
	o.DeadNodeReclaimTime = 50 * time.Millisecond
	return o
}

// ErrBadKey is returned when the cluster key is missing or not KeyLen
// bytes.
var ErrBadKey = errors.New("cluster: the cluster key must be 32 bytes")

func (o Options) withDefaults() (Options, error) {
	d := DefaultOptions()
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("cluster: "+format, args...)) }
	o.Join = append([]string(nil), o.Join...)
	o.Key = append([]byte(nil), o.Key...)
	if len(o.Key) != KeyLen {
		errs = append(errs, fmt.Errorf("%w, got %d", ErrBadKey, len(o.Key)))
	}
	if o.Local == nil {
		bad("Options.Local is required")
	}
	if _, _, err := splitHostPort(o.Gossip); err != nil {
		bad("Options.Gossip: %v", err)
	}
	if o.Advertise != "" {
		if _, _, err := splitHostPort(o.Advertise); err != nil {
			bad("Options.Advertise: %v", err)
		}
	}
	if o.PeerListen != "" {
		if _, _, err := splitHostPort(o.PeerListen); err != nil {
			bad("Options.PeerListen: %v", err)
		}
	}
	for _, j := range o.Join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			bad("Options.Join %q: want host:port", j)
		}
	}
	if o.AckPeers < 0 {
		bad("Options.AckPeers must be ≥ 0, got %d", o.AckPeers)
	}
	dur := func(name string, v *time.Duration, def time.Duration) {
		if *v == 0 {
			*v = def
		}
		if *v < 0 {
			bad("Options.%s must be > 0, got %v", name, *v)
		}
	}
	num := func(name string, v *int, def, min int) {
		if *v == 0 {
			*v = def
		}
		if *v < min {
			bad("Options.%s must be ≥ %d, got %d", name, min, *v)
		}
	}
	dur("AckTimeout", &o.AckTimeout, d.AckTimeout)
	switch {
	case o.AckDelay == 0:
		o.AckDelay = d.AckDelay
	case o.AckDelay < 0:
		o.AckDelay = 0 // none
	}
	dur("AntiEntropyInterval", &o.AntiEntropyInterval, d.AntiEntropyInterval)
	dur("ReconnectInterval", &o.ReconnectInterval, d.ReconnectInterval)
	dur("ReconnectTimeout", &o.ReconnectTimeout, d.ReconnectTimeout)
	dur("DialTimeout", &o.DialTimeout, d.DialTimeout)
	dur("RetryMax", &o.RetryMax, d.RetryMax)
	dur("GossipInterval", &o.GossipInterval, d.GossipInterval)
	dur("ProbeInterval", &o.ProbeInterval, d.ProbeInterval)
	dur("ProbeTimeout", &o.ProbeTimeout, d.ProbeTimeout)
	dur("PushPullInterval", &o.PushPullInterval, d.PushPullInterval)
	dur("GossipToTheDeadTime", &o.GossipToTheDeadTime, d.GossipToTheDeadTime)
	dur("DeadNodeReclaimTime", &o.DeadNodeReclaimTime, d.DeadNodeReclaimTime)
	num("SuspicionMult", &o.SuspicionMult, d.SuspicionMult, 1)
	num("Buckets", &o.Buckets, d.Buckets, 1)
	num("MaxFrameBytes", &o.MaxFrameBytes, d.MaxFrameBytes, 64<<10)
	num("SendQueue", &o.SendQueue, d.SendQueue, 16)
	if o.Buckets&(o.Buckets-1) != 0 || o.Buckets > 1<<16 {
		bad("Options.Buckets must be a power of two ≤ 65536, got %d", o.Buckets)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	return o, errors.Join(errs...)
}

func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}
