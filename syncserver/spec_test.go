package syncserver

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// ?at= outside the HLC's range (before 1970: a negative wall) is refused,
// not wrapped into another time.
func TestHTTPAtOutsideClockRange(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	if code, b := httpInsert(t, ts, "u", "d", 1, "hello"); code != 200 {
		t.Fatalf("POST: %d %s", code, b)
	}
	get := func(at string) (int, string) {
		code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d?at="+url.QueryEscape(at), tok, nil)
		return code, string(b)
	}
	if code, b := get("1960-01-01T00:00:00Z"); code != http.StatusBadRequest || !strings.Contains(b, `"invalid"`) {
		t.Fatalf("?at= in 1960: %d %s, want 400 invalid", code, b)
	}
	if code, b := get("1970-01-01T00:00:00Z"); code != 200 || !strings.Contains(b, `"at":"1970-01-01T00:00:00`) {
		t.Fatalf("?at= the epoch: %d %s, want 200 and the empty document", code, b)
	}
}

// A document nothing was ever written to is 404 with or without ?at=, as
// JSON or as a snapshot; one that exists is 200 at any time, empty before
// its first change.
func TestHTTPUnknownDocumentIs404WithAndWithoutAt(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	at := "?at=" + url.QueryEscape(time.Now().UTC().Format(time.RFC3339))
	for _, q := range []string{"", at} {
		for _, accept := range []string{"", SnapshotMediaType} {
			h := http.Header{"Authorization": {"Bearer " + tok}}
			if accept != "" {
				h.Set("Accept", accept)
			}
			code, hdr, body := httpReq(t, "GET", ts.hs.URL+"/v1/docs/never"+q, h, nil)
			if code != http.StatusNotFound {
				t.Errorf("GET never%s (Accept %q): %d, want 404", q, accept, code)
			}
			// The body is the error object of §10, whatever the Accept
			// header asked for: never a document-shaped (or snapshot) body.
			var e struct {
				Status  string `json:"status"`
				Message string `json:"error"`
			}
			if ct := hdr.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("GET never%s (Accept %q): Content-Type %q, want application/json", q, accept, ct)
			}
			if err := json.Unmarshal(body, &e); err != nil || e.Status != "not_found" || e.Message == "" {
				t.Errorf("GET never%s (Accept %q): body %q, want {\"status\":\"not_found\",\"error\":...}", q, accept, body)
			}
		}
	}
	if code, b := httpInsert(t, ts, "u", "d", 1, "x"); code != 200 {
		t.Fatalf("POST: %d %s", code, b)
	}
	if code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d?at="+url.QueryEscape("2000-01-01T00:00:00Z"), tok, nil); code != 200 {
		t.Fatalf("an existing document before its first change: %d %s", code, b)
	}
}

// holdAppendStore blocks Append until release is closed.
type holdAppendStore struct {
	Store
	release chan struct{}
}

func (h *holdAppendStore) Append(ctx context.Context, doc string, batch []byte) (int64, error) {
	<-h.release
	return h.Store.Append(ctx, doc, batch)
}

// A POST whose batch is not durable within WriteTimeout answers 504 with
// the status PROTOCOL.md §10 names: overloaded (resend after a backoff),
// not pending_full (which asks for a resync the client has no use for).
func TestHTTPNotDurableInTimeIs504Overloaded(t *testing.T) {
	hs := &holdAppendStore{Store: NewMemStore(), release: make(chan struct{})}
	ts := newTestServer(t, func(o *Options) { o.Store = hs; o.WriteTimeout = 300 * time.Millisecond })
	defer close(hs.release)
	code, b := httpInsert(t, ts, "u", "d", 1, "x")
	if code != http.StatusGatewayTimeout || !strings.Contains(string(b), `"status":"overloaded"`) {
		t.Fatalf("POST with a held store: %d %s, want 504 overloaded", code, b)
	}
}

// History stored while the wall clock was ahead (an NTP step back after
// the writes, or a restored backup from a machine whose clock ran fast)
// still loads: the room replays its own log without the max-offset check
// that a client's update gets (§8 "Times"). With that check, every read
// of the document would fail for as long as the clock stays behind.
func TestStoredHistoryLoadsAfterClockStepsBack(t *testing.T) {
	st := NewMemStore()
	ahead := &hlc.ManualWall{Millis: time.Now().Add(time.Hour).UnixMilli()}
	src := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(ahead.Read, 0), crdt.Options{})
	tx := src.Begin()
	if err := tx.Insert("body", 0, "written an hour ahead"); err != nil {
		t.Fatal(err)
	}
	tx.Commit()
	if _, err := st.Append(context.Background(), "d", codec.EncodeChanges(src.ChangesSince(nil))); err != nil {
		t.Fatal(err)
	}
	ts := newTestServer(t, func(o *Options) { o.Store = st; o.MaxClockOffset = time.Second })
	code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/d", ts.token("u"), nil)
	if code != 200 || !strings.Contains(string(b), "written an hour ahead") {
		t.Fatalf("GET a document stored an hour ahead of the clock: %d %s", code, b)
	}
	// The same change from a client is still refused: the check is only
	// skipped for the server's own history.
	wc := ts.dial(ts.token("u"))
	wc.subscribe("e")
	wc.send(&syncproto.Update{Doc: "e", Batch: 1, Changes: codec.EncodeChanges(src.ChangesSince(nil))})
	if a := wc.waitAck("e", 1); a.Status != syncproto.StatusClockSkew {
		t.Fatalf("a client's change an hour ahead: %+v, want clock_skew", a)
	}
}
