package syncserver

import (
	"time"

	"github.com/weftsync/weft/crdt/syncproto"
)

// presenceEntry is a session's presence in one room.
type presenceEntry struct {
	p        *syncproto.Presence // latest state, identity filled in by the server
	lastSeen time.Time
	lastSent time.Time
	dirty    bool   // p has not been relayed yet
	sent     []byte // the last relayed frame, replayed to newcomers
}

// setPresence records a session's presence. The identity fields come from
// the session and its token, never from the client; a state whose clock is
// not newer than the last one is stale and ignored. Bursts are coalesced:
// at most one relay per session per PresenceInterval, always of the latest
// state.
func (r *room) setPresence(sess *session, p *syncproto.Presence) {
	if _, ok := r.subs[sess]; !ok {
		return // unsubscribed meanwhile
	}
	now := time.Now()
	e := r.presence[sess]
	if e != nil && p.Clock <= e.p.Clock {
		return
	}
	if e == nil {
		e = &presenceEntry{}
		r.presence[sess] = e
	}
	p.Doc = r.id
	p.Session = sess.id
	p.User = sess.principal.User
	p.Name = sess.principal.Name
	p.Color = sess.principal.Color
	e.p = p
	e.lastSeen = now
	e.dirty = true
	if now.Sub(e.lastSent) >= r.s.opts.PresenceInterval {
		r.relayPresence(sess, e, now)
	}
	if r.presenceTkr == nil {
		r.presenceTkr = time.NewTicker(r.s.opts.PresenceInterval)
	}
}

func (r *room) relayPresence(from *session, e *presenceEntry, now time.Time) {
	frame, err := syncproto.Encode(e.p)
	if err != nil {
		// The reader validated the message and we only filled bounded
		// identity fields: this is a bug, not bad input.
		r.s.log.Error("encoding presence", "doc", r.id, "err", err)
		e.dirty = false
		return
	}
	e.sent, e.dirty, e.lastSent = frame, false, now
	r.s.m.presence.Inc()
	r.replicatePresence(e.p)
	for sess := range r.subs {
		if sess != from {
			sess.queueFrame(frame)
		}
	}
}

// presenceTick relays coalesced states and expires silent sessions.
func (r *room) presenceTick(now time.Time) {
	for sess, e := range r.presence {
		if now.Sub(e.lastSeen) >= r.s.opts.PresenceTTL {
			r.dropPresence(sess)
			continue
		}
		if e.dirty && now.Sub(e.lastSent) >= r.s.opts.PresenceInterval {
			r.relayPresence(sess, e, now)
		}
	}
	if len(r.presence) == 0 && r.presenceTkr != nil {
		r.presenceTkr.Stop()
		r.presenceTkr = nil
	}
}

// dropPresence forgets a session's presence and announces its leave to the
// others (if they ever saw it).
func (r *room) dropPresence(sess *session) {
	e, ok := r.presence[sess]
	if !ok {
		return
	}
	delete(r.presence, sess)
	if e.sent == nil {
		return
	}
	leave := &syncproto.PresenceLeave{Doc: r.id, Session: sess.id}
	r.replicatePresence(leave)
	frame, err := syncproto.Encode(leave)
	if err != nil {
		r.s.log.Error("encoding presence_leave", "doc", r.id, "err", err)
		return
	}
	for other := range r.subs {
		if other != sess {
			other.queueFrame(frame)
		}
	}
}
