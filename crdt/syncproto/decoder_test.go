package syncproto

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

// sameAsDecode fails unless dc.Decode(data) returns what Decode(data)
// returns: an equal message, or an error with the same text.
func sameAsDecode(t *testing.T, dc *Decoder, data []byte) {
	t.Helper()
	want, werr := Decode(data)
	got, gerr := dc.Decode(data)
	switch {
	case werr != nil || gerr != nil:
		if werr == nil || gerr == nil || werr.Error() != gerr.Error() {
			t.Fatalf("frame %x: Decoder says %v, Decode says %v", data, gerr, werr)
		}
	case !reflect.DeepEqual(got, want):
		t.Fatalf("frame %x: Decoder gives %#v, Decode %#v", data, got, want)
	}
}

// changesFrameBytes writes a changes frame by hand, with the encodings of
// the document id and the payload given, and extra bytes after it.
func changesFrameBytes(arrayCode, strCode byte, doc string, binCode byte, payload []byte, extra ...byte) []byte {
	b := []byte{arrayCode, byte(TypeChanges)}
	switch strCode {
	case 0xa0:
		b = append(b, 0xa0|byte(len(doc)))
	case 0xd9:
		b = append(b, 0xd9, byte(len(doc)))
	case 0xda:
		b = append(b, 0xda, byte(len(doc)>>8), byte(len(doc)))
	}
	b = append(b, doc...)
	n := len(payload)
	switch binCode {
	case 0xc4:
		b = append(b, 0xc4, byte(n))
	case 0xc5:
		b = append(b, 0xc5, byte(n>>8), byte(n))
	case 0xc6:
		b = append(b, 0xc6, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	b = append(b, payload...)
	return append(b, extra...)
}

// The Decoder's shortcut for changes frames accepts and refuses exactly
// what Decode does, with the same messages and errors; the frames it
// does not take are left to Decode.
func TestDecoderMatchesDecode(t *testing.T) {
	var dc Decoder
	payload := []byte{1, 2, 3, 4, 5}
	long := strings.Repeat("d", 40)
	frames := map[string][]byte{
		"fixstr bin8":               changesFrameBytes(0x93, 0xa0, "notes/42", 0xc4, payload),
		"str8 bin16":                changesFrameBytes(0x93, 0xd9, long, 0xc5, payload),
		"str8 short id":             changesFrameBytes(0x93, 0xd9, "n", 0xc4, payload),
		"str16 id":                  changesFrameBytes(0x93, 0xda, "notes/42", 0xc4, payload),
		"bin32":                     changesFrameBytes(0x93, 0xa0, "notes/42", 0xc6, payload),
		"empty payload":             changesFrameBytes(0x93, 0xa0, "notes/42", 0xc4, nil),
		"empty id":                  changesFrameBytes(0x93, 0xa0, "", 0xc4, payload),
		"id not UTF-8":              changesFrameBytes(0x93, 0xa0, "a\xffb", 0xc4, payload),
		"id too long":               changesFrameBytes(0x93, 0xda, strings.Repeat("x", MaxDocIDLen+1), 0xc4, payload),
		"id of MaxDocIDLen":         changesFrameBytes(0x93, 0xda, strings.Repeat("x", MaxDocIDLen), 0xc4, payload),
		"trailing byte":             changesFrameBytes(0x93, 0xa0, "notes/42", 0xc4, payload, 0xc0),
		"extra field":               changesFrameBytes(0x94, 0xa0, "notes/42", 0xc4, payload, 0xc0),
		"payload as str":            append([]byte{0x93, byte(TypeChanges), 0xa1, 'n', 0xa2}, 'x', 'y'),
		"two fields":                {0x92, byte(TypeChanges), 0xa1, 'n'},
		"tag only":                  {0x91, byte(TypeChanges)},
		"truncated str8":            {0x93, byte(TypeChanges), 0xd9},
		"truncated id":              {0x93, byte(TypeChanges), 0xa5, 'n', 'o'},
		"truncated bin8 header":     {0x93, byte(TypeChanges), 0xa1, 'n', 0xc4},
		"truncated bin16 header":    {0x93, byte(TypeChanges), 0xa1, 'n', 0xc5, 0},
		"truncated bin32 header":    {0x93, byte(TypeChanges), 0xa1, 'n', 0xc6, 0, 0, 0},
		"bin longer than the frame": {0x93, byte(TypeChanges), 0xa1, 'n', 0xc4, 9, 1, 2},
		"bin32 of 4 GiB":            {0x93, byte(TypeChanges), 0xa1, 'n', 0xc6, 0xff, 0xff, 0xff, 0xff, 1},
		"tag as uint8":              {0x93, 0xcc, byte(TypeChanges), 0xa1, 'n', 0xc4, 1, 7},
		"another message of 3":      {0x93, byte(TypeSync), 0xa1, 'n', 0xc4, 1, 7},
		"unknown tag":               {0x93, 0x7f, 0xa1, 'n', 0xc4, 1, 7},
		"empty":                     {},
		"id is a number":            {0x93, byte(TypeChanges), 0x01, 0xc4, 1, 7},
	}
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			t.Fatal(err)
		}
		frames["sample "+m.Type().String()] = b
	}
	for name, data := range frames {
		t.Run(name, func(t *testing.T) { sameAsDecode(t, &dc, data) })
	}
	// Every truncation of a good frame, too.
	good := frames["str8 bin16"]
	for i := range good {
		sameAsDecode(t, &dc, good[:i])
	}
}

// What the Decoder returns for a changes frame is its own and aliases the
// frame; the document id is kept, not the frame's bytes.
func TestDecoderChangesAliasFrame(t *testing.T) {
	var dc Decoder
	frame, err := Encode(&Changes{Doc: "notes/42", Changes: []byte{1, 2, 3}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := dc.Decode(frame)
	if err != nil {
		t.Fatal(err)
	}
	c, ok := m.(*Changes)
	if !ok {
		t.Fatalf("decoded a %T", m)
	}
	if &c.Changes[0] != &frame[len(frame)-3] {
		t.Fatal("the payload was copied, not aliased")
	}
	// The id survives the frame's bytes being reused.
	for i := range frame {
		frame[i] = 0
	}
	if c.Doc != "notes/42" {
		t.Fatalf("document id %q after the frame was overwritten", c.Doc)
	}
	// A frame of another type is Decode's: nothing aliases it.
	sub, err := Encode(&Sync{Doc: "notes/42", Changes: []byte{4, 5}})
	if err != nil {
		t.Fatal(err)
	}
	m, err = dc.Decode(sub)
	if err != nil {
		t.Fatal(err)
	}
	s := m.(*Sync)
	clear(sub)
	if !bytes.Equal(s.Changes, []byte{4, 5}) {
		t.Fatalf("sync changes %v after the frame was overwritten", s.Changes)
	}
}

func TestDecoderInternsDocumentIDs(t *testing.T) {
	var dc Decoder
	frame, err := Encode(&Changes{Doc: "notes/42", Changes: []byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dc.Decode(frame); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() {
		if _, err := dc.Decode(frame); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("decoding a changes frame of a known document allocates %v times", n)
	}
	// More documents than it keeps: it starts over, and stays right.
	for i := range 3 * maxInterned {
		id := "doc/" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26))
		f, err := Encode(&Changes{Doc: id, Changes: []byte{1}})
		if err != nil {
			t.Fatal(err)
		}
		m, err := dc.Decode(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := DocOf(m); got != id {
			t.Fatalf("document %q decoded as %q", id, got)
		}
	}
	if len(dc.ids) > maxInterned {
		t.Fatalf("%d ids interned, at most %d", len(dc.ids), maxInterned)
	}
}

// FuzzDecoder: a Decoder accepts and refuses exactly what Decode does.
func FuzzDecoder(f *testing.F) {
	for _, m := range sampleMessages() {
		b, err := Encode(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(changesFrameBytes(0x93, 0xd9, "notes/42", 0xc6, []byte{1, 2}))
	var dc Decoder
	f.Fuzz(func(t *testing.T, data []byte) {
		sameAsDecode(t, &dc, data)
	})
}
