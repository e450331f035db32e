package syncserver

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net/http"
	"time"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// stream is one Server-Sent Events subscriber of a room. The room owns ch
// and closes it when it drops the stream (slow consumer, unload, shutdown).
type stream struct {
	ch chan sseEvent
}

type sseEvent struct {
	id   string // version token after the event ("" for none)
	name string // "changes", "synced" or "reset"
	data []byte // changes: codec bytes, sent as base64; synced, reset: JSON
}

// Compact version tokens. A version of more than maxExplicitReplicas
// replicas would make an event id too long to resume with (2,000 replicas
// took 45 KB), so its token names it instead of listing it: 0x02, then
// uvarint W, an HLC time no change in the version is stamped after (the
// latest change the document held at the event), uvarint n, the sum of
// its seqs, and 8 bytes big-endian h, the wrapping sum over its replicas
// of FNV-1a 64 of the 16-byte replica and the 8-byte big-endian seq.
// Because HLC times respect causality and each replica's times grow with
// its seqs, the version held at an event is every change stamped at or
// before W, unless a change stamped earlier arrived later (an edit made
// offline): resuming recomputes that cut over the document and checks n
// and h. A match resumes exactly; otherwise the stream starts over, after
// an event "reset".
const (
	versionTokenCompact = 0x02
	maxExplicitReplicas = 64
	compactTokenMax     = 1 + 2*binary.MaxVarintLen64 + 8
)

// resumePoint is a decoded Last-Event-ID: an explicit version, or a
// compact token's cut and check.
type resumePoint struct {
	v       crdt.VersionVector // explicit (also the empty start)
	compact bool
	w       hlc.Timestamp
	n, h    uint64
}

// versionCheck returns the n and h of a compact token.
func versionCheck(v crdt.VersionVector) (n, h uint64) {
	var b [24]byte
	for r, s := range v {
		if s == 0 {
			continue
		}
		n += s
		copy(b[:16], r[:])
		binary.BigEndian.PutUint64(b[16:], s)
		f := fnv.New64a()
		f.Write(b[:])
		h += f.Sum64()
	}
	return n, h
}

// versionToken is the event id of version v, all of whose changes are
// stamped at or before w.
func versionToken(v crdt.VersionVector, w hlc.Timestamp) string {
	if len(v) <= maxExplicitReplicas {
		return encodeVersionToken(v)
	}
	n, h := versionCheck(v)
	b := make([]byte, 1, compactTokenMax)
	b[0] = versionTokenCompact
	b = binary.AppendUvarint(b, uint64(w))
	b = binary.AppendUvarint(b, n)
	b = binary.BigEndian.AppendUint64(b, h)
	return base64.RawURLEncoding.EncodeToString(b)
}

// parseResumeToken decodes a Last-Event-ID of either form.
func parseResumeToken(tok string) (resumePoint, error) {
	if len(tok) > maxVersionToken {
		return resumePoint{}, fmt.Errorf("event id longer than %d bytes", maxVersionToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return resumePoint{}, fmt.Errorf("event id: %v", err)
	}
	if len(b) == 0 || b[0] != versionTokenCompact {
		v, err := decodeVersionToken(tok)
		return resumePoint{v: v}, err
	}
	b = b[1:]
	w, k := binary.Uvarint(b)
	if k <= 0 {
		return resumePoint{}, errors.New("event id: bad time")
	}
	b = b[k:]
	n, k := binary.Uvarint(b)
	if k <= 0 || len(b[k:]) != 8 {
		return resumePoint{}, errors.New("event id: truncated")
	}
	return resumePoint{compact: true, w: hlc.Timestamp(w), n: n, h: binary.BigEndian.Uint64(b[k:])}, nil
}

// maxTime returns the latest time of a change the document holds,
// computing it (one pass over the history) the first time.
func (r *room) maxTime() hlc.Timestamp {
	if !r.maxTimeKnown {
		var w hlc.Timestamp
		for c := range r.doc.EachChangeSince(crdt.VersionVector{}) {
			w = max(w, c.Time)
		}
		r.latest, r.maxTimeKnown = w, true
	}
	return r.latest
}

// noteTimes keeps maxTime current after changes were applied.
func (r *room) noteTimes(fresh []crdt.Change) {
	if !r.maxTimeKnown {
		return
	}
	for i := range fresh {
		r.latest = max(r.latest, fresh[i].Time)
	}
}

// resolve turns a resume point into the version to resume from, or
// reports that the compact token's version is not the cut it names any
// more (ok false: start over).
func (r *room) resolve(p resumePoint) (v crdt.VersionVector, w hlc.Timestamp, ok bool) {
	if !p.compact {
		return p.v, 0, true
	}
	v = r.doc.At(p.w).Version()
	if n, h := versionCheck(v); n != p.n || h != p.h {
		return crdt.VersionVector{}, 0, false
	}
	return v, p.w, true
}

// addStream registers an event stream and sends it, in the same room step,
// everything after the resume point: no change can slip between catch-up
// and live events.
func (r *room) addStream(st *stream, from resumePoint) {
	r.streams[st] = struct{}{}
	version, w, ok := r.resolve(from)
	if !ok {
		r.s.m.sseResets.Inc()
		r.streamSend(st, sseEvent{name: "reset", data: []byte(`{"reason":"the event id names a version this server cannot rebuild; starting over"}`)})
	}
	at := version.Clone()
	known := w > 0 || len(version) == 0 // w bounds the times in at
	for _, c := range codec.EncodeChunks(r.doc.ChangesSince(version), int(r.s.opts.MaxFrameBytes/2)) {
		advance(at, c.Changes)
		// Catch-up goes in time order: after a compact resume (or from
		// nothing) the last time sent bounds what was sent.
		for i := range c.Changes {
			w = max(w, c.Changes[i].Time)
		}
		cw := w
		if !known {
			cw = r.maxTime()
		}
		r.streamSend(st, sseEvent{id: versionToken(at, cw), name: "changes", data: c.Data})
	}
	if _, ok := r.streams[st]; !ok {
		return // dropped as too slow during catch-up
	}
	v := r.doc.Version()
	var data []byte
	if len(v) <= maxExplicitReplicas {
		var err error
		if data, err = json.Marshal(versionJSON(v)); err != nil {
			r.s.log.Error("encoding a version", "doc", r.id, "err", err)
			return
		}
	} else {
		// NB: a version of very many replicas is not spelled out (200,000
		// took 9 MB); the id resumes it all the same.
		data = fmt.Appendf(nil, `{"replicas":%d}`, len(v))
	}
	r.streamSend(st, sseEvent{id: versionToken(v, r.maxTime()), name: "synced", data: data})
}

// streamSend queues an event without blocking; a stream that cannot keep
// up is closed (its client reconnects with Last-Event-ID and loses nothing).
func (r *room) streamSend(st *stream, ev sseEvent) {
	if _, ok := r.streams[st]; !ok {
		return
	}
	select {
	case st.ch <- ev:
	default:
		r.s.m.limitHits.WithLabelValues("send_queue").Inc()
		r.removeStream(st)
	}
}

func (r *room) removeStream(st *stream) {
	if _, ok := r.streams[st]; ok {
		delete(r.streams, st)
		close(st.ch)
	}
}

// streamEvents serves GET /v1/docs/{id}/events. Without Last-Event-ID (or
// the lastEventId query parameter) the stream starts with the whole
// document; with it, with exactly what the client lacks.
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, doc string, p *Principal) {
	if s.draining.Load() {
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, "server shutting down")
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		httpError(w, http.StatusInternalServerError, syncproto.StatusInternal, "streaming unsupported by this connection")
		return
	}
	asJSON := false
	switch f := r.URL.Query().Get("format"); f {
	case "", "binary":
	case "json":
		asJSON = true
	default:
		httpError(w, http.StatusBadRequest, syncproto.StatusInvalid, fmt.Sprintf("format %q: want binary (the default) or json", f))
		return
	}
	from := resumePoint{v: crdt.VersionVector{}}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = r.URL.Query().Get("lastEventId")
	}
	if last != "" {
		p, err := parseResumeToken(last)
		if err != nil {
			httpError(w, http.StatusBadRequest, syncproto.StatusInvalid, err.Error())
			return
		}
		from = p
	}
	if n := s.conns.Add(1); n > int64(s.opts.MaxConnections) {
		s.conns.Add(-1)
		s.m.refused.WithLabelValues("capacity").Inc()
		s.m.limitHits.WithLabelValues("connections").Inc()
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, "server at capacity")
		return
	}
	defer s.conns.Add(-1)
	rm, err := s.acquire(r.Context(), doc)
	if err != nil {
		acquireError(w, err)
		return
	}
	defer s.release(rm)
	st := &stream{ch: make(chan sseEvent, s.opts.SendQueue)}
	if err := rm.send(r.Context(), cmdStream{st: st, from: from, add: true}); err != nil {
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, err.Error())
		return
	}
	s.m.sseStreams.Inc()
	defer s.m.sseStreams.Dec()
	defer func() {
		// The room may already have dropped the stream; removing twice is
		// harmless, and a room that is gone needs nothing.
		// NB: not r.Context(), which is done by now; our reference keeps
		// the room alive until release.
		if err := rm.send(context.Background(), cmdStream{st: st}); err != nil {
			s.log.Debug("removing an event stream", "doc", doc, "err", err)
		}
	}()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	keepalive := time.NewTicker(s.opts.PingInterval)
	defer keepalive.Stop()
	var expired <-chan time.Time
	if !p.Expires.IsZero() {
		// A stream must not outlive the token that opened it: the
		// client reconnects with a new one (its Last-Event-ID resumes).
		t := time.NewTimer(p.Expires.Sub(s.auth.now()))
		defer t.Stop()
		expired = t.C
	}
	for {
		select {
		case <-expired:
			s.log.Debug("event stream closed: the token expired", "doc", doc)
			return
		case ev, ok := <-st.ch:
			if !ok {
				return // dropped by the room: the client resumes from its last id
			}
			if ev.id != "" {
				fmt.Fprintf(bw, "id: %s\n", ev.id)
			}
			fmt.Fprintf(bw, "event: %s\ndata: ", ev.name)
			switch {
			case ev.name == "changes" && asJSON:
				b, err := changesEventJSON(ev)
				if err != nil {
					// The room encoded these bytes: failing to read them
					// back is a bug, not the client's problem to parse.
					s.log.Error("rendering a changes event as JSON", "doc", doc, "err", err)
					return
				}
				bw.Write(b)
			case ev.name == "changes":
				enc := base64.NewEncoder(base64.StdEncoding, bw)
				enc.Write(ev.data)
				enc.Close()
			default:
				bw.Write(ev.data)
			}
			bw.WriteString("\n\n")
		case <-keepalive.C:
			bw.WriteString(": keepalive\n\n")
		case <-r.Context().Done():
			return
		}
		// Writes to a bufio.Writer fail only through Flush.
		if err := bw.Flush(); err != nil {
			return
		}
		fl.Flush()
	}
}

// ChangesEventJSON is the data of a `changes` event of an event stream
// opened with ?format=json: the version after the event (as in the
// event's id) and each change with its operations, ids written as
// "replica:seq" (docs/PROTOCOL.md section 10).
type ChangesEventJSON struct {
	Version map[string]uint64 `json:"version"`
	Changes []ChangeJSON      `json:"changes"`
}

// ChangeJSON is one change of a ChangesEventJSON.
type ChangeJSON struct {
	Replica string   `json:"replica"`
	Seq     uint64   `json:"seq"`
	Time    string   `json:"time"`
	Ops     []OpJSON `json:"ops"`
}

// OpJSON is one operation of a ChangeJSON: exactly one of Insert (with
// its origins After and Before), Delete (Target, then the ids after it,
// or before it when Backward), Add and Set. An insert always shows both
// origins ("" for none) and a delete always shows backward, as
// PROTOCOL.md §10 does: they are pointers only so that the other kinds of
// op leave them out.
type OpJSON struct {
	Field    string          `json:"field"`
	Insert   *string         `json:"insert,omitempty"`
	After    *string         `json:"after,omitempty"`
	Before   *string         `json:"before,omitempty"`
	Delete   uint64          `json:"delete,omitempty"`
	Target   string          `json:"target,omitempty"`
	Backward *bool           `json:"backward,omitempty"`
	Add      int64           `json:"add,omitempty"`
	Set      json.RawMessage `json:"set,omitempty"`
}

func idJSON(id crdt.ID) string {
	if id.IsZero() {
		return ""
	}
	return fmt.Sprintf("%s:%d", id.Replica, id.Seq)
}

// changesEventJSON renders a changes event for ?format=json.
func changesEventJSON(ev sseEvent) ([]byte, error) {
	changes, err := codec.DecodeChanges(ev.data)
	if err != nil {
		return nil, err
	}
	p, err := parseResumeToken(ev.id)
	if err != nil {
		return nil, err
	}
	// A compact id names its version without listing it: JSON null.
	var version map[string]uint64
	if !p.compact {
		version = versionJSON(p.v)
	}
	out := ChangesEventJSON{Version: version, Changes: make([]ChangeJSON, len(changes))}
	for i := range changes {
		ch := &changes[i]
		cj := ChangeJSON{Replica: ch.Replica.String(), Seq: ch.Seq, Time: ch.Time.Time().Format(time.RFC3339Nano), Ops: make([]OpJSON, len(ch.Ops))}
		for j := range ch.Ops {
			op := &ch.Ops[j]
			oj := OpJSON{Field: op.Field}
			switch op.Kind {
			case crdt.OpTextInsert:
				after, before := idJSON(op.Left), idJSON(op.Right)
				oj.Insert, oj.After, oj.Before = &op.Text, &after, &before
			case crdt.OpTextDelete:
				oj.Delete, oj.Target, oj.Backward = op.Count, idJSON(op.Target), &op.Backward
			case crdt.OpCounterAdd:
				oj.Add = op.Delta
			case crdt.OpRegisterSet:
				// Marshalled here so that a null value still shows as
				// "set": null.
				if oj.Set, err = json.Marshal(registerJSON(op.Value)); err != nil {
					return nil, err
				}
			}
			cj.Ops[j] = oj
		}
		out.Changes[i] = cj
	}
	return json.Marshal(out)
}
