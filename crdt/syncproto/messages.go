package syncproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// ProtocolVersion is the version this package speaks. A peer announces its
// version in hello; the server answers with the version it will use (the
// same major version) or closes with CloseUnsupportedVersion.
const ProtocolVersion = 1

// Hard limits that Decode enforces on every frame, whatever the server's
// configured limits (those are usually tighter and enforced by the server).
const (
	// MaxDocIDLen bounds a document id, in bytes.
	MaxDocIDLen = 512
	// MaxTokenLen bounds the auth token in hello, in bytes.
	MaxTokenLen = 8192
	// MaxNameLen bounds short strings: client, user, name, color, session.
	// A presence's field is a field name: crdt.MaxFieldName bounds it.
	MaxNameLen = 256
	// MaxMessageLen bounds the human-readable message of ack and error.
	MaxMessageLen = 4096
	// MaxPresenceState bounds the encoded presence state, in bytes.
	MaxPresenceState = 4096
	// MaxDepth bounds the nesting of msgpack arrays and maps in a frame.
	MaxDepth = 16
)

// Errors returned by Decode and Encode.
var (
	// ErrMalformed: the frame is not a well-formed message (truncated,
	// wrong types, lengths that exceed the frame or a limit, bad UTF-8...).
	ErrMalformed = errors.New("syncproto: malformed message")
	// ErrUnknownMessage: the frame is well-formed msgpack with a type tag
	// this version does not know. A receiver may ignore it (a newer peer) or
	// answer with an error; it must not close the connection for it.
	ErrUnknownMessage = errors.New("syncproto: unknown message type")
)

// Type is the small integer that opens every frame and says which message
// follows.
type Type uint8

// Message types. Numbers are wire values: never reuse one.
const (
	TypeHello         Type = 1
	TypeWelcome       Type = 2
	TypeSubscribe     Type = 3
	TypeUnsubscribe   Type = 4
	TypeSync          Type = 5
	TypeUpdate        Type = 6
	TypeAck           Type = 7
	TypeChanges       Type = 8
	TypePresence      Type = 9
	TypePresenceLeave Type = 10
	TypePing          Type = 11
	TypePong          Type = 12
	TypeError         Type = 13
	// Cluster peer links only (see docs/PROTOCOL.md, "Peer links").
	TypePeerHello  Type = 14
	TypeDigest     Type = 15
	TypeDigestDocs Type = 16
	// TypeVersionPart: part of the version vector of the next subscribe or
	// sync of the same document (vectors too large for one frame).
	TypeVersionPart Type = 17
	// TypeOwners: replica ownership claims (cluster peer links only).
	TypeOwners Type = 18
)

// typeNames and fieldCount are arrays, not maps: Decode looks both up for
// every frame, and hashing the tag twice was a tenth of decoding a
// keystroke's changes frame.
var typeNames = [256]string{
	TypeHello: "hello", TypeWelcome: "welcome", TypeSubscribe: "subscribe",
	TypeUnsubscribe: "unsubscribe", TypeSync: "sync", TypeUpdate: "update",
	TypeAck: "ack", TypeChanges: "changes", TypePresence: "presence",
	TypePresenceLeave: "presence_leave", TypePing: "ping", TypePong: "pong",
	TypeError: "error", TypePeerHello: "peer_hello", TypeDigest: "digest",
	TypeDigestDocs: "digest_docs", TypeVersionPart: "version_part",
	TypeOwners: "owners",
}

func (t Type) String() string {
	if n := typeNames[t]; n != "" {
		return n
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Status says how a request ended; it travels in ack and error.
type Status uint8

// Statuses. Numbers are wire values: never reuse one.
const (
	StatusOK           Status = 0  // applied (and, for update, durable)
	StatusReadOnly     Status = 1  // the token grants only read access
	StatusTooLarge     Status = 2  // the batch or the document would exceed a size limit
	StatusRateLimited  Status = 3  // too many changes or presence updates per second; retry later
	StatusInvalid      Status = 4  // malformed or contradictory changes; rejected whole
	StatusClockSkew    Status = 5  // a timestamp is too far ahead of the server's clock; re-stamp and retry
	StatusUnauthorized Status = 6  // no valid token, or the token does not cover this document
	StatusNotFound     Status = 7  // unknown document (only where auto-creation is off) or not subscribed
	StatusPendingFull  Status = 8  // too many changes wait for missing dependencies; resync
	StatusOverloaded   Status = 9  // the server sheds load; retry later
	StatusInternal     Status = 10 // a server bug or storage failure; retry later
	// StatusMissingDeps: the batch builds on changes the server does not
	// have (it lost them, or they came from elsewhere); it is held, not
	// durable. Resubscribe and send what the server lacks.
	StatusMissingDeps Status = 11
	// StatusPeerTimeout: the batch is durable on this server, but fewer
	// than the required number of cluster peers (--ack-peers) confirmed
	// it in time. It is kept and keeps replicating; resend to learn when
	// it is confirmed.
	StatusPeerTimeout Status = 12
)

var statusNames = map[Status]string{
	StatusOK: "ok", StatusReadOnly: "read_only", StatusTooLarge: "too_large",
	StatusRateLimited: "rate_limited", StatusInvalid: "invalid",
	StatusClockSkew: "clock_skew", StatusUnauthorized: "unauthorized",
	StatusNotFound: "not_found", StatusPendingFull: "pending_full",
	StatusOverloaded: "overloaded", StatusInternal: "internal",
	StatusMissingDeps: "missing_deps", StatusPeerTimeout: "peer_timeout",
}

func (s Status) String() string {
	if n, ok := statusNames[s]; ok {
		return n
	}
	return fmt.Sprintf("Status(%d)", uint8(s))
}

// Retryable reports whether resending the same request later may succeed
// without changing it (a client keeps such a batch queued).
func (s Status) Retryable() bool {
	switch s {
	case StatusRateLimited, StatusOverloaded, StatusInternal, StatusPeerTimeout:
		return true
	}
	return false
}

// CloseCode is a WebSocket close code the server (or client) uses to end a
// connection. 4000-4999 are application codes.
type CloseCode uint16

// Close codes.
const (
	CloseNormal             CloseCode = 1000 // the peer is done
	CloseGoingAway          CloseCode = 1001 // server shutdown: reconnect (elsewhere) at once
	CloseInternalError      CloseCode = 1011 // a server bug ended the connection: reconnect with backoff
	CloseTryAgainLater      CloseCode = 1013 // server over capacity: reconnect with backoff
	CloseProtocolError      CloseCode = 4000 // a malformed frame or a message out of order
	CloseAuthFailed         CloseCode = 4001 // the token in hello is invalid or expired: do not retry with it
	CloseAuthTimeout        CloseCode = 4002 // no hello before the deadline
	CloseTooSlow            CloseCode = 4003 // the send queue overflowed: the client could not keep up
	CloseRateLimited        CloseCode = 4004 // sustained abuse of the rate limits
	CloseFrameTooLarge      CloseCode = 4005 // a frame above the max_frame limit
	CloseUnsupportedVersion CloseCode = 4006 // no common protocol version
	CloseHeartbeatTimeout   CloseCode = 4007 // no pong to the server's ping in time
	CloseReplicaConflict    CloseCode = 4008 // reserved, never sent (replica conflicts are refused per batch with StatusUnauthorized)
)

var closeNames = map[CloseCode]string{
	CloseNormal: "normal", CloseGoingAway: "going_away", CloseInternalError: "internal_error", CloseTryAgainLater: "try_again_later",
	CloseProtocolError: "protocol_error", CloseAuthFailed: "auth_failed",
	CloseAuthTimeout: "auth_timeout", CloseTooSlow: "too_slow",
	CloseRateLimited: "rate_limited", CloseFrameTooLarge: "frame_too_large",
	CloseUnsupportedVersion: "unsupported_version", CloseHeartbeatTimeout: "heartbeat_timeout",
	CloseReplicaConflict: "replica_conflict",
}

func (c CloseCode) String() string {
	if n, ok := closeNames[c]; ok {
		return n
	}
	return fmt.Sprintf("CloseCode(%d)", uint16(c))
}

// Message is one wire message. The concrete types are the structs below;
// a type switch on the value returned by Decode dispatches.
type Message interface {
	Type() Type
}

// Hello opens a connection (client → server). Nothing else is accepted
// before it.
type Hello struct {
	Version    uint64         // ProtocolVersion of the client
	Token      string         // auth token (HS256 JWT); empty in --insecure mode
	Replica    crdt.ReplicaID // the client's replica id; never zero
	ClientName string         // free text for logs, e.g. "weft-go/0.1"
}

// Limits are the server's limits, announced in welcome so clients can stay
// under them. Zero means "not limited".
type Limits struct {
	MaxFrame          uint64 // bytes per WebSocket frame
	MaxChangesPerSec  uint64 // ops per second per connection (sustained)
	MaxPresencePerSec uint64 // presence messages per second per connection
	MaxDocBytes       uint64 // encoded size of one document
	MaxPending        uint64 // changes held waiting for dependencies, per document
	MaxDocs           uint64 // documents subscribed at once per connection
	// MaxOpsBurst is the most ops (a change batch header's N) one update
	// may declare: the rate limit's bucket. Clients split their batches to
	// it; a server never sets it below crdt.MaxChangeOps, so every change
	// fits. Zero: not announced (a server that predates it).
	MaxOpsBurst uint64
}

// Welcome answers hello (server → client).
type Welcome struct {
	Version    uint64        // protocol version the server will speak
	ServerTime hlc.Timestamp // the server's HLC, so the client can fold it into its clock
	Session    string        // this connection's session id (appears in presence)
	User       string        // the authenticated user id (token sub)
	Limits     Limits
}

// Subscribe asks for a document (client → server, or peer → peer): the
// receiver answers with a Sync carrying what the sender lacks.
type Subscribe struct {
	Doc     string
	Version crdt.VersionVector // what the sender has
}

// VersionPart carries part of the version vector of the next Subscribe or
// Sync of the same document on the connection, when the whole vector would
// not fit in one frame (a document with very many replicas): the receiver
// takes the union of the parts and the final message's own Version. See
// SplitVersion.
type VersionPart struct {
	Doc     string
	Version crdt.VersionVector
}

// Unsubscribe stops updates and presence for a document.
type Unsubscribe struct {
	Doc string
}

// Sync carries the changes the receiver lacks (computed from the version
// vector it sent in Subscribe) and the sender's own version vector, so the
// receiver can send back what the sender lacks.
type Sync struct {
	Doc     string
	Version crdt.VersionVector // the sender's version
	Changes []byte             // codec.EncodeChanges bytes; may be empty
}

// Update submits local changes (client → server). The server acks the Batch
// id once the changes are durable (or refused).
type Update struct {
	Doc     string
	Batch   uint64 // chosen by the client, unique per connection and doc
	Changes []byte // codec.EncodeChanges bytes
}

// Ack reports the outcome of an Update.
type Ack struct {
	Doc     string
	Batch   uint64
	Status  Status
	Message string // human-readable detail; empty for ok
}

// Changes fans out changes made by other replicas (server → client).
type Changes struct {
	Doc     string
	Changes []byte // codec.EncodeChanges bytes
}

// Selection is a text selection: Anchor is where it started, Head where the
// cursor is (Head may precede Anchor).
type Selection struct {
	Anchor crdt.Anchor
	Head   crdt.Anchor
}

// Presence is ephemeral per-session state. A client sends it with Session,
// User, Name and Color empty; the server fills them from the connection and
// the token (clients cannot spoof them) before relaying.
type Presence struct {
	Doc       string
	Session   string
	User      string
	Name      string
	Color     string
	Clock     uint64       // per-session counter; a receiver ignores a presence with a clock ≤ the last one seen
	Field     string       // the text field the cursor and selection refer to
	Cursor    *crdt.Anchor // nil: no cursor
	Selection *Selection   // nil: no selection
	Typing    bool
	State     []byte // one msgpack value (application state), at most MaxPresenceState bytes; nil: none
}

// PresenceLeave announces that a session left a document (unsubscribed,
// disconnected or expired).
type PresenceLeave struct {
	Doc     string
	Session string
}

// Ping asks for a Pong with the same nonce (either direction).
type Ping struct{ Nonce uint64 }

// Pong answers a Ping.
type Pong struct{ Nonce uint64 }

// Error reports a failure not tied to an update batch: a refused subscribe,
// a malformed message, a connection-level problem (Doc empty).
type Error struct {
	Status  Status
	Message string
	Doc     string // empty: about the connection
}

// Limits of the peer-link messages.
const (
	// PeerNonceLen is the length of a PeerHello nonce and proof.
	PeerNonceLen = 32
	// MaxDigestBuckets bounds the buckets of a Digest.
	MaxDigestBuckets = 1 << 16
	// MaxOwnerEntries bounds the claims of one Owners message; more go in
	// several (see SplitOwners). A principal is at most MaxNameLen bytes
	// (a token's sub is refused beyond it).
	MaxOwnerEntries = 1024
)

// PeerHello authenticates a cluster peer link (both directions; see
// docs/PROTOCOL.md, "Peer links"). The dialer sends its node name and a
// nonce; the acceptor answers with its name, its nonce and a proof over
// both; the dialer closes the handshake with its own proof (Nonce empty).
type PeerHello struct {
	Node  string // the sender's node name
	Nonce []byte // PeerNonceLen random bytes, or empty in the dialer's last message
	Proof []byte // PeerNonceLen bytes of HMAC-SHA256, or empty in the dialer's first message
}

// Digest opens an anti-entropy round on a peer link: the sender's
// per-bucket digests of every stored document's version.
type Digest struct {
	Round   uint64   // chosen by the sender; echoed in DigestDocs
	Buckets []uint64 // a power of two of them, at most MaxDigestBuckets
}

// DigestDocs answers a Digest for one bucket whose digest differs: the
// receiver's documents in that bucket with the hash of each one's version.
type DigestDocs struct {
	Round  uint64
	Bucket uint64
	Docs   []string // document ids, each at most MaxDocIDLen bytes
	Hashes []uint64 // one per document
}

// Owner is one replica ownership claim: Principal (a token's sub) was the
// first to write with Replica in a document.
type Owner struct {
	Replica   crdt.ReplicaID
	Principal string
}

// Owners carries the ownership claims a node holds for replicas of Doc,
// sent on a peer link before the changes of those replicas (see
// docs/PROTOCOL.md, "Peer links"). Owners are in strictly increasing
// replica order (so no replica twice), 1 to MaxOwnerEntries of them, each
// principal non-empty and at most MaxNameLen bytes.
type Owners struct {
	Doc    string
	Owners []Owner
}

func (*Owners) Type() Type { return TypeOwners }

func (*PeerHello) Type() Type  { return TypePeerHello }
func (*Digest) Type() Type     { return TypeDigest }
func (*DigestDocs) Type() Type { return TypeDigestDocs }

func (*Hello) Type() Type         { return TypeHello }
func (*Welcome) Type() Type       { return TypeWelcome }
func (*Subscribe) Type() Type     { return TypeSubscribe }
func (*VersionPart) Type() Type   { return TypeVersionPart }
func (*Unsubscribe) Type() Type   { return TypeUnsubscribe }
func (*Sync) Type() Type          { return TypeSync }
func (*Update) Type() Type        { return TypeUpdate }
func (*Ack) Type() Type           { return TypeAck }
func (*Changes) Type() Type       { return TypeChanges }
func (*Presence) Type() Type      { return TypePresence }
func (*PresenceLeave) Type() Type { return TypePresenceLeave }
func (*Ping) Type() Type          { return TypePing }
func (*Pong) Type() Type          { return TypePong }
func (*Error) Type() Type         { return TypeError }

// DocOf returns the document a message is about, or "" for connection-level
// messages (hello, welcome, ping, pong, an error without doc).
func DocOf(m Message) string {
	switch m := m.(type) {
	case *Subscribe:
		return m.Doc
	case *VersionPart:
		return m.Doc
	case *Unsubscribe:
		return m.Doc
	case *Sync:
		return m.Doc
	case *Update:
		return m.Doc
	case *Ack:
		return m.Doc
	case *Changes:
		return m.Doc
	case *Presence:
		return m.Doc
	case *PresenceLeave:
		return m.Doc
	case *Error:
		return m.Doc
	case *Owners:
		return m.Doc
	}
	return ""
}

// Encode returns the wire form of m: a msgpack array [type, fields...].
// It validates m against the same rules Decode enforces, so every encoded
// frame decodes; an invalid message returns an error wrapping ErrMalformed.
// The result is deterministic (version vectors are sorted by replica).
func Encode(m Message) ([]byte, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: nil message", ErrMalformed)
	}
	if err := validate(m); err != nil {
		return nil, err
	}
	w := newWriter()
	switch m := m.(type) {
	case *Hello:
		w.array(5)
		w.uint(uint64(TypeHello))
		w.uint(m.Version)
		w.str(m.Token)
		w.bin(m.Replica[:])
		w.str(m.ClientName)
	case *Welcome:
		w.array(6)
		w.uint(uint64(TypeWelcome))
		w.uint(m.Version)
		w.uint(uint64(m.ServerTime))
		w.str(m.Session)
		w.str(m.User)
		l := m.Limits
		w.array(7)
		for _, v := range []uint64{l.MaxFrame, l.MaxChangesPerSec, l.MaxPresencePerSec, l.MaxDocBytes, l.MaxPending, l.MaxDocs, l.MaxOpsBurst} {
			w.uint(v)
		}
	case *Subscribe:
		w.array(3)
		w.uint(uint64(TypeSubscribe))
		w.str(m.Doc)
		writeVersion(w, m.Version)
	case *VersionPart:
		w.array(3)
		w.uint(uint64(TypeVersionPart))
		w.str(m.Doc)
		writeVersion(w, m.Version)
	case *Unsubscribe:
		w.array(2)
		w.uint(uint64(TypeUnsubscribe))
		w.str(m.Doc)
	case *Sync:
		w.array(4)
		w.uint(uint64(TypeSync))
		w.str(m.Doc)
		writeVersion(w, m.Version)
		w.bin(m.Changes)
	case *Update:
		w.array(4)
		w.uint(uint64(TypeUpdate))
		w.str(m.Doc)
		w.uint(m.Batch)
		w.bin(m.Changes)
	case *Ack:
		w.array(5)
		w.uint(uint64(TypeAck))
		w.str(m.Doc)
		w.uint(m.Batch)
		w.uint(uint64(m.Status))
		w.str(m.Message)
	case *Changes:
		w.array(3)
		w.uint(uint64(TypeChanges))
		w.str(m.Doc)
		w.bin(m.Changes)
	case *Presence:
		w.array(12)
		w.uint(uint64(TypePresence))
		w.str(m.Doc)
		w.str(m.Session)
		w.str(m.User)
		w.str(m.Name)
		w.str(m.Color)
		w.uint(m.Clock)
		w.str(m.Field)
		if m.Cursor == nil {
			w.nil()
		} else {
			writeAnchor(w, *m.Cursor)
		}
		if m.Selection == nil {
			w.nil()
		} else {
			w.array(2)
			writeAnchor(w, m.Selection.Anchor)
			writeAnchor(w, m.Selection.Head)
		}
		w.bool(m.Typing)
		if len(m.State) == 0 {
			w.nil()
		} else {
			w.rawValue(m.State)
		}
	case *PresenceLeave:
		w.array(3)
		w.uint(uint64(TypePresenceLeave))
		w.str(m.Doc)
		w.str(m.Session)
	case *Ping:
		w.array(2)
		w.uint(uint64(TypePing))
		w.uint(m.Nonce)
	case *Pong:
		w.array(2)
		w.uint(uint64(TypePong))
		w.uint(m.Nonce)
	case *Error:
		w.array(4)
		w.uint(uint64(TypeError))
		w.uint(uint64(m.Status))
		w.str(m.Message)
		w.str(m.Doc)
	case *PeerHello:
		w.array(4)
		w.uint(uint64(TypePeerHello))
		w.str(m.Node)
		w.bin(m.Nonce)
		w.bin(m.Proof)
	case *Digest:
		w.array(3)
		w.uint(uint64(TypeDigest))
		w.uint(m.Round)
		b := make([]byte, 8*len(m.Buckets))
		for i, x := range m.Buckets {
			binary.BigEndian.PutUint64(b[8*i:], x)
		}
		w.bin(b)
	case *DigestDocs:
		w.array(5)
		w.uint(uint64(TypeDigestDocs))
		w.uint(m.Round)
		w.uint(m.Bucket)
		w.array(len(m.Docs))
		for _, d := range m.Docs {
			w.str(d)
		}
		w.array(len(m.Hashes))
		for _, h := range m.Hashes {
			w.uint(h)
		}
	case *Owners:
		w.array(4)
		w.uint(uint64(TypeOwners))
		w.str(m.Doc)
		w.array(len(m.Owners))
		for _, o := range m.Owners {
			w.bin(o.Replica[:])
		}
		w.array(len(m.Owners))
		for _, o := range m.Owners {
			w.str(o.Principal)
		}
	default:
		return nil, fmt.Errorf("%w: %T", ErrUnknownMessage, m)
	}
	if w.err != nil {
		return nil, fmt.Errorf("syncproto: encode %s: %w", m.Type(), w.err)
	}
	return w.buf.Bytes(), nil
}

func writeVersion(w *writer, v crdt.VersionVector) {
	keys := make([]crdt.ReplicaID, 0, len(v))
	for r, s := range v {
		if s > 0 {
			keys = append(keys, r)
		}
	}
	slices.SortFunc(keys, crdt.ReplicaID.Compare)
	w.array(2)
	w.array(len(keys))
	for _, r := range keys {
		w.bin(r[:])
	}
	w.array(len(keys))
	for _, r := range keys {
		w.uint(v[r])
	}
}

func writeAnchor(w *writer, a crdt.Anchor) {
	w.array(3)
	if a.ID.IsZero() {
		w.nil()
		w.uint(0)
	} else {
		w.bin(a.ID.Replica[:])
		w.uint(a.ID.Seq)
	}
	w.uint(uint64(a.Side))
}

// validate checks what Decode would refuse, so Encode never produces a frame
// its peer rejects.
func validate(m Message) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s.%s: %s", ErrMalformed, m.Type(), field, fmt.Sprintf(format, args...))
	}
	str := func(field, s string, max int, required bool) error {
		switch {
		case len(s) > max:
			return bad(field, "length %d exceeds limit %d", len(s), max)
		case !utf8.ValidString(s):
			return bad(field, "invalid UTF-8")
		case required && s == "":
			return bad(field, "empty")
		}
		return nil
	}
	vv := func(v crdt.VersionVector) error {
		for r := range v {
			if r.IsZero() {
				return bad("version", "zero replica id")
			}
		}
		return nil
	}
	anchor := func(field string, a crdt.Anchor) error {
		if a.Side > crdt.After {
			return bad(field, "side %d", a.Side)
		}
		if !a.ID.IsZero() && a.ID.Replica.IsZero() {
			return bad(field, "zero replica id with seq %d", a.ID.Seq)
		}
		return nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	switch m := m.(type) {
	case *Hello:
		add(str("token", m.Token, MaxTokenLen, false))
		add(str("client", m.ClientName, MaxNameLen, false))
		if m.Replica.IsZero() {
			add(bad("replica", "zero replica id"))
		}
	case *Welcome:
		add(str("session", m.Session, MaxNameLen, false))
		add(str("user", m.User, MaxNameLen, false))
	case *Subscribe:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		add(vv(m.Version))
	case *VersionPart:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		add(vv(m.Version))
	case *Unsubscribe:
		add(str("doc", m.Doc, MaxDocIDLen, true))
	case *Sync:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		add(vv(m.Version))
	case *Update:
		add(str("doc", m.Doc, MaxDocIDLen, true))
	case *Ack:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		add(str("message", m.Message, MaxMessageLen, false))
	case *Changes:
		add(str("doc", m.Doc, MaxDocIDLen, true))
	case *Presence:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		add(str("session", m.Session, MaxNameLen, false))
		add(str("user", m.User, MaxNameLen, false))
		add(str("name", m.Name, MaxNameLen, false))
		add(str("color", m.Color, MaxNameLen, false))
		add(str("field", m.Field, crdt.MaxFieldName, false))
		if m.Cursor != nil {
			add(anchor("cursor", *m.Cursor))
		}
		if m.Selection != nil {
			add(anchor("selection", m.Selection.Anchor))
			add(anchor("selection", m.Selection.Head))
		}
		if len(m.State) > 0 {
			rd := newReader(m.State)
			defer rd.release()
			rd.msg = "presence"
			if err := rd.skip("state", 1); err != nil {
				add(err)
			} else if rd.remaining() != 0 {
				add(bad("state", "%d bytes after the msgpack value", rd.remaining()))
			}
			if len(m.State) > MaxPresenceState {
				add(bad("state", "length %d exceeds limit %d", len(m.State), MaxPresenceState))
			}
		}
	case *PresenceLeave:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		add(str("session", m.Session, MaxNameLen, false))
	case *Error:
		add(str("message", m.Message, MaxMessageLen, false))
		add(str("doc", m.Doc, MaxDocIDLen, false))
	case *PeerHello:
		add(str("node", m.Node, MaxNameLen, true))
		if len(m.Nonce) != 0 && len(m.Nonce) != PeerNonceLen {
			add(bad("nonce", "%d bytes, want 0 or %d", len(m.Nonce), PeerNonceLen))
		}
		if len(m.Proof) != 0 && len(m.Proof) != PeerNonceLen {
			add(bad("proof", "%d bytes, want 0 or %d", len(m.Proof), PeerNonceLen))
		}
	case *Digest:
		if n := len(m.Buckets); n == 0 || n > MaxDigestBuckets || n&(n-1) != 0 {
			add(bad("buckets", "%d buckets, want a power of two ≤ %d", n, MaxDigestBuckets))
		}
	case *DigestDocs:
		if len(m.Docs) != len(m.Hashes) {
			add(bad("hashes", "%d hashes for %d docs", len(m.Hashes), len(m.Docs)))
		}
		for _, d := range m.Docs {
			add(str("docs", d, MaxDocIDLen, true))
		}
	case *Owners:
		add(str("doc", m.Doc, MaxDocIDLen, true))
		if n := len(m.Owners); n == 0 || n > MaxOwnerEntries {
			add(bad("owners", "%d entries, want 1 to %d", n, MaxOwnerEntries))
		}
		for i, o := range m.Owners {
			if o.Replica.IsZero() {
				add(bad("owners", "zero replica id"))
			} else if i > 0 && m.Owners[i-1].Replica.Compare(o.Replica) >= 0 {
				add(bad("owners", "replicas not strictly increasing at index %d", i))
			}
			add(str("owners.principal", o.Principal, MaxNameLen, true))
		}
	}
	return errors.Join(errs...)
}

// Decode parses one frame. It treats data as hostile: every length is checked
// against the bytes left before anything is allocated, nesting is bounded by
// MaxDepth, strings must be valid UTF-8 and within the limits above. A frame
// whose type tag is unknown returns an error wrapping ErrUnknownMessage (and
// the tag, via UnknownType); every other problem wraps ErrMalformed and says
// which field was wrong. Elements after the known fields of a message are
// skipped (that is how later versions add optional fields).
//
// The returned message does not alias data.
func Decode(data []byte) (Message, error) {
	if m := decodeChangesFrame(data); m != nil {
		return m, nil
	}
	return decode(data)
}

// decode is Decode without its fast path for changes frames.
func decode(data []byte) (Message, error) {
	rd := newReader(data)
	defer rd.release()
	rd.msg = "frame"
	n, err := rd.arrayLen("")
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, rd.errf("", "empty array")
	}
	tag, err := rd.uint("type")
	if err != nil {
		return nil, err
	}
	t := Type(tag)
	if tag > 255 || typeNames[tag] == "" {
		return nil, &UnknownTypeError{Tag: tag}
	}
	rd.msg = typeNames[t]
	m, fields, err := decodeBody(rd, t, n-1)
	if err != nil {
		return nil, err
	}
	// Forward compatibility: skip fields a newer peer appended.
	for i := fields; i < n-1; i++ {
		if err := rd.skip("extra", 1); err != nil {
			return nil, err
		}
	}
	if rd.remaining() != 0 {
		return nil, rd.errf("", "%d trailing bytes after the message", rd.remaining())
	}
	return m, nil
}

// decodeChangesFrame decodes a well-formed changes frame of the usual shape
// (an array of the tag as a fixint, the document id as a str, the batch as
// a bin, nothing else) without the msgpack decoder, and returns nil for
// any other frame, which Decode then decodes (and refuses) as before. A
// client decodes one per change another editor makes, and the decoder's
// generality was most of the cost.
func decodeChangesFrame(data []byte) *Changes {
	if len(data) < 3 || data[0] != 0x93 || data[1] != byte(TypeChanges) {
		return nil
	}
	doc, rest, ok := msgpackSpan(data[2:], true)
	if !ok || len(doc) == 0 || len(doc) > MaxDocIDLen || !utf8.Valid(doc) {
		return nil
	}
	chs, rest, ok := msgpackSpan(rest, false)
	if !ok || len(rest) != 0 {
		return nil
	}
	c := &Changes{Doc: string(doc)}
	if len(chs) > 0 {
		c.Changes = bytes.Clone(chs)
	}
	return c
}

// msgpackSpan splits b into the payload of the str (str) or bin at its
// start and what follows; ok is false if b does not start with a whole
// one.
func msgpackSpan(b []byte, str bool) (payload, rest []byte, ok bool) {
	if len(b) == 0 {
		return nil, nil, false
	}
	var n, h int
	switch c := b[0]; {
	case str && c >= 0xa0 && c <= 0xbf: // fixstr
		n, h = int(c&0x1f), 1
	case str && c == 0xd9, !str && c == 0xc4: // str8, bin8
		if len(b) < 2 {
			return nil, nil, false
		}
		n, h = int(b[1]), 2
	case str && c == 0xda, !str && c == 0xc5: // str16, bin16
		if len(b) < 3 {
			return nil, nil, false
		}
		n, h = int(binary.BigEndian.Uint16(b[1:])), 3
	case str && c == 0xdb, !str && c == 0xc6: // str32, bin32
		if len(b) < 5 {
			return nil, nil, false
		}
		n, h = int(binary.BigEndian.Uint32(b[1:])), 5
	default:
		return nil, nil, false
	}
	if n > len(b)-h {
		return nil, nil, false
	}
	return b[h : h+n : h+n], b[h+n:], true
}

// UnknownTypeError is returned by Decode for a frame with an unknown type
// tag; it wraps ErrUnknownMessage.
type UnknownTypeError struct{ Tag uint64 }

func (e *UnknownTypeError) Error() string {
	return fmt.Sprintf("%v: tag %d", ErrUnknownMessage, e.Tag)
}

func (e *UnknownTypeError) Unwrap() error { return ErrUnknownMessage }

// fieldCount is the number of fields (after the tag) each message has in
// this version.
var fieldCount = [256]int{
	TypeHello: 4, TypeWelcome: 5, TypeSubscribe: 2, TypeUnsubscribe: 1,
	TypeSync: 3, TypeUpdate: 3, TypeAck: 4, TypeChanges: 2, TypePresence: 11,
	TypePresenceLeave: 2, TypePing: 1, TypePong: 1, TypeError: 3,
	TypePeerHello: 3, TypeDigest: 2, TypeDigestDocs: 4, TypeVersionPart: 2,
	TypeOwners: 3,
}

func decodeBody(rd *reader, t Type, have int) (m Message, fields int, err error) {
	want := fieldCount[t]
	if have < want {
		return nil, 0, rd.errf("", "%d fields, want at least %d", have, want)
	}
	// Changes blobs may be as large as the frame: the frame cap applies
	// before Decode.
	maxBlob := len(rd.buf)
	doc := func() (string, error) {
		s, err := rd.string("doc", MaxDocIDLen)
		if err == nil && s == "" {
			err = rd.errf("doc", "empty")
		}
		return s, err
	}
	var e errs
	switch t {
	case TypeHello:
		h := &Hello{}
		h.Version = e.u(rd.uint("version"))
		h.Token = e.s(rd.string("token", MaxTokenLen))
		if e.err == nil {
			h.Replica, e.err = readReplica(rd, "replica")
		}
		h.ClientName = e.s(rd.string("client", MaxNameLen))
		m = h
	case TypeWelcome:
		w := &Welcome{}
		w.Version = e.u(rd.uint("version"))
		w.ServerTime = hlc.Timestamp(e.u(rd.uint("server_time")))
		w.Session = e.s(rd.string("session", MaxNameLen))
		w.User = e.s(rd.string("user", MaxNameLen))
		if e.err == nil {
			w.Limits, e.err = readLimits(rd)
		}
		m = w
	case TypeSubscribe:
		s := &Subscribe{}
		s.Doc = e.s(doc())
		if e.err == nil {
			s.Version, e.err = readVersion(rd)
		}
		m = s
	case TypeVersionPart:
		s := &VersionPart{}
		s.Doc = e.s(doc())
		if e.err == nil {
			s.Version, e.err = readVersion(rd)
		}
		m = s
	case TypeUnsubscribe:
		m = &Unsubscribe{Doc: e.s(doc())}
	case TypeSync:
		s := &Sync{}
		s.Doc = e.s(doc())
		if e.err == nil {
			s.Version, e.err = readVersion(rd)
		}
		s.Changes = e.b(rd.bytes("changes", maxBlob))
		m = s
	case TypeUpdate:
		u := &Update{}
		u.Doc = e.s(doc())
		u.Batch = e.u(rd.uint("batch"))
		u.Changes = e.b(rd.bytes("changes", maxBlob))
		m = u
	case TypeAck:
		a := &Ack{}
		a.Doc = e.s(doc())
		a.Batch = e.u(rd.uint("batch"))
		a.Status = Status(e.u(rd.uintMax("status", 255)))
		a.Message = e.s(rd.string("message", MaxMessageLen))
		m = a
	case TypeChanges:
		c := &Changes{}
		c.Doc = e.s(doc())
		c.Changes = e.b(rd.bytes("changes", maxBlob))
		m = c
	case TypePresence:
		p := &Presence{}
		p.Doc = e.s(doc())
		p.Session = e.s(rd.string("session", MaxNameLen))
		p.User = e.s(rd.string("user", MaxNameLen))
		p.Name = e.s(rd.string("name", MaxNameLen))
		p.Color = e.s(rd.string("color", MaxNameLen))
		p.Clock = e.u(rd.uint("clock"))
		p.Field = e.s(rd.string("field", crdt.MaxFieldName))
		if e.err == nil {
			p.Cursor, e.err = readOptAnchor(rd, "cursor")
		}
		if e.err == nil {
			p.Selection, e.err = readSelection(rd)
		}
		if e.err == nil {
			p.Typing, e.err = rd.bool("typing")
		}
		if e.err == nil {
			var isNil bool
			if isNil, e.err = rd.isNil(); e.err == nil && !isNil {
				// At depth 1, as Encode checks it: the state is an
				// element of the frame's array.
				p.State, e.err = rd.raw("state", 1, MaxPresenceState)
			}
		}
		m = p
	case TypePresenceLeave:
		l := &PresenceLeave{}
		l.Doc = e.s(doc())
		l.Session = e.s(rd.string("session", MaxNameLen))
		m = l
	case TypePing:
		m = &Ping{Nonce: e.u(rd.uint("nonce"))}
	case TypePong:
		m = &Pong{Nonce: e.u(rd.uint("nonce"))}
	case TypeError:
		x := &Error{}
		x.Status = Status(e.u(rd.uintMax("status", 255)))
		x.Message = e.s(rd.string("message", MaxMessageLen))
		x.Doc = e.s(rd.string("doc", MaxDocIDLen))
		m = x
	case TypePeerHello:
		h := &PeerHello{}
		h.Node = e.s(rd.string("node", MaxNameLen))
		h.Nonce = e.b(rd.bytes("nonce", PeerNonceLen))
		h.Proof = e.b(rd.bytes("proof", PeerNonceLen))
		if e.err == nil {
			switch {
			case h.Node == "":
				e.err = rd.errf("node", "empty")
			case len(h.Nonce) != 0 && len(h.Nonce) != PeerNonceLen:
				e.err = rd.errf("nonce", "%d bytes, want 0 or %d", len(h.Nonce), PeerNonceLen)
			case len(h.Proof) != 0 && len(h.Proof) != PeerNonceLen:
				e.err = rd.errf("proof", "%d bytes, want 0 or %d", len(h.Proof), PeerNonceLen)
			}
		}
		m = h
	case TypeDigest:
		d := &Digest{}
		d.Round = e.u(rd.uint("round"))
		b := e.b(rd.bytes("buckets", 8*MaxDigestBuckets))
		if e.err == nil {
			n := len(b) / 8
			if len(b)%8 != 0 || n == 0 || n&(n-1) != 0 {
				e.err = rd.errf("buckets", "%d bytes, want 8 × a power of two", len(b))
			} else {
				d.Buckets = make([]uint64, n)
				for i := range d.Buckets {
					d.Buckets[i] = binary.BigEndian.Uint64(b[8*i:])
				}
			}
		}
		m = d
	case TypeDigestDocs:
		d := &DigestDocs{}
		d.Round = e.u(rd.uint("round"))
		d.Bucket = e.u(rd.uintMax("bucket", MaxDigestBuckets-1))
		if e.err == nil {
			var n int
			if n, e.err = rd.arrayLen("docs"); e.err == nil {
				d.Docs = make([]string, 0, n)
				for i := 0; i < n && e.err == nil; i++ {
					d.Docs = append(d.Docs, e.s(doc()))
				}
			}
		}
		if e.err == nil {
			var n int
			if n, e.err = rd.arrayLen("hashes"); e.err == nil && n != len(d.Docs) {
				e.err = rd.errf("hashes", "%d hashes for %d docs", n, len(d.Docs))
			}
			if e.err == nil {
				d.Hashes = make([]uint64, 0, n)
				for i := 0; i < n && e.err == nil; i++ {
					d.Hashes = append(d.Hashes, e.u(rd.uint("hashes")))
				}
			}
		}
		m = d
	case TypeOwners:
		o := &Owners{}
		o.Doc = e.s(doc())
		if e.err == nil {
			o.Owners, e.err = readOwners(rd)
		}
		m = o
	}
	if e.err != nil {
		return nil, 0, e.err
	}
	return m, want, nil
}

// errs keeps the first error of a sequence of reads; once one failed the
// later reads are skipped (their results are discarded).
type errs struct{ err error }

func (e *errs) u(v uint64, err error) uint64 {
	if e.err == nil {
		e.err = err
	}
	return v
}

func (e *errs) s(v string, err error) string {
	if e.err == nil {
		e.err = err
	}
	return v
}

func (e *errs) b(v []byte, err error) []byte {
	if e.err == nil {
		e.err = err
	}
	return v
}

func readReplica(rd *reader, field string) (crdt.ReplicaID, error) {
	var r crdt.ReplicaID
	b, err := rd.span(field, false, len(r))
	if err != nil {
		return r, err
	}
	if len(b) != len(r) {
		return r, rd.errf(field, "replica id of %d bytes, want %d", len(b), len(r))
	}
	copy(r[:], b)
	if r.IsZero() {
		return r, rd.errf(field, "zero replica id")
	}
	return r, nil
}

func readLimits(rd *reader) (Limits, error) {
	var l Limits
	n, err := rd.arrayLen("limits")
	if err != nil {
		return l, err
	}
	dst := []*uint64{&l.MaxFrame, &l.MaxChangesPerSec, &l.MaxPresencePerSec, &l.MaxDocBytes, &l.MaxPending, &l.MaxDocs, &l.MaxOpsBurst}
	for i := 0; i < n; i++ {
		if i >= len(dst) {
			// A newer server announces limits this version does not know.
			if err := rd.skip("limits", 2); err != nil {
				return l, err
			}
			continue
		}
		if *dst[i], err = rd.uint("limits"); err != nil {
			return l, err
		}
	}
	return l, nil
}

// readVersion reads [[replica bin16...], [seq...]]: parallel arrays, replicas
// strictly increasing (so no duplicates), seqs ≥ 1.
func readVersion(rd *reader) (crdt.VersionVector, error) {
	n, err := rd.arrayLen("version")
	if err != nil {
		return nil, err
	}
	if n != 2 {
		return nil, rd.errf("version", "array of %d, want 2 (replicas, seqs)", n)
	}
	nr, err := rd.arrayLen("version.replicas")
	if err != nil {
		return nil, err
	}
	// Each replica takes 18 bytes (bin8 header + 16) and each seq at least 1.
	if nr > rd.remaining()/19 {
		return nil, rd.errf("version.replicas", "%d replicas but only %d bytes left", nr, rd.remaining())
	}
	reps := make([]crdt.ReplicaID, nr)
	for i := range reps {
		if reps[i], err = readReplica(rd, "version.replicas"); err != nil {
			return nil, err
		}
		if i > 0 && bytes.Compare(reps[i-1][:], reps[i][:]) >= 0 {
			return nil, rd.errf("version.replicas", "replicas not strictly increasing at index %d", i)
		}
	}
	ns, err := rd.arrayLen("version.seqs")
	if err != nil {
		return nil, err
	}
	if ns != nr {
		return nil, rd.errf("version.seqs", "%d seqs for %d replicas", ns, nr)
	}
	v := make(crdt.VersionVector, nr)
	for _, r := range reps {
		s, err := rd.uint("version.seqs")
		if err != nil {
			return nil, err
		}
		if s == 0 {
			return nil, rd.errf("version.seqs", "zero seq for replica %s", r)
		}
		v[r] = s
	}
	return v, nil
}

// readOwners reads [[replica bin16...], [principal str...]]: parallel
// arrays of 1 to MaxOwnerEntries entries, replicas strictly increasing,
// principals non-empty.
func readOwners(rd *reader) ([]Owner, error) {
	nr, err := rd.arrayLen("owners.replicas")
	if err != nil {
		return nil, err
	}
	if nr == 0 || nr > MaxOwnerEntries {
		return nil, rd.errf("owners.replicas", "%d entries, want 1 to %d", nr, MaxOwnerEntries)
	}
	// Each replica takes 18 bytes (bin8 header + 16), each principal at
	// least 2 (a non-empty fixstr).
	if nr > rd.remaining()/20 {
		return nil, rd.errf("owners.replicas", "%d entries but only %d bytes left", nr, rd.remaining())
	}
	out := make([]Owner, nr)
	for i := range out {
		if out[i].Replica, err = readReplica(rd, "owners.replicas"); err != nil {
			return nil, err
		}
		if i > 0 && bytes.Compare(out[i-1].Replica[:], out[i].Replica[:]) >= 0 {
			return nil, rd.errf("owners.replicas", "replicas not strictly increasing at index %d", i)
		}
	}
	np, err := rd.arrayLen("owners.principals")
	if err != nil {
		return nil, err
	}
	if np != nr {
		return nil, rd.errf("owners.principals", "%d principals for %d replicas", np, nr)
	}
	for i := range out {
		if out[i].Principal, err = rd.string("owners.principals", MaxNameLen); err != nil {
			return nil, err
		}
		if out[i].Principal == "" {
			return nil, rd.errf("owners.principals", "empty principal for replica %s", out[i].Replica)
		}
	}
	return out, nil
}

func readOptAnchor(rd *reader, field string) (*crdt.Anchor, error) {
	isNil, err := rd.isNil()
	if err != nil || isNil {
		return nil, err
	}
	a, err := readAnchor(rd, field)
	if err != nil {
		return nil, err
	}
	return &a, nil
}

// readAnchor reads [replica bin16 | nil, seq, side].
func readAnchor(rd *reader, field string) (crdt.Anchor, error) {
	var a crdt.Anchor
	n, err := rd.arrayLen(field)
	if err != nil {
		return a, err
	}
	if n != 3 {
		return a, rd.errf(field, "anchor array of %d, want 3", n)
	}
	isNil, err := rd.isNil()
	if err != nil {
		return a, err
	}
	if !isNil {
		if a.ID.Replica, err = readReplica(rd, field); err != nil {
			return a, err
		}
	}
	if a.ID.Seq, err = rd.uint(field); err != nil {
		return a, err
	}
	if isNil != (a.ID.Seq == 0) {
		return a, rd.errf(field, "anchor needs both a replica and a seq, or neither")
	}
	side, err := rd.uintMax(field, uint64(crdt.After))
	if err != nil {
		return a, err
	}
	a.Side = crdt.Side(side)
	return a, nil
}

func readSelection(rd *reader) (*Selection, error) {
	isNil, err := rd.isNil()
	if err != nil || isNil {
		return nil, err
	}
	n, err := rd.arrayLen("selection")
	if err != nil {
		return nil, err
	}
	if n != 2 {
		return nil, rd.errf("selection", "array of %d, want 2 (anchor, head)", n)
	}
	var s Selection
	if s.Anchor, err = readAnchor(rd, "selection.anchor"); err != nil {
		return nil, err
	}
	if s.Head, err = readAnchor(rd, "selection.head"); err != nil {
		return nil, err
	}
	return &s, nil
}
