package client

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// A document file keeps one document's local replica on disk so that edits
// made offline survive a restart of the client. Layout:
//
//	file   = magic record*
//	magic  = "WEFTDOC1"                          (8 bytes)
//	record = kind:u8 len:u32le crc:u32le payload:len bytes
//	kind   = 1 (snapshot: codec.EncodeSnapshot) | 2 (changes: codec.EncodeChanges)
//	crc    = CRC-32C of kind and payload
//
// The document is the last snapshot record plus every changes record after
// it. Records are only appended; a torn or corrupt tail (a crash mid-append)
// is cut off at the last good record on open. Compaction writes a new file
// holding one snapshot to a temporary name, syncs it and renames it over the
// old one, so a crash leaves either the old or the new file, never a mix.

const (
	docFileMagic    = "WEFTDOC1"
	recSnapshot     = 1
	recChanges      = 2
	recHeaderLen    = 9
	maxRecordLen    = 1 << 30
	docFileSuffix   = ".weftdoc"
	docFileTmpExtra = ".tmp"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a file whose damage is not a torn tail (a bad magic).
var errCorrupt = errors.New("client: corrupt document file")

type record struct {
	kind    byte
	payload []byte
}

// docFile is one open document file. Not safe for concurrent use: the
// Document's mutex guards it.
type docFile struct {
	path   string
	f      *os.File
	noSync bool
	// size is the length of the valid prefix, where the next record goes.
	size int64
	// logBytes counts the changes records after the last snapshot; it
	// decides when to compact.
	logBytes int64
	snapSize int64
}

// docFileName maps a document id (any string, e.g. "notes/42") to a file
// name that is safe on every file system and reversible.
func docFileName(docID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(docID)) + docFileSuffix
}

// openDocFile opens or creates the file of docID in dir and returns the
// valid records it holds, oldest first, starting at the last snapshot.
func openDocFile(dir, docID string, noSync bool) (*docFile, []record, error) {
	path := filepath.Join(dir, docFileName(docID))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("client: open document file: %w", err)
	}
	df := &docFile{path: path, f: f, noSync: noSync}
	recs, err := df.load()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return df, recs, nil
}

func (df *docFile) load() ([]record, error) {
	data, err := io.ReadAll(df.f)
	if err != nil {
		return nil, fmt.Errorf("client: read %s: %w", df.path, err)
	}
	if len(data) == 0 {
		if _, err := df.f.Write([]byte(docFileMagic)); err != nil {
			return nil, fmt.Errorf("client: write %s: %w", df.path, err)
		}
		df.size = int64(len(docFileMagic))
		return nil, df.sync()
	}
	if len(data) < len(docFileMagic) || string(data[:len(docFileMagic)]) != docFileMagic {
		return nil, fmt.Errorf("%w: %s does not start with %q", errCorrupt, df.path, docFileMagic)
	}
	var recs []record
	off := len(docFileMagic)
	for {
		rest := data[off:]
		if len(rest) < recHeaderLen {
			break
		}
		kind := rest[0]
		n := binary.LittleEndian.Uint32(rest[1:5])
		sum := binary.LittleEndian.Uint32(rest[5:9])
		if (kind != recSnapshot && kind != recChanges) || n > maxRecordLen || uint64(n) > uint64(len(rest)-recHeaderLen) {
			break
		}
		payload := rest[recHeaderLen : recHeaderLen+int(n)]
		if checksum(kind, payload) != sum {
			break
		}
		if kind == recSnapshot {
			recs = recs[:0]
			df.logBytes, df.snapSize = 0, int64(n)
		} else {
			df.logBytes += int64(n)
		}
		recs = append(recs, record{kind: kind, payload: payload})
		off += recHeaderLen + int(n)
	}
	df.size = int64(off)
	if off < len(data) {
		// A torn or damaged tail: drop it so later appends follow good data.
		if err := df.f.Truncate(df.size); err != nil {
			return nil, fmt.Errorf("client: truncate torn tail of %s: %w", df.path, err)
		}
	}
	if _, err := df.f.Seek(df.size, io.SeekStart); err != nil {
		return nil, fmt.Errorf("client: seek %s: %w", df.path, err)
	}
	return recs, nil
}

func checksum(kind byte, payload []byte) uint32 {
	c := crc32.Update(0, crcTable, []byte{kind})
	return crc32.Update(c, crcTable, payload)
}

func encodeRecord(kind byte, payload []byte) []byte {
	buf := make([]byte, recHeaderLen+len(payload))
	buf[0] = kind
	binary.LittleEndian.PutUint32(buf[1:5], uint32(len(payload)))
	binary.LittleEndian.PutUint32(buf[5:9], checksum(kind, payload))
	copy(buf[recHeaderLen:], payload)
	return buf
}

// append writes one record and (unless noSync) syncs it. On error the file
// is cut back to its previous valid length so a retry does not follow a
// half-written record.
func (df *docFile) append(kind byte, payload []byte) error {
	if len(payload) > maxRecordLen {
		return fmt.Errorf("client: record of %d bytes exceeds %d", len(payload), maxRecordLen)
	}
	buf := encodeRecord(kind, payload)
	if _, err := df.f.Write(buf); err != nil {
		df.f.Truncate(df.size) //nolint:errcheck // best effort; the write error is what matters
		df.f.Seek(df.size, io.SeekStart)
		return fmt.Errorf("client: append to %s: %w", df.path, err)
	}
	if err := df.sync(); err != nil {
		return err
	}
	df.size += int64(len(buf))
	if kind == recChanges {
		df.logBytes += int64(len(payload))
	}
	return nil
}

// needsCompaction reports whether the change log has outgrown the snapshot
// enough that rewriting the file is cheaper than replaying it.
func (df *docFile) needsCompaction() bool {
	return df.logBytes > 64<<10 && df.logBytes > 2*df.snapSize
}

// rewrite replaces the file by one holding only snapshot.
func (df *docFile) rewrite(snapshot []byte) error {
	tmp := df.path + docFileTmpExtra
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("client: compact %s: %w", df.path, err)
	}
	data := append([]byte(docFileMagic), encodeRecord(recSnapshot, snapshot)...)
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("client: compact %s: %w", df.path, err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if !df.noSync {
		if err := f.Sync(); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, df.path); err != nil {
		return fail(err)
	}
	if !df.noSync {
		syncDir(filepath.Dir(df.path))
	}
	df.f.Close()
	df.f = f
	df.size = int64(len(data))
	df.logBytes, df.snapSize = 0, int64(len(snapshot))
	return nil
}

func (df *docFile) sync() error {
	if df.noSync {
		return nil
	}
	if err := df.f.Sync(); err != nil {
		return fmt.Errorf("client: sync %s: %w", df.path, err)
	}
	return nil
}

func (df *docFile) close() error { return df.f.Close() }

// syncDir makes a rename durable. Errors are ignored: some file systems do
// not support syncing directories, and the rename itself already succeeded.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// isTempDocFile reports leftovers of an interrupted compaction.
func isTempDocFile(name string) bool {
	return strings.HasSuffix(name, docFileSuffix+docFileTmpExtra)
}
