package client

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
)

// Errors returned by the client.
var (
	// ErrClosed: the client (or document) was closed.
	ErrClosed = errors.New("client: closed")
	// ErrRejected: the server refused a document's changes or subscription
	// for a reason that retrying cannot fix (read_only, invalid, too_large,
	// unauthorized, ...). The document keeps its local edits; they are not
	// saved.
	ErrRejected = errors.New("client: rejected by server")
	// ErrTerminal: the server closed the connection for a reason that
	// reconnecting with the same options cannot fix (bad token, replica id
	// owned by another user, unsupported protocol version).
	ErrTerminal = errors.New("client: connection refused for good")
	// ErrAlreadyOpen: Open was called twice for one document id.
	ErrAlreadyOpen = errors.New("client: document already open")
)

// Client is one connection's worth of documents: it keeps a replica of each
// open document, edits it locally, and syncs it with a server over one
// WebSocket that it re-establishes whenever it drops. See the package doc.
type Client struct {
	opts    Options
	replica crdt.ReplicaID
	lock    *os.File // flock on Dir; nil without Dir

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the connection loop has exited

	// wake has capacity 1: a send tells the writer there is work, and
	// several sends before it looks coalesce.
	wake chan struct{}

	// skewMillis is subtracted from Options.Wall for every document clock
	// once the server refused a change as too far ahead (clock_skew).
	skewMillis atomic.Int64

	// welcomeSkew is how far the local wall was ahead of the server's clock
	// at the last welcome, in milliseconds; presenceEvery is the least
	// interval between presence messages the server allows (nanoseconds).
	welcomeSkew   atomic.Int64
	presenceEvery atomic.Int64
	// maxFrame is the server's frame limit from welcome (0: none).
	maxFrame atomic.Int64
	// maxRate is the server's MaxChangesPerSec from welcome (0: none).
	maxRate atomic.Int64
	// serverTime is the server_time (an hlc.Timestamp) of the last
	// welcome, 0 before the first.
	serverTime atomic.Uint64
	// maxBurst is the server's ops burst from welcome (0: not announced).
	maxBurst atomic.Int64
	session  atomic.Pointer[string]
	// docsGen counts changes to mu.docs (made under mu), so that the
	// reader can trust the document it looked up last while it is
	// unchanged.
	docsGen atomic.Uint64

	// NB: lock order is Document.mu before Client.mu: a document may mark
	// itself dirty while locked, so the client never locks a document
	// while holding mu.
	mu struct {
		sync.Mutex
		docs      map[string]*Document
		dirty     map[*Document]struct{}
		gen       uint64 // connection generation; 0 = never connected
		connected bool
		terminal  error // set when reconnecting is pointless
		// stateCh is closed and replaced whenever connected or terminal
		// changes, to wake WaitConnected.
		stateCh chan struct{}
		ctrl    []syncproto.Message // control messages for the writer (pong)
		closed  bool
	}
}

// New returns a client that starts connecting in the background. It
// returns at once: documents can be opened and edited before (or without)
// a connection.
func New(opts Options) (*Client, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	c := &Client{opts: o, wake: make(chan struct{}, 1), done: make(chan struct{})}
	c.mu.docs = map[string]*Document{}
	c.mu.dirty = map[*Document]struct{}{}
	c.mu.stateCh = make(chan struct{})
	if o.Dir != "" {
		if err := c.lockDir(); err != nil {
			return nil, err
		}
	}
	if err := c.loadReplica(); err != nil {
		c.unlockDir()
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.run()
	return c, nil
}

// Dial is New followed by WaitConnected: it returns once the client is
// connected and authenticated, or an error (and a closed client) if ctx
// ends first or the server refuses for good.
func Dial(ctx context.Context, opts Options) (*Client, error) {
	c, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := c.WaitConnected(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Replica returns the client's replica id.
func (c *Client) Replica() crdt.ReplicaID { return c.replica }

// Connected reports whether the client currently has an authenticated
// connection.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.connected
}

// Err returns the terminal error that stopped reconnection, or nil.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.terminal
}

// WaitConnected blocks until the client is connected, the server refused
// it for good, the client was closed, or ctx ended.
func (c *Client) WaitConnected(ctx context.Context) error {
	for {
		c.mu.Lock()
		connected, terminal, closed, ch := c.mu.connected, c.mu.terminal, c.mu.closed, c.mu.stateCh
		c.mu.Unlock()
		switch {
		case terminal != nil:
			return terminal
		case closed:
			return ErrClosed
		case connected:
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("client: waiting for connection: %w", ctx.Err())
		}
	}
}

// Open opens a document: it loads the local replica kept in Options.Dir (if
// any), subscribes to it on the current and every later connection, and
// returns at once. Each document id may be open once per client.
func (c *Client) Open(id string, o DocOptions) (*Document, error) {
	if id == "" || len(id) > syncproto.MaxDocIDLen {
		return nil, fmt.Errorf("client: document id must be 1..%d bytes, got %d", syncproto.MaxDocIDLen, len(id))
	}
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if _, dup := c.mu.docs[id]; dup {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %q", ErrAlreadyOpen, id)
	}
	// Reserve the id so that a concurrent Open of it fails, then load
	// without the client lock held (loading reads a file).
	c.mu.docs[id] = nil
	c.docsGen.Add(1)
	c.mu.Unlock()

	d, err := c.newDocument(id, o)
	c.mu.Lock()
	if err != nil || c.mu.closed {
		delete(c.mu.docs, id)
		c.docsGen.Add(1)
		c.mu.Unlock()
		if err == nil {
			d.closeFile() // NB: after c.mu is released (lock order d.mu → c.mu)
			err = ErrClosed
		}
		return nil, err
	}
	c.mu.docs[id] = d
	c.docsGen.Add(1)
	c.markDirtyLocked(d)
	c.mu.Unlock()
	return d, nil
}

// Close closes every document, ends the connection (telling the server)
// and waits for the client's goroutines to exit. Unsaved local edits stay
// in Options.Dir, if set, and are sent by the next client that opens the
// document.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.mu.closed {
		c.mu.Unlock()
		<-c.done
		return nil
	}
	c.mu.closed = true
	c.broadcastStateLocked()
	c.mu.Unlock()
	c.cancel()
	<-c.done

	c.mu.Lock()
	docs := c.openDocsLocked()
	c.mu.docs = map[string]*Document{}
	c.docsGen.Add(1)
	c.mu.Unlock()
	var errs []error
	for _, d := range docs {
		errs = append(errs, d.shutdown())
	}
	c.unlockDir()
	return errors.Join(errs...)
}

// openDocsLocked returns the open documents (a map slot is nil while its
// document is being opened). c.mu must be held.
func (c *Client) openDocsLocked() []*Document {
	docs := make([]*Document, 0, len(c.mu.docs))
	for _, d := range c.mu.docs {
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

func (c *Client) markDirty(d *Document) {
	c.mu.Lock()
	c.markDirtyLocked(d)
	c.mu.Unlock()
}

func (c *Client) markDirtyLocked(d *Document) {
	c.mu.dirty[d] = struct{}{}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Client) sendControl(m syncproto.Message) {
	c.mu.Lock()
	if len(c.mu.ctrl) < c.opts.SendQueue {
		c.mu.ctrl = append(c.mu.ctrl, m)
	}
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Client) broadcastStateLocked() {
	close(c.mu.stateCh)
	c.mu.stateCh = make(chan struct{})
}

func (c *Client) docByID(id string) *Document {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mu.docs[id]
}

// wallNow is the wall clock of every document's HLC: the injected wall,
// corrected by the skew learnt from a clock_skew refusal.
func (c *Client) wallNow() int64 { return c.opts.Wall() - c.skewMillis.Load() }

// lockDir takes an exclusive flock on Dir/lock: two clients sharing a
// directory would share a replica id and hand out the same sequence
// numbers twice, which corrupts every document they both edit.
func (c *Client) lockDir() error {
	if err := os.MkdirAll(c.opts.Dir, 0o755); err != nil {
		return fmt.Errorf("client: create Dir: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(c.opts.Dir, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("client: lock Dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return fmt.Errorf("client: Dir %s is in use by another client: %w", c.opts.Dir, err)
	}
	c.lock = f
	// Leftovers of a compaction interrupted by a crash.
	if ents, err := os.ReadDir(c.opts.Dir); err == nil {
		for _, e := range ents {
			if isTempDocFile(e.Name()) {
				os.Remove(filepath.Join(c.opts.Dir, e.Name()))
			}
		}
	}
	return nil
}

func (c *Client) unlockDir() {
	if c.lock != nil {
		c.lock.Close() // closing releases the flock
		c.lock = nil
	}
}

// loadReplica settles the replica id: Options.Replica, else the one kept in
// Dir, else a new random UUID (kept in Dir when there is one).
func (c *Client) loadReplica() error {
	var path string
	if c.opts.Dir != "" {
		path = filepath.Join(c.opts.Dir, "replica")
	}
	if !c.opts.Replica.IsZero() {
		c.replica = c.opts.Replica
		if path != "" {
			return writeFileSync(path, []byte(c.replica.String()+"\n"))
		}
		return nil
	}
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			r, perr := crdt.ParseReplicaID(strings.TrimSpace(string(data)))
			if perr != nil {
				return fmt.Errorf("client: %s: %w", path, perr)
			}
			c.replica = r
			return nil
		case !os.IsNotExist(err):
			return fmt.Errorf("client: read replica id: %w", err)
		}
	}
	u, err := uuid.NewRandom()
	if err != nil {
		return fmt.Errorf("client: generate replica id: %w", err)
	}
	c.replica = crdt.ReplicaID(u)
	if path != "" {
		return writeFileSync(path, []byte(c.replica.String()+"\n"))
	}
	return nil
}

func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("client: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("client: write %s: %w", path, err)
	}
	syncDir(filepath.Dir(path))
	return nil
}
