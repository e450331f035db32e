package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// MaxValueDepth bounds the nesting of arrays and maps in a register value.
const MaxValueDepth = 32

var errTruncated = errors.New("truncated")

// CheckMsgpack reports whether b holds exactly one well-formed msgpack value
// (nesting at most MaxValueDepth). Every length is checked against the bytes
// that remain, so hostile input cannot make it allocate or loop long.
func CheckMsgpack(b []byte) error {
	if len(b) == 0 {
		return errors.New("empty msgpack value")
	}
	n, err := skipMsgpack(b, 0)
	if err != nil {
		return fmt.Errorf("bad msgpack value: %w", err)
	}
	if n != len(b) {
		return fmt.Errorf("bad msgpack value: %d trailing bytes", len(b)-n)
	}
	return nil
}

// skipMsgpack returns the length of the msgpack value at the start of b.
func skipMsgpack(b []byte, depth int) (int, error) {
	if depth > MaxValueDepth {
		return 0, fmt.Errorf("nested deeper than %d", MaxValueDepth)
	}
	if len(b) == 0 {
		return 0, errTruncated
	}
	c := b[0]
	need := func(n uint64, at int) (int, error) {
		if n > uint64(len(b)-at) {
			return 0, errTruncated
		}
		return at + int(n), nil
	}
	uint := func(size int) (uint64, error) {
		if len(b) < 1+size {
			return 0, errTruncated
		}
		switch size {
		case 1:
			return uint64(b[1]), nil
		case 2:
			return uint64(binary.BigEndian.Uint16(b[1:])), nil
		case 4:
			return uint64(binary.BigEndian.Uint32(b[1:])), nil
		}
		return binary.BigEndian.Uint64(b[1:]), nil
	}
	elems := func(count uint64, at int) (int, error) {
		// Each element takes at least one byte.
		if count > uint64(len(b)-at) {
			return 0, errTruncated
		}
		for ; count > 0; count-- {
			n, err := skipMsgpack(b[at:], depth+1)
			if err != nil {
				return 0, err
			}
			at += n
		}
		return at, nil
	}
	switch {
	case c <= 0x7f || c >= 0xe0: // fixint
		return 1, nil
	case c >= 0x80 && c <= 0x8f: // fixmap
		return elems(uint64(c&0x0f)*2, 1)
	case c >= 0x90 && c <= 0x9f: // fixarray
		return elems(uint64(c&0x0f), 1)
	case c >= 0xa0 && c <= 0xbf: // fixstr
		return need(uint64(c&0x1f), 1)
	}
	switch c {
	case 0xc0, 0xc2, 0xc3: // nil, false, true
		return 1, nil
	case 0xc4, 0xd9: // bin8, str8
		n, err := uint(1)
		if err != nil {
			return 0, err
		}
		return need(n, 2)
	case 0xc5, 0xda: // bin16, str16
		n, err := uint(2)
		if err != nil {
			return 0, err
		}
		return need(n, 3)
	case 0xc6, 0xdb: // bin32, str32
		n, err := uint(4)
		if err != nil {
			return 0, err
		}
		return need(n, 5)
	case 0xc7, 0xc8, 0xc9: // ext8/16/32
		size := map[byte]int{0xc7: 1, 0xc8: 2, 0xc9: 4}[c]
		n, err := uint(size)
		if err != nil {
			return 0, err
		}
		return need(n+1, 1+size)
	case 0xca, 0xcb: // float32/64
		return need(map[byte]uint64{0xca: 4, 0xcb: 8}[c], 1)
	case 0xcc, 0xd0:
		return need(1, 1)
	case 0xcd, 0xd1:
		return need(2, 1)
	case 0xce, 0xd2:
		return need(4, 1)
	case 0xcf, 0xd3:
		return need(8, 1)
	case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1..16
		return need(1+map[byte]uint64{0xd4: 1, 0xd5: 2, 0xd6: 4, 0xd7: 8, 0xd8: 16}[c], 1)
	case 0xdc: // array16
		n, err := uint(2)
		if err != nil {
			return 0, err
		}
		return elems(n, 3)
	case 0xdd: // array32
		n, err := uint(4)
		if err != nil {
			return 0, err
		}
		return elems(n, 5)
	case 0xde: // map16
		n, err := uint(2)
		if err != nil {
			return 0, err
		}
		return elems(n*2, 3)
	case 0xdf: // map32
		n, err := uint(4)
		if err != nil {
			return 0, err
		}
		return elems(n*2, 5)
	}
	return 0, fmt.Errorf("reserved byte 0x%02x", c)
}
