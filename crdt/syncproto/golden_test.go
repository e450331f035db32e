package syncproto

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/golden from the messages in golden_test.go")

func uuid(s string) crdt.ReplicaID {
	r, err := crdt.ParseReplicaID(s)
	if err != nil {
		panic(err)
	}
	return r
}

var (
	goldenClient = uuid("0b6f9e4c-1d2a-4c3b-9f00-5e7d8c9a0b1c")
	goldenOther  = uuid("7a1c2e3d-4b5f-4a6b-8c7d-9e0f1a2b3c4d")
	goldenTime   = hlc.New(1_763_900_000_000, 0) // 2025-11-23T12:13:20Z
)

// goldenChanges is a small batch with every op kind: the client types "hi"
// after the other replica's first character, deletes it, bumps a counter and
// sets a register.
func goldenChanges() []crdt.Change {
	return []crdt.Change{
		{Replica: goldenClient, Seq: 1, Time: goldenTime, Ops: []crdt.Op{
			{Kind: crdt.OpTextInsert, Field: "body", Text: "hi", Left: crdt.ID{Replica: goldenOther, Seq: 1}},
		}},
		{Replica: goldenClient, Seq: 3, Time: goldenTime + 1, Ops: []crdt.Op{
			{Kind: crdt.OpTextDelete, Field: "body", Target: crdt.ID{Replica: goldenOther, Seq: 1}, Count: 1},
			{Kind: crdt.OpCounterAdd, Field: "likes", Delta: -2},
			{Kind: crdt.OpRegisterSet, Field: "title", Value: []byte{0xa2, 'o', 'k'}},
		}},
	}
}

type golden struct {
	name string
	msg  Message
}

func goldenMessages() []golden {
	batch := codec.EncodeChanges(goldenChanges())
	vv := crdt.VersionVector{goldenClient: 4, goldenOther: 12}
	return []golden{
		{"hello", &Hello{Version: ProtocolVersion, Token: "eyJhbGciOiJIUzI1NiJ9.e30.sig", Replica: goldenClient, ClientName: "weft-ts/0.1"}},
		{"welcome", &Welcome{Version: ProtocolVersion, ServerTime: goldenTime, Session: "s1", User: "alice",
			Limits: Limits{MaxFrame: 1 << 20, MaxChangesPerSec: 1000, MaxPresencePerSec: 20, MaxDocBytes: 64 << 20, MaxPending: 4096, MaxDocs: 256, MaxOpsBurst: 10000}}},
		{"subscribe", &Subscribe{Doc: "notes/42", Version: vv}},
		{"subscribe_empty", &Subscribe{Doc: "notes/42", Version: crdt.VersionVector{}}},
		{"unsubscribe", &Unsubscribe{Doc: "notes/42"}},
		{"sync", &Sync{Doc: "notes/42", Version: vv, Changes: batch}},
		{"sync_empty", &Sync{Doc: "notes/42", Version: crdt.VersionVector{}}},
		{"update", &Update{Doc: "notes/42", Batch: 1, Changes: batch}},
		{"ack", &Ack{Doc: "notes/42", Batch: 1, Status: StatusOK}},
		{"ack_refused", &Ack{Doc: "notes/42", Batch: 2, Status: StatusReadOnly, Message: "token grants read access only"}},
		{"changes", &Changes{Doc: "notes/42", Changes: batch}},
		{"presence_client", &Presence{Doc: "notes/42", Clock: 7, Field: "body",
			Cursor: &crdt.Anchor{ID: crdt.ID{Replica: goldenClient, Seq: 2}, Side: crdt.After}, Typing: true}},
		{"presence", &Presence{Doc: "notes/42", Session: "s1", User: "alice", Name: "Alice", Color: "#e91e63", Clock: 7, Field: "body",
			Cursor:    &crdt.Anchor{ID: crdt.ID{Replica: goldenClient, Seq: 2}, Side: crdt.After},
			Selection: &Selection{Anchor: crdt.Anchor{ID: crdt.ID{Replica: goldenOther, Seq: 1}}, Head: crdt.Anchor{ID: crdt.ID{Replica: goldenClient, Seq: 2}, Side: crdt.After}},
			State:     []byte{0x81, 0xa4, 'm', 'o', 'd', 'e', 0xa6, 'i', 'n', 's', 'e', 'r', 't'}}},
		{"presence_leave", &PresenceLeave{Doc: "notes/42", Session: "s1"}},
		{"ping", &Ping{Nonce: 42}},
		{"pong", &Pong{Nonce: 42}},
		{"error", &Error{Status: StatusUnauthorized, Message: "token does not cover notes/42", Doc: "notes/42"}},
		{"error_connection", &Error{Status: StatusInvalid, Message: "malformed frame"}},
		{"ack_peer_timeout", &Ack{Doc: "notes/42", Batch: 3, Status: StatusPeerTimeout, Message: "durable here; 1 of 2 peers confirmed within 5s"}},
		{"peer_hello", &PeerHello{Node: "weft-1", Nonce: bytes.Repeat([]byte{0xa5}, PeerNonceLen)}},
		{"peer_hello_answer", &PeerHello{Node: "weft-2", Nonce: bytes.Repeat([]byte{0x5a}, PeerNonceLen), Proof: bytes.Repeat([]byte{0x11}, PeerNonceLen)}},
		{"peer_hello_proof", &PeerHello{Node: "weft-1", Proof: bytes.Repeat([]byte{0x22}, PeerNonceLen)}},
		{"digest", &Digest{Round: 9, Buckets: []uint64{0, 0x0123456789abcdef, 0, 42}}},
		{"version_part", &VersionPart{Doc: "notes/42", Version: crdt.VersionVector{goldenOther: 12}}},
		{"digest_docs", &DigestDocs{Round: 9, Bucket: 1, Docs: []string{"notes/42", "notes/7"}, Hashes: []uint64{0x0123456789abcdef, 7}}},
		{"owners", &Owners{Doc: "notes/42", Owners: []Owner{{Replica: goldenClient, Principal: "alice"}, {Replica: goldenOther, Principal: "bob@example.com"}}}},
	}
}

// describe renders m as JSON for the fixture's .json file: field names as in
// docs/PROTOCOL.md, UUIDs in canonical form, bytes in hex, change batches
// decoded.
func describe(m Message) map[string]any {
	out := map[string]any{"type": m.Type().String(), "tag": int(m.Type())}
	vv := func(v crdt.VersionVector) map[string]uint64 {
		o := map[string]uint64{}
		for r, s := range v {
			o[r.String()] = s
		}
		return o
	}
	id := func(i crdt.ID) any {
		if i.IsZero() {
			return nil
		}
		return map[string]any{"replica": i.Replica.String(), "seq": i.Seq}
	}
	anchor := func(a crdt.Anchor) any {
		return map[string]any{"id": id(a.ID), "side": map[crdt.Side]string{crdt.Before: "before", crdt.After: "after"}[a.Side]}
	}
	changes := func(b []byte) any {
		chs, err := codec.DecodeChanges(b)
		if err != nil {
			return err.Error()
		}
		var list []any
		for _, c := range chs {
			var ops []any
			for _, op := range c.Ops {
				o := map[string]any{"kind": op.Kind.String(), "field": op.Field}
				switch op.Kind {
				case crdt.OpTextInsert:
					o["text"], o["left"], o["right"] = op.Text, id(op.Left), id(op.Right)
				case crdt.OpTextDelete:
					o["target"], o["count"], o["backward"] = id(op.Target), op.Count, op.Backward
				case crdt.OpCounterAdd:
					o["delta"] = op.Delta
				case crdt.OpRegisterSet:
					o["value_hex"] = hex.EncodeToString(op.Value)
				}
				ops = append(ops, o)
			}
			list = append(list, map[string]any{"replica": c.Replica.String(), "seq": c.Seq,
				"time": fmt.Sprint(uint64(c.Time)), "time_wall_ms": c.Time.WallMillis(), "time_logical": c.Time.Logical(), "ops": ops})
		}
		return map[string]any{"hex": hex.EncodeToString(b), "decoded": list}
	}
	switch m := m.(type) {
	case *Hello:
		out["version"], out["token"], out["replica"], out["client"] = m.Version, m.Token, m.Replica.String(), m.ClientName
	case *Welcome:
		l := m.Limits
		out["version"], out["session"], out["user"] = m.Version, m.Session, m.User
		// As a string: HLC timestamps exceed 2^53 (JSON numbers in JS).
		out["server_time"], out["server_time_wall_ms"], out["server_time_logical"] = fmt.Sprint(uint64(m.ServerTime)), m.ServerTime.WallMillis(), m.ServerTime.Logical()
		out["limits"] = []uint64{l.MaxFrame, l.MaxChangesPerSec, l.MaxPresencePerSec, l.MaxDocBytes, l.MaxPending, l.MaxDocs, l.MaxOpsBurst}
	case *Subscribe:
		out["doc"], out["version"] = m.Doc, vv(m.Version)
	case *VersionPart:
		out["doc"], out["version"] = m.Doc, vv(m.Version)
	case *Unsubscribe:
		out["doc"] = m.Doc
	case *Sync:
		out["doc"], out["version"], out["changes"] = m.Doc, vv(m.Version), changes(m.Changes)
	case *Update:
		out["doc"], out["batch"], out["changes"] = m.Doc, m.Batch, changes(m.Changes)
	case *Ack:
		out["doc"], out["batch"], out["status"], out["status_name"], out["message"] = m.Doc, m.Batch, int(m.Status), m.Status.String(), m.Message
	case *Changes:
		out["doc"], out["changes"] = m.Doc, changes(m.Changes)
	case *Presence:
		out["doc"], out["session"], out["user"], out["name"], out["color"] = m.Doc, m.Session, m.User, m.Name, m.Color
		out["clock"], out["field"], out["typing"] = m.Clock, m.Field, m.Typing
		out["cursor"], out["selection"], out["state_hex"] = nil, nil, nil
		if m.Cursor != nil {
			out["cursor"] = anchor(*m.Cursor)
		}
		if m.Selection != nil {
			out["selection"] = map[string]any{"anchor": anchor(m.Selection.Anchor), "head": anchor(m.Selection.Head)}
		}
		if m.State != nil {
			out["state_hex"] = hex.EncodeToString(m.State)
		}
	case *PresenceLeave:
		out["doc"], out["session"] = m.Doc, m.Session
	case *Ping:
		out["nonce"] = m.Nonce
	case *Pong:
		out["nonce"] = m.Nonce
	case *Error:
		out["status"], out["status_name"], out["message"], out["doc"] = int(m.Status), m.Status.String(), m.Message, m.Doc
	case *PeerHello:
		out["node"], out["nonce_hex"], out["proof_hex"] = m.Node, hex.EncodeToString(m.Nonce), hex.EncodeToString(m.Proof)
	case *Digest:
		// As strings: 64-bit digests exceed 2^53 (JSON numbers in JS).
		bs := []string{}
		for _, b := range m.Buckets {
			bs = append(bs, fmt.Sprintf("%016x", b))
		}
		out["round"], out["buckets_hex"] = m.Round, bs
	case *DigestDocs:
		hs := []string{}
		for _, h := range m.Hashes {
			hs = append(hs, fmt.Sprintf("%016x", h))
		}
		out["round"], out["bucket"], out["docs"], out["hashes_hex"] = m.Round, m.Bucket, m.Docs, hs
	case *Owners:
		list := []any{}
		for _, o := range m.Owners {
			list = append(list, map[string]any{"replica": o.Replica.String(), "principal": o.Principal})
		}
		out["doc"], out["owners"] = m.Doc, list
	}
	return out
}

// TestGolden pins the wire format: every fixture in testdata/golden must be
// exactly what Encode produces for its message, decode back to it, and its
// .json must describe it. Run with -update-golden after a deliberate format
// change (and bump ProtocolVersion if old peers cannot read it).
func TestGolden(t *testing.T) {
	dir := filepath.Join("testdata", "golden")
	if *updateGolden {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, g := range goldenMessages() {
		b, err := Encode(g.msg)
		if err != nil {
			t.Fatalf("%s: %v", g.name, err)
		}
		d := describe(g.msg)
		d["hex"] = hex.EncodeToString(b)
		j, err := json.MarshalIndent(d, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		j = append(j, '\n')
		binPath, jsonPath := filepath.Join(dir, g.name+".bin"), filepath.Join(dir, g.name+".json")
		seen[g.name+".bin"], seen[g.name+".json"] = true, true
		if *updateGolden {
			if err := os.WriteFile(binPath, b, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(jsonPath, j, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(binPath)
		if err != nil {
			t.Fatalf("%s: %v (run with -update-golden to create)", g.name, err)
		}
		if !bytes.Equal(b, want) {
			t.Errorf("%s: Encode gives\n%x\nfixture has\n%x", g.name, b, want)
		}
		got, err := Decode(want)
		if err != nil {
			t.Errorf("%s: fixture does not decode: %v", g.name, err)
		} else if !reflect.DeepEqual(got, g.msg) {
			t.Errorf("%s: fixture decodes to %#v", g.name, got)
		}
		wantJSON, err := os.ReadFile(jsonPath)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(j, wantJSON) {
			t.Errorf("%s: description differs from %s", g.name, jsonPath)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !seen[e.Name()] && !strings.HasSuffix(e.Name(), ".md") {
			t.Errorf("stray fixture %s", e.Name())
		}
	}
}

// TestGoldenChangesDecode: the change batch in the fixtures decodes to the
// changes it was made from (the TypeScript client checks the same).
func TestGoldenChangesDecode(t *testing.T) {
	want := goldenChanges()
	got, err := codec.DecodeChanges(codec.EncodeChanges(want))
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("%v\n%+v", err, got)
	}
}
