package storage

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/google/uuid"

	"github.com/weftsync/weft/crdt"
)

// TestVersionsRecordedWithWrites: the version passed with a write is
// what Versions reports (the maximum over a snapshot and the batches
// since), across a snapshot and a reopen; plain Appends leave the
// recorded version alone; a corrupt record is an error.
func TestVersionsRecordedWithWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := openT(t, dir, DefaultOptions())
	r1, r2 := crdt.ReplicaID(uuid.New()), crdt.ReplicaID(uuid.New())
	if _, err := s.AppendVersion(ctx, "a", []byte{1}, crdt.VersionVector{r1: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AppendVersion(ctx, "a", []byte{2}, crdt.VersionVector{r1: 5, r2: 1}); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteSnapshotVersion(ctx, "b/c", []byte{9}, crdt.VersionVector{r2: 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "b/c", []byte{3}); err != nil { // no version known
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "unversioned", []byte{3}); err != nil {
		t.Fatal(err)
	}
	// Batches record only what they raise: the version is the maximum.
	r3 := crdt.ReplicaID(uuid.New())
	for _, raised := range []crdt.VersionVector{{r3: 2}, {r1: 1}, {r3: 4}} {
		if _, err := s.AppendVersion(ctx, "a/b", []byte{4}, raised); err != nil { // sorts between "a" and "b/c"
			t.Fatal(err)
		}
	}
	// A snapshot's version replaces its batches' records; later
	// batches add to it.
	for _, raised := range []crdt.VersionVector{{r1: 9}, {r2: 9}} {
		if _, err := s.AppendVersion(ctx, "c", []byte{5}, raised); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.WriteSnapshotVersion(ctx, "c", []byte{9}, crdt.VersionVector{r1: 9, r2: 8}); err != nil { // less than a batch said: the snapshot is the truth
		t.Fatal(err)
	}
	if _, err := s.AppendVersion(ctx, "c", []byte{6}, crdt.VersionVector{r3: 1}); err != nil {
		t.Fatal(err)
	}
	want := map[string]crdt.VersionVector{"a": {r1: 5, r2: 1}, "a/b": {r1: 1, r3: 4}, "b/c": {r2: 7}, "c": {r1: 9, r2: 8, r3: 1}}
	check := func(s *Store) {
		t.Helper()
		got := map[string]crdt.VersionVector{}
		if err := s.Versions(ctx, func(doc string, v crdt.VersionVector) error { got[doc] = v; return nil }); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Versions = %v, want %v", got, want)
		}
	}
	check(s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, DefaultOptions())
	defer s.Close()
	check(s)

	stop := errors.New("stop")
	if err := s.Versions(ctx, func(string, crdt.VersionVector) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("fn's error: got %v", err)
	}
	for _, bad := range [][]byte{{}, {2, 1}, append(append([]byte{1}, make([]byte, 16)...), 0), append(append([]byte{1}, make([]byte, 16)...), 1, 7)} {
		if _, err := decodeVersion("x", bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeVersion(%x) = %v, want ErrCorrupt", bad, err)
		}
	}
}
