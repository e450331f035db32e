package syncserver

import (
	"encoding/base64"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/crdt/syncproto"
	"github.com/weftsync/weft/hlc"
)

// FuzzVersionToken: Last-Event-ID is hostile input. Decoding never panics,
// and whatever decodes re-encodes to the same token.
func FuzzVersionToken(f *testing.F) {
	f.Add(encodeVersionToken(crdt.VersionVector{crdt.ReplicaID(uuid.New()): 7}))
	f.Add("AQ")
	f.Add("")
	f.Add("AQAAAAAAAAAAAAAAAAAAAAAB")
	f.Fuzz(func(t *testing.T, tok string) {
		v, err := decodeVersionToken(tok)
		if err != nil {
			return
		}
		if again := encodeVersionToken(v); again != tok {
			back, err := decodeVersionToken(again)
			if err != nil || !back.Equal(v) {
				t.Fatalf("token %q decodes to %v, which does not round-trip", tok, v)
			}
		}
	})
}

// FuzzResumeToken: any Last-Event-ID (explicit or compact) either is
// refused or parses to a point that, written again, parses to the same
// point. A compact token is what an SSE stream sends once a version has
// more than 64 replicas; it arrives from clients, so it is hostile input.
func FuzzResumeToken(f *testing.F) {
	big := crdt.VersionVector{}
	for i := 0; i < maxExplicitReplicas+1; i++ {
		big[crdt.ReplicaID(uuid.New())] = uint64(i + 1)
	}
	f.Add(versionToken(big, hlc.Timestamp(1<<40)))
	f.Add(versionToken(crdt.VersionVector{crdt.ReplicaID(uuid.New()): 3}, 0))
	f.Add("Ag")                    // compact, nothing after the tag
	f.Add("AoCAgICAgICAgIAB")      // compact, overlong time varint
	f.Add("AgEB" + "AAAAAAAAAAAA") // compact, one byte too many
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := parseResumeToken(tok)
		if err != nil {
			return
		}
		if !p.compact {
			if _, err := decodeVersionToken(encodeVersionToken(p.v)); err != nil {
				t.Fatalf("token %q parses to %v, which does not encode back: %v", tok, p.v, err)
			}
			return
		}
		b := make([]byte, 1, compactTokenMax)
		b[0] = versionTokenCompact
		b = binary.AppendUvarint(b, uint64(p.w))
		b = binary.AppendUvarint(b, p.n)
		b = binary.BigEndian.AppendUint64(b, p.h)
		again, err := parseResumeToken(base64.RawURLEncoding.EncodeToString(b))
		if err != nil || !again.compact || again.w != p.w || again.n != p.n || again.h != p.h {
			t.Fatalf("token %q parses to %+v; written again it parses to %+v, %v", tok, p, again, err)
		}
	})
}

// TestMutatedFramesNeverHurtTheServer sends valid frames with random bytes
// changed (seeded, bounded): every one gets an answer or a close, and a
// well-behaved client is served throughout.
func TestMutatedFramesNeverHurtTheServer(t *testing.T) {
	// The good client reads nothing while the fuzzer runs, so it answers
	// no pings: with LocalOptions' 2 s + 2 s heartbeat, a run slower than
	// 4 s (12 s under -race on a loaded machine) closed it, and its update
	// at the end failed. Heartbeats are tested elsewhere.
	ts := newTestServer(t, func(o *Options) { o.PingInterval, o.PongTimeout = time.Minute, time.Minute })
	tok := ts.token("fuzzer")
	good := ts.dial(ts.token("good"))
	good.subscribe("d")

	src := ts.dial(tok) // only to build valid payloads
	payload := src.edit("d", insert("t", 0, "seed text"))
	cursor := crdt.Anchor{}
	valid := []syncproto.Message{
		&syncproto.Subscribe{Doc: "d", Version: crdt.VersionVector{src.replica: 3}},
		&syncproto.Update{Doc: "d", Batch: 1, Changes: payload},
		&syncproto.Presence{Doc: "d", Clock: 5, Field: "t", Cursor: &cursor, State: []byte{0x81, 0xa1, 'k', 0x01}},
		&syncproto.Sync{Doc: "d", Changes: payload},
		&syncproto.Ping{Nonce: 1},
	}
	frames := make([][]byte, len(valid))
	for i, m := range valid {
		b, err := syncproto.Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		frames[i] = b
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	const rounds = 150
	c := ts.dial(tok)
	c.subscribe("d")
	for i := 0; i < rounds; i++ {
		f := append([]byte(nil), frames[rnd.IntN(len(frames))]...)
		for k := 1 + rnd.IntN(3); k > 0; k-- {
			f[rnd.IntN(len(f))] = byte(rnd.Uint32())
		}
		if rnd.IntN(4) == 0 {
			f = f[:rnd.IntN(len(f))]
		}
		if err := c.c.WriteMessage(2, f); err != nil {
			c = ts.dial(tok)
			c.subscribe("d")
			continue
		}
		// Answered (or closed) before the next one: a ping orders it.
		ping, err := syncproto.Encode(&syncproto.Ping{Nonce: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.c.WriteMessage(2, ping); err != nil {
			c = ts.dial(tok) // closed already
			c.subscribe("d")
			continue
		}
		for {
			m, err := c.tryRecv(waitFor)
			if err != nil {
				c = ts.dial(tok) // closed: protocol error, as it should be
				c.subscribe("d")
				break
			}
			if p, ok := m.(*syncproto.Pong); ok && p.Nonce == uint64(i) {
				break
			}
		}
	}
	if a := good.update("d", insert("t", 0, "still here ")); a.Status != syncproto.StatusOK {
		t.Fatalf("healthy client after the fuzzing: %v", a.Status)
	}
	if _, err := codec.DecodeChanges(payload); err != nil {
		t.Fatal(err)
	}
}

// FuzzAdmitBatch: whatever the bytes, the header checks never panic, and a
// batch they admit is what they promised: as many ops as declared (within
// the burst), no register value over the limit; what would wait for
// dependencies is never more than the batch's decoded size.
func FuzzAdmitBatch(f *testing.F) {
	f.Add(countBomb())
	d := crdt.NewDoc(crdt.ReplicaID(uuid.New()), hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	tx := d.Begin()
	tx.Insert("t", 0, "hello")
	tx.Add("n", 3)
	tx.Set("r", []byte{0xa2, 'o', 'k'})
	tx.Commit()
	f.Add(codec.EncodeChanges(d.ChangesSince(nil)))
	f.Add(codec.EncodeChanges([]crdt.Change{{Replica: crdt.ReplicaID(uuid.New()), Seq: 2, Time: hlc.New(1, 0),
		Ops: []crdt.Op{{Kind: crdt.OpTextInsert, Field: "t", Text: strings.Repeat("z", 8<<10)}}}}))
	f.Add([]byte{0x01})
	s := &Server{opts: DefaultOptions()}
	s.opts.MaxValueBytes = 1 << 10
	m, err := newMetrics(prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	s.m = m
	f.Fuzz(func(t *testing.T, data []byte) {
		ops, st, _ := s.admitBatch(data)
		if st != syncproto.StatusOK {
			return
		}
		changes, err := codec.DecodeChanges(data)
		if err != nil {
			return // Inspect does not validate the changes themselves
		}
		n := 0
		for i := range changes {
			n += len(changes[i].Ops)
		}
		if n != ops || ops > s.opts.ChangesBurst {
			t.Fatalf("admitted %d declared ops, decoded %d (burst %d)", ops, n, s.opts.ChangesBurst)
		}
		size, maxValue := decodedSize(changes)
		if maxValue > s.opts.MaxValueBytes {
			t.Fatalf("admitted a register value of %d bytes (limit %d)", maxValue, s.opts.MaxValueBytes)
		}
		if w := waitingSize(crdt.VersionVector{}, changes); w > size || w < 0 {
			t.Fatalf("waiting %d of a batch of %d", w, size)
		}
	})
}
