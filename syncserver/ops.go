package syncserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
)

// ErrInvalidEdit is wrapped by every error ParseEditOps and ApplyEditOps
// return for ops that are malformed or do not fit the document.
var ErrInvalidEdit = errors.New("syncserver: invalid edit")

// EditOp is one operation of POST /v1/docs/{id}/ops (docs/PROTOCOL.md,
// section 10): exactly one of Insert, Delete, Add and Set, on the field
// named Field.
//
//	{"field": "body", "insert": "hi", "at": 0}   insert text at rune position at (no at: at the end)
//	{"field": "body", "delete": 2, "at": 0}      delete 2 runes from position at
//	{"field": "likes", "add": 3}                 add to a counter (negative subtracts)
//	{"field": "title", "set": "x"}               set a register to any JSON value
//
// Positions count Unicode code points (not bytes, not UTF-16 units). A
// text, a counter and a register are different fields even when they
// share a name (DocJSON shows them under "text", "counter", "register").
type EditOp struct {
	Field  string          `json:"field"`
	Insert *string         `json:"insert,omitempty"`
	Delete *int            `json:"delete,omitempty"`
	At     *int            `json:"at,omitempty"`
	Add    *int64          `json:"add,omitempty"`
	Set    json.RawMessage `json:"set,omitempty"`
}

// OpsContentType is the media type of a POST /v1/docs/{id}/ops body.
const OpsContentType = "application/json"

// ParseEditOps decodes a JSON array of EditOps strictly (unknown keys, a
// second action in one op, trailing data are errors) and checks each op
// on its own. Errors name the op by its index.
func ParseEditOps(body []byte) ([]EditOp, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var raws []json.RawMessage
	if err := dec.Decode(&raws); err != nil {
		return nil, fmt.Errorf("%w: want a JSON array of ops such as [{\"field\":\"body\",\"insert\":\"hi\",\"at\":0}]: %v", ErrInvalidEdit, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the array of ops", ErrInvalidEdit)
	}
	if len(raws) == 0 {
		return nil, fmt.Errorf("%w: no ops", ErrInvalidEdit)
	}
	// Each op on its own, so that every error (an unknown key too) names
	// the op it is about.
	ops := make([]EditOp, len(raws))
	for i, raw := range raws {
		od := json.NewDecoder(bytes.NewReader(raw))
		od.DisallowUnknownFields()
		if err := od.Decode(&ops[i]); err != nil {
			return nil, fmt.Errorf("%w: op %d: %v", ErrInvalidEdit, i, err)
		}
		if err := ops[i].check(); err != nil {
			return nil, fmt.Errorf("%w: op %d: %v", ErrInvalidEdit, i, err)
		}
	}
	return ops, nil
}

func (op *EditOp) check() error {
	if op.Field == "" || len(op.Field) > crdt.MaxFieldName || !utf8.ValidString(op.Field) {
		return fmt.Errorf("field: want a name of 1..%d bytes of UTF-8", crdt.MaxFieldName)
	}
	n := 0
	for _, set := range []bool{op.Insert != nil, op.Delete != nil, op.Add != nil, op.Set != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return errors.New("want exactly one of insert, delete, add, set")
	}
	switch {
	case op.Insert != nil:
		if *op.Insert == "" {
			return errors.New("insert: empty text")
		}
		if !utf8.ValidString(*op.Insert) {
			return errors.New("insert: not valid UTF-8")
		}
	case op.Delete != nil:
		if *op.Delete < 1 {
			return fmt.Errorf("delete: want a count ≥ 1, got %d", *op.Delete)
		}
		if op.At == nil {
			return errors.New("delete: at is required")
		}
	case op.Add != nil:
		if *op.Add == 0 {
			return errors.New("add: want a non-zero amount")
		}
	}
	if op.At != nil && op.Insert == nil && op.Delete == nil {
		return errors.New("at applies to insert and delete only")
	}
	if op.At != nil && *op.At < 0 {
		return fmt.Errorf("at: want a position ≥ 0, got %d", *op.At)
	}
	return nil
}

// editChangeOps bounds from above the operations of the one change ops
// make (crdt.MaxChangeOps bounds it): one per insert, add and set, and
// for a delete one per rune (the runs it removes may each be one rune).
func editChangeOps(ops []EditOp) int {
	n := 0
	for i := range ops {
		if op := &ops[i]; op.Delete != nil {
			n += min(*op.Delete, math.MaxInt32)
		} else {
			n++
		}
		n = min(n, math.MaxInt32)
	}
	return n
}

func tooManyChangeOps(n int) string {
	return fmt.Sprintf("the ops may make up to %d operations (a delete counts one per rune), more than one change may hold (%d); split them", n, crdt.MaxChangeOps)
}

// EditOpsLen is the number of operations ops make, as the rate limits
// count them: one per inserted or deleted rune, one per add and set.
// The count saturates at math.MaxInt32 (a delete count comes from the
// client and could otherwise overflow the sum).
func EditOpsLen(ops []EditOp) int {
	n := 0
	for i := range ops {
		switch op := &ops[i]; {
		case op.Insert != nil:
			n += utf8.RuneCountInString(*op.Insert)
		case op.Delete != nil:
			n += min(*op.Delete, math.MaxInt32)
		default:
			n++
		}
		n = min(n, math.MaxInt32)
	}
	return n
}

// editPlan is ops checked against a document: the register values
// encoded, positions resolved, sizes known.
type editPlan struct {
	ops      []EditOp
	at       []int    // resolved position of each insert and delete
	values   [][]byte // msgpack value of each set
	size     int64    // decoded size, as decodedSize counts it
	maxValue int64
}

// planEdit checks ops against d as it is, in order (a later op sees the
// text the earlier ones leave), without changing d.
func planEdit(d *crdt.Doc, ops []EditOp) (*editPlan, error) {
	if n := editChangeOps(ops); n > crdt.MaxChangeOps {
		return nil, fmt.Errorf("%w: %s", ErrInvalidEdit, tooManyChangeOps(n))
	}
	p := &editPlan{ops: ops, at: make([]int, len(ops)), values: make([][]byte, len(ops)), size: changeMem}
	lens := map[string]int{}
	textLen := func(f string) int {
		if n, ok := lens[f]; ok {
			return n
		}
		return d.TextLen(f)
	}
	for i := range ops {
		op := &ops[i]
		p.size += opMem
		switch {
		case op.Insert != nil:
			n := textLen(op.Field)
			at := n
			if op.At != nil {
				at = *op.At
			}
			if at > n {
				return nil, fmt.Errorf("%w: op %d: insert at %d in text %q of length %d", ErrInvalidEdit, i, at, op.Field, n)
			}
			p.at[i] = at
			lens[op.Field] = n + utf8.RuneCountInString(*op.Insert)
			p.size += int64(len(*op.Insert))
		case op.Delete != nil:
			n := textLen(op.Field)
			if *op.Delete > n || *op.At > n-*op.Delete {
				return nil, fmt.Errorf("%w: op %d: delete %d at %d in text %q of length %d", ErrInvalidEdit, i, *op.Delete, *op.At, op.Field, n)
			}
			p.at[i] = *op.At
			lens[op.Field] = n - *op.Delete
		case op.Set != nil:
			v, err := jsonToMsgpack(op.Set)
			if err != nil {
				return nil, fmt.Errorf("%w: op %d: set: %v", ErrInvalidEdit, i, err)
			}
			p.values[i] = v
			p.size += int64(len(v))
			p.maxValue = max(p.maxValue, int64(len(v)))
		}
	}
	return p, nil
}

// apply makes the planned ops in one transaction of d's own replica: one
// change, one timestamp. The plan was checked against d as it is, so no
// edit can fail half-way; if one does all the same (a broken invariant),
// the error says so and what was applied stays applied.
func (p *editPlan) apply(d *crdt.Doc) error {
	tx := d.Begin()
	for i := range p.ops {
		op := &p.ops[i]
		var err error
		switch {
		case op.Insert != nil:
			err = tx.Insert(op.Field, p.at[i], *op.Insert)
		case op.Delete != nil:
			err = tx.Delete(op.Field, p.at[i], *op.Delete)
		case op.Add != nil:
			err = tx.Add(op.Field, *op.Add)
		case op.Set != nil:
			err = tx.Set(op.Field, p.values[i])
		}
		if err != nil {
			tx.Commit()
			return fmt.Errorf("syncserver: op %d failed after it was checked (%d earlier ops applied): %w", i, i, err)
		}
	}
	return tx.Commit()
}

// ApplyEditOps checks ops against d and, if they all fit, makes them as one
// local transaction of d's replica. A refused edit (an error wrapping
// ErrInvalidEdit) leaves d as it was. The caller owns d (it is not safe
// for concurrent use).
func ApplyEditOps(d *crdt.Doc, ops []EditOp) error {
	p, err := planEdit(d, ops)
	if err != nil {
		return err
	}
	return p.apply(d)
}

// jsonToMsgpack converts one JSON value to msgpack: integers that fit an
// int64 stay integers, other numbers become float64; objects become maps
// with string keys.
func jsonToMsgpack(raw json.RawMessage) ([]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	v, err := fromJSONNumbers(v)
	if err != nil {
		return nil, err
	}
	return msgpack.Marshal(v)
}

func fromJSONNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i, nil
		}
		f, err := x.Float64()
		if err != nil || math.IsInf(f, 0) {
			return nil, fmt.Errorf("number %s out of range", x)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			c, err := fromJSONNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
	case []any:
		for i, e := range x {
			c, err := fromJSONNumbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
	}
	return v, nil
}

// cmdEdit asks a room to make JSON edit ops as its own replica.
type cmdEdit struct {
	user     string
	ops      []EditOp
	received time.Time
	ctx      context.Context
	// ack reports the outcome once the edit is durable (or refused) and
	// the document's version just after it; it must not block.
	ack func(st syncproto.Status, msg string, version crdt.VersionVector)
}

func (cmdEdit) isRoomCmd() {}

// edit makes c's ops as one change of the room's own replica (the
// server's), then treats that change as an update from c.user: it is
// persisted, acked once durable, broadcast and replicated like any other.
// A refused edit changes nothing.
func (r *room) edit(c cmdEdit) {
	refuse := func(st syncproto.Status, msg string) {
		r.s.m.updates.WithLabelValues(st.String()).Inc()
		c.ack(st, msg, nil)
	}
	switch {
	case r.failed != nil:
		refuse(syncproto.StatusInternal, "the server's store failed; not saved, retry elsewhere")
		return
	case r.stopping:
		refuse(syncproto.StatusOverloaded, "the server is shutting down; retry")
		return
	}
	p, err := planEdit(r.doc, c.ops)
	if err != nil {
		refuse(syncproto.StatusInvalid, err.Error())
		return
	}
	o := &r.s.opts
	switch {
	case p.maxValue > o.MaxValueBytes:
		r.s.m.limitHits.WithLabelValues("value_size").Inc()
		refuse(syncproto.StatusTooLarge, fmt.Sprintf("a register value of %d bytes exceeds the limit of %d", p.maxValue, o.MaxValueBytes))
		return
	case max(r.bytes.Load(), r.mem.Load())+p.size > o.MaxDocBytes:
		r.s.m.limitHits.WithLabelValues("doc_size").Inc()
		refuse(syncproto.StatusTooLarge, fmt.Sprintf("document would exceed %d bytes (this edit takes %d decoded)", o.MaxDocBytes, p.size))
		return
	}
	var before crdt.VersionVector
	if len(r.streams) > 0 || r.s.broadcastAfterDurable {
		before = r.version.Clone()
	}
	err = p.apply(r.doc)
	// Whatever apply made (all of it, unless an invariant broke) is in the
	// document now and goes the way of every change.
	fresh := r.doc.ChangesSince(r.version)
	advance(r.version, fresh)
	if err != nil {
		r.s.log.Error("a checked edit failed", "doc", r.id, "err", err)
	}
	if len(fresh) == 0 {
		refuse(syncproto.StatusInternal, fmt.Sprintf("the edit made no change: %v", err))
		return
	}
	after := r.version.Clone()
	u := cmdUpdate{user: c.user, changes: fresh, size: int64(len(codec.EncodeChanges(fresh))), received: c.received, ctx: c.ctx,
		ack: func(st syncproto.Status, msg string) { c.ack(st, msg, after) }}
	if err != nil {
		// Saved all the same (it is in the document), but the caller
		// asked for something else.
		u.ack = func(syncproto.Status, string) { c.ack(syncproto.StatusInternal, err.Error(), nil) }
	}
	r.accept(u, before, fresh)
}

// postOps serves POST /v1/docs/{id}/ops: JSON edit ops, made by the server
// as its own replica, answered once durable (docs/PROTOCOL.md section 10).
// They are authorised, size-limited and rate-limited like POST .../changes.
func (s *Server) postOps(w http.ResponseWriter, r *http.Request, doc string, p *Principal) {
	if s.draining.Load() {
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, "server shutting down")
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		if !strings.EqualFold(strings.TrimSpace(mt), OpsContentType) {
			httpError(w, http.StatusUnsupportedMediaType, syncproto.StatusInvalid, fmt.Sprintf("content type %q: want %s", ct, OpsContentType))
			return
		}
	}
	body, ok := s.readBody(w, r)
	if !ok {
		return
	}
	refuse := func(st syncproto.Status, msg string) {
		s.m.updates.WithLabelValues(st.String()).Inc()
		httpError(w, httpStatus(st), st, msg)
	}
	ops, err := ParseEditOps(body)
	if err != nil {
		refuse(syncproto.StatusInvalid, err.Error())
		return
	}
	nops := EditOpsLen(ops)
	if n := editChangeOps(ops); n > crdt.MaxChangeOps {
		refuse(syncproto.StatusTooLarge, tooManyChangeOps(n))
		return
	}
	if nops > s.opts.ChangesBurst {
		s.m.limitHits.WithLabelValues("changes_rate").Inc()
		refuse(syncproto.StatusTooLarge, fmt.Sprintf("the ops make %d operations, more than the %d a user may send at once; split them", nops, s.opts.ChangesBurst))
		return
	}
	if !s.httpRate.take(p.User, nops, time.Now()) {
		s.m.limitHits.WithLabelValues("changes_rate").Inc()
		w.Header().Set("Retry-After", "1")
		refuse(syncproto.StatusRateLimited, fmt.Sprintf("more than %d operations per second for user %q", s.opts.MaxChangesPerSec, p.User))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.opts.WriteTimeout)
	defer cancel()
	rm, err := s.acquire(ctx, doc)
	if err != nil {
		acquireError(w, err)
		return
	}
	defer s.release(rm)
	type result struct {
		st      syncproto.Status
		msg     string
		version crdt.VersionVector
	}
	done := make(chan result, 1)
	c := cmdEdit{user: p.User, ops: ops, received: time.Now(), ctx: ctx,
		ack: func(st syncproto.Status, msg string, v crdt.VersionVector) { done <- result{st, msg, v} }}
	if err := rm.send(ctx, c); err != nil {
		httpError(w, http.StatusServiceUnavailable, syncproto.StatusOverloaded, err.Error())
		return
	}
	select {
	case res := <-done:
		switch res.st {
		case syncproto.StatusOK:
			writeJSON(w, http.StatusOK, OpsResult{Status: "ok", Version: versionJSON(res.version)})
		case syncproto.StatusPeerTimeout:
			// Durable here: the edit is made. Sending the ops again would
			// make it twice.
			writeJSON(w, httpStatus(res.st), OpsResult{Status: res.st.String(), Version: versionJSON(res.version),
				Error: res.msg + "; the edit is durable on this server: do not send the ops again"})
		default:
			httpError(w, httpStatus(res.st), res.st, res.msg)
		}
	case <-ctx.Done():
		// NB: unlike a change batch, ops are not idempotent: the edit is
		// in the document and will be persisted; sending it again would
		// make it twice.
		httpError(w, http.StatusGatewayTimeout, syncproto.StatusOverloaded,
			"applied but not durable in time; read the document before sending the ops again (they are not idempotent)")
	}
}

// OpsResult is the answer of a successful POST /v1/docs/{id}/ops: the
// document's version just after the edit (GET /v1/docs/{id} at or after
// it shows the edit).
type OpsResult struct {
	Status  string            `json:"status"`
	Version map[string]uint64 `json:"version"`
	Error   string            `json:"error,omitempty"` // with status peer_timeout
}
