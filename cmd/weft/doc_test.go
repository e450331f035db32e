package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/weftsync/weft/crdt"
	"github.com/weftsync/weft/crdt/codec"
	"github.com/weftsync/weft/hlc"
	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

var (
	replicaA = crdt.ReplicaID{0xa1, 15: 1}
	replicaB = crdt.ReplicaID{0xb2, 15: 2}
)

// runWeft runs `weft args...` in-process with stdin, returning the exit
// code, stdout and stderr.
func runWeft(t *testing.T, stdin []byte, args ...string) (int, []byte, string) {
	t.Helper()
	old := docStdin
	docStdin = bytes.NewReader(stdin)
	defer func() { docStdin = old }()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.Bytes(), errb.String()
}

func edit(t *testing.T, d *crdt.Doc, f func(tx *crdt.Tx) error) []crdt.Change {
	t.Helper()
	v := d.Version()
	tx := d.Begin()
	if err := f(tx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return d.ChangesSince(v)
}

// seedDataDir writes a document as the server would: a snapshot plus a log.
func seedDataDir(t *testing.T, dir, id string) *crdt.Doc {
	t.Helper()
	wall := &hlc.ManualWall{Millis: 1_700_000_000_000}
	d := crdt.NewDoc(replicaA, hlc.NewClock(wall.Read, 0), crdt.Options{})
	st, err := storage.Open(dir, storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	c1 := edit(t, d, func(tx *crdt.Tx) error { return tx.Insert("body", 0, "hello") })
	if _, err := st.Append(ctx, id, codec.EncodeChanges(c1)); err != nil {
		t.Fatal(err)
	}
	if err := st.WriteSnapshot(ctx, id, codec.EncodeSnapshot(d)); err != nil {
		t.Fatal(err)
	}
	wall.Millis += 1000
	c2 := edit(t, d, func(tx *crdt.Tx) error {
		title, _ := msgpack.Marshal("Notes")
		if err := tx.Set("title", title); err != nil {
			return err
		}
		if err := tx.Add("views", 3); err != nil {
			return err
		}
		return tx.Insert("body", 5, " world")
	})
	if _, err := st.Append(ctx, id, codec.EncodeChanges(c2)); err != nil {
		t.Fatal(err)
	}
	return d
}

func decodeGet(t *testing.T, out []byte) syncserver.DocJSON {
	t.Helper()
	var g syncserver.DocJSON
	if err := json.Unmarshal(out, &g); err != nil {
		t.Fatalf("weft doc get printed invalid JSON: %v\n%s", err, out)
	}
	return g
}

func TestDocLocalLsGetExportImport(t *testing.T) {
	dir := t.TempDir()
	const id = "notes/42"
	orig := seedDataDir(t, dir, id)

	code, out, errs := runWeft(t, nil, "doc", "ls", "--data", dir)
	if code != 0 || !strings.Contains(string(out), id) || !strings.Contains(string(out), "BATCHES") {
		t.Fatalf("ls: code %d, out %q, err %q", code, out, errs)
	}
	code, out, errs = runWeft(t, nil, "doc", "ls", "--data", dir, "--json", "--prefix", "other/")
	if code != 0 || strings.TrimSpace(string(out)) != "[]" {
		t.Fatalf("ls --prefix other/: code %d, out %q, err %q", code, out, errs)
	}

	// Flags after the id work too.
	code, out, errs = runWeft(t, nil, "doc", "get", id, "--data", dir)
	if code != 0 {
		t.Fatalf("get: code %d, err %q", code, errs)
	}
	g := decodeGet(t, out)
	if g.Text["body"] != "hello world" || g.Counter["views"] != 3 || g.Register["title"] != "Notes" {
		t.Fatalf("get = %+v", g)
	}
	code, out, errs = runWeft(t, nil, "doc", "ls", "--data", dir, "--json")
	var metas []syncserver.DocInfo
	if err := json.Unmarshal(out, &metas); code != 0 || err != nil || len(metas) != 1 || metas[0].Batches != 1 || metas[0].SnapshotBytes == 0 {
		t.Fatalf("ls --json: code %d, %v, %s %s", code, err, out, errs)
	}
	if g.Version[replicaA.String()] != orig.Version()[replicaA] {
		t.Fatalf("get version = %v, want %v", g.Version, orig.Version())
	}

	// export merges snapshot and log into one snapshot.
	code, snap, errs := runWeft(t, nil, "doc", "export", id, "--data", dir)
	if code != 0 {
		t.Fatalf("export: code %d, err %q", code, errs)
	}
	if _, again, _ := runWeft(t, nil, "doc", "export", id, "--data", dir); !bytes.Equal(again, snap) {
		t.Fatal("two exports of an unchanged document differ")
	}
	fork, err := codec.DecodeSnapshot(snap, replicaB, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	if err != nil {
		t.Fatalf("export is not a snapshot: %v", err)
	}
	if fork.Text("body") != "hello world" || !fork.Version().Equal(orig.Version()) {
		t.Fatalf("export = %q at %v", fork.Text("body"), fork.Version())
	}

	// Concurrent edits on both sides; import merges and keeps both.
	edit(t, fork, func(tx *crdt.Tx) error { return tx.Insert("body", 11, "!") })
	forkSnap := codec.EncodeSnapshot(fork)
	st, err := storage.Open(dir, storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	c3 := edit(t, orig, func(tx *crdt.Tx) error { return tx.Insert("body", 0, ">> ") })
	if _, err := st.Append(context.Background(), id, codec.EncodeChanges(c3)); err != nil {
		t.Fatal(err)
	}
	// While the directory is held, --data is refused with a clear message.
	code, _, errs = runWeft(t, forkSnap, "doc", "import", id, "--data", dir)
	if code == 0 || !strings.Contains(errs, "locked") || !strings.Contains(errs, "--server") {
		t.Fatalf("import on a held directory: code %d, err %q", code, errs)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	code, out, errs = runWeft(t, forkSnap, "doc", "import", id, "--data", dir)
	if code != 0 || !strings.Contains(string(out), "merged 1 change") {
		t.Fatalf("import: code %d, out %q, err %q", code, out, errs)
	}
	_, out, _ = runWeft(t, nil, "doc", "get", id, "--data", dir)
	if got := decodeGet(t, out).Text["body"]; got != ">> hello world!" {
		t.Fatalf("after import body = %q, want both sides' edits", got)
	}
	code, out, _ = runWeft(t, forkSnap, "doc", "import", id, "--data", dir)
	if code != 0 || !strings.Contains(string(out), "already has everything") {
		t.Fatalf("second import: code %d, out %q", code, out)
	}

	// Bad input: a clear error, nothing written.
	_, before, _ := runWeft(t, nil, "doc", "get", id, "--data", dir)
	for _, bad := range [][]byte{nil, []byte("not a snapshot"), forkSnap[:len(forkSnap)/2]} {
		code, _, errs = runWeft(t, bad, "doc", "import", id, "--data", dir)
		if code == 0 || errs == "" {
			t.Fatalf("import of %d bad bytes: code %d, err %q", len(bad), code, errs)
		}
	}
	_, after, _ := runWeft(t, nil, "doc", "get", id, "--data", dir)
	if !bytes.Equal(before, after) { // content, version and storage metadata
		t.Fatal("a rejected import changed the document")
	}

	// An import into a new id creates it.
	code, _, errs = runWeft(t, forkSnap, "doc", "import", "copies/1", "--data", dir)
	if code != 0 {
		t.Fatalf("import into a new id: code %d, err %q", code, errs)
	}
	_, out, _ = runWeft(t, nil, "doc", "get", "copies/1", "--data", dir)
	if got := decodeGet(t, out).Text["body"]; got != "hello world!" {
		t.Fatalf("copies/1 body = %q", got)
	}
}

func TestDocUsageErrors(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"doc"},
		{"doc", "frob", "--data", dir},
		{"doc", "get", "--data", dir},
		{"doc", "get", "x"},
		{"doc", "get", "x", "--data", dir, "--server", "http://127.0.0.1:1"},
	} {
		if code, _, _ := runWeft(t, nil, args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	code, _, errs := runWeft(t, nil, "doc", "get", "nope", "--data", dir)
	if code != 1 || !strings.Contains(errs, "no such document") {
		t.Errorf("get unknown: code %d, err %q", code, errs)
	}
	code, _, errs = runWeft(t, nil, "doc", "ls", "--data", dir+"/missing")
	if code != 1 || !strings.Contains(errs, "data directory") {
		t.Errorf("ls of a missing directory: code %d, err %q", code, errs)
	}
}

// TestDocRemote drives ls, get, export and import through a real syncserver on
// 127.0.0.1 (httptest) backed by the Pebble store.
func TestDocRemote(t *testing.T) {
	dir := t.TempDir()
	const id = "notes/7"
	seedDataDir(t, dir, id)
	st, err := storage.Open(dir, storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := syncserver.LocalOptions()
	o.Store = st
	o.Insecure = true
	hs, stop := serveForTest(t, o)
	defer stop()

	// ls: the stored documents, from Pebble through the server.
	code, out, errs := runWeft(t, nil, "doc", "ls", "--server", hs.URL, "--prefix", "notes/")
	if code != 0 || !strings.Contains(string(out), id) {
		t.Fatalf("remote ls: code %d, out %q, err %q", code, out, errs)
	}
	if code, out, _ = runWeft(t, nil, "doc", "ls", "--server", hs.URL, "--prefix", "zzz"); code != 0 || strings.Contains(string(out), id) {
		t.Fatalf("remote ls with another prefix listed %q", out)
	}

	code, out, errs = runWeft(t, nil, "doc", "get", id, "--server", hs.URL)
	if code != 0 {
		t.Fatalf("get: code %d, err %q", code, errs)
	}
	if got := decodeGet(t, out).Text["body"]; got != "hello world" {
		t.Fatalf("remote get body = %q", got)
	}

	// export: the server answers snapshot bytes when asked for them.
	code, out, errs = runWeft(t, nil, "doc", "export", id, "--server", hs.URL)
	if code != 0 {
		t.Fatalf("remote export: code %d, err %q", code, errs)
	}
	if d, err := codec.DecodeSnapshot(out, replicaB, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{}); err != nil || d.Text("body") != "hello world" {
		t.Fatalf("remote export: %v", err)
	}

	other := crdt.NewDoc(replicaB, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	edit(t, other, func(tx *crdt.Tx) error { return tx.Insert("body", 0, "fresh") })
	code, out, errs = runWeft(t, codec.EncodeSnapshot(other), "doc", "import", "new/doc", "--server", hs.URL)
	if code != 0 || !strings.Contains(string(out), "merged 1 change") {
		t.Fatalf("remote import: code %d, out %q, err %q", code, out, errs)
	}
	_, out, _ = runWeft(t, nil, "doc", "get", "new/doc", "--server", hs.URL)
	if got := decodeGet(t, out).Text["body"]; got != "fresh" {
		t.Fatalf("after remote import body = %q", got)
	}
	if code, out, errs = runWeft(t, nil, "doc", "ls", "--server", hs.URL, "--json"); code != 0 || !strings.Contains(string(out), `"new/doc"`) {
		t.Fatalf("remote ls after import: code %d, out %q, err %q", code, out, errs)
	}
}

func TestChunkChangesKeepsOrderAndBound(t *testing.T) {
	d := crdt.NewDoc(replicaA, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	for i := range 50 {
		edit(t, d, func(tx *crdt.Tx) error { return tx.Insert("body", i, strings.Repeat("x", 1+i%7)) })
	}
	all := d.ChangesSince(crdt.VersionVector{})
	one := len(codec.EncodeChanges(all[:1]))
	chunks := chunkChanges(all, 5*one, crdt.MaxChangeOps)
	if len(chunks) < 5 {
		t.Fatalf("%d chunks for 50 changes at ~5 per chunk", len(chunks))
	}
	var joined []crdt.Change
	for _, c := range chunks {
		if len(c) == 0 {
			t.Fatal("empty chunk")
		}
		joined = append(joined, c...)
	}
	if len(joined) != len(all) {
		t.Fatalf("chunks hold %d changes, want %d", len(joined), len(all))
	}
	for i := range all {
		if joined[i].Replica != all[i].Replica || joined[i].Seq != all[i].Seq {
			t.Fatalf("chunking reordered change %d", i)
		}
	}
	if got := chunkChanges(all[:1], 1, crdt.MaxChangeOps); len(got) != 1 || len(got[0]) != 1 {
		t.Fatalf("an oversized change must go alone: %d chunks", len(got))
	}
	// Ops are bounded too: 50 one-op changes, at most 8 ops per run.
	for _, c := range chunkChanges(all, 1<<20, 8) {
		if len(c) > 8 {
			t.Fatalf("a run of %d one-op changes with maxOps 8", len(c))
		}
	}
}

// doc import --server sends a history larger than the server's rate-limit
// burst (in ops, small in bytes) in POSTs the burst admits, and waits out
// 429s: before, it went in one POST, refused 413 too_large for good.
func TestDocRemoteImportSplitsToTheRateLimit(t *testing.T) {
	o := syncserver.LocalOptions()
	o.Store = syncserver.NewMemStore()
	o.Insecure = true
	o.ChangesBurst = crdt.MaxChangeOps
	o.MaxChangesPerSec = 2 * crdt.MaxChangeOps
	hs, stop := serveForTest(t, o)
	defer stop()
	d := crdt.NewDoc(replicaB, hlc.NewClock(hlc.SystemWall, 0), crdt.Options{})
	const changes, per = 3, crdt.MaxChangeOps - 96
	for range changes {
		edit(t, d, func(tx *crdt.Tx) error {
			for i := range per {
				if err := tx.Add(fmt.Sprint("n", i%5), 1); err != nil {
					return err
				}
			}
			return nil
		})
	}
	code, out, errs := runWeft(t, codec.EncodeSnapshot(d), "doc", "import", "big/doc", "--server", hs.URL)
	if code != 0 || !strings.Contains(string(out), fmt.Sprintf("merged %d change", changes)) {
		t.Fatalf("remote import: code %d, out %q, err %q", code, out, errs)
	}
	_, out, _ = runWeft(t, nil, "doc", "get", "big/doc", "--server", hs.URL)
	var sum int64
	for _, v := range decodeGet(t, out).Counter {
		sum += v
	}
	if sum != changes*per {
		t.Fatalf("the server's counters sum to %d, want %d", sum, changes*per)
	}
}

func TestDocFlagsFromEnvironment(t *testing.T) {
	dir := t.TempDir()
	seedDataDir(t, dir, "env/doc")
	t.Setenv(envName("data"), dir)
	code, out, errs := runWeft(t, nil, "doc", "ls")
	if code != 0 || !strings.Contains(string(out), "env/doc") {
		t.Fatalf("ls with WEFT_DATA: code %d, out %q, err %q", code, out, errs)
	}
	// The command line wins over the environment.
	code, _, errs = runWeft(t, nil, "doc", "ls", "--data", dir+"/missing")
	if code != 1 || !strings.Contains(errs, "missing") {
		t.Fatalf("--data over WEFT_DATA: code %d, err %q", code, errs)
	}
}

// serveForTest serves a syncserver with o on a loopback httptest server.
// stop closes it and shuts the server down (persisting what it acked);
// defer it before anything the server uses is closed.
func serveForTest(t *testing.T, o syncserver.Options) (hs *httptest.Server, stop func()) {
	t.Helper()
	srv, err := syncserver.New(o)
	if err != nil {
		t.Fatal(err)
	}
	hs = httptest.NewServer(srv.Handler())
	return hs, func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), o.WriteTimeout)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	}
}
