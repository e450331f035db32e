package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/weftsync/weft/storage"
	"github.com/weftsync/weft/syncserver"
)

// weft doc edit writes through a running server and on a stopped data
// directory alike; the answers and the documents they leave have the same
// JSON shape, and `doc get` prints the same JSON from either source.
func TestDocEditLocalAndRemote(t *testing.T) {
	dir := t.TempDir()
	seedDataDir(t, dir, "notes/1")

	// Stopped: --data.
	steps := [][]string{
		{"--field", "body", "--insert", "»", "--at", "0"},
		{"--field", "body", "--insert", "!"},
		{"--field", "body", "--delete", "6", "--at", "6"},
		{"--field", "views", "--add", "-1"},
		{"--field", "title", "--set", "Plain text"},
		{"--field", "meta", "--set", `{"tags":["a","b"],"n":2}`},
		{"--ops", `[{"field":"body","insert":"<","at":0},{"field":"views","add":10}]`},
	}
	for _, s := range steps {
		code, out, errs := runWeft(t, nil, append([]string{"doc", "edit", "notes/1", "--data", dir}, s...)...)
		var res syncserver.OpsResult
		if code != 0 || json.Unmarshal(out, &res) != nil || res.Status != "ok" || len(res.Version) == 0 {
			t.Fatalf("edit %v: code %d out %q err %q", s, code, out, errs)
		}
	}
	code, local, errs := runWeft(t, nil, "doc", "get", "notes/1", "--data", dir)
	if code != 0 {
		t.Fatalf("get --data: %d %s", code, errs)
	}
	g := decodeGet(t, local)
	if g.Text["body"] != "<»hello!" || g.Counter["views"] != 12 || g.Register["title"] != "Plain text" {
		t.Fatalf("after local edits: %s", local)
	}
	if m, _ := g.Register["meta"].(map[string]any); m == nil || m["n"] != float64(2) {
		t.Fatalf("register meta: %s", local)
	}

	// A refused edit writes nothing and says why.
	code, _, errs = runWeft(t, nil, "doc", "edit", "notes/1", "--data", dir, "--field", "body", "--delete", "99", "--at", "0")
	if code != 1 || !strings.Contains(errs, "delete 99 at 0") || !strings.Contains(errs, "nothing written") {
		t.Fatalf("oversized delete: code %d err %q", code, errs)
	}
	if _, again, _ := runWeft(t, nil, "doc", "get", "notes/1", "--data", dir); !bytes.Equal(again, local) {
		t.Fatalf("a refused edit changed the document:\n%s\n%s", local, again)
	}

	_, lsLocal, _ := runWeft(t, nil, "doc", "ls", "--data", dir)
	_, lsLocalJSON, _ := runWeft(t, nil, "doc", "ls", "--data", dir, "--json")

	// Running: --server, on the same data, as weft serve wires it.
	st, err := storage.Open(dir, storage.DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	o := syncserver.LocalOptions()
	o.Store = servedStore{st}
	o.Insecure = true
	hs, stop := serveForTest(t, o)
	defer stop()
	// doc ls shows the same from either source.
	_, lsRemote, _ := runWeft(t, nil, "doc", "ls", "--server", hs.URL)
	_, lsRemoteJSON, _ := runWeft(t, nil, "doc", "ls", "--server", hs.URL, "--json")
	if !bytes.Equal(lsRemote, lsLocal) || !bytes.Equal(lsRemoteJSON, lsLocalJSON) {
		t.Fatalf("doc ls --server and --data differ:\n%s%s\n%s%s", lsRemote, lsRemoteJSON, lsLocal, lsLocalJSON)
	}
	if !strings.Contains(string(lsLocal), "BATCHES") || !strings.Contains(string(lsLocalJSON), `"snapshot_bytes"`) {
		t.Fatalf("doc ls shows no sizes:\n%s%s", lsLocal, lsLocalJSON)
	}
	_, remote, _ := runWeft(t, nil, "doc", "get", "notes/1", "--server", hs.URL)
	if !bytes.Equal(remote, local) {
		t.Fatalf("doc get --server and --data differ:\n%s\n%s", remote, local)
	}
	code, out, errs := runWeft(t, nil, "doc", "edit", "notes/1", "--server", hs.URL, "--field", "body", "--insert", " ✓")
	var res syncserver.OpsResult
	if code != 0 || json.Unmarshal(out, &res) != nil || res.Status != "ok" {
		t.Fatalf("remote edit: code %d out %q err %q", code, out, errs)
	}
	_, out, _ = runWeft(t, nil, "doc", "get", "notes/1", "--server", hs.URL)
	if got := decodeGet(t, out).Text["body"]; got != "<»hello! ✓" {
		t.Fatalf("after the remote edit: %q", got)
	}
	code, _, errs = runWeft(t, nil, "doc", "edit", "notes/1", "--server", hs.URL, "--field", "body", "--insert", "x", "--at", "99")
	if code != 1 || !strings.Contains(errs, "insert at 99") {
		t.Fatalf("remote bad edit: code %d err %q", code, errs)
	}
}

func TestDocEditFlagErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--field", "f"}, "exactly one of"},
		{[]string{"--insert", "x"}, "needs --field"},
		{[]string{"--field", "f", "--insert", "x", "--add", "1"}, "exactly one of"},
		{[]string{"--field", "f", "--add", "lots"}, "--add \"lots\""},
		{[]string{"--field", "f", "--delete", "1", "--at", "x"}, "--at \"x\""},
		{[]string{"--field", "f", "--delete", "1"}, "at is required"},
		{[]string{"--ops", "[", "--field", "f"}, "--ops replaces"},
		{[]string{"--ops", "{}"}, "JSON array"},
	} {
		code, _, errs := runWeft(t, nil, append([]string{"doc", "edit", "d", "--data", dir}, tc.args...)...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("%v: code %d err %q, want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	// --ops - reads stdin.
	seedDataDir(t, dir, "d")
	code, _, errs := runWeft(t, []byte(`[{"field":"n","add":5}]`), "doc", "edit", "d", "--data", dir, "--ops", "-")
	if code != 0 {
		t.Fatalf("--ops -: %d %s", code, errs)
	}
	_, out, _ := runWeft(t, nil, "doc", "get", "d", "--data", dir)
	if decodeGet(t, out).Counter["n"] != 5 {
		t.Fatalf("after --ops -: %s", out)
	}
}
