package client

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// DocOptions configure one open document.
type DocOptions struct {
	// OnChanges is called after changes from other replicas were applied,
	// with the changes (read-only; the callee must not keep or modify
	// them). It runs on the client's reader goroutine with no lock held:
	// it may read the document but must return quickly, or every document
	// of the client stalls. Default: nil.
	OnChanges func(d *Document, changes []crdt.Change)
	// OnPresence is called when another session's presence in this
	// document changes or leaves (left is then true and p carries only Doc
	// and Session). Same goroutine rules as OnChanges. Default: nil.
	OnPresence func(d *Document, p syncproto.Presence, left bool)
}

// Document is a client's replica of one document. Its methods are safe for
// concurrent use; edits are applied locally at once, persisted to the
// document's file (with Options.Dir), and sent to the server as soon as
// the connection allows.
type Document struct {
	c    *Client
	id   string
	opts DocOptions

	// changed has capacity 1 and gets a value whenever remote changes or
	// presence arrive: a coalescing "something changed" signal.
	changed chan struct{}

	mu struct {
		sync.Mutex
		doc    *crdt.Doc
		file   *docFile // nil without Options.Dir
		closed bool

		// Per-connection sync state; valid while gen equals the session's.
		// peer is the sans-I/O sync state machine (syncproto.Peer, the one
		// the server and cluster drive too); it is created per connection
		// so batch ids and beliefs never outlive the connection.
		gen        uint64
		peer       *syncproto.Peer
		subscribed bool // Subscribe sent on this connection
		// batches maps the update batches in flight to what each carries
		// of our own seqs.
		batches map[uint64]batchInfo
		// known mirrors doc.Version() for receive; nil after local edits
		// (recomputed on demand).
		known crdt.VersionVector
		// out holds messages the peer produced while receiving, for the
		// writer to send.
		out []syncproto.Message

		// acked is the highest own seq the server holds durably. It only
		// grows: it survives reconnection (the Sync reply's version vector
		// re-establishes it).
		acked uint64
		// mayHold is the highest own seq the server may hold without having
		// acked it: every own seq in a batch that was sent and not refused
		// with a status that guarantees it changed nothing (see
		// refusedWhole). Such a change is never re-stamped: the server may
		// have applied it (and fanned it out) under its old time. It
		// survives reconnection and starts, for a document read from its
		// file, at the file's own seq (a previous run may have sent it).
		mayHold uint64
		// restampDue: a batch was refused with clock_skew; the re-stamp
		// waits until no batch is in flight, so every outcome is known.
		restampDue bool
		// resumeDue: the Peer stays halted after a clock_skew refusal that
		// had nothing to re-stamp; it resumes (resubscribes) after a pause.
		resumeDue bool
		// rejected is set when the server refused changes for good.
		rejected error
		// retryAt delays resending after a retryable refusal.
		retryAt time.Time
		retries int
		// dropConn asks the client to drop the connection of gen (set
		// after a re-stamp, so no ack of a batch sent before it can be
		// mistaken for one sent after).
		dropConn bool
		// savedCh is closed and replaced when acked or rejected change.
		savedCh chan struct{}

		presence      *syncproto.Presence // latest local presence; resent on reconnect
		presenceDirty bool
		presenceClock uint64
		lastPresence  time.Time
		presenceTimer bool // a timer will mark d dirty when the rate allows
		peers         map[string]syncproto.Presence
	}
}

func (c *Client) newDocument(id string, o DocOptions) (*Document, error) {
	d := &Document{c: c, id: id, opts: o, changed: make(chan struct{}, 1)}
	d.mu.savedCh = make(chan struct{})
	d.mu.peers = map[string]syncproto.Presence{}
	clock := hlc.NewClock(c.wallNow, 0)
	copts := crdt.Options{MaxPending: c.opts.MaxPending}
	if c.opts.Dir == "" {
		d.mu.doc = crdt.NewDoc(c.replica, clock, copts)
		d.witnessServerLocked()
		return d, nil
	}
	f, recs, err := openDocFile(c.opts.Dir, id, c.opts.NoSync)
	if err != nil {
		return nil, err
	}
	doc, err := replay(recs, c.replica, clock, copts)
	if err != nil {
		f.close()
		return nil, fmt.Errorf("client: load %q from %s: %w", id, f.path, err)
	}
	d.mu.doc = doc
	d.mu.file = f
	d.mu.mayHold = doc.Version()[c.replica]
	d.witnessServerLocked()
	return d, nil
}

// batchInfo is what an update batch in flight carries of our own seqs.
type batchInfo struct {
	// end is the highest own seq the batch makes durable when acked (0:
	// unknown, conservatively low).
	end uint64
	// sent bounds the own seqs in the batch from above (conservatively
	// high): the own seq when it was sent.
	sent uint64
}

// replay rebuilds a document from its file's records.
func replay(recs []record, replica crdt.ReplicaID, clock *hlc.Clock, opts crdt.Options) (*crdt.Doc, error) {
	var doc *crdt.Doc
	for i, r := range recs {
		switch r.kind {
		case recSnapshot:
			d, err := codec.DecodeSnapshot(r.payload, replica, clock, opts)
			if err != nil {
				return nil, fmt.Errorf("snapshot: %w", err)
			}
			doc = d
		case recChanges:
			if doc == nil {
				doc = crdt.NewDoc(replica, clock, opts)
			}
			chs, err := codec.DecodeChanges(r.payload)
			if err != nil {
				return nil, fmt.Errorf("record %d: %w", i, err)
			}
			if err := doc.Apply(chs...); err != nil {
				return nil, fmt.Errorf("record %d: %w", i, err)
			}
		}
	}
	if doc == nil {
		doc = crdt.NewDoc(replica, clock, opts)
	}
	return doc, nil
}

// ID returns the document id.
func (d *Document) ID() string { return d.id }

// Changed returns a channel that receives a value after remote changes or
// presence updates arrive, or the saved state changes. Signals coalesce: one value may stand for many
// updates, so a receiver re-reads the state it cares about.
func (d *Document) Changed() <-chan struct{} { return d.changed }

// Edit runs fn in a local transaction and sends the resulting change. fn
// reads positions from doc (TextLen, AnchorAt, IndexOf) and edits through
// tx. The edits fn makes apply at once (each is atomic); if fn returns an
// error after some edits succeeded, those edits stay, are kept and sent
// (crdt has no rollback), and Edit returns fn's error. fn must not keep tx
// or doc.
//
// HAZARD: fn runs with the document's lock held: it must not call other
// methods of d.
func (d *Document) Edit(fn func(tx *crdt.Tx, doc *crdt.Doc) error) error {
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	var before crdt.VersionVector
	if d.mu.file != nil {
		before = d.mu.doc.Version()
	}
	d.mu.known = nil // own seqs move: receive recomputes its mirror
	tx := d.mu.doc.Begin()
	ferr := fn(tx, d.mu.doc)
	cerr := tx.Commit()
	var perr error
	if d.mu.file != nil {
		if chs := d.mu.doc.ChangesSince(before); len(chs) > 0 {
			perr = d.persistLocked(codec.EncodeChanges(chs))
		}
	}
	d.mu.Unlock()
	d.c.markDirty(d)
	return errors.Join(ferr, cerr, perr)
}

// persistLocked appends a changes record and compacts the file when its
// log has outgrown the snapshot.
func (d *Document) persistLocked(payload []byte) error {
	if err := d.mu.file.append(recChanges, payload); err != nil {
		return err
	}
	if d.mu.file.needsCompaction() {
		return d.mu.file.rewrite(codec.EncodeSnapshot(d.mu.doc))
	}
	return nil
}

// Read runs fn with the document locked. fn must not keep doc, edit it, or
// call methods of d.
func (d *Document) Read(fn func(doc *crdt.Doc)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn(d.mu.doc)
}

// Text returns a text field's content.
func (d *Document) Text(field string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.doc.Text(field)
}

// Counter returns a counter field's value.
func (d *Document) Counter(field string) int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.doc.Counter(field)
}

// Register returns a register field's msgpack value.
func (d *Document) Register(field string) ([]byte, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.doc.Register(field)
}

// Version returns the document's version vector.
func (d *Document) Version() crdt.VersionVector {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.doc.Version()
}

// Seq returns the sequence number of this client's latest edit of the
// document (0 before the first): the edit is saved once Acked reaches it.
// Unlike Version()[replica], it copies nothing.
func (d *Document) Seq() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.knownLocked()[d.c.replica]
}

// Saved reports whether every local change is held durably by the server.
func (d *Document) Saved() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.savedLocked()
}

func (d *Document) savedLocked() bool {
	return d.mu.rejected == nil && d.mu.acked >= d.knownLocked()[d.c.replica]
}

// Acked returns the highest sequence number of this client's replica that
// the server holds durably: every own edit up to it is saved.
func (d *Document) Acked() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.acked
}

// Err returns the error with which the server refused this document's
// changes or subscription for good (wrapping ErrRejected), or nil.
func (d *Document) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.mu.rejected
}

// WaitSaved blocks until every local change made before the call is held
// durably by the server, the server refused them (an error wrapping
// ErrRejected), the document closed, or ctx ended.
func (d *Document) WaitSaved(ctx context.Context) error {
	d.mu.Lock()
	target := d.knownLocked()[d.c.replica]
	d.mu.Unlock()
	for {
		d.mu.Lock()
		acked, rejected, closed, ch := d.mu.acked, d.mu.rejected, d.mu.closed, d.mu.savedCh
		d.mu.Unlock()
		switch {
		case rejected != nil:
			return rejected
		case acked >= target:
			return nil
		case closed:
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("client: waiting for %q to be saved (%d of %d acked): %w", d.id, acked, target, ctx.Err())
		}
	}
}

// Synced reports whether the document is subscribed on a live connection
// and has received the server's state.
func (d *Document) Synced() bool {
	d.c.mu.Lock()
	gen, connected := d.c.mu.gen, d.c.mu.connected
	d.c.mu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	return connected && d.mu.gen == gen && d.mu.peer != nil && d.mu.peer.Synced()
}

// SetPresence publishes this session's presence in the document: field,
// cursor, selection, typing flag and application state. Doc, Session,
// User, Name, Color and Clock are filled in by the client and the server
// (identity comes from the token). Bursts coalesce: only the latest state
// is sent, at most at the rate the server allows.
func (d *Document) SetPresence(p syncproto.Presence) error {
	p.Doc, p.Session, p.User, p.Name, p.Color = d.id, "", "", "", ""
	if p.State != nil && len(p.State) == 0 {
		p.State = nil
	}
	p.Clock = 0
	if _, err := syncproto.Encode(&p); err != nil {
		return err
	}
	d.mu.Lock()
	if d.mu.closed {
		d.mu.Unlock()
		return ErrClosed
	}
	d.mu.presence = &p
	d.mu.presenceDirty = true
	d.mu.Unlock()
	d.c.markDirty(d)
	return nil
}

// Peers returns the presence of the other sessions in the document, sorted
// by session id.
func (d *Document) Peers() []syncproto.Presence {
	d.mu.Lock()
	defer d.mu.Unlock()
	keys := slices.Sorted(maps.Keys(d.mu.peers))
	out := make([]syncproto.Presence, len(keys))
	for i, k := range keys {
		out[i] = d.mu.peers[k]
	}
	return out
}

// Close unsubscribes the document and closes its file. Unsaved local edits
// stay in the file and are sent the next time the document is opened.
func (d *Document) Close() error {
	c := d.c
	c.mu.Lock()
	if c.mu.docs[d.id] == d {
		delete(c.mu.docs, d.id)
		c.docsGen.Add(1)
		delete(c.mu.dirty, d)
		c.mu.ctrl = append(c.mu.ctrl, &syncproto.Unsubscribe{Doc: d.id})
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	return d.shutdown()
}

func (d *Document) shutdown() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.mu.closed {
		return nil
	}
	d.mu.closed = true
	close(d.mu.savedCh)
	d.mu.savedCh = make(chan struct{})
	return d.closeFileLocked()
}

func (d *Document) closeFile() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closeFileLocked()
}

func (d *Document) closeFileLocked() error {
	if d.mu.file == nil {
		return nil
	}
	err := d.mu.file.close()
	d.mu.file = nil
	return err
}

func (d *Document) notifySavedLocked() {
	close(d.mu.savedCh)
	d.mu.savedCh = make(chan struct{})
	d.signal()
}

func (d *Document) signal() {
	select {
	case d.changed <- struct{}{}:
	default:
	}
}
