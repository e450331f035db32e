package syncserver

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// openEventsQuery opens an event stream with extra query parameters.
func openEventsQuery(t *testing.T, ts *testServer, doc, token, query string) *sseReader {
	t.Helper()
	resp, err := http.Get(ts.hs.URL + "/v1/docs/" + doc + "/events?access_token=" + token + "&" + query)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	t.Cleanup(func() { resp.Body.Close() })
	return &sseReader{resp: resp, br: bufio.NewReader(resp.Body)}
}

// postOps posts a JSON body to /v1/docs/{doc}/ops.
func postOps(t *testing.T, ts *testServer, doc, token, body string) (int, map[string]any) {
	t.Helper()
	h := http.Header{"Authorization": {"Bearer " + token}, "Content-Type": {"application/json"}}
	code, _, b := httpReq(t, "POST", ts.hs.URL+"/v1/docs/"+doc+"/ops", h, []byte(body))
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("POST ops answered %d with non-JSON %q", code, b)
	}
	return code, out
}

func getDocJSON(t *testing.T, ts *testServer, doc, token string) DocJSON {
	t.Helper()
	code, b := httpDo(t, "GET", ts.hs.URL+"/v1/docs/"+doc, token, nil)
	if code != 200 {
		t.Fatalf("GET %s: %d %s", doc, code, b)
	}
	var d DocJSON
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	return d
}

// JSON ops are made by the server, acked once durable (the store holds
// them), and reach a WebSocket subscriber like any change.
func TestPostOpsEditsDurablyAndFansOut(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	sub := ts.dial(tok)
	sub.subscribe("notes/1")

	code, out := postOps(t, ts, "notes%2F1", tok, `[{"field":"body","insert":"héllo wörld"},{"field":"body","delete":6,"at":5},{"field":"body","insert":"!","at":5},
		{"field":"likes","add":3},{"field":"likes","add":-1},{"field":"title","set":{"t":"x","n":[1,2.5,null]}}]`)
	if code != 200 || out["status"] != "ok" {
		t.Fatalf("POST ops: %d %v", code, out)
	}
	if v, _ := out["version"].(map[string]any); len(v) != 1 {
		t.Fatalf("version in the answer: %v", out["version"])
	}
	d := getDocJSON(t, ts, "notes/1", tok)
	if d.Text["body"] != "héllo!" || d.Counter["likes"] != 2 {
		t.Fatalf("after ops: %+v", d)
	}
	if b, _ := json.Marshal(d.Register["title"]); string(b) != `{"n":[1,2.5,null],"t":"x"}` {
		t.Fatalf("register: %s", b)
	}
	// Acked means durable: the store has it.
	if got := storedDoc(t, ts.store, "notes/1").Text("body"); got != "héllo!" {
		t.Fatalf("stored text %q", got)
	}
	// The subscriber gets the change.
	sub.absorb(recvType[*syncproto.Changes](sub))
	if got := sub.doc("notes/1").Text("body"); got != "héllo!" {
		t.Fatalf("the subscriber has %q", got)
	}
	// A second user edits the same document through the same (the
	// server's) replica: JSON edits belong to no one user.
	if code, out := postOps(t, ts, "notes%2F1", ts.token("v"), `[{"field":"body","insert":">","at":0}]`); code != 200 {
		t.Fatalf("second user: %d %v", code, out)
	}
	if got := getDocJSON(t, ts, "notes/1", tok).Text["body"]; got != ">héllo!" {
		t.Fatalf("after second user: %q", got)
	}
}

// A refused edit, wherever it fails, leaves the document as it was.
func TestPostOpsRefusalsChangeNothing(t *testing.T) {
	const burst = crdt.MaxChangeOps
	ts := newTestServer(t, func(o *Options) { o.ChangesBurst = burst; o.MaxChangesPerSec = 1000; o.MaxValueBytes = 64 })
	tok := ts.token("u")
	if code, out := postOps(t, ts, "d", tok, `[{"field":"body","insert":"abc"}]`); code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	for _, tc := range []struct {
		body, want string
		code       int
	}{
		{`[{"field":"body","insert":"x"},{"field":"body","delete":9,"at":0}]`, "op 1: delete 9 at 0", 400},
		{`[{"field":"body","insert":"x","at":5}]`, "insert at 5", 400},
		{`[{"field":"n","add":1},{"field":"n","add":0}]`, "op 1: add", 400},
		{`[{"field":"body","insert":"x","add":1}]`, "exactly one", 400},
		{`[{"field":"body","delete":1}]`, "at is required", 400},
		{`[{"field":"body","delete":1,"at":-1}]`, "at: want a position", 400},
		{`[{"field":"","add":1}]`, "field", 400},
		{`[{"field":"n","add":1,"extra":2}]`, "unknown field", 400},
		{`[]`, "no ops", 400},
		{`{"field":"n","add":1}`, "JSON array", 400},
		{`[{"field":"n","add":1}] x`, "after the array", 400},
		{`[{"field":"body","delete":9223372036854775807,"at":1}]`, "more than one change may hold", 413},
		{`[` + strings.Repeat(`{"field":"n","add":1},`, crdt.MaxChangeOps) + `{"field":"n","add":1}]`, "more than one change may hold", 413},
		{`[{"field":"t","set":"` + strings.Repeat("v", 100) + `"}]`, "register value", 413},
		{`[{"field":"body","insert":"` + strings.Repeat("y", burst+1) + `"}]`, fmt.Sprintf("more than the %d", burst), 413},
	} {
		code, out := postOps(t, ts, "d", tok, tc.body)
		if msg, _ := out["error"].(string); code != tc.code || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %v, want %d with %q", tc.body, code, out, tc.code, tc.want)
		}
	}
	d := getDocJSON(t, ts, "d", tok)
	if d.Text["body"] != "abc" || len(d.Counter) != 0 || len(d.Register) != 0 || len(d.Version) != 1 {
		t.Fatalf("a refused edit changed the document: %+v", d)
	}
	// Read-only tokens cannot; neither can a non-JSON body.
	ro := ts.token("r", Grant{Pattern: "d", Access: "read"})
	if code, out := postOps(t, ts, "d", ro, `[{"field":"n","add":1}]`); code != 403 || out["status"] != "read_only" {
		t.Errorf("read-only: %d %v", code, out)
	}
	if code, _ := httpDo(t, "POST", ts.hs.URL+"/v1/docs/d/ops", tok, []byte(`[{"field":"n","add":1}]`)); code != http.StatusUnsupportedMediaType {
		t.Errorf("changes content type on /ops: %d", code)
	}
}

// Nobody may write changes as the server's own replica: its JSON edits
// would collide with them.
func TestServerReplicaCannotBeForged(t *testing.T) {
	server := crdt.ReplicaID(uuid.New())
	ts := newTestServer(t, func(o *Options) { o.Replica = server })
	c := ts.dialAs(ts.token("u"), server)
	c.subscribe("d")
	if a := c.update("d", insert("t", 0, "forged")); a.Status.String() != "unauthorized" {
		t.Fatalf("changes as the server's replica: %v %s", a.Status, a.Message)
	}
}

func TestApplyEditOpsIsAtomic(t *testing.T) {
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	ops, err := ParseEditOps([]byte(`[{"field":"t","insert":"ab"},{"field":"c","add":2},{"field":"t","delete":3,"at":0}]`))
	if err != nil {
		t.Fatal(err)
	}
	if err := ApplyEditOps(d, ops); !errors.Is(err, ErrInvalidEdit) {
		t.Fatalf("ApplyEditOps = %v, want ErrInvalidEdit", err)
	}
	if len(d.Version()) != 0 || d.Text("t") != "" || d.Counter("c") != 0 {
		t.Fatalf("a refused edit changed the document: %s", d.Describe())
	}
	if n := EditOpsLen(ops); n != 2+1+3 {
		t.Fatalf("EditOpsLen = %d", n)
	}
}

// ?format=json streams changes a program can read without a decoder.
func TestSSEJSONFormat(t *testing.T) {
	ts := newTestServer(t, nil)
	tok := ts.token("u")
	if code, out := postOps(t, ts, "j", tok, `[{"field":"t","insert":"hi"},{"field":"n","add":2},{"field":"r","set":null}]`); code != 200 {
		t.Fatalf("%d %v", code, out)
	}
	ev := openEventsQuery(t, ts, "j", tok, "format=json")
	m := ev.next(t)
	if m.event != "changes" {
		t.Fatalf("first event %+v", m)
	}
	var got ChangesEventJSON
	if err := json.Unmarshal([]byte(m.data), &got); err != nil {
		t.Fatalf("changes data is not JSON: %v: %s", err, m.data)
	}
	if len(got.Changes) != 1 || len(got.Changes[0].Ops) != 3 || len(got.Version) != 1 {
		t.Fatalf("event %s", m.data)
	}
	ops := got.Changes[0].Ops
	if ops[0].Insert == nil || *ops[0].Insert != "hi" || ops[1].Add != 2 || string(ops[2].Set) != "null" {
		t.Fatalf("ops %s", m.data)
	}
	if !strings.Contains(m.data, `"set":null`) {
		t.Fatalf("a null register value is not shown: %s", m.data)
	}
	// An insert shows both origins, "" for none (PROTOCOL.md §10); an
	// add or set shows neither.
	if !strings.Contains(m.data, `"after":"","before":""`) {
		t.Fatalf("an insert without origins does not show them as \"\": %s", m.data)
	}
	if strings.Count(m.data, `"after"`) != 1 || strings.Contains(m.data, `"backward"`) {
		t.Fatalf("origins or backward shown on an op that is not an insert or delete: %s", m.data)
	}
	if m := ev.next(t); m.event != "synced" {
		t.Fatalf("then %+v", m)
	}
	// A live change arrives as JSON too.
	if code, _ := postOps(t, ts, "j", tok, `[{"field":"t","delete":1,"at":0}]`); code != 200 {
		t.Fatal(code)
	}
	m = ev.next(t)
	if err := json.Unmarshal([]byte(m.data), &got); err != nil || got.Changes[0].Ops[0].Delete != 1 || got.Changes[0].Ops[0].Target == "" {
		t.Fatalf("live event %s (%v)", m.data, err)
	}
	if !strings.Contains(m.data, `"backward":false`) {
		t.Fatalf("a forward delete does not show \"backward\":false: %s", m.data)
	}
	if code, _ := httpDo(t, "GET", ts.hs.URL+"/v1/docs/j/events?format=xml&access_token="+tok, "", nil); code != 400 {
		t.Fatalf("format=xml: %d", code)
	}
}

// Every refusal of an op names it by index (PROTOCOL.md §10), an unknown
// key and a value of the wrong type included.
func TestParseEditOpsNamesTheOp(t *testing.T) {
	for body, want := range map[string]string{
		`[{"field":"t","insert":"a"},{"field":"t","insert":"b","x":1}]`: `op 1: json: unknown field "x"`,
		`[{"field":"t","add":"two"}]`:                                   "op 0: ",
		`[{"field":"t","add":1},{"field":"t","add":0}]`:                 "op 1: add",
	} {
		_, err := ParseEditOps([]byte(body))
		if !errors.Is(err, ErrInvalidEdit) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want it to mention %q", body, err, want)
		}
	}
}
