package codec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/klauspost/compress/zstd"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/hlc"
)

// Snapshot format. A snapshot is a msgpack array of four elements:
//
//	["weft.snapshot", 2 (format version), rawLen (uint), body (bin)]
//
// body is the zstd compression of rawLen bytes: a header (the replica
// table, the fields, and how many spans, time runs and items follow) and
// then one column per kind of value — span kinds, span lengths, origins,
// delete targets, times, the content, item ids — each a varint stream
// prefixed by its byte length (see docs/PROTOCOL.md, "Snapshot"). Columns
// keep like values together, which is what makes them compress: typing
// makes most deltas 0 or 1. Loading rebuilds the text structure from the
// item columns directly; nothing is replayed.

const snapshotMagic = "weft.snapshot"

const snapshotVersion = 3

// One zstd encoder and decoder for the package: both are safe for
// concurrent EncodeAll/DecodeAll, and with concurrency 1 they run in the
// caller's goroutine. The decoder's memory cap bounds what a hostile frame
// can make it allocate.
//
// The level is SpeedBetterCompression: on the automerge-paper snapshot
// (335 KB raw) it takes 3.6 ms and 131.8 KB where SpeedBestCompression took
// 20.6 ms for 126.2 KB (5 December). A server encodes a snapshot every time
// a document's log outgrows the last one, so under steady editing the
// best level was about a tenth of a cluster peer's CPU (pprof of
// `weft bench cluster`) for 4% fewer bytes.
var (
	zstdEncoder, _ = zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	zstdDecoder, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxSnapshotRaw))
)

// MaxSnapshotRaw bounds the uncompressed body of a snapshot.
const MaxSnapshotRaw = 1 << 30

// ErrSnapshot is wrapped by every snapshot decoding error.
var ErrSnapshot = errors.New("codec: bad snapshot")

// The columns of a snapshot body, in order.
const (
	snapColSpanKind  = iota // kind | back<<3
	snapColSpanN            // ops in the span
	snapColSpanField        // field index
	snapColSpanBytes        // inserts: bytes - runes; registers: bytes
	snapColOrigin           // insert origins: 0 none, else 1+replica (left, then right)
	snapColOriginSeq        // origin seq - span seq (zigzag)
	snapColDelTarget        // delete target replica
	snapColDelSeq           // delete target seq - span seq (zigzag)
	snapColDelta            // counter delta (zigzag)
	snapColTimeN            // n<<1 | stepped
	snapColTimeT            // time - previous run's time (zigzag)
	snapColContent          // raw bytes
	snapColItemRep          // replica<<1 | deleted
	snapColItemSeq          // seq - previous item's end (zigzag)
	snapColItemN            // runes
	snapNumCols
)

// EncodeSnapshot encodes the whole document, history included.
func EncodeSnapshot(d *crdt.Doc) []byte {
	return EncodeState(d.ExportState())
}

// EncodeState encodes a crdt.State as a snapshot. The output is
// deterministic.
func EncodeState(s *crdt.State) []byte {
	raw := rawBody(s)
	z := zstdEncoder.EncodeAll(raw, make([]byte, 0, len(raw)/3))
	out, err := msgpack.Marshal([]any{snapshotMagic, snapshotVersion, uint64(len(raw)), z})
	if err != nil {
		panic("codec: encoding snapshot envelope: " + err.Error())
	}
	return out
}

// rawBody lays out the header and the columns, uncompressed.
func rawBody(s *crdt.State) []byte {
	var h snapWriter
	var c [snapNumCols]snapWriter
	h.uint(uint64(len(s.Replicas)))
	for _, r := range s.Replicas {
		h.b = append(h.b, r[:]...)
	}
	h.uint(uint64(len(s.Fields)))
	for _, f := range s.Fields {
		h.uint(uint64(f.Type))
		h.str(f.Name)
	}
	for _, lg := range s.Logs {
		h.uint(uint64(len(lg.Spans)))
		h.uint(uint64(len(lg.Times)))
		seq := int64(1)
		for _, sp := range lg.Spans {
			flags := uint64(sp.Kind)
			if sp.Back {
				flags |= 8
			}
			c[snapColSpanKind].uint(flags)
			c[snapColSpanN].uint(uint64(sp.N))
			c[snapColSpanField].uint(uint64(sp.Field))
			switch sp.Kind {
			case crdt.OpTextInsert:
				c[snapColSpanBytes].uint(uint64(sp.Bytes) - uint64(sp.N))
				for _, o := range [2]crdt.StateRef{sp.A, sp.B} {
					if o.Seq == 0 {
						c[snapColOrigin].uint(0)
						continue
					}
					c[snapColOrigin].uint(1 + uint64(o.R))
					c[snapColOriginSeq].int(int64(o.Seq) - seq)
				}
			case crdt.OpTextDelete:
				c[snapColDelTarget].uint(uint64(sp.A.R))
				c[snapColDelSeq].int(int64(sp.A.Seq) - seq)
			case crdt.OpCounterAdd:
				c[snapColDelta].int(sp.Delta)
			case crdt.OpRegisterSet:
				c[snapColSpanBytes].uint(uint64(sp.Bytes))
			}
			seq += int64(sp.N)
		}
		var prev hlc.Timestamp
		for _, tr := range lg.Times {
			st := uint64(0)
			if tr.Stepped {
				st = 1
			}
			c[snapColTimeN].uint(uint64(tr.N)<<1 | st)
			c[snapColTimeT].int(int64(tr.T - prev))
			prev = tr.T
		}
	}
	c[snapColContent].b = s.Content
	for _, items := range s.Texts {
		h.uint(uint64(len(items)))
		var prev int64
		for _, it := range items {
			del := uint64(0)
			if it.Deleted {
				del = 1
			}
			c[snapColItemRep].uint(uint64(it.R)<<1 | del)
			c[snapColItemSeq].int(int64(it.Seq) - prev)
			c[snapColItemN].uint(uint64(it.N))
			prev = int64(it.Seq) + int64(it.N)
		}
	}
	raw := make([]byte, 0, len(h.b)+len(s.Content)+16*snapNumCols)
	raw = binary.AppendUvarint(raw, uint64(len(h.b)))
	raw = append(raw, h.b...)
	for i := range c {
		raw = binary.AppendUvarint(raw, uint64(len(c[i].b)))
		raw = append(raw, c[i].b...)
	}
	return raw
}

// DecodeSnapshot loads a snapshot as replica with clock. Every length is
// checked before use; a bad snapshot gives an error wrapping ErrSnapshot.
func DecodeSnapshot(data []byte, replica crdt.ReplicaID, clock *hlc.Clock, opts crdt.Options) (*crdt.Doc, error) {
	s, err := DecodeState(data)
	if err != nil {
		return nil, err
	}
	d, err := crdt.FromState(s, replica, clock, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshot, err)
	}
	return d, nil
}

// zstdFrameEnd returns the length of the zstd frame (RFC 8878) z starts
// with, read from its header and block headers without decoding it.
func zstdFrameEnd(z []byte) (int, error) {
	if len(z) < 5 || binary.LittleEndian.Uint32(z) != 0xfd2fb528 {
		return 0, errors.New("body is not a zstd frame")
	}
	fhd := z[4]
	if fhd&8 != 0 {
		return 0, errors.New("reserved bit set")
	}
	single := int(fhd>>5) & 1
	sizeBytes := [4]int{single, 2, 4, 8}[fhd>>6]
	p := 5 + (1 - single) + [4]int{0, 1, 2, 4}[fhd&3] + sizeBytes
	for {
		if p+3 > len(z) {
			return 0, errors.New("frame truncated")
		}
		bh := int(z[p]) | int(z[p+1])<<8 | int(z[p+2])<<16
		p += 3
		switch bh >> 1 & 3 {
		case 1: // RLE: one byte, repeated
			p++
		case 3:
			return 0, errors.New("reserved block type")
		default:
			p += bh >> 3
		}
		if bh&1 != 0 {
			break
		}
	}
	if fhd&4 != 0 {
		p += 4 // content checksum
	}
	if p > len(z) {
		return 0, errors.New("frame truncated")
	}
	return p, nil
}

// zstdWindow returns the window size a zstd frame's header declares, or 0
// for a single-segment frame (whose window is its content size); z is a
// frame zstdFrameEnd accepted.
func zstdWindow(z []byte) uint64 {
	if z[4]>>5&1 != 0 {
		return 0
	}
	wd := z[5]
	base := uint64(1) << (10 + wd>>3)
	return base + base/8*uint64(wd&7)
}

// DecodeState decodes a snapshot into a crdt.State without building a Doc.
func DecodeState(data []byte) (*crdt.State, error) {
	bad := func(format string, args ...any) (*crdt.State, error) {
		return nil, fmt.Errorf("%w: %s", ErrSnapshot, fmt.Sprintf(format, args...))
	}
	br := bytes.NewReader(data)
	dec := msgpack.NewDecoder(br)
	n, err := dec.DecodeArrayLen()
	if err != nil || n != 4 {
		return bad("not a snapshot envelope")
	}
	magic, err := dec.DecodeString()
	if err != nil || magic != snapshotMagic {
		return bad("wrong magic")
	}
	ver, err := dec.DecodeUint64()
	if err != nil || ver != snapshotVersion {
		return bad("unsupported version %d", ver)
	}
	rawLen, err := dec.DecodeUint64()
	if err != nil || rawLen > MaxSnapshotRaw {
		return bad("body length %d", rawLen)
	}
	blen, err := dec.DecodeBytesLen()
	if err != nil || blen < 0 {
		return bad("body")
	}
	rest := data[len(data)-br.Len():]
	if len(rest) != blen {
		return bad("body is %d bytes, envelope says %d", len(rest), blen)
	}
	// One frame and nothing after it (docs/PROTOCOL.md, section 9):
	// DecodeAll would also decode further frames and skip skippable ones,
	// where the TypeScript client refuses them.
	if end, err := zstdFrameEnd(rest); err != nil {
		return bad("zstd: %v", err)
	} else if end != len(rest) {
		return bad("body is not exactly one zstd frame (%d of %d bytes)", end, len(rest))
	}
	// A frame that does not declare itself a single segment declares a
	// window, which a decoder allocates whatever the frame holds: at most
	// what the body needs, or 8 MiB (the encoder's), as in the
	// TypeScript client.
	if w := zstdWindow(rest); w > max(rawLen, 8<<20) {
		return bad("zstd window of %d bytes for a %d byte body", w, rawLen)
	}
	// The raw length is only a claim: the decoder refuses frames that
	// declare or produce more, and never allocates more up front than a
	// generous multiple of the compressed size.
	raw, err := zstdDecoder.DecodeAll(rest, make([]byte, 0, min(rawLen, uint64(blen)*16+4096)))
	if err != nil {
		return bad("zstd: %v", err)
	}
	if uint64(len(raw)) != rawLen {
		return bad("body inflates to %d bytes, want %d", len(raw), rawLen)
	}
	body := snapReader{b: raw}
	r := snapReader{b: body.bytes(body.count(1))}
	var c [snapNumCols]snapReader
	for i := range c {
		c[i].b = body.bytes(body.count(1))
	}
	if body.err != nil {
		return nil, body.err
	}
	if len(body.b) != 0 {
		return bad("%d trailing bytes", len(body.b))
	}
	s := &crdt.State{}
	nr := r.count(16)
	for i := 0; i < nr && r.err == nil; i++ {
		var id crdt.ReplicaID
		copy(id[:], r.bytes(16))
		s.Replicas = append(s.Replicas, id)
	}
	nf := r.count(2)
	for i := 0; i < nf && r.err == nil; i++ {
		t := crdt.FieldType(r.uint())
		s.Fields = append(s.Fields, crdt.Field{Type: t, Name: string(r.bytes(r.count(1)))})
	}
	s.Logs = make([]crdt.LogState, len(s.Replicas))
	for i := range s.Logs {
		lg := &s.Logs[i]
		// Each span takes at least one byte of the kind column, each time
		// run one byte of its column: counts are checked against those.
		ns := r.uint()
		nt := r.uint()
		if ns > uint64(len(c[snapColSpanKind].b)) || nt > uint64(len(c[snapColTimeN].b)) {
			return bad("replica %d claims more spans or times than the columns hold", i)
		}
		lg.Spans = make([]crdt.StateSpan, 0, ns)
		seq := int64(1)
		for j := uint64(0); j < ns && r.err == nil; j++ {
			flags := c[snapColSpanKind].uint()
			sp := crdt.StateSpan{Kind: crdt.OpKind(flags & 7), Back: flags&8 != 0}
			sp.N = c[snapColSpanN].u32()
			sp.Field = c[snapColSpanField].u32()
			switch sp.Kind {
			case crdt.OpTextInsert:
				sp.Bytes = uint32(min(uint64(sp.N)+c[snapColSpanBytes].uint(), 1<<32-1))
				for _, o := range [2]*crdt.StateRef{&sp.A, &sp.B} {
					if tag := c[snapColOrigin].uint(); tag != 0 {
						o.R = uint32(min(tag-1, 1<<32-1))
						o.Seq = c[snapColOriginSeq].seq(seq)
					}
				}
			case crdt.OpTextDelete:
				sp.A.R = c[snapColDelTarget].u32()
				sp.A.Seq = c[snapColDelSeq].seq(seq)
			case crdt.OpCounterAdd:
				sp.Delta = c[snapColDelta].int()
			case crdt.OpRegisterSet:
				sp.Bytes = c[snapColSpanBytes].u32()
			default:
				return bad("unknown span kind %d", sp.Kind)
			}
			lg.Spans = append(lg.Spans, sp)
			seq += int64(sp.N)
		}
		lg.Times = make([]crdt.StateTime, 0, nt)
		var prev hlc.Timestamp
		for j := uint64(0); j < nt && r.err == nil; j++ {
			x := c[snapColTimeN].uint()
			prev += hlc.Timestamp(c[snapColTimeT].int())
			lg.Times = append(lg.Times, crdt.StateTime{N: uint32(min(x>>1, 1<<32-1)), Stepped: x&1 != 0, T: prev})
		}
	}
	s.Content = c[snapColContent].b
	s.Texts = make([][]crdt.StateItem, len(s.Fields))
	for i := range s.Texts {
		ni := r.uint()
		if ni > uint64(len(c[snapColItemRep].b)) {
			return bad("field %d claims more items than the columns hold", i)
		}
		if ni > 0 {
			s.Texts[i] = make([]crdt.StateItem, 0, ni)
		}
		var prev int64
		for j := uint64(0); j < ni && r.err == nil; j++ {
			x := c[snapColItemRep].uint()
			it := crdt.StateItem{R: uint32(min(x>>1, 1<<32-1)), Deleted: x&1 != 0}
			it.Seq = c[snapColItemSeq].seq(prev)
			it.N = c[snapColItemN].u32()
			prev = int64(it.Seq) + int64(it.N)
			s.Texts[i] = append(s.Texts[i], it)
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	if len(r.b) != 0 {
		return bad("%d trailing header bytes", len(r.b))
	}
	for i := range c {
		if c[i].err != nil {
			return nil, c[i].err
		}
		if i != snapColContent && len(c[i].b) != 0 {
			return bad("column %d has %d trailing bytes", i, len(c[i].b))
		}
	}
	return s, nil
}

type snapWriter struct{ b []byte }

func (w *snapWriter) uint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *snapWriter) int(v int64)   { w.b = binary.AppendVarint(w.b, v) }
func (w *snapWriter) str(s string) {
	w.uint(uint64(len(s)))
	w.b = append(w.b, s...)
}

type snapReader struct {
	b   []byte
	err error
}

func (r *snapReader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", ErrSnapshot, fmt.Sprintf(format, args...))
	}
	r.b = nil
}

func (r *snapReader) uint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapReader) int() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.fail("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *snapReader) u32() uint32 {
	v := r.uint()
	if v > 1<<32-1 {
		r.fail("value %d out of range", v)
		return 0
	}
	return uint32(v)
}

// count reads a count of elements each taking at least min bytes and checks
// it against what remains.
func (r *snapReader) count(min int) int {
	v := r.uint()
	if r.err == nil && v > uint64(len(r.b)/min) {
		r.fail("count %d exceeds the %d bytes left", v, len(r.b))
		return 0
	}
	return int(v)
}

func (r *snapReader) bytes(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.fail("truncated")
		return nil
	}
	b := r.b[:n]
	r.b = r.b[n:]
	return b
}

// seq reads a zigzag delta from base and checks that the result is a
// 32-bit seq.
func (r *snapReader) seq(base int64) uint32 {
	v := base + r.int()
	if r.err == nil && (v < 0 || v > 1<<32-1) {
		r.fail("seq %d out of range", v)
		return 0
	}
	return uint32(v)
}
