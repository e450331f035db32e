package syncserver

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"

	"github.com/weftsync/weft/crdt/syncproto"
)

// ErrDocFailed is wrapped by the errors of a document that fail-stopped
// after a panic on its room goroutine (see "One bad document" in the
// package doc).
var ErrDocFailed = errors.New("syncserver: document failed")

// closeInternalError ends a session whose goroutine panicked.
const closeInternalError = syncproto.CloseInternalError

// panicError carries a recovered panic out of a goroutine that cannot
// handle it (a store write) to the room, which can.
type panicError struct {
	value any
	stack []byte
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// protect runs one step of the room's loop. A panic in it fail-stops the
// document (crash) instead of the process; cmd is the command that was
// being handled, if any, so that its sender gets an answer.
func (r *room) protect(cmd *roomCmd, step func() bool) (exit bool) {
	defer func() {
		if v := recover(); v != nil {
			r.crash(v, debug.Stack(), *cmd)
			exit = false
		}
	}()
	return step()
}

// safeLoad is load with a panic (a snapshot or log the decoder chokes on)
// turned into a load error.
func (r *room) safeLoad() (err error) {
	defer func() {
		if v := recover(); v != nil {
			r.s.m.docFailures.WithLabelValues(r.id).Inc()
			r.s.log.Error("document load panicked", "doc", r.id, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			err = fmt.Errorf("%w: %q: panic while loading: %v", ErrDocFailed, r.id, v)
		}
	}()
	return r.load()
}

// crash fail-stops the document after a panic on its goroutine: its state
// can no longer be trusted, so nothing more is applied, persisted or sent.
// The command that panicked, every subscriber and every waiting ack get
// internal (nothing unacknowledged was durable, and clients keep what is
// not acked); event streams end. The room then answers everything with
// internal (handleBroken) until nothing holds it and the janitor unloads
// it; the next request loads the document again from the store.
func (r *room) crash(v any, stack []byte, cmd roomCmd) {
	r.s.m.docFailures.WithLabelValues(r.id).Inc()
	r.s.log.Error("document failed: panic on its room goroutine; it serves nothing more until it unloads",
		"doc", r.id, "panic", fmt.Sprint(v), "stack", string(stack))
	if r.broken != nil {
		return // a panic while failing: already done
	}
	r.broken = fmt.Errorf("%w: %q: panic: %v", ErrDocFailed, r.id, v)
	msg := fmt.Sprintf("the server failed on document %q; nothing unacknowledged was saved, retry later", r.id)
	switch c := cmd.(type) {
	case cmdUpdate:
		r.s.m.updates.WithLabelValues(syncproto.StatusInternal.String()).Inc()
		if c.ack != nil {
			c.ack(syncproto.StatusInternal, msg)
		}
	case cmdDo:
		if c.fail != nil {
			c.fail(r.broken)
		}
	case cmdSubscribe:
		// Its answer, which also ends the session's catch-up reservation.
		c.sess.queueCatchup(&syncproto.Error{Status: syncproto.StatusInternal, Doc: r.id, Message: msg}, true)
		delete(r.subs, c.sess)
	}
	for sess := range r.subs {
		sess.queueError(syncproto.StatusInternal, r.id, msg)
	}
	clear(r.subs)
	for _, w := range r.waiting {
		w.ack(syncproto.StatusInternal, msg)
	}
	r.waiting = nil
	for st := range r.streams {
		r.removeStream(st)
	}
	clear(r.presence)
	if r.presenceTkr != nil {
		r.presenceTkr.Stop()
		r.presenceTkr = nil
	}
	r.casts, r.held = nil, nil
	r.unpersisted, r.unpersistedBytes = nil, 0
	r.s.m.pendingTotal.Sub(float64(r.lastPending))
	r.lastPending = 0
}

// handleBroken answers a command to a failed room; it reports whether the
// room has exited.
func (r *room) handleBroken(c roomCmd) bool {
	msg := fmt.Sprintf("the server failed on document %q; retry later", r.id)
	switch c := c.(type) {
	case cmdSubscribe:
		c.sess.queueCatchup(&syncproto.Error{Status: syncproto.StatusInternal, Doc: r.id, Message: msg}, true)
	case cmdUnsubscribe:
		delete(r.subs, c.sess)
	case cmdUpdate:
		r.s.m.updates.WithLabelValues(syncproto.StatusInternal.String()).Inc()
		if c.ack != nil {
			c.ack(syncproto.StatusInternal, msg)
		}
	case cmdDo:
		if c.fail != nil {
			c.fail(r.broken)
		}
	case cmdStream:
		if c.add {
			close(c.st.ch) // the stream ends at once; its client retries
		}
	case cmdUnload:
		return r.tryUnload(c.reason)
	case cmdStop:
		r.stopping = true
	}
	return false
}

// do runs fn on the room goroutine and waits for it. It returns an error
// wrapping ErrDocFailed if the room has failed or fn panicked, or the
// error of the send or of ctx.
func (r *room) do(ctx context.Context, fn func(*room)) error {
	done := make(chan error, 1)
	err := r.send(ctx, cmdDo{fn: func(r *room) { fn(r); done <- nil }, fail: func(err error) { done <- err }})
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// recoverSession ends a session whose goroutine panicked (closing it with
// 1011) instead of the process. It must be deferred directly.
func (ss *session) recoverSession(where string) {
	if v := recover(); v != nil {
		ss.s.m.panics.WithLabelValues(where).Inc()
		ss.s.log.Error("session goroutine panicked; closing the connection", "session", ss.id, "where", where,
			"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		ss.kick(closeInternalError, "internal server error")
	}
}

// recoverHTTP answers 500 internal for a handler that panicked, instead of
// net/http's dropped connection (the process survives either way, but the
// client deserves an answer, and the panic a metric).
func (s *Server) recoverHTTP(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // net/http's own way of aborting a response
			}
			s.m.panics.WithLabelValues("http").Inc()
			s.log.Error("HTTP handler panicked", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			httpError(w, http.StatusInternalServerError, syncproto.StatusInternal, "internal server error")
		}()
		h.ServeHTTP(w, r)
	})
}
