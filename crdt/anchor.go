package crdt

import (
	"fmt"
	"unicode/utf8"
)

// AnchorAt returns an anchor for rune position index of text field name.
// Side Before sticks to the character at index (the anchor stays just
// before it); side After sticks to the character at index-1 (just after it). Positions at the ends give the zero
// anchors, which mean start (Before) and end (After).
func (d *Doc) AnchorAt(name string, index int, side Side) (Anchor, error) {
	f := d.field(Field{name, FieldText}, false)
	n := 0
	if f != nil {
		n = f.text.vis
	}
	if index < 0 || index > n {
		return Anchor{}, fmt.Errorf("%w: anchor at %d in text %q of length %d", ErrOutOfRange, index, name, n)
	}
	switch side {
	case Before:
		if index == n {
			return Anchor{Side: After}, nil
		}
		l, i, k := f.text.visAt(index)
		it := &l.items[i]
		return Anchor{ID: ID{d.replicas[it.r], uint64(it.seq + k)}, Side: Before}, nil
	case After:
		if index == 0 {
			return Anchor{Side: Before}, nil
		}
		l, i, k := f.text.visAt(index - 1)
		it := &l.items[i]
		return Anchor{ID: ID{d.replicas[it.r], uint64(it.seq + k)}, Side: After}, nil
	}
	return Anchor{}, fmt.Errorf("%w: bad anchor side %d", ErrOutOfRange, side)
}

// IndexOf returns the current rune position of an anchor in text field
// name. An anchor on a deleted character resolves to where that character
// would be.
func (d *Doc) IndexOf(name string, a Anchor) (int, error) {
	f := d.field(Field{name, FieldText}, false)
	if a.ID.IsZero() {
		if a.Side == After && f != nil {
			return f.text.vis, nil
		}
		return 0, nil
	}
	r, ok := d.refOf(a.ID)
	if f == nil || !ok || a.ID.Seq > maxSeq || f.text.findLeaf(r) == nil {
		return 0, fmt.Errorf("%w: anchor %v is not a character of text %q", ErrOutOfRange, a.ID, name)
	}
	pos, visible := f.text.visIndex(r)
	if visible && a.Side == After {
		pos++
	}
	return pos, nil
}

// UTF16ToRunes converts an offset in UTF-16 code units (what browsers count)
// into a rune offset in s.
func UTF16ToRunes(s string, u16 int) (int, error) {
	if u16 < 0 {
		return 0, fmt.Errorf("%w: negative UTF-16 offset %d", ErrOutOfRange, u16)
	}
	runes, units := 0, 0
	for _, r := range s {
		if units >= u16 {
			break
		}
		w := 1
		if r >= 0x10000 {
			w = 2
		}
		if units+w > u16 {
			return 0, fmt.Errorf("%w: UTF-16 offset %d splits a surrogate pair", ErrOutOfRange, u16)
		}
		units += w
		runes++
	}
	if units < u16 {
		return 0, fmt.Errorf("%w: UTF-16 offset %d past the end (%d units)", ErrOutOfRange, u16, units)
	}
	return runes, nil
}

// RunesToUTF16 converts a rune offset in s into UTF-16 code units.
func RunesToUTF16(s string, runes int) (int, error) {
	if runes < 0 {
		return 0, fmt.Errorf("%w: negative rune offset %d", ErrOutOfRange, runes)
	}
	units := 0
	for i := 0; runes > 0; runes-- {
		if i >= len(s) {
			return 0, fmt.Errorf("%w: rune offset past the end", ErrOutOfRange)
		}
		r, sz := utf8.DecodeRuneInString(s[i:])
		i += sz
		units++
		if r >= 0x10000 {
			units++
		}
	}
	return units, nil
}
