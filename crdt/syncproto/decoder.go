package syncproto

import (
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// Decoder decodes the frames of one connection, as Decode does, keeping
// what it can from one frame to the next: receiving a changes message, what
// a client mostly receives (one per change its room makes), allocates
// nothing. The zero value is ready. A Decoder is not safe for concurrent
// use: it belongs to the connection's reader.
//
// HAZARD: a *Changes that Decode returns is the Decoder's own and its
// Changes field aliases the frame: both are valid only until the next call
// to Decode and until the frame's bytes are reused. Copy what must outlive
// that (codec.DecodeChanges does not alias its input). Every other message
// is as the package's Decode returns it.
type Decoder struct {
	changes Changes
	// ids interns document ids, so that a frame does not allocate its
	// document id again: a connection serves a few documents at a time.
	// last is the id of the last changes frame (one comparison instead
	// of a lookup when a connection serves one document).
	ids  map[string]string
	last string
}

// maxInterned bounds the document ids a Decoder keeps; past it, it starts
// over (a connection with that many documents open pays an allocation now
// and then).
const maxInterned = 64

// Decode parses one frame: the same checks, the same messages and errors
// as the package's Decode, except that a changes message may be the
// Decoder's own and alias data (see the type's HAZARD).
func (dc *Decoder) Decode(data []byte) (Message, error) {
	if doc, payload, ok := changesFrame(data); ok {
		dc.changes = Changes{Doc: dc.intern(doc), Changes: payload}
		return &dc.changes, nil
	}
	return Decode(data)
}

// intern returns b as a string, allocated once per document id.
func (dc *Decoder) intern(b []byte) string {
	if string(b) == dc.last {
		return dc.last
	}
	if s, ok := dc.ids[string(b)]; ok {
		dc.last = s
		return s
	}
	if dc.ids == nil || len(dc.ids) >= maxInterned {
		dc.ids = make(map[string]string, 4)
	}
	s := string(b)
	dc.ids[s] = s
	dc.last = s
	return s
}

// changesFrame recognises a changes frame of the shape Encode writes for
// a payload under 4 GiB and a document id under 256 bytes: an array of 3,
// the tag as a positive fixint, the document id as a fixstr or str8, the
// payload as a bin8, bin16 or bin32, and nothing after it. It applies the
// checks Decode applies to those fields (the id is valid UTF-8, not empty,
// at most MaxDocIDLen bytes; the payload lies within the frame), and
// returns the id and the payload, or ok false for any frame it does not
// accept, which Decode then parses (and accepts or refuses) in full.
func changesFrame(data []byte) (doc, payload []byte, ok bool) {
	// The header: fixarray(3), tag.
	if len(data) < 4 || data[0] != 0x93 || data[1] != byte(TypeChanges) {
		return nil, nil, false
	}
	i := 2
	var n int
	switch c := data[i]; {
	case c >= 0xa0 && c <= 0xbf: // fixstr
		n, i = int(c&0x1f), i+1
	case c == msgpcode.Str8:
		if len(data) < i+2 {
			return nil, nil, false
		}
		n, i = int(data[i+1]), i+2
	default:
		return nil, nil, false
	}
	if n == 0 || n > MaxDocIDLen || len(data)-i < n {
		return nil, nil, false
	}
	doc, i = data[i:i+n:i+n], i+n
	if !utf8.Valid(doc) {
		return nil, nil, false
	}
	if len(data)-i < 2 {
		return nil, nil, false
	}
	switch c := data[i]; c {
	case msgpcode.Bin8:
		n, i = int(data[i+1]), i+2
	case msgpcode.Bin16:
		if len(data)-i < 3 {
			return nil, nil, false
		}
		n, i = int(data[i+1])<<8|int(data[i+2]), i+3
	case msgpcode.Bin32:
		if len(data)-i < 5 {
			return nil, nil, false
		}
		n, i = int(data[i+1])<<24|int(data[i+2])<<16|int(data[i+3])<<8|int(data[i+4]), i+5
	default:
		return nil, nil, false
	}
	// Exactly the payload is left: no trailing bytes (an array of 3 has no
	// extra fields to skip).
	if len(data)-i != n {
		return nil, nil, false
	}
	if n == 0 {
		return doc, nil, true // as Decode: an empty bin is nil
	}
	return doc, data[i:len(data):len(data)], true
}
