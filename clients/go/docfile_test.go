package client

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestDocFileRoundTripAndTornTail(t *testing.T) {
	dir := t.TempDir()
	df, recs, err := openDocFile(dir, "notes/42", false)
	if err != nil || len(recs) != 0 {
		t.Fatalf("open new: %v, %d records", err, len(recs))
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(df.append(recChanges, []byte("one")))
	must(df.append(recChanges, []byte("two")))
	must(df.close())

	// Simulate a crash in the middle of a third append.
	path := filepath.Join(dir, docFileName("notes/42"))
	good, _ := os.ReadFile(path)
	torn := append(bytes.Clone(good), encodeRecord(recChanges, []byte("three"))[:7]...)
	must(os.WriteFile(path, torn, 0o644))

	df, recs, err = openDocFile(dir, "notes/42", false)
	must(err)
	if len(recs) != 2 || string(recs[0].payload) != "one" || string(recs[1].payload) != "two" {
		t.Fatalf("records after torn tail: %+v", recs)
	}
	if fi, _ := os.Stat(path); fi.Size() != int64(len(good)) {
		t.Fatalf("torn tail not cut: size %d, want %d", fi.Size(), len(good))
	}
	must(df.append(recChanges, []byte("four")))
	must(df.close())

	df, recs, err = openDocFile(dir, "notes/42", false)
	must(err)
	if len(recs) != 3 || string(recs[2].payload) != "four" {
		t.Fatalf("records after append past torn tail: %+v", recs)
	}
	must(df.close())
}

func TestDocFileCorruptRecordStopsReplay(t *testing.T) {
	dir := t.TempDir()
	df, _, err := openDocFile(dir, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	df.append(recChanges, []byte("aaaa"))
	df.append(recChanges, []byte("bbbb"))
	df.close()
	path := filepath.Join(dir, docFileName("d"))
	data, _ := os.ReadFile(path)
	data[len(data)-1] ^= 0xff // flip a payload byte of the last record
	os.WriteFile(path, data, 0o644)
	df, recs, err := openDocFile(dir, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	defer df.close()
	if len(recs) != 1 || string(recs[0].payload) != "aaaa" {
		t.Fatalf("want only the intact record, got %+v", recs)
	}
}

func TestDocFileBadMagicIsAnError(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, docFileName("x")), []byte("not a weft file"), 0o644)
	if _, _, err := openDocFile(dir, "x", true); err == nil {
		t.Fatal("opening a foreign file succeeded")
	}
}

func TestDocFileRewriteKeepsOnlySnapshot(t *testing.T) {
	dir := t.TempDir()
	df, _, err := openDocFile(dir, "d", false)
	if err != nil {
		t.Fatal(err)
	}
	df.append(recChanges, []byte("old"))
	if err := df.rewrite([]byte("SNAP")); err != nil {
		t.Fatal(err)
	}
	if err := df.append(recChanges, []byte("new")); err != nil {
		t.Fatal(err)
	}
	df.close()
	df, recs, err := openDocFile(dir, "d", false)
	if err != nil {
		t.Fatal(err)
	}
	defer df.close()
	if len(recs) != 2 || recs[0].kind != recSnapshot || string(recs[0].payload) != "SNAP" || string(recs[1].payload) != "new" {
		t.Fatalf("after rewrite: %+v", recs)
	}
	if _, err := os.Stat(filepath.Join(dir, docFileName("d")+docFileTmpExtra)); !os.IsNotExist(err) {
		t.Fatalf("temporary file left behind: %v", err)
	}
}

func TestDocFileNameIsReversibleAndFlat(t *testing.T) {
	for _, id := range []string{"notes/42", "../../etc/passwd", "", "é"} {
		n := docFileName(id)
		if filepath.Base(n) != n || n == docFileSuffix+"x" {
			t.Fatalf("%q maps to unsafe name %q", id, n)
		}
	}
	if docFileName("a") == docFileName("b") {
		t.Fatal("distinct ids share a file")
	}
}
