package syncserver

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// ChangesContentType is the media type of a POSTed change batch
// (codec.EncodeChanges bytes).
const ChangesContentType = "application/vnd.weft.changes"

// originAllowed implements the Origin allow-list for WebSocket handshakes
// and the HTTP API. In insecure (development) mode every loopback origin
// is allowed too, whatever its port: a page served by a dev server on
// localhost:5173 can then reach a local weft without flags.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true // not a browser
	}
	for _, a := range s.opts.AllowedOrigins {
		if a == "*" || strings.EqualFold(a, origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return s.opts.Insecure && (u.Scheme == "http" || u.Scheme == "https") && isLoopbackHost(u.Hostname())
}

func isLoopbackHost(h string) bool {
	if strings.EqualFold(h, "localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// refuseOrigin answers a request from a browser origin that is not
// allowed: 403 with a body that says how to allow it, and a log line (a
// browser shows neither the body of a refused WebSocket handshake nor a
// reason, so the server's log is where a developer finds out).
func (s *Server) refuseOrigin(w http.ResponseWriter, r *http.Request) {
	origin := r.Header.Get("Origin")
	s.m.refused.WithLabelValues("origin").Inc()
	s.log.Warn("refused a request from a browser origin that is not allowed",
		"origin", origin, "path", r.URL.Path, "remote", r.RemoteAddr, "allow_with", "--allow-origin "+origin)
	httpError(w, http.StatusForbidden, syncproto.StatusUnauthorized,
		fmt.Sprintf("origin %q is not allowed: start weft serve with --allow-origin %s (comma-separated, * for any)", origin, origin))
}

// cors refuses a request from an origin that is not allowed, allows an
// allowed one to read the answer, and answers a preflight (OPTIONS) for
// methods. It reports whether it answered.
func (s *Server) cors(w http.ResponseWriter, r *http.Request, methods string) bool {
	if !s.originAllowed(r) {
		s.refuseOrigin(w, r)
		return true
	}
	if o := r.Header.Get("Origin"); o != "" {
		w.Header().Set("Access-Control-Allow-Origin", o)
		w.Header().Set("Vary", "Origin")
	}
	if r.Method == http.MethodOptions {
		w.Header().Set("Access-Control-Allow-Methods", methods)
		w.Header().Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID")
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	return false
}

// serveDocs routes /v1/docs/{id}, /v1/docs/{id}/events,
// /v1/docs/{id}/changes and /v1/docs/{id}/ops. Document ids may contain
// '/', so the suffix is matched on the escaped path and the rest is
// unescaped: a document whose id ends in "/events", "/changes" or "/ops" is
// addressed with that last '/' written as %2F.
func (s *Server) serveDocs(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r, "GET, POST, OPTIONS") {
		return
	}
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/v1/docs/")
	kind := "doc"
	switch {
	case strings.HasSuffix(rest, "/events"):
		kind, rest = "events", strings.TrimSuffix(rest, "/events")
	case strings.HasSuffix(rest, "/changes"):
		kind, rest = "changes", strings.TrimSuffix(rest, "/changes")
	case strings.HasSuffix(rest, "/ops"):
		kind, rest = "ops", strings.TrimSuffix(rest, "/ops")
	}
	doc, err := url.PathUnescape(rest)
	if err == nil {
		err = checkDocID(doc)
	}
	if err != nil {
		httpError(w, http.StatusBadRequest, syncproto.StatusInvalid, err.Error())
		return
	}
	method := map[string]string{"doc": http.MethodGet, "events": http.MethodGet, "changes": http.MethodPost, "ops": http.MethodPost}[kind]
	if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
		w.Header().Set("Allow", method)
		httpError(w, http.StatusMethodNotAllowed, syncproto.StatusInvalid, fmt.Sprintf("%s needs %s", kind, method))
		return
	}
	p, err := s.auth.authenticate(bearer(r))
	if err != nil {
		s.m.refused.WithLabelValues("auth").Inc()
		httpError(w, http.StatusUnauthorized, syncproto.StatusUnauthorized, err.Error())
		return
	}
	access := p.Access(doc)
	if access == AccessNone {
		httpError(w, http.StatusForbidden, syncproto.StatusUnauthorized, "the token does not grant access to this document")
		return
	}
	switch kind {
	case "doc":
		s.getDoc(w, r, doc)
	case "events":
		// A stream pins its document like a subscription.
		if !s.userDocs.open(p.User, s.opts.MaxDocsPerUser) {
			s.m.limitHits.WithLabelValues("docs_per_user").Inc()
			httpError(w, http.StatusTooManyRequests, syncproto.StatusTooLarge, fmt.Sprintf("user %q has the maximum of %d documents open", p.User, s.opts.MaxDocsPerUser))
			return
		}
		defer s.userDocs.close(p.User)
		s.streamEvents(w, r, doc, p)
	case "changes", "ops":
		if access < AccessWrite {
			s.m.updates.WithLabelValues(syncproto.StatusReadOnly.String()).Inc()
			httpError(w, http.StatusForbidden, syncproto.StatusReadOnly, "the token grants read-only access to this document")
			return
		}
		if kind == "ops" {
			s.postOps(w, r, doc, p)
		} else {
			s.postChanges(w, r, doc, p)
		}
	}
}

// checkDocID applies the wire limits to an id that came over HTTP.
func checkDocID(doc string) error {
	switch {
	case doc == "":
		return errors.New("empty document id")
	case len(doc) > syncproto.MaxDocIDLen:
		return fmt.Errorf("document id longer than %d bytes", syncproto.MaxDocIDLen)
	case !utf8.ValidString(doc):
		return errors.New("document id is not valid UTF-8")
	case strings.IndexFunc(doc, unicode.IsControl) >= 0:
		return errors.New("document id contains control characters")
	}
	return nil
}

// bearer returns the token of an Authorization: Bearer header, or of the
// access_token query parameter (EventSource cannot set headers).
func bearer(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return h // a malformed header still fails verification, loudly
	}
	return r.URL.Query().Get("access_token")
}

// httpStatus maps a protocol status to an HTTP status code.
func httpStatus(st syncproto.Status) int {
	switch st {
	case syncproto.StatusOK:
		return http.StatusOK
	case syncproto.StatusReadOnly, syncproto.StatusUnauthorized:
		return http.StatusForbidden
	case syncproto.StatusTooLarge:
		return http.StatusRequestEntityTooLarge
	case syncproto.StatusRateLimited:
		return http.StatusTooManyRequests
	case syncproto.StatusInvalid:
		return http.StatusBadRequest
	case syncproto.StatusClockSkew, syncproto.StatusPendingFull, syncproto.StatusMissingDeps:
		return http.StatusConflict
	case syncproto.StatusNotFound:
		return http.StatusNotFound
	case syncproto.StatusOverloaded:
		return http.StatusServiceUnavailable
	case syncproto.StatusPeerTimeout:
		// Durable here, not yet confirmed by enough peers: accepted, and a
		// 2xx so that no generic retry-on-5xx resends /ops (which are not
		// idempotent).
		return http.StatusAccepted
	}
	return http.StatusInternalServerError
}

func httpError(w http.ResponseWriter, code int, st syncproto.Status, msg string) {
	writeJSON(w, code, map[string]string{"status": st.String(), "error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b = []byte(`{"status":"internal","error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	if _, err := w.Write(append(b, '\n')); err != nil {
		return // the client went away; nothing to tell it
	}
}

// DocJSON is the JSON form of a document served by GET /v1/docs/{id}.
type DocJSON struct {
	ID       string            `json:"id"`
	Version  map[string]uint64 `json:"version"`
	Text     map[string]string `json:"text"`
	Counter  map[string]int64  `json:"counter"`
	Register map[string]any    `json:"register"`
	At       string            `json:"at,omitempty"`
}

func versionJSON(v crdt.VersionVector) map[string]uint64 {
	out := make(map[string]uint64, len(v))
	for r, s := range v {
		out[r.String()] = s
	}
	return out
}

// NewDocJSON renders d in the shape GET /v1/docs/{id} serves (weft doc get
// prints the same).
func NewDocJSON(id string, d *crdt.Doc) DocJSON {
	out := DocJSON{ID: id, Version: versionJSON(d.Version()), Text: map[string]string{},
		Counter: map[string]int64{}, Register: map[string]any{}}
	for _, f := range d.Fields() {
		switch f.Type {
		case crdt.FieldText:
			out.Text[f.Name] = d.Text(f.Name)
		case crdt.FieldCounter:
			out.Counter[f.Name] = d.Counter(f.Name)
		case crdt.FieldRegister:
			if v, ok := d.Register(f.Name); ok {
				out.Register[f.Name] = registerJSON(v)
			}
		}
	}
	return out
}

// registerJSON decodes a register's msgpack value for JSON. Values JSON
// cannot hold as they are (maps with non-string keys) are converted; a value
// that does not decode is shown as {"msgpack": base64}.
func registerJSON(v []byte) any {
	var x any
	if err := msgpack.Unmarshal(v, &x); err != nil {
		return map[string]string{"msgpack": base64.StdEncoding.EncodeToString(v)}
	}
	return jsonable(x)
}

func jsonable(x any) any {
	switch x := x.(type) {
	case map[string]any:
		for k, v := range x {
			x[k] = jsonable(v)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, v := range x {
			m[fmt.Sprint(k)] = jsonable(v)
		}
		return m
	case []any:
		for i, v := range x {
			x[i] = jsonable(v)
		}
		return x
	}
	return x
}

// getDoc serves the document as JSON; ?at=<RFC 3339> serves it as it was
// at that time (every change with an HLC timestamp at or before it).
func (s *Server) getDoc(w http.ResponseWriter, r *http.Request, doc string) {
	var at hlc.Timestamp
	if q := r.URL.Query().Get("at"); q != "" {
		t, err := time.Parse(time.RFC3339Nano, q)
		if err != nil {
			httpError(w, http.StatusBadRequest, syncproto.StatusInvalid, "at: want an RFC 3339 time: "+err.Error())
			return
		}
		// HLC walls are milliseconds since 1970 in 48 bits: a time
		// outside would wrap into a different one.
		if ms := t.UnixMilli(); ms < 0 || ms >= 1<<(64-hlc.LogicalBits) {
			httpError(w, http.StatusBadRequest, syncproto.StatusInvalid,
				fmt.Sprintf("at: %s is outside the clock's range (1970-01-01T00:00:00Z to %s)", q,
					time.UnixMilli(1<<(64-hlc.LogicalBits)-1).UTC().Format(time.RFC3339Nano)))
			return
		}
		at = hlc.FromTime(t)
	}
	rm, err := s.acquire(r.Context(), doc)
	if err != nil {
		acquireError(w, err)
		return
	}
	defer s.release(rm)
	if wantsSnapshot(r) {
		s.getSnapshot(w, r, rm, at)
		return
	}
	var out DocJSON
	exists := false
	err = rm.do(r.Context(), func(rm *room) {
		d := rm.doc
		if exists = len(rm.version) > 0; !exists {
			return
		}
		if at != 0 {
			d = d.At(at)
		}
		out = NewDocJSON(doc, d)
		if at != 0 {
			out.At = at.Time().Format(time.RFC3339Nano)
		}
	})
	if err != nil {
		s.doError(w, r, err)
		return
	}
	if !exists {
		// Nothing was ever written: no such document, now or at any time
		// (a document that exists but not yet at ?at= is 200 and empty).
		httpError(w, http.StatusNotFound, syncproto.StatusNotFound, "no such document")
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// acquireError answers for a document that could not be acquired: 503
// overloaded (with Retry-After) when the server sheds load or shuts down,
// 500 internal when the load failed, as PROTOCOL.md §10 maps the statuses.
func acquireError(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrShuttingDown) || errors.Is(err, ErrTooManyDocs) {
		w.Header().Set("Retry-After", "5")
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, err.Error())
		return
	}
	httpError(w, http.StatusInternalServerError, syncproto.StatusInternal, err.Error())
}

// doError answers for a room.do that failed: 500 if the document failed,
// 503 if the room is gone or busy, nothing if the client left.
func (s *Server) doError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case r.Context().Err() != nil:
	case errors.Is(err, ErrDocFailed):
		httpError(w, http.StatusInternalServerError, syncproto.StatusInternal, err.Error())
	default:
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, err.Error())
	}
}

// DocList is the answer of GET /v1/docs: the ids, and when the store
// can describe them (DocInfoLister) each one's DocInfo, in the same order.
type DocList struct {
	Docs []string  `json:"docs"`
	Info []DocInfo `json:"info,omitempty"`
}

// maxListDocs bounds one GET /v1/docs answer.
const maxListDocs = 10000

// listDocs answers GET /v1/docs?prefix=P: the stored documents starting with
// P that the token may read, in order (at most maxListDocs; ?limit= lowers
// it).
func (s *Server) listDocs(w http.ResponseWriter, r *http.Request) {
	if s.cors(w, r, "GET, OPTIONS") {
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET")
		httpError(w, http.StatusMethodNotAllowed, syncproto.StatusInvalid, "GET /v1/docs lists documents")
		return
	}
	p, err := s.auth.authenticate(bearer(r))
	if err != nil {
		s.m.refused.WithLabelValues("auth").Inc()
		httpError(w, http.StatusUnauthorized, syncproto.StatusUnauthorized, err.Error())
		return
	}
	lister, ok := s.opts.Store.(DocLister)
	if !ok {
		httpError(w, http.StatusNotImplemented, syncproto.StatusInternal, "this server's store cannot list documents")
		return
	}
	limit := maxListDocs
	if q := r.URL.Query().Get("limit"); q != "" {
		n, err := strconv.Atoi(q)
		if err != nil || n < 1 {
			httpError(w, http.StatusBadRequest, syncproto.StatusInvalid, "limit: want a positive integer")
			return
		}
		limit = min(n, maxListDocs)
	}
	prefix := r.URL.Query().Get("prefix")
	var infos []DocInfo
	var ids []string
	if il, ok := s.opts.Store.(DocInfoLister); ok {
		infos, err = il.ListDocInfo(r.Context(), prefix, 0)
		for _, in := range infos {
			ids = append(ids, in.ID)
		}
	} else {
		ids, err = lister.ListDocs(r.Context(), prefix, 0)
	}
	if err != nil {
		httpError(w, http.StatusInternalServerError, syncproto.StatusInternal, "listing documents: "+err.Error())
		return
	}
	out := DocList{Docs: []string{}}
	for i, id := range ids {
		if len(out.Docs) == limit {
			break
		}
		if p.Access(id) != AccessNone {
			out.Docs = append(out.Docs, id)
			if infos != nil {
				out.Info = append(out.Info, infos[i])
			}
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// SnapshotMediaType is the content type of a snapshot (codec.EncodeSnapshot
// bytes): GET /v1/docs/{id} answers with one when the request accepts it.
const SnapshotMediaType = "application/vnd.weft.snapshot"

func wantsSnapshot(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(mt), SnapshotMediaType) {
			return true
		}
	}
	return false
}

// getSnapshot answers with the whole document (or its state at at) as a
// snapshot. The room only copies its state; encoding runs here, off the
// room goroutine.
func (s *Server) getSnapshot(w http.ResponseWriter, r *http.Request, rm *room, at hlc.Timestamp) {
	var st *crdt.State
	empty := false
	err := rm.do(r.Context(), func(rm *room) {
		d := rm.doc
		if empty = len(rm.version) == 0; empty {
			return
		}
		if at != 0 {
			d = d.At(at)
		}
		st = d.ExportState()
	})
	if err != nil {
		s.doError(w, r, err)
		return
	}
	if empty { // as getDoc: whether or not ?at= is given
		httpError(w, http.StatusNotFound, syncproto.StatusNotFound, "no such document")
		return
	}
	body := codec.EncodeState(st)
	w.Header().Set("Content-Type", SnapshotMediaType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

// changesContentType reports whether ct may label a change batch: none,
// ChangesContentType, or the generic application/octet-stream. Anything
// else is answered 415, as /ops answers a body that is not JSON: a client
// that posts JSON or a form here has the wrong endpoint, and a browser
// cannot post a batch cross-site without a preflight (text/plain and form
// types, which need none, are refused).
func changesContentType(ct string) bool {
	if ct == "" {
		return true
	}
	mt, _, _ := strings.Cut(ct, ";")
	mt = strings.TrimSpace(mt)
	return strings.EqualFold(mt, ChangesContentType) || strings.EqualFold(mt, "application/octet-stream")
}

// postChanges applies a batch of changes (the body: codec.EncodeChanges
// bytes) and answers once they are durable, like an update's ack.
func (s *Server) postChanges(w http.ResponseWriter, r *http.Request, doc string, p *Principal) {
	if s.draining.Load() {
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, "server shutting down")
		return
	}
	if !changesContentType(r.Header.Get("Content-Type")) {
		httpError(w, http.StatusUnsupportedMediaType, syncproto.StatusInvalid,
			fmt.Sprintf("content type %q: want %s", r.Header.Get("Content-Type"), ChangesContentType))
		return
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	// As on a WebSocket, the writer pays before the server decodes: the
	// header's op count is charged to the principal's rate limit first.
	refuse := func(st syncproto.Status, msg string) {
		s.m.updates.WithLabelValues(st.String()).Inc()
		httpError(w, httpStatus(st), st, msg)
	}
	nops, st, msg := s.admitBatch(body)
	switch {
	case st != syncproto.StatusOK:
		refuse(st, msg)
		return
	case nops == 0:
		refuse(syncproto.StatusInvalid, "no changes")
		return
	}
	if !s.httpRate.take(p.User, nops, time.Now()) {
		s.m.limitHits.WithLabelValues("changes_rate").Inc()
		w.Header().Set("Retry-After", "1")
		refuse(syncproto.StatusRateLimited, fmt.Sprintf("more than %d operations per second for user %q", s.opts.MaxChangesPerSec, p.User))
		return
	}
	changes, err := codec.DecodeChanges(body)
	if err != nil {
		refuse(syncproto.StatusInvalid, err.Error())
		return
	}
	if len(changes) == 0 {
		refuse(syncproto.StatusInvalid, "no changes")
		return
	}
	if n := opsOf(changes); n > uint64(nops) {
		s.httpRate.owe(p.User, n-uint64(nops))
	}
	// A batch whose dependencies never arrive must not hold the request
	// forever.
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.WriteTimeout)
	defer cancel()
	rm, err := s.acquire(ctx, doc)
	if err != nil {
		acquireError(w, err)
		return
	}
	defer s.release(rm)
	type result struct {
		st  syncproto.Status
		msg string
	}
	done := make(chan result, 1)
	c := cmdUpdate{user: p.User, changes: changes, size: int64(len(body)), received: time.Now(), ctx: ctx,
		ack: func(st syncproto.Status, msg string) { done <- result{st, msg} }}
	if err := rm.send(ctx, c); err != nil {
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, err.Error())
		return
	}
	select {
	case res := <-done:
		if res.st != syncproto.StatusOK {
			httpError(w, httpStatus(res.st), res.st, res.msg)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	case <-ctx.Done():
		// Dependencies the server lacks were answered at once
		// (missing_deps): what is left is a store slower than WriteTimeout.
		httpError(w, http.StatusGatewayTimeout, syncproto.StatusOverloaded,
			"not durable in time; resend (applying twice is harmless)")
	}
}

// principalRates rate-limits HTTP writes per principal (a WebSocket's
// limit is per connection; HTTP has none to hang it on).
type principalRates struct {
	rate, burst float64
	mu          struct {
		sync.Mutex
		m map[string]*tokenBucket // user → bucket; guarded by mu
	}
}

func newPrincipalRates(rate, burst int) *principalRates {
	pr := &principalRates{rate: float64(rate), burst: float64(burst)}
	pr.mu.m = make(map[string]*tokenBucket)
	return pr
}

func (pr *principalRates) take(user string, n int, now time.Time) bool {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	b := pr.mu.m[user]
	if b == nil {
		nb := newTokenBucket(pr.rate, pr.burst, now)
		b = &nb
		pr.mu.m[user] = b
	}
	return b.take(float64(n), now)
}

func (pr *principalRates) owe(user string, n uint64) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if b := pr.mu.m[user]; b != nil {
		b.owe(float64(n))
	}
}

// prune forgets the buckets that have refilled: they hold nothing a new
// bucket would not.
func (pr *principalRates) prune(now time.Time) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	for user, b := range pr.mu.m {
		if b.refill(now); b.tokens >= b.burst {
			delete(pr.mu.m, user)
		}
	}
}

// Version tokens: an SSE event id is the document's version vector after the
// event, so Last-Event-ID resumes with exactly the changes the client lacks,
// across server restarts and document unloads (see "Event streams" in the
// package doc). Layout: base64url (no padding) of 0x01, then per replica in
// ascending order its 16 bytes and its seq as a uvarint.
const versionTokenV1 = 0x01

func encodeVersionToken(v crdt.VersionVector) string {
	keys := make([]crdt.ReplicaID, 0, len(v))
	for r, s := range v {
		if s > 0 {
			keys = append(keys, r)
		}
	}
	slices.SortFunc(keys, crdt.ReplicaID.Compare)
	b := make([]byte, 1, 1+len(keys)*(16+binary.MaxVarintLen64))
	b[0] = versionTokenV1
	for _, r := range keys {
		b = append(b, r[:]...)
		b = binary.AppendUvarint(b, v[r])
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// maxVersionToken bounds a Last-Event-ID (about 1000 replicas).
const maxVersionToken = 32 << 10

func decodeVersionToken(tok string) (crdt.VersionVector, error) {
	if len(tok) > maxVersionToken {
		return nil, fmt.Errorf("event id longer than %d bytes", maxVersionToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, fmt.Errorf("event id: %v", err)
	}
	if len(b) == 0 || b[0] != versionTokenV1 {
		return nil, errors.New("event id: unknown format")
	}
	b = b[1:]
	v := make(crdt.VersionVector)
	var prev crdt.ReplicaID
	for len(b) > 0 {
		if len(b) < 17 {
			return nil, errors.New("event id: truncated")
		}
		var r crdt.ReplicaID
		copy(r[:], b[:16])
		if r.IsZero() || (len(v) > 0 && prev.Compare(r) >= 0) {
			return nil, errors.New("event id: replicas not strictly increasing")
		}
		seq, n := binary.Uvarint(b[16:])
		if n <= 0 || seq == 0 {
			return nil, errors.New("event id: bad sequence number")
		}
		v[r], prev = seq, r
		b = b[16+n:]
	}
	return v, nil
}

// readBody reads a write's body, at most MaxFrameBytes (PROTOCOL.md §10:
// 413 too_large above it). When it cannot, it has answered and returns
// false.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.opts.MaxFrameBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.m.limitHits.WithLabelValues("frame").Inc()
			httpError(w, http.StatusRequestEntityTooLarge, syncproto.StatusTooLarge, fmt.Sprintf("body exceeds %d bytes", s.opts.MaxFrameBytes))
			return nil, false
		}
		httpError(w, http.StatusBadRequest, syncproto.StatusInvalid, "reading the body: "+err.Error())
		return nil, false
	}
	return body, true
}
