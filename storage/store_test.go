package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/weftsync/weft/crdt"
)

func openT(t testing.TB, dir string, o Options) *Store {
	t.Helper()
	s, err := Open(dir, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	return s
}

func mustAppend(t *testing.T, s *Store, doc string, b []byte) int64 {
	t.Helper()
	n, err := s.Append(context.Background(), doc, b)
	if err != nil {
		t.Fatalf("Append(%q): %v", doc, err)
	}
	return n
}

func loadT(t *testing.T, s *Store, doc string) ([]byte, [][]byte) {
	t.Helper()
	snap, batches, err := s.Load(context.Background(), doc)
	if err != nil {
		t.Fatalf("Load(%q): %v", doc, err)
	}
	return snap, batches
}

func TestDocIDEscapingOrderedAndPrefixFree(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte{0x00, 0x01, 'a', 'b', '/', 0xFF}
	ids := []string{"a", "a/b", "a\x00", "a\x00\x01", "a\x01", "ab", "\x00", "\xff"}
	for range 300 {
		n := 1 + rng.IntN(5)
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		ids = append(ids, string(b))
	}
	for _, a := range ids {
		ea := appendDocID(nil, a)
		got, rest, err := decodeDocID(ea)
		if err != nil || got != a || len(rest) != 0 {
			t.Fatalf("decode(escape(%q)) = %q, rest %x, %v", a, got, rest, err)
		}
		if !bytes.HasPrefix(ea, appendDocIDPrefix(nil, a[:len(a)/2])) {
			t.Fatalf("escape(%q) lacks the prefix escape of %q", a, a[:len(a)/2])
		}
		for _, b := range ids {
			eb := appendDocID(nil, b)
			if a != b && bytes.HasPrefix(eb, ea) {
				t.Fatalf("escape(%q)=%x is a prefix of escape(%q)=%x", a, ea, b, eb)
			}
			if got, want := bytes.Compare(ea, eb), strings.Compare(a, b); got != want {
				t.Fatalf("order of %q vs %q: escaped %d, raw %d", a, b, got, want)
			}
		}
	}
	for _, bad := range [][]byte{{'a'}, {'a', 0}, {'a', 0, 7}} {
		if _, _, err := decodeDocID(bad); err == nil {
			t.Errorf("decodeDocID(%x) accepted a bad key", bad)
		}
	}
}

func TestMetaRoundTripAndCorruption(t *testing.T) {
	m := DocMeta{ID: "x", Created: time.UnixMilli(1700000000123).UTC(), Updated: time.UnixMilli(1700000009999).UTC(),
		SnapshotBytes: 10, LogBytes: 20, Batches: 3, nextSeq: 9}
	v := encodeMeta(&m)
	got, err := decodeMeta("x", v)
	if err != nil || got != m {
		t.Fatalf("decodeMeta = %+v, %v; want %+v", got, err, m)
	}
	for _, bad := range [][]byte{nil, {2}, v[:len(v)-1], append(slices.Clone(v), 0)} {
		if _, err := decodeMeta("x", bad); !errors.Is(err, ErrCorrupt) {
			t.Errorf("decodeMeta(%x) = %v, want ErrCorrupt", bad, err)
		}
	}
}

// TestAppendLoadSnapshotReopen runs a real Pebble on a temp dir.
func TestAppendLoadSnapshotReopen(t *testing.T) {
	dir := t.TempDir()
	o := DefaultOptions()
	clock := time.UnixMilli(1_700_000_000_000).UTC()
	o.Now = func() time.Time { return clock }
	s := openT(t, dir, o)
	ctx := context.Background()

	if snap, batches, err := s.Load(ctx, "notes/1"); snap != nil || batches != nil || err != nil {
		t.Fatalf("Load(unknown) = %q, %q, %v; want nil, nil, nil", snap, batches, err)
	}
	if _, ok, err := s.Meta(ctx, "notes/1"); ok || err != nil {
		t.Fatalf("Meta(unknown) = ok %v, %v", ok, err)
	}
	if n := mustAppend(t, s, "notes/1", []byte("one")); n != 3 {
		t.Fatalf("logBytes = %d, want 3", n)
	}
	clock = clock.Add(time.Second)
	if n := mustAppend(t, s, "notes/1", []byte("two!")); n != 7 {
		t.Fatalf("logBytes = %d, want 7", n)
	}
	// A document whose id extends another's must not see its keys.
	mustAppend(t, s, "notes/1/sub", []byte("other"))
	mustAppend(t, s, "notes/1\x00", []byte("nul"))

	snap, batches := loadT(t, s, "notes/1")
	if snap != nil || !slices.EqualFunc(batches, [][]byte{[]byte("one"), []byte("two!")}, bytes.Equal) {
		t.Fatalf("Load = %q, %q", snap, batches)
	}
	m, ok, err := s.Meta(ctx, "notes/1")
	if err != nil || !ok {
		t.Fatalf("Meta: %v %v", ok, err)
	}
	want := DocMeta{ID: "notes/1", Created: time.UnixMilli(1_700_000_000_000).UTC(), Updated: clock,
		LogBytes: 7, Batches: 2, nextSeq: 3}
	if m != want {
		t.Fatalf("Meta = %+v, want %+v", m, want)
	}

	if err := s.WriteSnapshot(ctx, "notes/1", []byte("SNAP")); err != nil {
		t.Fatal(err)
	}
	if n := mustAppend(t, s, "notes/1", []byte("three")); n != 5 {
		t.Fatalf("logBytes after snapshot = %d, want 5", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Load(ctx, "notes/1"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Load after Close = %v, want ErrClosed", err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close = %v, want ErrClosed", err)
	}

	s = openT(t, dir, o)
	defer s.Close()
	snap, batches = loadT(t, s, "notes/1")
	if string(snap) != "SNAP" || len(batches) != 1 || string(batches[0]) != "three" {
		t.Fatalf("after reopen Load = %q, %q", snap, batches)
	}
	m, _, _ = s.Meta(ctx, "notes/1")
	if m.SnapshotBytes != 4 || m.LogBytes != 5 || m.Batches != 1 || m.nextSeq != 4 {
		t.Fatalf("after reopen Meta = %+v", m)
	}
	if _, b := loadT(t, s, "notes/1/sub"); len(b) != 1 || string(b[0]) != "other" {
		t.Fatalf("notes/1/sub = %q", b)
	}
}

func TestBadInputWritesNothing(t *testing.T) {
	o := LocalOptions()
	o.MaxBatchBytes = 8
	o.MaxSnapshotBytes = 8
	o.MaxDocIDBytes = 4
	s := openT(t, "db", o)
	defer s.Close()
	ctx := context.Background()
	mustAppend(t, s, "d", []byte("x"))

	cases := []struct {
		name string
		f    func() error
	}{
		{"empty id", func() error { _, err := s.Append(ctx, "", []byte("x")); return err }},
		{"long id", func() error { _, err := s.Append(ctx, "abcde", []byte("x")); return err }},
		{"bad utf8 id", func() error { _, err := s.Append(ctx, "\xff", []byte("x")); return err }},
		{"empty batch", func() error { _, err := s.Append(ctx, "d", nil); return err }},
		{"big batch", func() error { _, err := s.Append(ctx, "d", make([]byte, 9)); return err }},
		{"empty snapshot", func() error { return s.WriteSnapshot(ctx, "d", nil) }},
		{"big snapshot", func() error { return s.WriteSnapshot(ctx, "d", make([]byte, 9)) }},
		{"load empty id", func() error { _, _, err := s.Load(ctx, ""); return err }},
	}
	for _, c := range cases {
		if err := c.f(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", c.name, err)
		}
	}
	snap, batches := loadT(t, s, "d")
	if snap != nil || len(batches) != 1 || string(batches[0]) != "x" {
		t.Fatalf("state changed by rejected input: %q %q", snap, batches)
	}
	if docs, err := s.List(ctx, "", "", 0); err != nil || len(docs) != 1 {
		t.Fatalf("List = %v, %v; want only d", docs, err)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.Append(cctx, "d", []byte("y")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Append with cancelled ctx = %v", err)
	}
	if _, b := loadT(t, s, "d"); len(b) != 1 {
		t.Fatalf("cancelled Append wrote: %q", b)
	}
}

func TestOverlappingWritesToOneDocumentRefused(t *testing.T) {
	s := openT(t, "db", LocalOptions())
	defer s.Close()
	if err := s.begin("d", true); err != nil { // a write to d in progress
		t.Fatal(err)
	}
	if _, err := s.Append(context.Background(), "d", []byte("x")); !errors.Is(err, ErrConcurrentUse) {
		t.Fatalf("overlapping Append = %v, want ErrConcurrentUse", err)
	}
	if err := s.WriteSnapshot(context.Background(), "d", []byte("x")); !errors.Is(err, ErrConcurrentUse) {
		t.Fatalf("overlapping WriteSnapshot = %v, want ErrConcurrentUse", err)
	}
	mustAppend(t, s, "other", []byte("x")) // other documents proceed
	s.end("d", true)
	mustAppend(t, s, "d", []byte("x"))
}

func TestList(t *testing.T) {
	s := openT(t, "db", LocalOptions())
	defer s.Close()
	ids := []string{"a", "a/b", "a/c", "a\x00z", "b", "notes/1", "notes/2", "notes/10"}
	for _, id := range ids {
		mustAppend(t, s, id, []byte(id))
	}
	names := func(ms []DocMeta, err error) string {
		if err != nil {
			t.Fatal(err)
		}
		var n []string
		for _, m := range ms {
			n = append(n, fmt.Sprintf("%q", m.ID))
		}
		return strings.Join(n, " ")
	}
	ctx := context.Background()
	for _, c := range []struct {
		prefix, after string
		limit         int
		want          string
	}{
		{"", "", 0, `"a" "a\x00z" "a/b" "a/c" "b" "notes/1" "notes/10" "notes/2"`},
		{"a", "", 0, `"a" "a\x00z" "a/b" "a/c"`},
		{"a/", "", 0, `"a/b" "a/c"`},
		{"notes/", "", 2, `"notes/1" "notes/10"`},
		{"notes/", "notes/10", 2, `"notes/2"`},
		{"notes/", "a", 1, `"notes/1"`},
		{"notes/", "z", 0, ``},
		{"", "a/b", 0, `"a/c" "b" "notes/1" "notes/10" "notes/2"`},
		{"zzz", "", 0, ``},
	} {
		if got := names(s.List(ctx, c.prefix, c.after, c.limit)); got != c.want {
			t.Errorf("List(%q, %q, %d) = %s, want %s", c.prefix, c.after, c.limit, got, c.want)
		}
	}
}

func TestSecondOpenIsLocked(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, DefaultOptions())
	defer s.Close()
	if _, err := Open(dir, DefaultOptions()); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open = %v, want ErrLocked", err)
	}
}

func TestOptionsValidationReportsEveryProblem(t *testing.T) {
	o := Options{MaxDocIDBytes: -1, MaxBatchBytes: 2 << 30, CacheBytes: -5, MemTableBytes: 10, WALMinSyncInterval: 2 * time.Second}
	_, err := Open("db", o)
	if err == nil {
		t.Fatal("Open accepted bad options")
	}
	for _, f := range []string{"MaxDocIDBytes", "MaxBatchBytes", "CacheBytes", "MemTableBytes", "WALMinSyncInterval"} {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("error does not mention %s: %v", f, err)
		}
	}
	if o.MaxDocIDBytes != -1 || o.FS != nil {
		t.Fatal("Open modified the caller's options")
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	o := LocalOptions()
	o.Registerer = reg
	s := openT(t, "db", o)
	mustAppend(t, s, "d", []byte("hello"))
	if err := s.WriteSnapshot(context.Background(), "d", []byte("snap")); err != nil {
		t.Fatal(err)
	}
	if got := counterValue(t, s.metrics.appendedBytes); got != 5 {
		t.Errorf("appended bytes = %v, want 5", got)
	}
	if got := counterValue(t, s.metrics.snapshots); got != 1 {
		t.Errorf("snapshots = %v, want 1", got)
	}
	fams := gather(t, reg)
	if n := len(fams["weft_storage_commit_seconds"].GetMetric()); n != 2 {
		t.Errorf("commit_seconds has %d series, want 2 (append, snapshot)", n)
	}
	if fams["weft_storage_disk_bytes"].GetMetric()[0].GetGauge().GetValue() <= 0 {
		t.Errorf("disk bytes gauge not positive")
	}
	// A second store on the same registry must fail cleanly, not panic.
	o2 := LocalOptions()
	o2.Registerer = reg
	if _, err := Open("db2", o2); err == nil {
		t.Error("second store registered duplicate metrics")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fams := gather(t, reg); len(fams) != 0 {
		t.Errorf("Close left %d metric families registered", len(fams))
	}
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func gather(t *testing.T, reg *prometheus.Registry) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

// TestConcurrentAppendsManyDocuments checks group commit under -race and
// that each document's batches come back in append order.
func TestConcurrentAppendsManyDocuments(t *testing.T) {
	s := openT(t, t.TempDir(), DefaultOptions())
	defer s.Close()
	const docs, per = 16, 40
	var wg sync.WaitGroup
	errs := make(chan error, docs)
	for d := range docs {
		wg.Go(func() {
			doc := fmt.Sprintf("doc/%d", d)
			for i := range per {
				if _, err := s.Append(context.Background(), doc, fmt.Appendf(nil, "%d", i)); err != nil {
					errs <- err
					return
				}
				if i == per/2 {
					if err := s.WriteSnapshot(context.Background(), doc, fmt.Appendf(nil, "upto %d", i)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for d := range docs {
		snap, batches := loadT(t, s, fmt.Sprintf("doc/%d", d))
		if string(snap) != fmt.Sprintf("upto %d", per/2) || len(batches) != per-per/2-1 {
			t.Fatalf("doc %d: snapshot %q, %d batches", d, snap, len(batches))
		}
		for i, b := range batches {
			if want := fmt.Sprint(per/2 + 1 + i); string(b) != want {
				t.Fatalf("doc %d batch %d = %q, want %q", d, i, b, want)
			}
		}
	}
}

// TestMetaCacheEvictionKeepsMetadataExact writes more documents than the
// metadata cache holds; every Append must still see the stored metadata.
func TestMetaCacheEvictionKeepsMetadataExact(t *testing.T) {
	o := LocalOptions()
	o.MetaCacheEntries = 2
	s := openT(t, "db", o)
	defer s.Close()
	ctx := context.Background()
	const docs, rounds = 5, 4
	for r := range rounds {
		for d := range docs {
			doc := fmt.Sprintf("d%d", d)
			if r == 2 && d%2 == 0 {
				if err := s.WriteSnapshot(ctx, doc, []byte("snap")); err != nil {
					t.Fatal(err)
				}
			}
			n := mustAppend(t, s, doc, []byte("xy"))
			want := int64(2 * (r + 1))
			if r >= 2 && d%2 == 0 {
				want = int64(2 * (r - 1))
			}
			if n != want {
				t.Fatalf("round %d %s: logBytes %d, want %d", r, doc, n, want)
			}
		}
		s.mu.Lock()
		if len(s.mu.metas) > 2 {
			t.Fatalf("cache holds %d entries, limit 2", len(s.mu.metas))
		}
		s.mu.Unlock()
	}
	for d := range docs {
		doc := fmt.Sprintf("d%d", d)
		m, _, err := s.Meta(ctx, doc)
		if err != nil {
			t.Fatal(err)
		}
		_, batches := loadT(t, s, doc)
		if m.Batches != int64(len(batches)) || m.LogBytes != int64(2*len(batches)) {
			t.Fatalf("%s: meta %+v, %d batches stored", doc, m, len(batches))
		}
	}
}

func TestMeasureBareSync(t *testing.T) {
	rate, err := MeasureBareSync(context.Background(), t.TempDir(), 4, 10, 70)
	if err != nil || rate <= 0 {
		t.Fatalf("MeasureBareSync = %v, %v", rate, err)
	}
	if _, err := MeasureBareSync(context.Background(), t.TempDir(), 0, 10, 70); !errors.Is(err, ErrInvalid) {
		t.Fatalf("MeasureBareSync with 0 writers = %v, want ErrInvalid", err)
	}
}

// Replica owners outlive snapshots and restarts, never change hands, and
// stay out of Load; bad owners write nothing.
func TestOwnersSurviveSnapshotAndReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	o := LocalOptions()
	o.FS = nil // the real disk: the store is reopened
	s := openT(t, dir, o)
	x, y := crdt.ReplicaID{1}, crdt.ReplicaID{2}
	if err := s.AddOwners(ctx, "d", map[crdt.ReplicaID]string{x: "alice"}); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, "d", []byte("batch"))
	if err := s.WriteSnapshot(ctx, "d", []byte("snap")); err != nil {
		t.Fatal(err)
	}
	// A later claim of an owned replica is skipped; a new one recorded.
	if err := s.AddOwners(ctx, "d", map[crdt.ReplicaID]string{x: "mallory", y: "bob"}); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []map[crdt.ReplicaID]string{{{3}: ""}, {{3}: strings.Repeat("u", MaxOwnerBytes+1)}, {{3}: "\xff"}} {
		if err := s.AddOwners(ctx, "d", bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("AddOwners(%q): %v, want ErrInvalid", bad, err)
		}
	}
	if err := s.AddOwners(ctx, "other", map[crdt.ReplicaID]string{x: "carol"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, o)
	defer s.Close()
	got, err := s.Owners(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	want := map[crdt.ReplicaID]string{x: "alice", y: "bob"}
	if !maps.Equal(got, want) {
		t.Fatalf("owners after reopen %v, want %v", got, want)
	}
	if snap, batches := loadT(t, s, "d"); string(snap) != "snap" || len(batches) != 0 {
		t.Fatalf("Load after owners: snapshot %q, %d batches", snap, len(batches))
	}
	if got, err := s.Owners(ctx, "none"); err != nil || got != nil {
		t.Fatalf("owners of an unknown document: %v, %v", got, err)
	}
}
