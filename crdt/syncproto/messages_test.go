package syncproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/weftsync/weft/crdt"
)

func rid(b byte) crdt.ReplicaID {
	var r crdt.ReplicaID
	for i := range r {
		r[i] = b + byte(i)
	}
	return r
}

// sampleMessages has one value of every message type, with every optional
// part filled in at least once.
func sampleMessages() []Message {
	state, _ := msgpack.Marshal(map[string]any{"mode": "insert"})
	return []Message{
		&Hello{Version: ProtocolVersion, Token: "eyJhbGciOi.x.y", Replica: rid(1), ClientName: "weft-go/0.1"},
		&Welcome{Version: 1, ServerTime: 123456789 << 16, Session: "s-42", User: "alice",
			Limits: Limits{MaxFrame: 1 << 20, MaxChangesPerSec: 500, MaxPresencePerSec: 20, MaxDocBytes: 16 << 20, MaxPending: 4096, MaxDocs: 100}},
		&Subscribe{Doc: "notes/42", Version: crdt.VersionVector{rid(1): 7, rid(9): 1 << 40}},
		&Subscribe{Doc: "empty", Version: crdt.VersionVector{}},
		&Unsubscribe{Doc: "notes/42"},
		&Sync{Doc: "notes/42", Version: crdt.VersionVector{rid(3): 2}, Changes: []byte{1, 2, 3}},
		&Update{Doc: "notes/42", Batch: 99, Changes: []byte{0xc1, 0, 255}},
		&Ack{Doc: "notes/42", Batch: 99, Status: StatusClockSkew, Message: "too far ahead"},
		&Changes{Doc: "ünïcode/doc", Changes: bytes.Repeat([]byte{7}, 300)},
		&Presence{Doc: "d", Session: "s1", User: "u", Name: "Alice", Color: "#ff0000", Clock: 3, Field: "body",
			Cursor:    &crdt.Anchor{ID: crdt.ID{Replica: rid(1), Seq: 5}, Side: crdt.After},
			Selection: &Selection{Anchor: crdt.Anchor{}, Head: crdt.Anchor{ID: crdt.ID{Replica: rid(1), Seq: 5}}},
			Typing:    true, State: state},
		&Presence{Doc: "d", Clock: 1},
		&PresenceLeave{Doc: "d", Session: "s1"},
		&Ping{Nonce: 1<<64 - 1},
		&Pong{Nonce: 0},
		&Error{Status: StatusUnauthorized, Message: "token does not cover doc", Doc: "secret"},
		&Error{Status: StatusInvalid, Message: "bad frame"},
		&Owners{Doc: "notes/42", Owners: []Owner{{Replica: rid(1), Principal: "alice"}, {Replica: rid(9), Principal: strings.Repeat("p", MaxNameLen)}}},
	}
}

func TestRoundTrip(t *testing.T) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			t.Fatalf("Encode(%#v): %v", m, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("Decode(Encode(%s)): %v\n% x", m.Type(), err, b)
		}
		// An empty vector decodes as an empty non-nil map, an empty bin as nil.
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip of %s:\n got %#v\nwant %#v", m.Type(), got, m)
		}
		b2, err := Encode(got)
		if err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("re-encoding %s is not deterministic: %v\n% x\n% x", m.Type(), err, b, b2)
		}
	}
}

func TestDecodeDoesNotAlias(t *testing.T) {
	b, err := Encode(&Update{Doc: "d", Batch: 1, Changes: []byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 0
	}
	if got := m.(*Update).Changes; !bytes.Equal(got, []byte{1, 2, 3}) {
		t.Fatalf("decoded changes alias the frame: %v", got)
	}
}

func TestExtraFieldsSkipped(t *testing.T) {
	// A newer peer appends fields; this version must skip them.
	var buf bytes.Buffer
	e := msgpack.NewEncoder(&buf)
	_ = e.EncodeArrayLen(4)
	_ = e.EncodeUint(uint64(TypePing))
	_ = e.EncodeUint(5)
	_ = e.Encode(map[string]any{"future": []any{1, "x", []byte{1}}})
	_ = e.EncodeString("more")
	m, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.(*Ping); !ok || p.Nonce != 5 {
		t.Fatalf("got %#v", m)
	}
}

func TestUnknownType(t *testing.T) {
	for _, tag := range []uint64{0, 19, 200, 1 << 20} {
		b, _ := msgpack.Marshal([]any{tag, "x"})
		_, err := Decode(b)
		if !errors.Is(err, ErrUnknownMessage) || errors.Is(err, ErrMalformed) {
			t.Fatalf("tag %d: got %v, want ErrUnknownMessage", tag, err)
		}
		var ute *UnknownTypeError
		if !errors.As(err, &ute) || ute.Tag != tag {
			t.Fatalf("tag %d: got %v", tag, err)
		}
	}
}

func TestDecodeMalformed(t *testing.T) {
	enc := func(v ...any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	deep := bytes.Repeat([]byte{0x91}, 100000) // nested arrays
	ping := enc(uint64(TypePing), 1)
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"not array", []byte{0x05}, "expected array"},
		{"empty array", []byte{0x90}, "empty array"},
		{"negative tag", []byte{0x91, 0xff}, "negative"},
		{"string tag", enc("ping"), "expected unsigned integer"},
		{"truncated", ping[:len(ping)-1], "truncated"},
		{"trailing", append(append([]byte{}, ping...), 0), "trailing"},
		{"array32 bomb", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0x0b}, "only"},
		{"too few fields", enc(uint64(TypeAck), "d"), "want at least 4"},
		{"str32 bomb", []byte{0x92, 0x04, 0xdb, 0x7f, 0xff, 0xff, 0xff, 'a'}, "only 1 bytes left"},
		{"bin32 bomb", append(enc(uint64(TypeUpdate), "d", 1)[:0:0], 0x94, 0x06, 0xa1, 'd', 0x01, 0xc6, 0xff, 0xff, 0xff, 0xff), "only 0 bytes left"},
		{"bad utf8", enc(uint64(TypeUnsubscribe), string([]byte{0xff, 0xfe})), "invalid UTF-8"},
		{"empty doc", enc(uint64(TypeUnsubscribe), ""), "empty"},
		{"long doc", enc(uint64(TypeUnsubscribe), strings.Repeat("x", MaxDocIDLen+1)), "exceeds limit"},
		{"nested extra", append([]byte{0x93, 0x0b, 0x01}, deep...), "nesting deeper"},
		{"zero replica", enc(uint64(TypeHello), 1, "", make([]byte, 16), ""), "zero replica"},
		{"short replica", enc(uint64(TypeHello), 1, "", make([]byte, 15), ""), "15 bytes"},
		{"vv unsorted", enc(uint64(TypeSubscribe), "d", []any{[]any{ridb(9), ridb(1)}, []any{1, 2}}), "strictly increasing"},
		{"vv duplicate", enc(uint64(TypeSubscribe), "d", []any{[]any{ridb(1), ridb(1)}, []any{1, 2}}), "strictly increasing"},
		{"vv mismatch", enc(uint64(TypeSubscribe), "d", []any{[]any{ridb(1)}, []any{1, 2}}), "2 seqs for 1 replicas"},
		{"vv zero seq", enc(uint64(TypeSubscribe), "d", []any{[]any{ridb(1)}, []any{0}}), "zero seq"},
		{"vv bomb", append(enc(uint64(TypeSubscribe), "d")[:0:0], 0x93, 0x03, 0xa1, 'd', 0x92, 0xdd, 0x00, 0xff, 0xff, 0xff), "replicas"},
		{"anchor half", enc(uint64(TypePresence), "d", "", "", "", "", 1, "f", []any{nil, 3, 0}, nil, false, nil), "both a replica and a seq"},
		{"anchor side", enc(uint64(TypePresence), "d", "", "", "", "", 1, "f", []any{nil, 0, 2}, nil, false, nil), "exceeds 1"},
		{"typing not bool", enc(uint64(TypePresence), "d", "", "", "", "", 1, "f", nil, nil, 1, nil), "expected bool"},
		{"state too big", enc(uint64(TypePresence), "d", "", "", "", "", 1, "f", nil, nil, false, strings.Repeat("x", MaxPresenceState)), "exceeds limit"},
		{"status overflow", enc(uint64(TypeError), 300, "", ""), "exceeds 255"},
		{"ext bomb", append([]byte{0x93, 0x0b, 0x01}, 0xc9, 0xff, 0xff, 0xff, 0xff, 0x01), "extension"},
		{"peer hello short nonce", enc(uint64(TypePeerHello), "n1", make([]byte, 31), []byte{}), "want 0 or 32"},
		{"peer hello long proof", enc(uint64(TypePeerHello), "n1", []byte{}, make([]byte, 33)), "exceeds"},
		{"peer hello no node", enc(uint64(TypePeerHello), "", []byte{}, []byte{}), "empty"},
		{"digest not power of two", enc(uint64(TypeDigest), 1, make([]byte, 24)), "power of two"},
		{"digest ragged", enc(uint64(TypeDigest), 1, make([]byte, 12)), "power of two"},
		{"digest none", enc(uint64(TypeDigest), 1, []byte{}), "power of two"},
		{"digest docs mismatch", enc(uint64(TypeDigestDocs), 1, 0, []any{"a", "b"}, []any{1}), "1 hashes for 2 docs"},
		{"digest docs bucket", enc(uint64(TypeDigestDocs), 1, MaxDigestBuckets, []any{}, []any{}), "exceeds"},
		{"digest docs empty id", enc(uint64(TypeDigestDocs), 1, 0, []any{""}, []any{1}), "empty"},
		{"owners none", enc(uint64(TypeOwners), "d", []any{}, []any{}), "want 1 to 1024"},
		{"owners too many", enc(uint64(TypeOwners), "d", make([]any, MaxOwnerEntries+1), []any{}), "want 1 to 1024"},
		{"owners bomb", append(enc(uint64(TypeOwners), "d")[:0:0], 0x94, 0x12, 0xa1, 'd', 0xdc, 0x03, 0xff), "only"},
		{"owners unsorted", enc(uint64(TypeOwners), "d", []any{ridb(9), ridb(1)}, []any{"a", "b"}), "strictly increasing"},
		{"owners duplicate", enc(uint64(TypeOwners), "d", []any{ridb(1), ridb(1)}, []any{"a", "b"}), "strictly increasing"},
		{"owners zero replica", enc(uint64(TypeOwners), "d", []any{make([]byte, 16)}, []any{"a"}), "zero replica"},
		{"owners mismatch", enc(uint64(TypeOwners), "d", []any{ridb(1)}, []any{"a", "b"}), "2 principals for 1 replicas"},
		{"owners empty principal", enc(uint64(TypeOwners), "d", []any{ridb(1)}, []any{""}), "empty principal"},
		{"owners long principal", enc(uint64(TypeOwners), "d", []any{ridb(1)}, []any{strings.Repeat("p", MaxNameLen+1)}), "exceeds limit"},
		{"owners no doc", enc(uint64(TypeOwners), "", []any{ridb(1)}, []any{"a"}), "empty"},
	}
	for _, c := range cases {
		m, err := Decode(c.in)
		if err == nil {
			t.Errorf("%s: decoded %#v, want error", c.name, m)
			continue
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v does not wrap ErrMalformed", c.name, err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not mention %q", c.name, err, c.want)
		}
	}
}

// TestPresenceDecodeMatchesEncode: what Decode accepts in a presence,
// Encode accepts too, so a server never accepts a presence it cannot
// relay: a field as long as a field name may be (crdt.MaxFieldName), and
// a state nested as deep as the frame allows counting the frame itself.
func TestPresenceDecodeMatchesEncode(t *testing.T) {
	nest := func(levels int) []byte { // levels nested arrays around 1
		return append(bytes.Repeat([]byte{0x91}, levels), 0x01)
	}
	long := strings.Repeat("f", crdt.MaxFieldName)
	for _, p := range []*Presence{
		{Doc: "d", Clock: 1, Field: long},
		{Doc: "d", Clock: 1, State: nest(MaxDepth - 2)}, // the deepest Encode takes
	} {
		b, err := Encode(p)
		if err != nil {
			t.Fatalf("Encode: %v", err)
		}
		if _, err := Decode(b); err != nil {
			t.Fatalf("Decode(Encode) = %v", err)
		}
	}
	// One level deeper: Encode refuses it, so Decode must.
	deep := &Presence{Doc: "d", Clock: 1, State: nest(MaxDepth - 1)}
	if _, err := Encode(deep); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Encode(one level deeper) = %v, want ErrMalformed", err)
	}
	raw := append(encodeWithoutState(t, &Presence{Doc: "d", Clock: 1}), deep.State...)
	if m, err := Decode(raw); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Decode(one level deeper) = %#v, %v; want ErrMalformed", m, err)
	}
	// A field name longer than any field may be is still malformed.
	if _, err := Encode(&Presence{Doc: "d", Clock: 1, Field: long + "f"}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Encode(field of %d bytes) = %v, want ErrMalformed", len(long)+1, err)
	}
}

// encodeWithoutState encodes p (whose State is nil) without its final nil,
// so a test can append a state Encode would refuse.
func encodeWithoutState(t *testing.T, p *Presence) []byte {
	t.Helper()
	b, err := Encode(p)
	if err != nil {
		t.Fatal(err)
	}
	if b[len(b)-1] != 0xc0 {
		t.Fatalf("presence does not end with a nil state: % x", b)
	}
	return b[:len(b)-1]
}

func TestEncodeValidates(t *testing.T) {
	bad := []Message{
		&Hello{Version: 1},
		&Subscribe{Doc: ""},
		&Subscribe{Doc: "d", Version: crdt.VersionVector{{}: 1}},
		&Presence{Doc: "d", State: []byte{0x92, 0x01}},     // truncated msgpack
		&Presence{Doc: "d", State: []byte{0x01, 0x02}},     // two values
		&Presence{Doc: "d", Cursor: &crdt.Anchor{Side: 7}}, // bad side
		&Ack{Doc: "d", Message: strings.Repeat("m", MaxMessageLen+1)},
		&Owners{Doc: "d"},
		&Owners{Doc: "d", Owners: make([]Owner, MaxOwnerEntries+1)},
		&Owners{Doc: "d", Owners: []Owner{{Replica: rid(2), Principal: "a"}, {Replica: rid(1), Principal: "b"}}},
		&Owners{Doc: "d", Owners: []Owner{{Replica: rid(1), Principal: ""}}},
		&Owners{Doc: "d", Owners: []Owner{{Replica: rid(1), Principal: strings.Repeat("p", MaxNameLen+1)}}},
	}
	for _, m := range bad {
		if b, err := Encode(m); !errors.Is(err, ErrMalformed) {
			t.Errorf("Encode(%#v) = % x, %v; want ErrMalformed", m, b, err)
		}
	}
	// All problems are reported at once.
	_, err := Encode(&Presence{Doc: "", Name: strings.Repeat("n", MaxNameLen+1)})
	if err == nil || !strings.Contains(err.Error(), "doc") || !strings.Contains(err.Error(), "name") {
		t.Fatalf("got %v, want both doc and name reported", err)
	}
}

func TestZeroSeqsDroppedOnEncode(t *testing.T) {
	b, err := Encode(&Subscribe{Doc: "d", Version: crdt.VersionVector{rid(1): 0, rid(2): 3}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if v := m.(*Subscribe).Version; len(v) != 1 || v[rid(2)] != 3 {
		t.Fatalf("got %v", v)
	}
}

func ridb(b byte) []byte { r := rid(b); return r[:] }

// TestSplitOwners: claims come out sorted, one per replica, within the
// entry limit and the byte budget, and every message encodes within it.
func TestSplitOwners(t *testing.T) {
	if got := SplitOwners("d", nil, 1<<20); got != nil {
		t.Fatalf("no claims gave %v", got)
	}
	var claims []Owner
	for i := range 2*MaxOwnerEntries + 10 {
		var r crdt.ReplicaID
		binary.BigEndian.PutUint32(r[12:], uint32(2*MaxOwnerEntries+10-i)) // reverse order
		claims = append(claims, Owner{Replica: r, Principal: fmt.Sprintf("user-%d", i)})
	}
	claims = append(claims, Owner{Replica: claims[0].Replica, Principal: "later"}) // a duplicate: the first wins
	for _, budget := range []int{1 << 20, 4096, 1} {
		msgs := SplitOwners("notes/42", claims, budget)
		seen := map[crdt.ReplicaID]string{}
		var prev crdt.ReplicaID
		for _, m := range msgs {
			if len(m.Owners) == 0 || len(m.Owners) > MaxOwnerEntries {
				t.Fatalf("budget %d: a message of %d claims", budget, len(m.Owners))
			}
			b, err := Encode(m)
			if err != nil {
				t.Fatalf("budget %d: %v", budget, err)
			}
			if len(m.Owners) > 1 && len(b) > budget {
				t.Fatalf("budget %d: a message of %d bytes", budget, len(b))
			}
			for _, o := range m.Owners {
				if prev.Compare(o.Replica) >= 0 {
					t.Fatalf("budget %d: replicas out of order", budget)
				}
				prev = o.Replica
				seen[o.Replica] = o.Principal
			}
		}
		if len(seen) != 2*MaxOwnerEntries+10 || seen[claims[0].Replica] != "user-0" {
			t.Fatalf("budget %d: %d replicas, the duplicate's principal %q", budget, len(seen), seen[claims[0].Replica])
		}
		if budget == 1<<20 && len(msgs) != 3 {
			t.Fatalf("%d claims in %d messages, want 3", len(claims), len(msgs))
		}
	}
}
